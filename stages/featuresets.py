"""Feature sets: which taps of which scales are concatenated into one song vector, and their names.

A feature set is written as ``SCALES[@LAYERS]`` (spaces are ignored)::

    SCALES := "all" | SCALE ("+" SCALE)*      SCALE  := "m^n", e.g. 3^9 ("3x9" and "3**9" too)
    LAYERS := "last3" | TAP ("," TAP)*        TAP    := "-3" | "-2" | "-1"

A bare ``SCALES`` means ``@last3`` (the last three layers of each scale, the paper's Table 2);
``all`` means every scale of the features file. Examples: ``3^9@-1`` (one layer of one model,
Table 1), ``3^9@last3``, ``3^9@-2,-1``, ``3^8+3^9`` (Table 2), ``3^8+3^9@-1`` (several models,
one layer each), ``all@last3``.

Canonical names, used as metrics.json keys, results rows and saved classifier file names: scales
ordered by (m, n) and taps as -3, -2, -1, each once ("-3,-2,-1" is "last3"); one scale is always
written with its layers (``3^9@-1``, ``3^9@last3``); several scales with their last three layers
are written bare (``3^8+3^9``), with other layers as ``3^8+3^9@-1``.

No Keras here: the module is plain logic on names and numpy arrays.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Mapping, Sequence

import numpy as np

from data.errors import MsaggError
from data.features import scale_sort_key

TAPS = ("-3", "-2", "-1")
"""Tap keys, as ``models.sample_cnn.TAPS`` (a test checks they agree)."""
LAST3 = "last3"
ALL = "all"
LAYER_CHOICES = TAPS + (LAST3,)
"""The per-scale sets of the paper's Table 1: each tap alone, then the three together."""
PAPER_SCALES = ("2^13", "2^14", "3^8", "3^9", "4^6", "4^7", "5^5", "5^6")
TABLE2_COMBOS = (("3^9",), ("3^8", "3^9"), ("2^13", "2^14", "3^8", "3^9"), PAPER_SCALES)
"""The multi-scale sets of the paper's Table 2."""
MULTI_LEVEL, MULTI_SCALE = "multi-level", "multi-scale"
_SCALE = re.compile(r"^(\d+)\^(\d+)$")


class FeatureSetError(MsaggError):
    """A feature-set spec that cannot be parsed, or that names a scale the features lack."""


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """Which taps of which scales are concatenated into one song vector.

    Attributes:
        name: Canonical name, e.g. "3^9@-1", "3^9@last3", "3^8+3^9", "3^8+3^9@-1".
        group: "multi-level" (one scale) or "multi-scale" (several).
        scales: Scale keys, ordered by (m, n).
        layers: Tap keys taken from every scale, in concatenation order.
    """

    name: str
    group: str
    scales: tuple[str, ...]
    layers: tuple[str, ...]

    @classmethod
    def of(cls, scales: Iterable[str], layers: Iterable[str] = TAPS) -> "FeatureSet":
        """The set of ``layers`` of each of ``scales``, with its canonical name and group."""
        scales = tuple(sorted(dict.fromkeys(scales), key=scale_sort_key))
        layers = tuple(t for t in TAPS if t in set(layers))
        if not scales or not layers:
            raise ValueError(f"a feature set needs scales and layers, got {scales!r} @ {layers!r}")
        return cls(_name(scales, layers), MULTI_LEVEL if len(scales) == 1 else MULTI_SCALE, scales, layers)

    @property
    def parts(self) -> list[tuple[str, str]]:
        """(scale, tap) pairs in concatenation order."""
        return [(s, t) for s in self.scales for t in self.layers]

    @property
    def last3(self) -> bool:
        """Whether the set takes the last three layers of each scale."""
        return self.layers == TAPS

    @property
    def layers_label(self) -> str:
        """The Layers column of the results tables: "last 3", "last 3 each" or "-2, -1"."""
        if self.last3:
            return "last 3" if len(self.scales) == 1 else "last 3 each"
        return ", ".join(self.layers)


def _name(scales: Sequence[str], layers: Sequence[str]) -> str:
    layer_text = LAST3 if tuple(layers) == TAPS else ",".join(layers)
    if len(scales) > 1 and layer_text == LAST3:
        return "+".join(scales)
    return f"{'+'.join(scales)}@{layer_text}"


def normalize_scale(text: str) -> str:
    """``"3x9"``, ``"3**9"``, ``" 3^9 "`` -> ``"3^9"`` (syntax only; whether the scale exists is
    checked against a list of scales).

    Raises:
        FeatureSetError: For text that is not ``m^n``.
    """
    key = str(text).strip().replace("**", "^").replace("x", "^")
    if not _SCALE.match(key):
        raise FeatureSetError(f"{text!r} is not a scale; write it like 3^9")
    return key


def _split(text: str) -> tuple[list[str] | None, tuple[str, ...]]:
    """``"3^9+3^8 @ -1"`` -> (["3^9", "3^8"], ("-1",)); scales None for "all"."""
    compact = "".join(str(text).split())
    scales_text, sep, layers_text = compact.partition("@")
    if not scales_text:
        raise FeatureSetError(f"feature set {text!r}: no scales; write it like 3^8+3^9@-1 or all@last3")
    if sep and not layers_text:
        raise FeatureSetError(f"feature set {text!r}: no layers after '@'; use last3 or taps like -2,-1")
    layers_text = layers_text or LAST3
    if layers_text == LAST3:
        layers = TAPS
    else:
        taps = layers_text.split(",")
        bad = [t for t in taps if t not in TAPS]
        if bad:
            raise FeatureSetError(f"feature set {text!r}: unknown layer {', '.join(map(repr, bad))}; "
                                  f"layers are {LAST3} or taps among {', '.join(TAPS)} joined by ','")
        layers = tuple(t for t in TAPS if t in taps)
    if scales_text == ALL:
        return None, layers
    parts = scales_text.split("+")
    if any(not p for p in parts):
        raise FeatureSetError(f"feature set {text!r}: empty scale between '+'")
    try:
        return [normalize_scale(p) for p in parts], layers
    except FeatureSetError as err:
        raise FeatureSetError(f"feature set {text!r}: {err}") from None


def normalize_spec(text: str, known: Iterable[str] | None = None) -> str:
    """A spec's canonical text: the set's canonical name, or ``all`` / ``all@<layers>``.

    Args:
        text: A spec, e.g. "3x9 + 3^8", "3^9@-1,-2", "all@last3".
        known: When given, every named scale must be one of these (e.g. the model family's
            scales), so that a typo fails when a config is made rather than when it runs.

    Raises:
        FeatureSetError: For a malformed spec or an unknown scale.
    """
    scales, layers = _split(text)
    if scales is None:
        return ALL if layers == TAPS else f"{ALL}@{','.join(layers)}"
    if known is not None:
        known = list(known)
        unknown = [s for s in scales if s not in known]
        if unknown:
            raise FeatureSetError(f"feature set {text!r}: unknown scale {unknown[0]!r}; known: {', '.join(known)}")
    return FeatureSet.of(scales, layers).name


def join_continuations(items: Iterable[str]) -> list[str]:
    """Re-joins specs that a comma-separated list split inside their layers.

    ``--set feature_sets=3^9@-2,-1,3^8+3^9`` arrives as ``["3^9@-2", "-1", "3^8+3^9"]``; an item
    that is only a layer (``-1``, ``last3``) cannot stand alone, so it belongs to the item before.
    """
    out: list[str] = []
    for item in items:
        item = str(item).strip()
        if out and "@" in out[-1] and (item in LAYER_CHOICES):
            out[-1] = f"{out[-1]},{item}"
        else:
            out.append(item)
    return out


def parse_feature_set(text: str, available_scales: Sequence[str] | None = None, *,
                      source: str = "the features file") -> FeatureSet:
    """Parses a spec into a ``FeatureSet``.

    Args:
        text: A spec in the grammar above, e.g. "3^8+3^9@-1", "all@last3", "3^9@-2,-1".
        available_scales: The scales of the features; required for ``all``. When given, every
            named scale must be among them.
        source: How to name the features in errors.

    Raises:
        FeatureSetError: For a malformed spec, ``all`` without ``available_scales``, or a scale
            that is not available (naming the scales that are).
    """
    scales, layers = _split(text)
    if available_scales is not None:
        available = sorted(available_scales, key=scale_sort_key)
        if scales is None:
            scales = available
        missing = [s for s in scales if s not in available]
        if missing:
            raise FeatureSetError(f"feature set {text}: scale {', '.join(missing)} is not in {source} "
                                  f"(it holds {', '.join(available)})")
    elif scales is None:
        raise FeatureSetError(f"feature set {text!r}: '{ALL}' needs the scales of a features file")
    if not scales:
        raise FeatureSetError(f"feature set {text!r}: {source} holds no scales")
    return FeatureSet.of(scales, layers)


def feature_sets(available: Sequence[str], specs: Sequence[str] = (), include_single: bool = True,
                 source: str = "the features file") -> list[FeatureSet]:
    """The feature sets to evaluate, each once.

    Args:
        available: Scales in the features file.
        specs: Feature-set specs (the grammar above); empty: the paper's Table 2 sets present.
        include_single: First every scale's -3, -2, -1 and last-three sets (Table 1).
        source: How to name the file in errors.

    Returns:
        The per-scale sets (scale by scale) if asked, then ``specs`` (or the Table 2 sets) in
        order, the all-scales last-three set last.

    Raises:
        FeatureSetError: If a spec is malformed or names a scale that is not in the file.
    """
    available = sorted(available, key=scale_sort_key)
    out: dict[str, FeatureSet] = {}
    if include_single:
        for scale in available:
            for layer in LAYER_CHOICES:
                fs = FeatureSet.of([scale], TAPS if layer == LAST3 else [layer])
                out[fs.name] = fs
    if specs:
        chosen = [parse_feature_set(spec, available, source=source) for spec in specs]
    else:
        chosen = [FeatureSet.of(c) for c in TABLE2_COMBOS if all(s in available for s in c)]
    chosen.append(FeatureSet.of(available))
    for fs in chosen:
        out.setdefault(fs.name, fs)
    return list(out.values())


def assemble(features: Mapping[str, Mapping[str, np.ndarray]], feature_set: FeatureSet) -> np.ndarray:
    """Concatenates a feature set's song vectors.

    Args:
        features: Scale -> tap -> (num_songs, dim) arrays.
        feature_set: What to concatenate.

    Returns:
        float32 (num_songs, total_dim), parts in ``feature_set.parts`` order.
    """
    return np.concatenate([np.asarray(features[s][t], dtype=np.float32) for s, t in feature_set.parts], axis=1)


def read_features(ff, scales: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Scale -> tap -> float32 (num_tracks, dim) of a ``data.features.FeaturesFile`` for
    ``scales`` (default: all of the file)."""
    return {scale: {tap: ff.get(scale, tap) for tap in ff.taps(scale)} for scale in (scales or ff.scales)}
