"""The building blocks of the SampleCNN variants of Kim, Lee & Nam (2018): basic, SE, Res and ReSE-2."""

from __future__ import annotations

from keras import layers

BLOCKS = ("basic", "se", "res", "rese")
"""Block types: Lee et al. 2017's conv block, and the SE, Res and ReSE-2 blocks of Kim et al. 2018."""

SE_RATIO = 16
"""The SE "amplifying ratio": the excitation's hidden layer has width x 16 units (an expansion)."""

RES_DROPOUT = 0.2
"""Dropout between the two convolutions of a residual branch."""

CONV_INIT = "he_uniform"
"""Initializer of the m-tap convolutions of the variants (the authors' choice)."""

DENSE_INIT = "glorot_uniform"
"""Initializer of dense layers and 1x1 shortcut convolutions of the variants."""


def squeeze_excitation(x, prefix: str, *, dtype=None):
    """Rescales each channel of ``x`` by a gate computed from its time average.

    Global average pooling -> Dense(c x ``SE_RATIO``, ReLU) -> Dense(c, sigmoid) -> multiply.

    Args:
        x: Symbolic tensor (batch, t, c).
        prefix: Layer name prefix, e.g. "block3".
        dtype: Keras dtype policy of the layers (e.g. "mixed_bfloat16"; None: Keras' default).

    Returns:
        A tensor (batch, t, c); the last layer is ``{prefix}_se_scale``.
    """
    channels = x.shape[-1]
    s = layers.GlobalAveragePooling1D(name=f"{prefix}_se_squeeze", dtype=dtype)(x)  # (batch, c)
    s = layers.Dense(channels * SE_RATIO, activation="relu", kernel_initializer=DENSE_INIT,
                     name=f"{prefix}_se_expand", dtype=dtype)(s)  # (batch, 16c)
    s = layers.Dense(channels, activation="sigmoid", kernel_initializer=DENSE_INIT,
                     name=f"{prefix}_se_gate", dtype=dtype)(s)  # (batch, c)
    s = layers.Reshape((1, channels), name=f"{prefix}_se_reshape", dtype=dtype)(s)  # (batch, 1, c): broadcasts over t
    return layers.Multiply(name=f"{prefix}_se_scale", dtype=dtype)([x, s])


def basic_block(x, filters: int, m: int, prefix: str, *, kernel_initializer: str = CONV_INIT, dtype=None):
    """Conv1D(filters, m, same) -> BN -> ReLU -> MaxPool(m): (batch, t, c) -> (batch, t/m, filters).

    The last layer is ``{prefix}_pool``. Lee et al.'s model passes Keras' default initializer.
    ``dtype``: the layers' Keras dtype policy (None: Keras' default), as in every block here.
    """
    x = layers.Conv1D(filters, m, padding="same", kernel_initializer=kernel_initializer, name=f"{prefix}_conv",
                      dtype=dtype)(x)
    x = layers.BatchNormalization(name=f"{prefix}_bn", dtype=dtype)(x)
    x = layers.Activation("relu", name=f"{prefix}_relu", dtype=dtype)(x)
    return layers.MaxPooling1D(m, name=f"{prefix}_pool", dtype=dtype)(x)


def se_block(x, filters: int, m: int, prefix: str, *, dtype=None):
    """A basic block whose output goes through squeeze-excitation; the last layer is ``{prefix}_se_scale``."""
    x = basic_block(x, filters, m, prefix, dtype=dtype)  # (batch, t/m, filters)
    return squeeze_excitation(x, prefix, dtype=dtype)


def residual_block(x, filters: int, m: int, prefix: str, *, excite: bool = False, dtype=None):
    """Res block (``excite=False``) or ReSE-2 block (``excite=True``); (batch, t, c) -> (batch, t/m, filters).

    Shortcut: the input, or Conv1D(filters, 1) -> BN where the width changes. Branch:
    Conv1D(filters, m, same) -> BN -> ReLU -> Dropout(0.2) -> Conv1D(filters, m, same) -> BN
    (-> squeeze-excitation for ReSE-2). Then add -> ReLU -> MaxPool(m); the last layer is
    ``{prefix}_pool``.
    """
    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv1D(filters, 1, kernel_initializer=DENSE_INIT, name=f"{prefix}_shortcut_conv",
                                 dtype=dtype)(x)
        shortcut = layers.BatchNormalization(name=f"{prefix}_shortcut_bn", dtype=dtype)(shortcut)
    y = layers.Conv1D(filters, m, padding="same", kernel_initializer=CONV_INIT, name=f"{prefix}_conv1",
                      dtype=dtype)(x)
    y = layers.BatchNormalization(name=f"{prefix}_bn1", dtype=dtype)(y)
    y = layers.Activation("relu", name=f"{prefix}_relu1", dtype=dtype)(y)
    y = layers.Dropout(RES_DROPOUT, name=f"{prefix}_dropout", dtype=dtype)(y)
    y = layers.Conv1D(filters, m, padding="same", kernel_initializer=CONV_INIT, name=f"{prefix}_conv2",
                      dtype=dtype)(y)
    y = layers.BatchNormalization(name=f"{prefix}_bn2", dtype=dtype)(y)  # (batch, t, filters)
    if excite:
        y = squeeze_excitation(y, prefix, dtype=dtype)
    x = layers.Add(name=f"{prefix}_add", dtype=dtype)([shortcut, y])
    x = layers.Activation("relu", name=f"{prefix}_relu", dtype=dtype)(x)
    return layers.MaxPooling1D(m, name=f"{prefix}_pool", dtype=dtype)(x)


def block_output_name(block: str, i: int) -> str:
    """Name of the last layer of block ``i`` (from 1) of type ``block``."""
    return f"block{i}_se_scale" if block == "se" else f"block{i}_pool"


def apply_block(x, block: str, filters: int, m: int, i: int, *, dtype=None):
    """Applies block ``i`` (from 1) of type ``block`` (one of ``BLOCKS``, variant initializers)."""
    prefix = f"block{i}"
    if block == "basic":
        return basic_block(x, filters, m, prefix, dtype=dtype)
    if block == "se":
        return se_block(x, filters, m, prefix, dtype=dtype)
    return residual_block(x, filters, m, prefix, excite=block == "rese", dtype=dtype)


def block_multiply_adds(block: str, steps: int, m: int, channels: int, filters: int) -> int:
    """Multiply-adds of one block on an input of ``steps`` frames and ``channels`` channels.

    Counts the convolutions (shortcut included) and the SE dense layers; BN, ReLU and pooling
    are left out, as for the whole model.
    """
    if block in ("basic", "se"):
        total = steps * m * channels * filters
        excited = filters
    else:
        total = steps * m * channels * filters + steps * m * filters * filters
        if channels != filters:
            total += steps * channels * filters
        excited = filters if block == "rese" else 0
    if block in ("se", "rese"):
        total += 2 * excited * excited * SE_RATIO
    return total
