"""Feature sets: which taps of which scales are concatenated into one song vector, and their names.

A feature set is written as ``SCALES[@LAYERS]`` (spaces are ignored)::

    SCALES := "all" | SCALE ("+" SCALE)*      SCALE  := "m^n", e.g. 3^9 ("3x9" and "3**9" too)
    LAYERS := "last3" | TAP ("," TAP)*        TAP    := "-3" | "-2" | "-1"

A bare ``SCALES`` means ``@last3`` (the last three layers of each scale, the paper's Table 2);
``all`` means every scale of the features file. Examples: ``3^9@-1`` (one layer of one model,
Table 1), ``3^9@last3``, ``3^9@-2,-1``, ``3^8+3^9`` (Table 2), ``3^8+3^9@-1`` (several models,
one layer each), ``all@last3``.

A classic set (``msagg.data.classic.CLASSIC``: ``mfcc``) may stand among the scales: ``mfcc`` alone is the
MFCC baseline, ``all+mfcc`` or ``3^9@-1+mfcc`` joins it to learned features (it takes no layers;
``@LAYERS`` applies to the scales). Its canonical name comes last: ``3^8+3^9+mfcc``.

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

from msagg.data.classic import CLASSIC
from msagg.data.errors import MsaggError
from msagg.data.formats.features import scale_sort_key
from msagg.models.specs import PAPER_SCALES, TAPS

LAST3 = "last3"
ALL = "all"
LAYER_CHOICES = TAPS + (LAST3,)
"""The per-scale sets of the paper's Table 1: each tap alone, then the three together."""
TABLE2_COMBOS = (("3^9",), ("3^8", "3^9"), ("2^13", "2^14", "3^8", "3^9"), PAPER_SCALES)
"""The multi-scale sets of the paper's Table 2."""
MULTI_LEVEL, MULTI_SCALE, CLASSIC_GROUP, COMBINED = "multi-level", "multi-scale", "classic", "learned + classic"
CLASSIC_KEY = "classic"
"""The key of the classic sets in ``read_features``' mapping (never a scale: scales are m^n)."""
_SCALE = re.compile(r"^(\d+)\^(\d+)$")


class FeatureSetError(MsaggError):
    """A feature-set spec that cannot be parsed, or that names a scale the features lack."""


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """Which taps of which scales are concatenated into one song vector.

    Attributes:
        name: Canonical name, e.g. "3^9@-1", "3^9@last3", "3^8+3^9", "3^8+3^9@-1", "mfcc",
            "3^8+3^9+mfcc".
        group: "multi-level" (one scale), "multi-scale" (several), "classic" (only a classic set)
            or "learned + classic".
        scales: Scale keys, ordered by (m, n); empty for a classic set alone.
        layers: Tap keys taken from every scale, in concatenation order (empty without scales).
        classic: Classic sets appended after the learned parts (``msagg.data.classic.CLASSIC``).
    """

    name: str
    group: str
    scales: tuple[str, ...]
    layers: tuple[str, ...]
    classic: tuple[str, ...] = ()

    @classmethod
    def of(cls, scales: Iterable[str], layers: Iterable[str] = TAPS, classic: Iterable[str] = ()) -> "FeatureSet":
        """The set of ``layers`` of each of ``scales`` (then the ``classic`` sets), with its
        canonical name and group."""
        scales = tuple(sorted(dict.fromkeys(scales), key=scale_sort_key))
        classic = tuple(c for c in CLASSIC if c in set(classic))
        layers = tuple(t for t in TAPS if t in set(layers)) if scales else ()
        if not classic and (not scales or not layers):
            raise ValueError(f"a feature set needs scales and layers, got {scales!r} @ {layers!r}")
        learned = _name(scales, layers) if scales else ""
        name = "+".join(p for p in (learned, *classic) if p)
        if not scales:
            group = CLASSIC_GROUP
        elif classic:
            group = COMBINED
        else:
            group = MULTI_LEVEL if len(scales) == 1 else MULTI_SCALE
        return cls(name, group, scales, layers, classic)

    @property
    def parts(self) -> list[tuple[str, str]]:
        """(scale, tap) pairs in concatenation order, then (``CLASSIC_KEY``, name) per classic set."""
        return [(s, t) for s in self.scales for t in self.layers] + [(CLASSIC_KEY, c) for c in self.classic]

    @property
    def blocks(self) -> list[list[tuple[str, str]]]:
        """The parts grouped into the blocks a joined set is scaled by (``msagg.stages.songs.scaling``):
        the learned parts as one block, then each classic set; a set that joins nothing is one block."""
        blocks = [[(s, t) for s in self.scales for t in self.layers]] if self.scales else []
        return blocks + [[(CLASSIC_KEY, c)] for c in self.classic]

    @property
    def learned(self) -> "FeatureSet | None":
        """The set without its classic part (None for a classic set alone)."""
        return FeatureSet.of(self.scales, self.layers) if self.scales else None

    @property
    def last3(self) -> bool:
        """Whether the set takes the last three layers of each scale."""
        return self.layers == TAPS

    @property
    def layers_label(self) -> str:
        """The Layers column of the results tables: "last 3", "last 3 each", "-2, -1", or "-" for a
        classic set alone."""
        if not self.scales:
            return "-"
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


def _split(text: str) -> tuple[list[str] | None, tuple[str, ...], tuple[str, ...]]:
    """``"3^9+3^8 @ -1"`` -> (["3^9", "3^8"], ("-1",), ()); scales None for "all";
    ``"all+mfcc"`` -> (None, TAPS, ("mfcc",)); ``"mfcc"`` -> ([], (), ("mfcc",))."""
    compact = "".join(str(text).split())
    names: list[str] = []
    layer_texts: list[str] = []
    for token in compact.split("+"):
        name, sep, layers_text = token.partition("@")
        names.append(name)
        if sep:
            if not layers_text:
                raise FeatureSetError(f"feature set {text!r}: no layers after '@'; use last3 or taps like -2,-1")
            layer_texts.append(layers_text)
    if len(layer_texts) > 1:
        raise FeatureSetError(f"feature set {text!r}: one '@' per set; its layers apply to every scale")
    classic = tuple(n for n in names if n in CLASSIC)
    if len(set(classic)) != len(classic):
        raise FeatureSetError(f"feature set {text!r}: a classic set named twice")
    names = [n for n in names if n not in CLASSIC]
    if classic and not names:
        if layer_texts:
            raise FeatureSetError(f"feature set {text!r}: {classic[0]} takes no layers ('@' applies to scales)")
        return [], (), classic
    if names == [""] or not compact:
        raise FeatureSetError(f"feature set {text!r}: no scales; write it like 3^8+3^9@-1 or all@last3")
    layers_text = layer_texts[0] if layer_texts else LAST3
    if layers_text == LAST3:
        layers = TAPS
    else:
        taps = layers_text.split(",")
        bad = [t for t in taps if t not in TAPS]
        if bad:
            raise FeatureSetError(f"feature set {text!r}: unknown layer {', '.join(map(repr, bad))}; "
                                  f"layers are {LAST3} or taps among {', '.join(TAPS)} joined by ','")
        layers = tuple(t for t in TAPS if t in taps)
    if names == [ALL]:
        return None, layers, classic
    if any(not n for n in names):
        raise FeatureSetError(f"feature set {text!r}: empty scale between '+'")
    try:
        return [normalize_scale(n) for n in names], layers, classic
    except FeatureSetError as err:
        raise FeatureSetError(f"feature set {text!r}: {err}") from None


def normalize_spec(text: str, known: Iterable[str] | None = None) -> str:
    """A spec's canonical text: the set's canonical name, or ``all`` / ``all@<layers>`` (then
    ``+mfcc`` when it joins a classic set).

    Args:
        text: A spec, e.g. "3x9 + 3^8", "3^9@-1,-2", "all@last3", "all+mfcc", "mfcc".
        known: When given, every named scale must be one of these (e.g. the model family's
            scales), so that a typo fails when a config is made rather than when it runs.

    Raises:
        FeatureSetError: For a malformed spec or an unknown scale.
    """
    scales, layers, classic = _split(text)
    if scales is None:
        learned = ALL if layers == TAPS else f"{ALL}@{','.join(layers)}"
        return "+".join((learned, *(c for c in CLASSIC if c in classic)))
    if known is not None:
        known = list(known)
        unknown = [s for s in scales if s not in known]
        if unknown:
            raise FeatureSetError(f"feature set {text!r}: unknown scale {unknown[0]!r}; known: {', '.join(known)}")
    return FeatureSet.of(scales, layers, classic).name


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
                      source: str = "the features file", available_classic: Sequence[str] | None = None) -> FeatureSet:
    """Parses a spec into a ``FeatureSet``.

    Args:
        text: A spec in the grammar above, e.g. "3^8+3^9@-1", "all@last3", "3^9@-2,-1", "all+mfcc".
        available_scales: The scales of the features; required for ``all``. When given, every
            named scale must be among them.
        source: How to name the features in errors.
        available_classic: The classic sets of the features; when given, a named one must be
            among them.

    Raises:
        FeatureSetError: For a malformed spec, ``all`` without ``available_scales``, or a scale
            or classic set that is not available (naming those that are).
    """
    scales, layers, classic = _split(text)
    if available_classic is not None:
        missing = [c for c in classic if c not in available_classic]
        if missing:
            raise FeatureSetError(f"feature set {text}: {source} holds no {missing[0]} features "
                                  f"(extract them with --classic {missing[0]})")
    if scales == [] and classic:
        return FeatureSet.of((), (), classic)
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
    return FeatureSet.of(scales, layers, classic)


def feature_sets(available: Sequence[str], specs: Sequence[str] = (), include_single: bool = True,
                 source: str = "the features file", classic: Sequence[str] = ()) -> list[FeatureSet]:
    """The feature sets to evaluate, each once.

    Args:
        available: Scales in the features file.
        specs: Feature-set specs (the grammar above); empty: the paper's Table 2 sets present.
        include_single: First every scale's -3, -2, -1 and last-three sets (Table 1).
        source: How to name the file in errors.
        classic: Classic sets in the features file; each is evaluated alone and joined to the
            all-scales set (the baseline rows of every report).

    Returns:
        The per-scale sets (scale by scale) if asked, then ``specs`` (or the Table 2 sets) in
        order, the all-scales last-three set, then each classic set alone and joined to it.

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
        chosen = [parse_feature_set(spec, available, source=source, available_classic=classic) for spec in specs]
    else:
        chosen = [FeatureSet.of(c) for c in TABLE2_COMBOS if all(s in available for s in c)]
    chosen.append(FeatureSet.of(available))
    for name in classic:
        chosen += [FeatureSet.of((), (), [name]), FeatureSet.of(available, TAPS, [name])]
    for fs in chosen:
        out.setdefault(fs.name, fs)
    return list(out.values())


def assemble(features: Mapping[str, Mapping[str, np.ndarray]], feature_set: FeatureSet) -> np.ndarray:
    """Concatenates a feature set's song vectors.

    Args:
        features: Scale -> tap -> (num_songs, dim) arrays, and ``CLASSIC_KEY`` -> name -> arrays
            (``read_features``).
        feature_set: What to concatenate.

    Returns:
        float32 (num_songs, total_dim), parts in ``feature_set.parts`` order.
    """
    return np.concatenate([np.asarray(features[s][t], dtype=np.float32) for s, t in feature_set.parts], axis=1)


def block_dims(features: Mapping[str, Mapping[str, np.ndarray]], feature_set: FeatureSet) -> tuple[int, ...]:
    """The dimension of each of ``feature_set.blocks`` (in ``assemble``'s column order)."""
    return tuple(sum(int(np.shape(features[s][t])[1]) for s, t in block) for block in feature_set.blocks)


def read_features(ff, scales: Sequence[str] | None = None,
                  classic: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Scale -> tap -> float32 (num_tracks, dim) of a ``msagg.data.formats.features.FeaturesFile`` for
    ``scales`` (default: all of the file), and ``CLASSIC_KEY`` -> name -> float32 (num_tracks, dim)
    for ``classic`` (default: all of the file; the key is absent when there are none)."""
    out = {scale: {tap: ff.get(scale, tap) for tap in ff.taps(scale)} for scale in (scales or ff.scales)}
    names = ff.classic if classic is None else list(classic)
    if names:
        out[CLASSIC_KEY] = {name: ff.get_classic(name) for name in names}
    return out
