"""The SampleCNN m^n family (Lee et al. 2017) and its Kim et al. 2018 variants, with named taps."""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

from msagg.models.blocks import BLOCKS, SE_RATIO  # noqa: F401 - the variants' public constants live here too
from msagg.models.blocks import CONV_INIT, DENSE_INIT, apply_block, basic_block, block_multiply_adds, block_output_name

TAPS = ("-3", "-2", "-1")
"""Tap keys, from the deepest but two to the deepest hidden layer."""

PRECISIONS = {"float32": "float32", "bf16": "mixed_bfloat16"}
"""Precision names (what users type) -> the Keras dtype policy a model is built with. "bf16" is Keras'
mixed precision: weights stay float32, layers compute in bfloat16."""

FLOAT32_LAYERS = ("output",)
"""Layers that compute in float32 whatever the model's policy: the probabilities the loss reads."""


@dataclasses.dataclass(frozen=True)
class SampleCNNSpec:
    """One member of the family.

    Attributes:
        m: Filter size and pooling size (samples).
        n: Number of conv + pool blocks.
        block_widths: Filters of each of the ``n`` blocks.
        top_width: Filters of the final 1x1 convolution.
        first_width: Filters of the strided first convolution.
    """

    m: int
    n: int
    block_widths: tuple[int, ...]
    top_width: int
    first_width: int = 128

    def __post_init__(self):
        if len(self.block_widths) != self.n:
            raise ValueError(f"{self.m}^{self.n}: {len(self.block_widths)} block widths for {self.n} blocks")
        if self.n < 2:
            raise ValueError(f"{self.m}^{self.n}: need at least 2 blocks to have three taps")

    @property
    def input_length(self) -> int:
        """Samples in one input segment: m^(n+1)."""
        return self.m ** (self.n + 1)


# The paper's eight scales (Lee & Nam 2017, Table 2), plus small ones for tests.
SCALES: dict[str, SampleCNNSpec] = {
    "2^13": SampleCNNSpec(2, 13, (128, 128) + (256,) * 10 + (512,), 512),
    "2^14": SampleCNNSpec(2, 14, (128, 128) + (256,) * 10 + (512, 512), 512),
    "3^8": SampleCNNSpec(3, 8, (128, 128) + (256,) * 6, 256),
    "3^9": SampleCNNSpec(3, 9, (128, 128) + (256,) * 6 + (512,), 512),
    "4^6": SampleCNNSpec(4, 6, (128, 128, 256, 256, 256, 512), 512),
    "4^7": SampleCNNSpec(4, 7, (128, 128) + (256,) * 4 + (512,), 512),
    "5^5": SampleCNNSpec(5, 5, (128, 128, 256, 256, 512), 512),
    "5^6": SampleCNNSpec(5, 6, (128, 128, 256, 256, 256, 512), 512),
    # Test scales: tiny inputs (27 and 64 samples), same structure.
    "3^2": SampleCNNSpec(3, 2, (128, 256), 256),
    "4^2": SampleCNNSpec(4, 2, (128, 256), 256),
}
PAPER_SCALES = ("2^13", "2^14", "3^8", "3^9", "4^6", "4^7", "5^5", "5^6")


def get_spec(scale: str) -> SampleCNNSpec:
    """Returns the spec of ``scale``; raises ValueError naming the known scales."""
    try:
        return SCALES[scale]
    except KeyError:
        raise ValueError(f"unknown scale {scale!r}; known: {', '.join(SCALES)}") from None


def _scaled(width: int, multiplier: float) -> int:
    return max(4, int(round(width * multiplier)))


def _check_variant(block: str, multi: bool) -> None:
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {', '.join(map(repr, BLOCKS))}, got {block!r}")
    if not isinstance(multi, bool):
        raise ValueError(f"multi must be a bool (True or False), got {multi!r}")


def _is_lee(block: str, multi: bool) -> bool:
    """True for Lee et al.'s model (1x1 conv head); every other variant has Kim et al.'s dense head."""
    return block == "basic" and not multi


def variant_name(block: str = "basic", multi: bool = False) -> str:
    """A label for logs and tables: "basic", "se", "rese+multi" ...; raises ValueError for a bad variant."""
    _check_variant(block, multi)
    return f"{block}+multi" if multi else block


def _level_widths(spec: SampleCNNSpec, width: float) -> list[int]:
    """Channels of the stem and of each block's output, scaled."""
    return [_scaled(w, width) for w in (spec.first_width, *spec.block_widths)]


def _head_width(spec: SampleCNNSpec, width: float, multi: bool) -> int:
    """Units of the dense head of Kim et al.: the width of what it reads."""
    levels = _level_widths(spec, width)
    return sum(levels[-3:]) if multi else levels[-1]


def tap_layer_names(scale: str, *, block: str = "basic", multi: bool = False) -> dict[str, str]:
    """Maps tap keys to the names of the layers they read (see ``build_sample_cnn``)."""
    n = get_spec(scale).n
    _check_variant(block, multi)
    if _is_lee(block, multi):
        return {"-3": f"block{n - 1}_pool", "-2": f"block{n}_pool", "-1": "relu1x1"}
    return {"-3": block_output_name(block, n - 1), "-2": block_output_name(block, n), "-1": "head_relu"}


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
    has the spec's ``n`` blocks, each ending with MaxPool(m). The heads:

    - ``block="basic", multi=False`` (Lee et al. 2017): 1x1 Conv1D(top width) -> BN -> ReLU ->
      Flatten -> Dropout(0.5) -> Dense. Keras' default initializers.
    - any other variant (Kim et al. 2018): GlobalMaxPooling1D of the last block (``multi=False``)
      or of each of the last three blocks, concatenated (``multi=True``; for n = 2 the stem
      stands in for block 0) -> Dense(as wide as its input) -> BN -> ReLU -> Dropout(0.5) ->
      Dense. he_uniform for the m-tap convolutions, glorot_uniform for dense layers and the 1x1
      shortcut convolutions.

    Blocks (``msagg.models.blocks``): basic = Conv1D(w, m, same) -> BN -> ReLU -> MaxPool(m); se = basic
    then squeeze-excitation (Dense(16w, ReLU) -> Dense(w, sigmoid) gates); res = residual block
    with two m-tap convolutions; rese = res with squeeze-excitation on the residual branch.

    Taps, the last three hidden layers (``tap_layer_names``):

    - basic without multi: "-3" = ``block{n-1}_pool``, "-2" = ``block{n}_pool``, "-1" = ``relu1x1``.
    - every other variant: "-3" = output of block n-1, "-2" = output of block n (``block{i}_pool``,
      or ``block{i}_se_scale`` for se), "-1" = ``head_relu``, the head's hidden dense layer after
      ReLU (before dropout).

    Args:
        scale: A key of ``SCALES``, e.g. "3^9".
        num_labels: Output units.
        task: "tags" (sigmoid outputs) or "classes" (softmax outputs).
        width: Multiplier on every layer's filter count (1.0 = the paper's widths).
        name: Model name; defaults to "sample_cnn_<m>x<n>" (Lee et al.) or
            "sample_cnn_<m>x<n>_<block>[_multi]".
        block: One of ``BLOCKS``: "basic", "se", "res" or "rese".
        multi: Kim et al.'s multi-level head (global max pooling of the last three blocks).
        dtype: Keras dtype policy of every layer but ``FLOAT32_LAYERS``, e.g. "mixed_bfloat16"
            (``PRECISIONS["bf16"]``: float32 weights, bfloat16 computation, so the taps come out
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
    _check_variant(block, multi)
    lee = _is_lee(block, multi)
    m, n = spec.m, spec.n
    # Keras' default for Lee et al.'s model (so its saved models and results stay as they were).
    conv_init = "glorot_uniform" if lee else CONV_INIT

    inputs = keras.Input(shape=(spec.input_length,), name="waveform")  # (batch, m^(n+1)); 3^9: (batch, 59049)
    x = layers.Reshape((spec.input_length, 1), name="expand", dtype=dtype)(inputs)  # (batch, m^(n+1), 1)
    # Strided first conv: one frame per m samples.
    x = layers.Conv1D(_scaled(spec.first_width, width), m, strides=m, padding="valid",
                      kernel_initializer=conv_init, name="conv0", dtype=dtype)(x)
    x = layers.BatchNormalization(name="bn0", dtype=dtype)(x)
    x = layers.Activation("relu", name="relu0", dtype=dtype)(x)  # (batch, m^n, 128w); 3^9: (batch, 19683, 128)
    levels = [x]
    for i, w in enumerate(spec.block_widths, start=1):
        if lee:
            x = basic_block(x, _scaled(w, width), m, f"block{i}", kernel_initializer=conv_init, dtype=dtype)
        else:
            x = apply_block(x, block, _scaled(w, width), m, i, dtype=dtype)
        levels.append(x)  # (batch, m^(n-i), w_i); 3^9 block 1: (batch, 6561, 128)
    activation = "sigmoid" if task == "tags" else "softmax"

    if lee:
        x = layers.Conv1D(_scaled(spec.top_width, width), 1, name="conv1x1", dtype=dtype)(x)
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
    x = layers.Dense(_head_width(spec, width, multi), kernel_initializer=DENSE_INIT, name="head_dense",
                     dtype=dtype)(x)
    x = layers.BatchNormalization(name="head_bn", dtype=dtype)(x)
    x = layers.Activation("relu", name="head_relu", dtype=dtype)(x)  # (batch, head width)
    x = layers.Dropout(0.5, name="dropout", dtype=dtype)(x)
    outputs = layers.Dense(num_labels, activation=activation, kernel_initializer=DENSE_INIT, name="output",
                           dtype="float32")(x)
    default = f"sample_cnn_{m}x{n}_{block}" + ("_multi" if multi else "")
    return keras.Model(inputs, outputs, name=name or default)


def dtype_policy(precision: str) -> str:
    """The Keras dtype policy of a precision name ("float32" or "bf16"); ValueError naming the choices."""
    try:
        return PRECISIONS[precision]
    except (KeyError, TypeError):
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}") from None


def build_dtype(precision: str) -> str | None:
    """The ``dtype`` of ``build_sample_cnn`` for a precision name: None (the builder's default) for
    "float32", else its policy; ValueError naming the choices."""
    policy = dtype_policy(precision)
    return None if policy == "float32" else policy


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
    """Raises ValueError when ``model`` is visibly not the ``scale`` ``block``/``multi`` SampleCNN."""
    spec = get_spec(scale)
    names = {layer.name for layer in model.layers}
    n = spec.n
    markers = {
        f"block{n}_pool": True,
        f"block{n + 1}_pool": False,
        "relu1x1": _is_lee(block, multi),
        "head_concat": multi,
        f"block{n}_add": block in ("res", "rese"),
        f"block{n}_se_scale": block in ("se", "rese"),
    }
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
        block: Its block type (one of ``BLOCKS``).
        multi: Whether it has the multi-level head.

    Returns:
        A model mapping (batch, input_length) waveforms to ``{"-3": (batch, t3, c3),
        "-2": (batch, t2, c2), "-1": (batch, t1, c1)}``, always 3-D: a dense tap (the "-1" of
        Kim et al.'s heads) comes as (batch, 1, c). Activations are those of inference mode
        when called with ``predict*`` or ``training=False``.

    Raises:
        ValueError: For a bad variant, or a model that lacks the variant's layers.
    """
    _check_variant(block, multi)
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


def count_multiply_adds(scale: str, width: float = 1.0, num_labels: int = 50, *, block: str = "basic",
                        multi: bool = False) -> int:
    """Counts the multiply-adds of one forward pass on one segment.

    Convolutions (shortcuts included), squeeze-excitation and head dense layers; BN, activations
    and pooling are left out.
    """
    spec = get_spec(scale)
    _check_variant(block, multi)
    m = spec.m
    steps = spec.input_length // m
    channels = _scaled(spec.first_width, width)
    total = steps * m * 1 * channels
    for w in spec.block_widths:
        w = _scaled(w, width)
        total += block_multiply_adds(block, steps, m, channels, w)
        channels = w
        steps //= m
    if _is_lee(block, multi):
        top = _scaled(spec.top_width, width)
        total += steps * channels * top + top * num_labels
    else:
        head = _head_width(spec, width, multi)
        total += head * head + head * num_labels
    return int(total)


def tap_dims(scale: str, width: float = 1.0, *, block: str = "basic", multi: bool = False) -> dict[str, int]:
    """Channels of each tap."""
    spec = get_spec(scale)
    _check_variant(block, multi)
    last = _scaled(spec.top_width, width) if _is_lee(block, multi) else _head_width(spec, width, multi)
    return {
        "-3": _scaled(spec.block_widths[-2], width),
        "-2": _scaled(spec.block_widths[-1], width),
        "-1": last,
    }


def segment_seconds(scale: str, sample_rate: int = 22050) -> float:
    """Duration of one input segment in seconds."""
    return get_spec(scale).input_length / sample_rate


def parse_scale(text: str) -> str:
    """Normalizes "3^9", "3x9" or "3**9" to the key "3^9"; raises ValueError if unknown."""
    key = text.strip().replace("**", "^").replace("x", "^")
    get_spec(key)
    return key


