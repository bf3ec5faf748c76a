"""The features file (features.h5): song-level vectors per track, per model scale, per tap.

This docstring is the one place the layout is documented (docs/DESIGN.md mirrors it).

Schema version 1::

    attrs
      schema_version   int 1; readers refuse any other version
      config_hash      str, the extract run's config hash
      song_pool        str, "mean" | "max" | "meanmax" | "meanstd" (how segment vectors became one
                       song vector)
      dataset          str, the dataset of the audio cache the features come from
      pretrain_dataset str, the dataset the models were trained on ("" when unknown)
      task             str, "tags" (multi-label) | "classes" (single-label)
      precision        str, optional: what the models computed in, "float32" | "bf16" (bfloat16
                       layers, Keras' mixed_bfloat16); the features are float32 either way. Files
                       written before it existed lack it and read as "float32"
                       (``FeaturesFile.precision``)
      segments         str, optional: how songs were cut into segments, "cover" | "drop"
                       (``msagg.data.segments``). Files written before it existed lack it and read as
                       "drop" (``FeaturesFile.segments``)
      complete         bool, True once every row is written and the file is finalized
      num_done         int, rows [0, num_done) are final (advanced after each flushed batch)
      text_sha256      str, optional: JSON, each text table's path (/track_ids, /label_names,
                       /split) -> sha256 of its values (``msagg.data.integrity.text_sha256``). Files
                       written before it existed lack it and read unverified
    /track_ids         str (N,), same order as the audio cache
    /labels            uint8 (N, L), multi-hot (one-hot for classes)
    /label_names       str (L,)
    /split             str (N,), "train" | "valid" | "test"
    /features/<scale>/<tap>   float32 (N, dim): the tap's activations max-pooled over time within
                       each segment, then pooled over the song's segments (mean, max, or two
                       concatenated: [mean, max] for "meanmax", [mean, std] for "meanstd", so
                       dim = 2 x channels)
    /features/<scale> attrs   input_length (samples), sample_rate (Hz), model_hash (sha256 of
                       model.keras), num_params; and the model variant: block (str, e.g. "basic"),
                       multi (bool, the in-network multi-level head), tap_layers (JSON str, tap key
                       -> name of the layer it reads). Files written before these three existed
                       lack them; readers take "basic", False and {} (``FeaturesFile.variant``)
    /num_segments/<scale>     int32 (N,), segments per track at that scale
    /classic/<name>    float32 (N, dim), optional: a classic hand-crafted song vector computed from
                       the same audio (``msagg.data.classic``; "mfcc": 120 MFCC/delta/delta2 mean and std
                       statistics), the baseline that reports compare learned features with. Files
                       written before it existed lack the group (``FeaturesFile.classic`` is empty)

Scale keys are "m^n" strings (e.g. "3^9"); tap keys are "-3", "-2", "-1": the model's last three
hidden layers (the outputs of its last two blocks, then the 1x1 convolution of the basic SampleCNN
or the hidden dense layer of the Kim et al. heads; ``tap_layers`` names them). Strings are stored
as variable-length UTF-8.

While extraction runs the file is ``features.h5.partial``; ``FeaturesWriter.finalize`` renames it
to ``features.h5`` atomically. A row whose features are not finite marks a track extract could not
process (it is listed in the run's skipped.csv); readers may drop such rows.

Integrity: the numeric datasets (/labels, /features/*/*, /num_segments/*) carry HDF5's per-chunk
Fletcher-32 checksum, verified on every read (a damaged chunk raises ``FeaturesError`` naming the
rows); the text tables, which take no filter, are checked against ``text_sha256`` at open (a
mismatch raises ``FeaturesError`` naming the table). Files written before either read as before,
unverified. The writer goes through
``msagg.data.atomic.CheckedFile``: the first write the disk refuses raises ``WriteError`` (naming the
partial file), ``num_done`` counts only rows flushed and fsynced before it, and a later run
resumes from there (after reading those rows back to check them).
"""

from __future__ import annotations

import json
import logging
import os

import h5py
import numpy as np

from msagg.data.errors import MsaggError
from msagg.data.integrity import (damaged_ranges, describe_read_error, name_some, ranges_text, schema_version_problem,
                                  text_sha256_problem)
from msagg.data.runs import run_file

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "features.h5"
PARTIAL_SUFFIX = ".partial"
SONG_POOLS = ("mean", "max", "meanmax", "meanstd")
DEFAULT_BLOCK = "basic"
DEFAULT_PRECISION = "float32"
LEGACY_SEGMENTS = "drop"
"""How files written before the ``segments`` attribute existed cut songs (``msagg.data.segments``)."""
STRING_DTYPE = h5py.string_dtype("utf-8")
TEXT_TABLES = ("track_ids", "label_names", "split")
"""The text tables, each covered by the root attribute ``text_sha256``."""


class FeaturesError(MsaggError):
    """A features file that is missing, unreadable, of another schema version, or inconsistent."""


# --- pooling (pure functions) ------------------------------------------------------------------


def pool_time(tap: np.ndarray) -> np.ndarray:
    """Max-pools one tap over time within each segment.

    Args:
        tap: (num_segments, time, channels) activations.

    Returns:
        float32 (num_segments, channels).
    """
    tap = np.asarray(tap)
    if tap.ndim != 3:
        raise ValueError(f"expected (num_segments, time, channels), got shape {tap.shape}")
    return tap.max(axis=1).astype(np.float32, copy=False)


def pool_song(vectors: np.ndarray, song_pool: str = "mean") -> np.ndarray:
    """Pools a song's segment vectors into one vector.

    Args:
        vectors: (num_segments, channels) segment vectors (``pool_time`` output).
        song_pool: "mean", "max", "meanmax" (``[mean, max]`` concatenated) or "meanstd"
            (``[mean, standard deviation]``).

    Returns:
        float32 (channels,), or (2 * channels,) for "meanmax" and "meanstd".
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] < 1:
        raise ValueError(f"expected (num_segments >= 1, channels), got shape {vectors.shape}")
    if song_pool == "mean":
        return vectors.mean(axis=0, dtype=np.float64).astype(np.float32)
    if song_pool == "max":
        return vectors.max(axis=0)
    if song_pool == "meanmax":
        return np.concatenate([vectors.mean(axis=0, dtype=np.float64).astype(np.float32), vectors.max(axis=0)])
    if song_pool == "meanstd":
        return np.concatenate([vectors.mean(axis=0, dtype=np.float64), vectors.std(axis=0, dtype=np.float64)]
                              ).astype(np.float32)
    raise ValueError(f"song_pool must be one of {SONG_POOLS}, got {song_pool!r}")


def pooled_dim(channels: int, song_pool: str) -> int:
    """Length of a song vector for a tap of ``channels`` channels."""
    if song_pool not in SONG_POOLS:
        raise ValueError(f"song_pool must be one of {SONG_POOLS}, got {song_pool!r}")
    return 2 * channels if song_pool in ("meanmax", "meanstd") else channels


def scale_sort_key(scale: str) -> tuple:
    """Orders "m^n" keys numerically by (m, n), as the paper's tables do."""
    try:
        m, n = scale.split("^")
        return (int(m), int(n), scale)
    except ValueError:
        return (1 << 30, 0, scale)


def tap_sort_key(tap: str) -> tuple:
    try:
        return (int(tap), tap)
    except ValueError:
        return (1 << 30, tap)


# --- reader ------------------------------------------------------------------------------------


def attr_value(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


class FeaturesFile:
    """Reads a features file (schema version 1).

    Args:
        path: ``features.h5``, or an extract run folder holding it.
        allow_partial: Also open an unfinished (``complete`` False) file.

    Attributes:
        path: The file.
        track_ids: str array (N,).
        labels: uint8 (N, L).
        label_names: list[str] (L).
        split: str array (N,).
        task, dataset, pretrain_dataset, song_pool, config_hash: root attributes (str).
        precision: What the models computed in ("float32" for files written before it was recorded).
        scales: Scale keys, ordered by (m, n).
        classic: Names of the classic feature sets in the file (e.g. ["mfcc"]; [] for none).

    Raises:
        FeaturesError: Naming the file, when it is missing, unreadable, of an unknown schema
            version (or one that is not an integer), or unfinished, or a text table does not
            match its recorded sha256 (naming the table); and from ``get``,
            ``num_segments`` (and here, for /labels) naming the rows of a chunk that fails its
            checksum.
    """

    def __init__(self, path: str | os.PathLike, *, allow_partial: bool = False):
        self.path = run_file(path, FILE_NAME)
        if not self.path.is_file():
            raise FeaturesError(f"{self.path}: no features file (run `msagg extract` first)")
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as err:
            raise FeaturesError(f"{self.path}: not a readable HDF5 features file ({err})") from None
        try:
            self._check(allow_partial)
            text = {name: self._h5[name].asstr()[...] for name in TEXT_TABLES}
            problem = text_sha256_problem(self._h5, text)
            if problem:
                raise FeaturesError(f"{self.path}: damaged features file: {problem}; extract the features again")
            self.track_ids = np.array(text["track_ids"], dtype=str)
            self.labels = np.asarray(self._read(self._h5["labels"]), dtype=np.uint8)
            self.label_names = [str(s) for s in text["label_names"]]
            self.split = np.array(text["split"], dtype=str)
            self.scales = sorted(self._h5["features"], key=scale_sort_key)
            self.classic = sorted(self._h5["classic"]) if "classic" in self._h5 else []
        except KeyError as err:
            self._h5.close()
            raise FeaturesError(f"{self.path}: malformed features file (missing {err})") from None
        except FeaturesError:
            self._h5.close()
            raise

    def _check(self, allow_partial: bool) -> None:
        version = attr_value(self._h5.attrs.get("schema_version"))
        if version is None:
            raise FeaturesError(f"{self.path}: not a features file (no schema_version attribute)")
        problem = schema_version_problem(version, SCHEMA_VERSION)
        if problem:
            raise FeaturesError(
                f"{self.path}: features {problem} is not supported "
                f"(this msagg reads schema version {SCHEMA_VERSION}, an integer); extract the features again"
            )
        if not allow_partial and not bool(self._h5.attrs.get("complete", False)):
            raise FeaturesError(f"{self.path}: unfinished features file; run `msagg extract` again to complete it")

    def _read(self, dataset: h5py.Dataset) -> np.ndarray:
        """All of a dataset indexed by track; ``FeaturesError`` naming the rows of a damaged chunk."""
        try:
            return dataset[...]
        except OSError as err:
            ranges = damaged_ranges(dataset, 0, dataset.shape[0])
            rows = np.concatenate([np.arange(lo, hi) for lo, hi in ranges])
            ids = self.track_ids[rows] if hasattr(self, "track_ids") else rows
            raise FeaturesError(
                f"{self.path}: damaged features file: {dataset.name} rows {ranges_text(ranges)} "
                f"{describe_read_error(err)} (tracks {name_some(ids)}); extract the features again"
            ) from None

    @property
    def checksummed(self) -> bool:
        """Whether the feature datasets carry Fletcher-32 checksums (False for older files)."""
        return all(self._group(scale)[tap].fletcher32 for scale in self.scales for tap in self.taps(scale))

    @property
    def attrs(self) -> dict:
        """Root attributes as plain Python values."""
        return {key: attr_value(value) for key, value in self._h5.attrs.items()}

    def _root(self, key: str) -> str:
        return str(attr_value(self._h5.attrs.get(key, "")))

    task = property(lambda self: self._root("task"))
    dataset = property(lambda self: self._root("dataset"))
    pretrain_dataset = property(lambda self: self._root("pretrain_dataset"))
    song_pool = property(lambda self: self._root("song_pool"))
    config_hash = property(lambda self: self._root("config_hash"))

    @property
    def precision(self) -> str:
        """What the models computed in: "float32" or "bf16" ("float32" when the file does not say)."""
        return str(attr_value(self._h5.attrs.get("precision", DEFAULT_PRECISION)))

    @property
    def segments(self) -> str:
        """How songs were cut: "cover" or "drop" ("drop" when the file does not say)."""
        return str(attr_value(self._h5.attrs.get("segments", LEGACY_SEGMENTS)))

    @property
    def num_tracks(self) -> int:
        return len(self.track_ids)

    def _group(self, scale: str) -> h5py.Group:
        if scale not in self._h5["features"]:
            raise FeaturesError(f"{self.path}: no scale {scale!r}; the file holds {', '.join(self.scales)}")
        return self._h5["features"][scale]

    def taps(self, scale: str) -> list[str]:
        """Tap keys of ``scale``, ordered "-3", "-2", "-1"."""
        return sorted(self._group(scale), key=tap_sort_key)

    def get(self, scale: str, tap: str) -> np.ndarray:
        """float32 (N, dim) song vectors of one tap of one scale."""
        group = self._group(scale)
        if tap not in group:
            raise FeaturesError(f"{self.path}: scale {scale} has no tap {tap!r}; it has {', '.join(self.taps(scale))}")
        return np.asarray(self._read(group[tap]), dtype=np.float32)

    def get_classic(self, name: str) -> np.ndarray:
        """float32 (N, dim) of the classic feature set ``name`` (e.g. "mfcc")."""
        if name not in self.classic:
            held = ", ".join(self.classic) or "none (extracted without classic features)"
            raise FeaturesError(f"{self.path}: no classic features {name!r}; the file holds {held}")
        return np.asarray(self._read(self._h5["classic"][name]), dtype=np.float32)

    def scale_attrs(self, scale: str) -> dict:
        """The attributes of one scale as stored (``input_length``, ``sample_rate``,
        ``model_hash``, ``num_params``, and in newer files ``block``, ``multi``, ``tap_layers``)."""
        return {key: attr_value(value) for key, value in self._group(scale).attrs.items()}

    def variant(self, scale: str) -> dict:
        """The model variant of one scale: ``{"block": str, "multi": bool, "tap_layers": {tap:
        layer}}``; "basic", False and {} for files written before these were recorded."""
        attrs = self.scale_attrs(scale)
        try:
            tap_layers = json.loads(attrs.get("tap_layers") or "{}")
        except json.JSONDecodeError:
            raise FeaturesError(f"{self.path}: scale {scale}: tap_layers is not JSON") from None
        return {"block": str(attrs.get("block") or DEFAULT_BLOCK), "multi": bool(attrs.get("multi", False)),
                "tap_layers": dict(tap_layers)}

    def num_segments(self, scale: str) -> np.ndarray:
        """int32 (N,) segments per track at ``scale``."""
        self._group(scale)
        return np.asarray(self._read(self._h5["num_segments"][scale]), dtype=np.int32)

    def indices(self, split: str) -> np.ndarray:
        """int64 indices of the tracks in ``split``."""
        return np.flatnonzero(self.split == split).astype(np.int64)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "FeaturesFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
