"""The SampleCNN m^n family (Lee et al. 2017) with named taps on its last three hidden layers."""

from __future__ import annotations

import dataclasses

import keras
from keras import layers

TAPS = ("-3", "-2", "-1")
"""Tap keys, from the deepest but two to the deepest hidden layer."""


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


def tap_layer_names(scale: str) -> dict[str, str]:
    """Maps tap keys to the names of the layers they read."""
    n = get_spec(scale).n
    return {"-3": f"block{n - 1}_pool", "-2": f"block{n}_pool", "-1": "relu1x1"}


def build_sample_cnn(
    scale: str,
    num_labels: int,
    task: str = "tags",
    width: float = 1.0,
    name: str | None = None,
) -> keras.Model:
    """Builds an uncompiled SampleCNN.

    Args:
        scale: A key of ``SCALES``, e.g. "3^9".
        num_labels: Output units.
        task: "tags" (sigmoid outputs) or "classes" (softmax outputs).
        width: Multiplier on every layer's filter count (1.0 = the paper's widths).
        name: Model name; defaults to "sample_cnn_<m>x<n>".

    Returns:
        A model mapping float32 waveforms (batch, m^(n+1)) to probabilities (batch, num_labels).

    Raises:
        ValueError: For an unknown scale or task, or a non-positive width or label count.
    """
    spec = get_spec(scale)
    if task not in ("tags", "classes"):
        raise ValueError(f"task must be 'tags' or 'classes', got {task!r}")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    if num_labels < 1:
        raise ValueError(f"num_labels must be at least 1, got {num_labels}")
    m = spec.m

    inputs = keras.Input(shape=(spec.input_length,), name="waveform")  # (batch, m^(n+1))
    x = layers.Reshape((spec.input_length, 1), name="expand")(inputs)  # (batch, m^(n+1), 1)
    # Strided first conv: one frame per m samples.
    x = layers.Conv1D(_scaled(spec.first_width, width), m, strides=m, padding="valid", name="conv0")(x)
    x = layers.BatchNormalization(name="bn0")(x)
    x = layers.Activation("relu", name="relu0")(x)  # (batch, m^n, 128w)
    for i, w in enumerate(spec.block_widths, start=1):
        x = layers.Conv1D(_scaled(w, width), m, padding="same", name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.Activation("relu", name=f"block{i}_relu")(x)
        x = layers.MaxPooling1D(m, name=f"block{i}_pool")(x)  # (batch, m^(n-i), w_i)
    x = layers.Conv1D(_scaled(spec.top_width, width), 1, name="conv1x1")(x)
    x = layers.BatchNormalization(name="bn1x1")(x)
    x = layers.Activation("relu", name="relu1x1")(x)  # (batch, 1, top_width)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    activation = "sigmoid" if task == "tags" else "softmax"
    outputs = layers.Dense(num_labels, activation=activation, name="output")(x)
    return keras.Model(inputs, outputs, name=name or f"sample_cnn_{m}x{spec.n}")


def scale_of(model: keras.Model) -> str:
    """Recovers the scale key of a model built by ``build_sample_cnn``."""
    prefix = "sample_cnn_"
    if not model.name.startswith(prefix):
        raise ValueError(f"model {model.name!r} was not built by build_sample_cnn")
    m, n = model.name[len(prefix):].split("x")
    return f"{m}^{n}"


def build_tap_extractor(model: keras.Model, scale: str | None = None) -> keras.Model:
    """Wraps a SampleCNN so that one forward pass returns all three taps.

    Args:
        model: A model from ``build_sample_cnn`` (or loaded from its ``.keras`` file).
        scale: Its scale key; recovered from the model name when omitted.

    Returns:
        A model mapping (batch, input_length) waveforms to ``{"-3": (batch, t3, c3),
        "-2": (batch, t2, c2), "-1": (batch, 1, c1)}`` (inference mode activations).
    """
    scale = scale or scale_of(model)
    outputs = {tap: model.get_layer(layer).output for tap, layer in tap_layer_names(scale).items()}
    return keras.Model(model.inputs, outputs, name=f"{model.name}_taps")


def count_multiply_adds(scale: str, width: float = 1.0, num_labels: int = 50) -> int:
    """Counts the multiply-adds of one forward pass on one segment (convolutions and dense)."""
    spec = get_spec(scale)
    m = spec.m
    steps = spec.input_length // m
    channels = _scaled(spec.first_width, width)
    total = steps * m * 1 * channels
    for w in spec.block_widths:
        w = _scaled(w, width)
        total += steps * m * channels * w
        channels = w
        steps //= m
    top = _scaled(spec.top_width, width)
    total += steps * channels * top
    total += top * num_labels
    return int(total)


def tap_dims(scale: str, width: float = 1.0) -> dict[str, int]:
    """Channels of each tap."""
    spec = get_spec(scale)
    return {
        "-3": _scaled(spec.block_widths[-2], width),
        "-2": _scaled(spec.block_widths[-1], width),
        "-1": _scaled(spec.top_width, width),
    }


def segment_seconds(scale: str, sample_rate: int = 22050) -> float:
    """Duration of one input segment in seconds."""
    return get_spec(scale).input_length / sample_rate


def parse_scale(text: str) -> str:
    """Normalizes "3^9", "3x9" or "3**9" to the key "3^9"; raises ValueError if unknown."""
    key = text.strip().replace("**", "^").replace("x", "^")
    get_spec(key)
    return key


