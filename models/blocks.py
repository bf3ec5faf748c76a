"""The building blocks of the SampleCNN variants of Kim, Lee & Nam (2018), and their registry, ``BLOCKS``.

Each block type is one ``BlockType`` entry of ``BLOCKS``: its description (the CLI's help), its
builder, the name of its last layer (what the taps read), the layers that tell it apart from the
other types, and its multiply-add count. A new block type is one more entry here; the builder, the
tap extractor, the cost model, the configs and the CLI all look it up.

Keras is imported inside the builders only, so that the registry can be listed (by configs, the
CLI and ``msagg.models.specs``) without loading Keras.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

SE_RATIO = 16
"""The SE "amplifying ratio": the excitation's hidden layer has width x 16 units (an expansion)."""

RES_DROPOUT = 0.2
"""Dropout between the two convolutions of a residual branch."""

CONV_INIT = "he_uniform"
"""Initializer of the m-tap convolutions of the variants (the authors' choice)."""

DENSE_INIT = "glorot_uniform"
"""Initializer of dense layers and 1x1 shortcut convolutions of the variants."""

LEE_CONV_INIT = "glorot_uniform"
"""Initializer of the convolutions of Lee et al. 2017's model: Keras' default, so that its saved
models and results stay as they were."""


@dataclasses.dataclass(frozen=True)
class BlockType:
    """One type of block: what it is, how it is built, which layer ends it and what it costs.

    Attributes:
        description: What the CLI's help says of it, e.g. "residual + SE, Kim et al. 2018's ReSE-2".
        build: ``build(x, filters, m, prefix, *, conv_init, dtype) -> tensor``: appends one block
            to a symbolic tensor (batch, t, c) and returns (batch, t/m, filters); every layer is
            named ``{prefix}_...``; ``conv_init`` initializes its m-tap convolutions and ``dtype``
            is the layers' Keras dtype policy (None: Keras' default). Imports Keras itself.
        output: Suffix of the block's last layer, ``{prefix}_{output}``: what the taps read.
        multiply_adds: ``multiply_adds(steps, m, channels, filters) -> int``: multiply-adds of one
            block on ``steps`` frames of ``channels`` channels (convolutions, shortcuts included,
            and dense layers; BN, ReLU and pooling are left out, as for the whole model).
        marks: Suffixes of layers that every block of this type has and that tell the types apart
            (a model checked as this type must have them at its last block and lack the other
            types' marks).
        lee_2017: Whether, without the multi-level head, this type makes Lee et al. 2017's
            SampleCNN: a 1x1-conv head and ``LEE_CONV_INIT`` instead of Kim et al.'s dense head.
    """

    description: str
    build: Callable[..., object]
    output: str
    multiply_adds: Callable[[int, int, int, int], int]
    marks: tuple[str, ...] = ()
    lee_2017: bool = False


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
    from keras import layers

    channels = x.shape[-1]
    s = layers.GlobalAveragePooling1D(name=f"{prefix}_se_squeeze", dtype=dtype)(x)  # (batch, c)
    s = layers.Dense(channels * SE_RATIO, activation="relu", kernel_initializer=DENSE_INIT,
                     name=f"{prefix}_se_expand", dtype=dtype)(s)  # (batch, 16c)
    s = layers.Dense(channels, activation="sigmoid", kernel_initializer=DENSE_INIT,
                     name=f"{prefix}_se_gate", dtype=dtype)(s)  # (batch, c)
    s = layers.Reshape((1, channels), name=f"{prefix}_se_reshape", dtype=dtype)(s)  # (batch, 1, c): broadcasts over t
    return layers.Multiply(name=f"{prefix}_se_scale", dtype=dtype)([x, s])


def basic_block(x, filters: int, m: int, prefix: str, *, conv_init: str = CONV_INIT, dtype=None):
    """Conv1D(filters, m, same) -> BN -> ReLU -> MaxPool(m): (batch, t, c) -> (batch, t/m, filters).

    The last layer is ``{prefix}_pool``. Lee et al.'s model passes ``LEE_CONV_INIT`` as ``conv_init``.
    ``dtype``: the layers' Keras dtype policy (None: Keras' default), as in every block here.
    """
    from keras import layers

    x = layers.Conv1D(filters, m, padding="same", kernel_initializer=conv_init, name=f"{prefix}_conv",
                      dtype=dtype)(x)
    x = layers.BatchNormalization(name=f"{prefix}_bn", dtype=dtype)(x)
    x = layers.Activation("relu", name=f"{prefix}_relu", dtype=dtype)(x)
    return layers.MaxPooling1D(m, name=f"{prefix}_pool", dtype=dtype)(x)


def se_block(x, filters: int, m: int, prefix: str, *, conv_init: str = CONV_INIT, dtype=None):
    """A basic block whose output goes through squeeze-excitation; the last layer is ``{prefix}_se_scale``."""
    x = basic_block(x, filters, m, prefix, conv_init=conv_init, dtype=dtype)  # (batch, t/m, filters)
    return squeeze_excitation(x, prefix, dtype=dtype)


def residual_block(x, filters: int, m: int, prefix: str, *, excite: bool = False, conv_init: str = CONV_INIT,
                   dtype=None):
    """Res block (``excite=False``) or ReSE-2 block (``excite=True``); (batch, t, c) -> (batch, t/m, filters).

    Shortcut: the input, or Conv1D(filters, 1) -> BN where the width changes. Branch:
    Conv1D(filters, m, same) -> BN -> ReLU -> Dropout(0.2) -> Conv1D(filters, m, same) -> BN
    (-> squeeze-excitation for ReSE-2). Then add -> ReLU -> MaxPool(m); the last layer is
    ``{prefix}_pool``.
    """
    from keras import layers

    shortcut = x
    if x.shape[-1] != filters:
        shortcut = layers.Conv1D(filters, 1, kernel_initializer=DENSE_INIT, name=f"{prefix}_shortcut_conv",
                                 dtype=dtype)(x)
        shortcut = layers.BatchNormalization(name=f"{prefix}_shortcut_bn", dtype=dtype)(shortcut)
    y = layers.Conv1D(filters, m, padding="same", kernel_initializer=conv_init, name=f"{prefix}_conv1",
                      dtype=dtype)(x)
    y = layers.BatchNormalization(name=f"{prefix}_bn1", dtype=dtype)(y)
    y = layers.Activation("relu", name=f"{prefix}_relu1", dtype=dtype)(y)
    y = layers.Dropout(RES_DROPOUT, name=f"{prefix}_dropout", dtype=dtype)(y)
    y = layers.Conv1D(filters, m, padding="same", kernel_initializer=conv_init, name=f"{prefix}_conv2",
                      dtype=dtype)(y)
    y = layers.BatchNormalization(name=f"{prefix}_bn2", dtype=dtype)(y)  # (batch, t, filters)
    if excite:
        y = squeeze_excitation(y, prefix, dtype=dtype)
    x = layers.Add(name=f"{prefix}_add", dtype=dtype)([shortcut, y])
    x = layers.Activation("relu", name=f"{prefix}_relu", dtype=dtype)(x)
    return layers.MaxPooling1D(m, name=f"{prefix}_pool", dtype=dtype)(x)


def rese_block(x, filters: int, m: int, prefix: str, *, conv_init: str = CONV_INIT, dtype=None):
    """A ReSE-2 block: ``residual_block`` with squeeze-excitation on the residual branch."""
    return residual_block(x, filters, m, prefix, excite=True, conv_init=conv_init, dtype=dtype)


def _conv_macs(steps: int, m: int, channels: int, filters: int) -> int:
    """One m-tap convolution, as in the basic and SE blocks."""
    return steps * m * channels * filters


def _residual_macs(steps: int, m: int, channels: int, filters: int) -> int:
    """Two m-tap convolutions, and the 1x1 shortcut convolution where the width changes."""
    total = steps * m * channels * filters + steps * m * filters * filters
    return total + (steps * channels * filters if channels != filters else 0)


def _se_macs(filters: int) -> int:
    """The excitation's two dense layers, filters -> filters x SE_RATIO -> filters."""
    return 2 * filters * filters * SE_RATIO


BLOCKS: dict[str, BlockType] = {
    "basic": BlockType(
        description="Lee et al. 2017", build=basic_block, output="pool", multiply_adds=_conv_macs, lee_2017=True),
    "se": BlockType(
        description="squeeze-and-excitation", build=se_block, output="se_scale", marks=("se_scale",),
        multiply_adds=lambda steps, m, c, f: _conv_macs(steps, m, c, f) + _se_macs(f)),
    "res": BlockType(
        description="residual", build=residual_block, output="pool", marks=("add",), multiply_adds=_residual_macs),
    "rese": BlockType(
        description="residual + SE, Kim et al. 2018's ReSE-2", build=rese_block, output="pool",
        marks=("add", "se_scale"), multiply_adds=lambda steps, m, c, f: _residual_macs(steps, m, c, f) + _se_macs(f)),
}
"""Block types by name: Lee et al. 2017's conv block, and the SE, Res and ReSE-2 blocks of Kim et al.
2018. Iterating gives the names, in the order the CLI lists them."""


def block_type(block: str) -> BlockType:
    """The registry entry of ``block``; raises ValueError naming the known types."""
    try:
        return BLOCKS[block]
    except (KeyError, TypeError):
        raise ValueError(f"block must be one of {', '.join(map(repr, BLOCKS))}, got {block!r}") from None


def describe_blocks() -> str:
    """The block types and their descriptions, for help texts: "basic (Lee et al. 2017), ... or rese (...)"."""
    items = [f"{name} ({entry.description})" for name, entry in BLOCKS.items()]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def block_output_name(block: str, i: int) -> str:
    """Name of the last layer of block ``i`` (from 1) of type ``block``."""
    return f"block{i}_{block_type(block).output}"


def apply_block(x, block: str, filters: int, m: int, i: int, *, conv_init: str = CONV_INIT, dtype=None):
    """Applies block ``i`` (from 1) of type ``block`` (a key of ``BLOCKS``): layers ``block{i}_...``."""
    return block_type(block).build(x, filters, m, f"block{i}", conv_init=conv_init, dtype=dtype)


def block_multiply_adds(block: str, steps: int, m: int, channels: int, filters: int) -> int:
    """Multiply-adds of one block on an input of ``steps`` frames and ``channels`` channels.

    Counts the convolutions (shortcut included) and the SE dense layers; BN, ReLU and pooling
    are left out, as for the whole model.
    """
    return int(block_type(block).multiply_adds(steps, m, channels, filters))
