"""The SampleCNN m^n family (Lee et al. 2017) and its Kim et al. 2018 variants, with named taps."""

from __future__ import annotations

import keras
from keras import layers

from msagg.models.blocks import BLOCKS, CONV_INIT, DENSE_INIT, LEE_CONV_INIT, apply_block, block_output_name
from msagg.models.specs import check_variant, get_spec, head_width, is_lee, scaled_width, tap_layer_names, variant_name

FLOAT32_LAYERS = ("output",)
"""Layers that compute in float32 whatever the model's policy: the probabilities the loss reads."""


def build_sample_cnn(
    scale: str,
    num_labels: int,
    task: str = "tags",
    width: float = 1.0,
    name: str | None = None,
    *,
    block: str = "basic",
    multi: bool = False,
    dtype: str | None = None,
) -> keras.Model:
    """Builds an uncompiled SampleCNN: Lee et al. 2017's model or a variant of Kim et al. 2018.

    Every variant starts with a stem, Conv1D(first width, m, stride m, valid) -> BN -> ReLU, and
    has the spec's ``n`` blocks of type ``block`` (``msagg.models.blocks.BLOCKS``: basic, se, res,
    rese, ...), each ending with MaxPool(m) (and, for some types, what follows it). The heads:

    - a ``lee_2017`` block type ("basic") with ``multi=False`` (Lee et al. 2017): 1x1
      Conv1D(top width) -> BN -> ReLU -> Flatten -> Dropout(0.5) -> Dense. Keras' default
      initializers (``LEE_CONV_INIT``).
    - any other variant (Kim et al. 2018): GlobalMaxPooling1D of the last block (``multi=False``)
      or of each of the last three blocks, concatenated (``multi=True``; for n = 2 the stem
      stands in for block 0) -> Dense(as wide as its input) -> BN -> ReLU -> Dropout(0.5) ->
      Dense. he_uniform for the m-tap convolutions, glorot_uniform for dense layers and the 1x1
      shortcut convolutions.

    Taps, the last three hidden layers (``msagg.models.specs.tap_layer_names``):

    - Lee et al.'s model: "-3" = ``block{n-1}_pool``, "-2" = ``block{n}_pool``, "-1" = ``relu1x1``.
    - every other variant: "-3" = output of block n-1, "-2" = output of block n (the block type's
      last layer, ``block{i}_{BlockType.output}``: ``block{i}_pool``, or ``block{i}_se_scale``
      for se), "-1" = ``head_relu``, the head's hidden dense layer after ReLU (before dropout).

    Args:
        scale: A key of ``msagg.models.specs.SCALES``, e.g. "3^9".
        num_labels: Output units.
        task: "tags" (sigmoid outputs) or "classes" (softmax outputs).
        width: Multiplier on every layer's filter count (1.0 = the paper's widths).
        name: Model name; defaults to "sample_cnn_<m>x<n>" (Lee et al.) or
            "sample_cnn_<m>x<n>_<block>[_multi]".
        block: A key of ``msagg.models.blocks.BLOCKS``, e.g. "basic", "se", "res" or "rese".
        multi: Kim et al.'s multi-level head (global max pooling of the last three blocks).
        dtype: Keras dtype policy of every layer but ``FLOAT32_LAYERS``, e.g. "mixed_bfloat16"
            (``msagg.models.specs.PRECISIONS["bf16"]``: float32 weights, bfloat16 computation, so the taps come out
            as bfloat16); None: Keras' default (float32). The output layer always computes in
            float32, so the probabilities the loss reads are float32.

    Returns:
        A model mapping float32 waveforms (batch, m^(n+1)) to float32 probabilities (batch, num_labels).

    Raises:
        ValueError: For an unknown scale, task or block, a non-bool ``multi``, or a non-positive
            width or label count.
    """
    spec = get_spec(scale)
    if task not in ("tags", "classes"):
        raise ValueError(f"task must be 'tags' or 'classes', got {task!r}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    check_variant(block, multi)
    lee = is_lee(block, multi)
    m, n = spec.m, spec.n
    conv_init = LEE_CONV_INIT if lee else CONV_INIT

    inputs = keras.Input(shape=(spec.input_length,), name="waveform")  # (batch, m^(n+1)); 3^9: (batch, 59049)
    x = layers.Reshape((spec.input_length, 1), name="expand", dtype=dtype)(inputs)  # (batch, m^(n+1), 1)
    # Strided first conv: one frame per m samples.
    x = layers.Conv1D(scaled_width(spec.first_width, width), m, strides=m, padding="valid",
                      kernel_initializer=conv_init, name="conv0", dtype=dtype)(x)
    x = layers.BatchNormalization(name="bn0", dtype=dtype)(x)
    x = layers.Activation("relu", name="relu0", dtype=dtype)(x)  # (batch, m^n, 128w); 3^9: (batch, 19683, 128)
    levels = [x]
    for i, w in enumerate(spec.block_widths, start=1):
        x = apply_block(x, block, scaled_width(w, width), m, i, conv_init=conv_init, dtype=dtype)
        levels.append(x)  # (batch, m^(n-i), w_i); 3^9 block 1: (batch, 6561, 128)
    activation = "sigmoid" if task == "tags" else "softmax"

    if lee:
        x = layers.Conv1D(scaled_width(spec.top_width, width), 1, name="conv1x1", dtype=dtype)(x)
        x = layers.BatchNormalization(name="bn1x1", dtype=dtype)(x)
        x = layers.Activation("relu", name="relu1x1", dtype=dtype)(x)  # (batch, 1, top_width)
        x = layers.Flatten(name="flatten", dtype=dtype)(x)
        x = layers.Dropout(0.5, name="dropout", dtype=dtype)(x)
        # float32 whatever ``dtype`` (FLOAT32_LAYERS): the loss reads these probabilities.
        outputs = layers.Dense(num_labels, activation=activation, name="output", dtype="float32")(x)
        return keras.Model(inputs, outputs, name=name or f"sample_cnn_{m}x{n}")

    if multi:
        pooled = [layers.GlobalMaxPooling1D(name=f"head_pool{k}", dtype=dtype)(level)
                  for k, level in enumerate(levels[-3:], start=1)]
        # (batch, w_{n-2} + w_{n-1} + w_n); 3^9: (batch, 1024)
        x = layers.Concatenate(name="head_concat", dtype=dtype)(pooled)
    else:
        x = layers.GlobalMaxPooling1D(name="head_pool", dtype=dtype)(x)  # (batch, w_n); 3^9: (batch, 512)
    x = layers.Dense(head_width(spec, width, multi), kernel_initializer=DENSE_INIT, name="head_dense",
                     dtype=dtype)(x)
    x = layers.BatchNormalization(name="head_bn", dtype=dtype)(x)
    x = layers.Activation("relu", name="head_relu", dtype=dtype)(x)  # (batch, head width)
    x = layers.Dropout(0.5, name="dropout", dtype=dtype)(x)
    outputs = layers.Dense(num_labels, activation=activation, kernel_initializer=DENSE_INIT, name="output",
                           dtype="float32")(x)
    default = f"sample_cnn_{m}x{n}_{block}" + ("_multi" if multi else "")
    return keras.Model(inputs, outputs, name=name or default)


def _computing_layers(model: keras.Model) -> list:
    """The layers whose dtype policy a precision sets: all but the input and ``FLOAT32_LAYERS``."""
    return [layer for layer in model.layers
            if layer.name not in FLOAT32_LAYERS and not isinstance(layer, layers.InputLayer)]


def model_dtype(model: keras.Model) -> str:
    """The dtype policy a SampleCNN computes in: that of its first layer after the input ("float32", ...)."""
    inner = _computing_layers(model)
    return inner[0].dtype_policy.name if inner else "float32"


def with_dtype(model: keras.Model, dtype: str) -> keras.Model:
    """The same model computing in another dtype policy, its weights copied (float32 weights either way).

    Lets a model trained in float32 run in bfloat16 (``"mixed_bfloat16"``) and the reverse. The
    model is rebuilt from its own config, so it need not come from this version of the builder;
    ``FLOAT32_LAYERS`` keep computing in float32.

    Args:
        model: A functional model, e.g. a SampleCNN loaded from its ``.keras`` file.
        dtype: A Keras dtype policy name ("float32", "mixed_bfloat16").

    Returns:
        ``model`` itself when every layer but ``FLOAT32_LAYERS`` already has that policy, else
        an uncompiled copy with the same layer names and weights.
    """
    wanted = keras.dtype_policies.get(dtype).name
    if all(layer.dtype_policy.name == wanted for layer in _computing_layers(model)):
        return model
    config = model.get_config()
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            continue
        layer["config"]["dtype"] = "float32" if layer["config"]["name"] in FLOAT32_LAYERS else wanted
    clone = model.__class__.from_config(config)
    clone.set_weights(model.get_weights())
    return clone


def _check_model(model: keras.Model, scale: str, block: str, multi: bool) -> None:
    """Raises ValueError when ``model`` is visibly not the ``scale`` ``block``/``multi`` SampleCNN.

    Looks at the last block: it must end with the type's last layer and bear the type's marks
    (``BlockType.marks``) and none of the other types' marks; there must be no block n + 1, and the
    head must be the variant's.
    """
    spec = get_spec(scale)
    names = {layer.name for layer in model.layers}
    n = spec.n
    markers = {
        block_output_name(block, n): True,
        block_output_name(block, n + 1): False,
        "relu1x1": is_lee(block, multi),
        "head_concat": multi,
    }
    own = set(BLOCKS[block].marks)
    for mark in sorted({mark for entry in BLOCKS.values() for mark in entry.marks}):
        markers.setdefault(f"block{n}_{mark}", mark in own)
    missing = [name for name, expected in markers.items() if expected and name not in names]
    extra = [name for name, expected in markers.items() if not expected and name in names]
    if missing or extra or tuple(model.input_shape) != (None, spec.input_length):
        raise ValueError(
            f"model {model.name!r} is not a {scale} SampleCNN of variant {variant_name(block, multi)!r} "
            f"(input {tuple(model.input_shape)}, expected {(None, spec.input_length)}; missing layers: "
            f"{', '.join(missing) or '-'}; unexpected layers: {', '.join(extra) or '-'}); "
            "pass the scale, block and multi it was built with")


def build_tap_extractor(model: keras.Model, scale: str, *, block: str = "basic", multi: bool = False) -> keras.Model:
    """Wraps a SampleCNN so that one forward pass returns all three taps.

    Args:
        model: A model from ``build_sample_cnn`` (or loaded from its ``.keras`` file).
        scale: Its scale key.
        block: Its block type (a key of ``msagg.models.blocks.BLOCKS``).
        multi: Whether it has the multi-level head.

    Returns:
        A model mapping (batch, input_length) waveforms to ``{"-3": (batch, t3, c3),
        "-2": (batch, t2, c2), "-1": (batch, t1, c1)}``, always 3-D: a dense tap (the "-1" of
        Kim et al.'s heads) comes as (batch, 1, c). Activations are those of inference mode
        when called with ``predict*`` or ``training=False``.

    Raises:
        ValueError: For a bad variant, or a model that lacks the variant's layers.
    """
    check_variant(block, multi)
    _check_model(model, scale, block, multi)
    outputs = {}
    for tap, layer_name in tap_layer_names(scale, block=block, multi=multi).items():
        layer = model.get_layer(layer_name)
        tensor = layer.output
        if len(tensor.shape) == 2:  # (batch, c) -> (batch, 1, c): one frame, like relu1x1's
            # In the tapped layer's dtype policy, so a bfloat16 model's taps all come out bfloat16.
            tensor = layers.Reshape((1, tensor.shape[-1]), name=f"{layer_name}_frames",
                                    dtype=layer.dtype_policy)(tensor)
        outputs[tap] = tensor
    return keras.Model(model.inputs, outputs, name=f"{model.name}_taps")
