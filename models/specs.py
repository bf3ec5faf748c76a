"""The SampleCNN family's table of scales, taps, variants and precisions, without Keras.

Configs, the CLI, feature sets and reports import this module to name and check scales, taps and
variants, and to count channels and multiply-adds, without loading Keras; the builder
(``msagg.models.sample_cnn``) reads the same table.
"""

from __future__ import annotations

import dataclasses
import re

from msagg.models.blocks import block_multiply_adds, block_output_name, block_type

TAPS = ("-3", "-2", "-1")
"""Tap keys, from the deepest but two to the deepest hidden layer."""

PRECISIONS = {"float32": "float32", "bf16": "mixed_bfloat16"}
"""Precision names (what users type) -> the Keras dtype policy a model is built with. "bf16" is Keras'
mixed precision: weights stay float32, layers compute in bfloat16."""


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


def parse_scale(text: str) -> str:
    """Normalizes "3^9", "3x9" or "3**9" to the key "3^9"; raises ValueError (naming ``text`` as given) if unknown."""
    key = re.sub(r"^(\d+)\s*(?:\^|\*\*|x)\s*(\d+)$", r"\1^\2", text.strip())
    if key not in SCALES:
        raise ValueError(f"unknown scale {text!r}; known: {', '.join(SCALES)}")
    return key


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


def check_variant(block: str, multi: bool) -> None:
    """Raises ValueError for a block type not in ``msagg.models.blocks.BLOCKS`` or a non-bool ``multi``."""
    block_type(block)
    if not isinstance(multi, bool):
        raise ValueError(f"multi must be a bool (True or False), got {multi!r}")


def is_lee(block: str, multi: bool) -> bool:
    """True for Lee et al.'s model (1x1 conv head); every other variant has Kim et al.'s dense head."""
    return block_type(block).lee_2017 and not multi


def variant_name(block: str = "basic", multi: bool = False) -> str:
    """A label for logs and tables: "basic", "se", "rese+multi" ...; raises ValueError for a bad variant."""
    check_variant(block, multi)
    return f"{block}+multi" if multi else block


def scaled_width(width: int, multiplier: float) -> int:
    """A layer's filters under the width multiplier (at least 4)."""
    return max(4, int(round(width * multiplier)))


def level_widths(spec: SampleCNNSpec, width: float) -> list[int]:
    """Channels of the stem and of each block's output, scaled."""
    return [scaled_width(w, width) for w in (spec.first_width, *spec.block_widths)]


def head_width(spec: SampleCNNSpec, width: float, multi: bool) -> int:
    """Units of the dense head of Kim et al.: the width of what it reads."""
    levels = level_widths(spec, width)
    return sum(levels[-3:]) if multi else levels[-1]


def tap_layer_names(scale: str, *, block: str = "basic", multi: bool = False) -> dict[str, str]:
    """Maps tap keys to the names of the layers they read (see ``msagg.models.sample_cnn.build_sample_cnn``)."""
    n = get_spec(scale).n
    check_variant(block, multi)
    if is_lee(block, multi):
        return {"-3": f"block{n - 1}_pool", "-2": f"block{n}_pool", "-1": "relu1x1"}
    return {"-3": block_output_name(block, n - 1), "-2": block_output_name(block, n), "-1": "head_relu"}


def tap_dims(scale: str, width: float = 1.0, *, block: str = "basic", multi: bool = False) -> dict[str, int]:
    """Channels of each tap."""
    spec = get_spec(scale)
    check_variant(block, multi)
    last = scaled_width(spec.top_width, width) if is_lee(block, multi) else head_width(spec, width, multi)
    return {
        "-3": scaled_width(spec.block_widths[-2], width),
        "-2": scaled_width(spec.block_widths[-1], width),
        "-1": last,
    }


def count_multiply_adds(scale: str, width: float = 1.0, num_labels: int = 50, *, block: str = "basic",
                        multi: bool = False) -> int:
    """Counts the multiply-adds of one forward pass on one segment.

    Convolutions (shortcuts included), squeeze-excitation and head dense layers; BN, activations
    and pooling are left out. Each block's share is its type's count (``BlockType.multiply_adds``).
    """
    spec = get_spec(scale)
    check_variant(block, multi)
    m = spec.m
    steps = spec.input_length // m
    channels = scaled_width(spec.first_width, width)
    total = steps * m * 1 * channels
    for w in spec.block_widths:
        w = scaled_width(w, width)
        total += block_multiply_adds(block, steps, m, channels, w)
        channels = w
        steps //= m
    if is_lee(block, multi):
        top = scaled_width(spec.top_width, width)
        total += steps * channels * top + top * num_labels
    else:
        head = head_width(spec, width, multi)
        total += head * head + head * num_labels
    return int(total)

