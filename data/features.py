"""The features file (features.h5): song-level vectors per track, per model scale, per tap.

This docstring is the one place the layout is documented (docs/DESIGN.md mirrors it).

Schema version 1::

    attrs
      schema_version   int 1; readers refuse any other version
      config_hash      str, the extract run's config hash
      song_pool        str, "mean" | "max" | "meanmax" (how segment vectors became one song vector)
      dataset          str, the dataset of the audio cache the features come from
      pretrain_dataset str, the dataset the models were trained on ("" when unknown)
      task             str, "tags" (multi-label) | "classes" (single-label)
      complete         bool, True once every row is written and the file is finalized
      num_done         int, rows [0, num_done) are final (advanced after each flushed batch)
    /track_ids         str (N,), same order as the audio cache
    /labels            uint8 (N, L), multi-hot (one-hot for classes)
    /label_names       str (L,)
    /split             str (N,), "train" | "valid" | "test"
    /features/<scale>/<tap>   float32 (N, dim): the tap's activations max-pooled over time within
                       each segment, then pooled over the song's segments (mean, max, or both
                       concatenated as [mean, max] for "meanmax", so dim = 2 x channels)
    /features/<scale> attrs   input_length (samples), sample_rate (Hz), model_hash (sha256 of
                       model.keras), num_params; and the model variant: block (str, e.g. "basic"),
                       multi (bool, the in-network multi-level head), tap_layers (JSON str, tap key
                       -> name of the layer it reads). Files written before these three existed
                       lack them; readers take "basic", False and {} (``FeaturesFile.variant``)
    /num_segments/<scale>     int32 (N,), segments per track at that scale

Scale keys are "m^n" strings (e.g. "3^9"); tap keys are "-3", "-2", "-1": the model's last three
hidden layers (the outputs of its last two blocks, then the 1x1 convolution of the basic SampleCNN
or the hidden dense layer of the Kim et al. heads; ``tap_layers`` names them). Strings are stored
as variable-length UTF-8.

While extraction runs the file is ``features.h5.partial``; ``FeaturesWriter.finalize`` renames it
to ``features.h5`` atomically. A row whose features are not finite marks a track extract could not
process (it is listed in the run's skipped.csv); readers may drop such rows.

Integrity: the numeric datasets (/labels, /features/*/*, /num_segments/*) carry HDF5's per-chunk
Fletcher-32 checksum, verified on every read (a damaged chunk raises ``FeaturesError`` naming the
rows); files written before it read as before, unverified. The writer goes through
``data.atomic.CheckedFile``: the first write the disk refuses raises ``WriteError`` (naming the
partial file), ``num_done`` counts only rows flushed and fsynced before it, and a later run
resumes from there (after reading those rows back to check them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Mapping, Sequence

import h5py
import numpy as np

from data.atomic import CheckedFile, WriteError, fsync_dir
from data.errors import MsaggError
from data.integrity import CHECKSUM, damaged_ranges, describe_read_error, name_some, ranges_text, schema_version_problem
from data.runs import run_file

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "features.h5"
PARTIAL_SUFFIX = ".partial"
SONG_POOLS = ("mean", "max", "meanmax")
DEFAULT_BLOCK = "basic"
_STR = h5py.string_dtype("utf-8")


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
        song_pool: "mean", "max", or "meanmax" (``[mean, max]`` concatenated).

    Returns:
        float32 (channels,), or (2 * channels,) for "meanmax".
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
    raise ValueError(f"song_pool must be one of {SONG_POOLS}, got {song_pool!r}")


def pooled_dim(channels: int, song_pool: str) -> int:
    """Length of a song vector for a tap of ``channels`` channels."""
    if song_pool not in SONG_POOLS:
        raise ValueError(f"song_pool must be one of {SONG_POOLS}, got {song_pool!r}")
    return 2 * channels if song_pool == "meanmax" else channels


def scale_sort_key(scale: str) -> tuple:
    """Orders "m^n" keys numerically by (m, n), as the paper's tables do."""
    try:
        m, n = scale.split("^")
        return (int(m), int(n), scale)
    except ValueError:
        return (1 << 30, 0, scale)


def _tap_sort_key(tap: str) -> tuple:
    try:
        return (int(tap), tap)
    except ValueError:
        return (1 << 30, tap)


# --- writer ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScaleInfo:
    """What the writer records for one model scale.

    Attributes:
        input_length: Samples per segment.
        sample_rate: Hz.
        model_hash: sha256 hex digest of the model file.
        num_params: Parameters of the model.
        dims: Tap key -> song-vector length (after song pooling).
        block: SampleCNN block kind ("basic", or a variant's name).
        multi: Whether the model has the in-network multi-level head.
        tap_layers: Tap key -> name of the layer the tap reads.
    """

    input_length: int
    sample_rate: int
    model_hash: str
    num_params: int
    dims: Mapping[str, int]
    block: str = DEFAULT_BLOCK
    multi: bool = False
    tap_layers: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _str_array(values: Sequence[str]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


class FeaturesWriter:
    """Writes ``features.h5.partial`` row block by row block, resumably; ``finalize`` publishes it.

    Every dataset is created at its full size (N rows) up front. ``write`` stores rows
    ``[num_done, num_done + k)``, flushes and fsyncs, and only then advances ``num_done`` (flushed
    and fsynced again), so after a kill or a full disk the rows below ``num_done`` are final.
    Opening again with the same inputs resumes from ``num_done`` once those rows read back
    (checksums) intact; a partial file made with other inputs (config hash, tracks, models, dims)
    or that cannot be read is started afresh. A finished ``features.h5`` of the same inputs (a
    run that failed after ``finalize``, e.g. writing DONE) is taken as it is.

    Args:
        path: The final file, usually ``<run>/features.h5``; the partial file sits beside it.
        track_ids: N track ids, in cache order.
        labels: uint8 (N, L).
        label_names: L names.
        split: N split names.
        task: "tags" or "classes".
        dataset: Dataset of the audio cache.
        pretrain_dataset: Dataset the models were trained on ("" when unknown).
        song_pool: One of ``SONG_POOLS``.
        config_hash: The extract run's config hash.
        scales: Scale key -> ``ScaleInfo``.

    Raises:
        FeaturesError: For inconsistent inputs or zero tracks.
        WriteError: Naming the partial file, at the first write the disk refuses.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        track_ids: Sequence[str],
        labels: np.ndarray,
        label_names: Sequence[str],
        split: Sequence[str],
        task: str,
        dataset: str,
        pretrain_dataset: str,
        song_pool: str,
        config_hash: str,
        scales: Mapping[str, ScaleInfo],
    ):
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + PARTIAL_SUFFIX)
        self.track_ids = [str(t) for t in track_ids]
        self.num_tracks = len(self.track_ids)
        labels = np.asarray(labels)
        if self.num_tracks == 0:
            raise FeaturesError(f"{self.path}: no tracks to write")
        if labels.shape != (self.num_tracks, len(label_names)) or len(split) != self.num_tracks:
            raise FeaturesError(
                f"{self.path}: inconsistent inputs: {self.num_tracks} tracks, labels {labels.shape}, "
                f"{len(label_names)} label names, {len(split)} split entries"
            )
        if song_pool not in SONG_POOLS:
            raise FeaturesError(f"song_pool must be one of {SONG_POOLS}, got {song_pool!r}")
        if not scales:
            raise FeaturesError(f"{self.path}: no scales to write")
        self.scales = dict(scales)
        self._h5: h5py.File | None = None
        self._raw: CheckedFile | None = None
        self._num_done = 0
        self.finished = False
        """True when a finished features.h5 of these inputs was found: nothing is left to write."""
        if not self.partial.exists() and self.path.is_file() and self._try_finished(config_hash):
            logger.info("%s: already complete with these inputs; using it", self.path)
            return
        if self.partial.exists() and self._try_resume(config_hash):
            logger.info("%s: resuming after %d of %d tracks", self.partial, self.num_done, self.num_tracks)
            return
        self._create(labels, label_names, split, task, dataset, pretrain_dataset, song_pool, config_hash)

    def _try_resume(self, config_hash: str) -> bool:
        try:
            raw = CheckedFile(self.partial, "r+")
        except OSError as err:
            logger.warning("%s: cannot reopen (%s); starting again", self.partial, err)
            return False
        try:
            h5 = h5py.File(raw, "r+")
        except OSError as err:
            raw.close()
            logger.warning("%s: cannot reopen (%s); starting again", self.partial, err)
            return False
        try:
            reason = self._incompatible(h5, config_hash)
        except (KeyError, OSError, ValueError, TypeError) as err:
            reason = f"unreadable ({err})"
        if reason:
            logger.warning("%s: %s; starting again", self.partial, reason)
            h5.close()
            raw.close()
            return False
        self._h5, self._raw, self._num_done = h5, raw, int(h5.attrs["num_done"])
        return True

    def _try_finished(self, config_hash: str) -> bool:
        try:
            h5 = h5py.File(self.path, "r")
        except OSError:
            return False
        try:
            reason = self._incompatible(h5, config_hash)
            if not reason and (not bool(h5.attrs.get("complete")) or int(h5.attrs["num_done"]) != self.num_tracks):
                reason = "unfinished"
        except (KeyError, OSError, ValueError, TypeError) as err:
            reason = f"unreadable ({err})"
        if reason:
            logger.info("%s: %s; extracting again", self.path, reason)
            h5.close()
            return False
        self._h5, self.finished, self._num_done = h5, True, self.num_tracks
        return True

    def _incompatible(self, h5: h5py.File, config_hash: str) -> str | None:
        if schema_version_problem(_attr(h5.attrs.get("schema_version")), SCHEMA_VERSION):
            return "another schema version"
        if h5.attrs.get("config_hash") != config_hash:
            return "another config"
        if list(h5["track_ids"].asstr()[...]) != self.track_ids:
            return "other tracks"
        if set(h5["features"]) != set(self.scales):
            return "other scales"
        for scale, info in self.scales.items():
            group = h5["features"][scale]
            if group.attrs["model_hash"] != info.model_hash:
                return f"another model at scale {scale}"
            if {tap: group[tap].shape[1] for tap in group} != dict(info.dims):
                return f"other feature sizes at scale {scale}"
        done = int(h5.attrs["num_done"])
        for name in _numeric_datasets(h5):
            try:
                h5[name][:done]
            except OSError as err:
                return f"rows written before are damaged (/{name} {describe_read_error(err)})"
        return None

    def _create(self, labels, label_names, split, task, dataset, pretrain_dataset, song_pool, config_hash) -> None:
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        raw = CheckedFile(self.partial, "w")
        try:
            h5 = h5py.File(raw, "w")
        except BaseException:
            raw.close()
            raise
        self._h5, self._raw = h5, raw
        try:
            with raw.checked():
                self._create_layout(h5, labels, label_names, split, task, dataset, pretrain_dataset, song_pool,
                                    config_hash)
                h5.flush()
        except BaseException:
            with contextlib.suppress(WriteError):
                self.close()
            raise

    def _create_layout(self, h5, labels, label_names, split, task, dataset, pretrain_dataset, song_pool,
                       config_hash) -> None:
        n = self.num_tracks
        h5.attrs["schema_version"] = SCHEMA_VERSION
        h5.attrs["config_hash"] = str(config_hash)
        h5.attrs["song_pool"] = song_pool
        h5.attrs["dataset"] = str(dataset)
        h5.attrs["pretrain_dataset"] = str(pretrain_dataset or "")
        h5.attrs["task"] = str(task)
        h5.attrs["complete"] = False
        h5.attrs["num_done"] = 0
        h5.create_dataset("track_ids", data=_str_array(self.track_ids), dtype=_STR)
        h5.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8), **CHECKSUM)
        h5.create_dataset("label_names", data=_str_array(label_names), dtype=_STR)
        h5.create_dataset("split", data=_str_array(split), dtype=_STR)
        features = h5.create_group("features")
        counts = h5.create_group("num_segments")
        for scale in sorted(self.scales, key=scale_sort_key):
            info = self.scales[scale]
            group = features.create_group(scale)
            group.attrs["input_length"] = int(info.input_length)
            group.attrs["sample_rate"] = int(info.sample_rate)
            group.attrs["model_hash"] = str(info.model_hash)
            group.attrs["num_params"] = int(info.num_params)
            group.attrs["block"] = str(info.block)
            group.attrs["multi"] = bool(info.multi)
            group.attrs["tap_layers"] = json.dumps(dict(info.tap_layers), sort_keys=True)
            for tap in sorted(info.dims, key=_tap_sort_key):
                dim = int(info.dims[tap])
                group.create_dataset(tap, shape=(n, dim), dtype=np.float32, chunks=(min(n, 64), dim), **CHECKSUM)
            counts.create_dataset(scale, shape=(n,), dtype=np.int32, **CHECKSUM)

    @property
    def num_done(self) -> int:
        """Rows already final (written, flushed and fsynced, and so recorded in the file)."""
        return self._num_done

    def write(self, features: Mapping[str, Mapping[str, np.ndarray]], num_segments: Mapping[str, np.ndarray]) -> None:
        """Appends a block of rows at ``num_done`` and flushes it.

        Args:
            features: Scale -> tap -> float32 (k, dim) for the next k tracks.
            num_segments: Scale -> (k,) segment counts.

        Raises:
            FeaturesError: For missing scales or taps, wrong shapes, or too many rows.
            WriteError: If the disk refused a write; ``num_done`` is then not advanced.
        """
        self._writable()
        start = self.num_done
        ks = {np.asarray(a).shape[0] for taps in features.values() for a in taps.values()}
        if len(ks) != 1:
            raise FeaturesError(f"{self.partial}: blocks of unequal lengths {sorted(ks)}")
        (k,) = ks
        if start + k > self.num_tracks:
            raise FeaturesError(f"{self.partial}: {start} + {k} rows exceed {self.num_tracks} tracks")
        if set(features) != set(self.scales) or set(num_segments) != set(self.scales):
            raise FeaturesError(f"{self.partial}: expected scales {sorted(self.scales)}, got {sorted(features)}")
        blocks = {}
        for scale, info in self.scales.items():
            if set(features[scale]) != set(info.dims):
                raise FeaturesError(f"{self.partial}: scale {scale}: expected taps {sorted(info.dims)}")
            for tap, dim in info.dims.items():
                blocks[scale, tap] = np.asarray(features[scale][tap], dtype=np.float32)
                if blocks[scale, tap].shape != (k, dim):
                    raise FeaturesError(f"{self.partial}: {scale}/{tap}: expected ({k}, {dim}), "
                                        f"got {blocks[scale, tap].shape}")
        with self._raw.checked():
            for (scale, tap), block in blocks.items():
                self._h5["features"][scale][tap][start : start + k] = block
            for scale in self.scales:
                self._h5["num_segments"][scale][start : start + k] = np.asarray(num_segments[scale], dtype=np.int32)
            # Data first (on disk: flush fsyncs), then the counter: after a kill or a failed write,
            # the rows below num_done are whole.
            self._h5.flush()
        with self._raw.checked():
            self._h5.attrs["num_done"] = start + k
            self._h5.flush()
        self._num_done = start + k

    def _writable(self) -> None:
        if self._h5 is None or self._raw is None:
            raise FeaturesError(f"{self.partial}: the writer is closed or its file already complete")
        self._raw.check()  # a write failed before: nothing more goes to this file

    def nonfinite_rows(self, chunk: int = 4096) -> np.ndarray:
        """Rows (among those written) holding a NaN or infinity: int64 indices, sorted."""
        if self._h5 is None:
            raise FeaturesError(f"{self.partial}: the writer is closed")
        return _nonfinite_rows(self._h5, self.num_done, chunk)

    def finalize(self) -> Path:
        """Marks the file complete, fsyncs it and renames it to its final name atomically.

        Returns:
            The final path.

        Raises:
            FeaturesError: If rows are missing.
            WriteError: If the disk refused a write; the file keeps its partial name, so nothing
                takes it for finished, and a later run resumes it.
        """
        if self.finished:
            self.close()
            return self.path
        if self.num_done != self.num_tracks:
            raise FeaturesError(f"{self.partial}: only {self.num_done} of {self.num_tracks} tracks written")
        self._writable()
        with self._raw.checked():
            self._h5.attrs["complete"] = True
            self._h5.flush()
        self.close()
        try:
            os.replace(self.partial, self.path)
            fsync_dir(self.path.parent)
        except OSError as err:
            raise WriteError.from_os_error(self.path, err) from err
        return self.path

    def close(self) -> None:
        """Closes the file without finalizing it (a partial file can be resumed).

        Raises:
            WriteError: If a write failed, closing included (HDF5 writes what it cached at close).
        """
        h5, raw, self._h5, self._raw = self._h5, self._raw, None, None
        try:
            if h5 is not None:
                h5.close()
        finally:
            if raw is not None:
                raw.flush()
                raw.close()
        if raw is not None:
            raw.check()

    def __enter__(self) -> "FeaturesWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except WriteError as err:  # already failing: keep that error, log this one
            if err is not exc and not isinstance(exc, WriteError):
                logger.warning("%s", err)


def _nonfinite_rows(h5: h5py.File, done: int, chunk: int = 4096) -> np.ndarray:
    bad = np.zeros(len(h5["track_ids"]), dtype=bool)
    for scale in h5["features"]:
        for tap in h5["features"][scale]:
            data = h5["features"][scale][tap]
            for lo in range(0, done, chunk):
                hi = min(done, lo + chunk)
                bad[lo:hi] |= ~np.isfinite(data[lo:hi]).all(axis=1)
    return np.flatnonzero(bad)


def _numeric_datasets(h5: h5py.File) -> list[str]:
    """Paths of the datasets indexed by track that hold numbers: labels, features, num_segments."""
    names = ["labels"]
    for scale in h5["features"]:
        names += [f"features/{scale}/{tap}" for tap in h5["features"][scale]]
    names += [f"num_segments/{scale}" for scale in h5["num_segments"]]
    return names


# --- reader ------------------------------------------------------------------------------------


def _attr(value):
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
        scales: Scale keys, ordered by (m, n).

    Raises:
        FeaturesError: Naming the file, when it is missing, unreadable, of an unknown schema
            version (or one that is not an integer), or unfinished; and from ``get``,
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
            self.track_ids = np.array(self._h5["track_ids"].asstr()[...], dtype=str)
            self.labels = np.asarray(self._read(self._h5["labels"]), dtype=np.uint8)
            self.label_names = [str(s) for s in self._h5["label_names"].asstr()[...]]
            self.split = np.array(self._h5["split"].asstr()[...], dtype=str)
            self.scales = sorted(self._h5["features"], key=scale_sort_key)
        except KeyError as err:
            self._h5.close()
            raise FeaturesError(f"{self.path}: malformed features file (missing {err})") from None
        except FeaturesError:
            self._h5.close()
            raise

    def _check(self, allow_partial: bool) -> None:
        version = _attr(self._h5.attrs.get("schema_version"))
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
        return {key: _attr(value) for key, value in self._h5.attrs.items()}

    def _root(self, key: str) -> str:
        return str(_attr(self._h5.attrs.get(key, "")))

    task = property(lambda self: self._root("task"))
    dataset = property(lambda self: self._root("dataset"))
    pretrain_dataset = property(lambda self: self._root("pretrain_dataset"))
    song_pool = property(lambda self: self._root("song_pool"))
    config_hash = property(lambda self: self._root("config_hash"))

    @property
    def num_tracks(self) -> int:
        return len(self.track_ids)

    def _group(self, scale: str) -> h5py.Group:
        if scale not in self._h5["features"]:
            raise FeaturesError(f"{self.path}: no scale {scale!r}; the file holds {', '.join(self.scales)}")
        return self._h5["features"][scale]

    def taps(self, scale: str) -> list[str]:
        """Tap keys of ``scale``, ordered "-3", "-2", "-1"."""
        return sorted(self._group(scale), key=_tap_sort_key)

    def get(self, scale: str, tap: str) -> np.ndarray:
        """float32 (N, dim) song vectors of one tap of one scale."""
        group = self._group(scale)
        if tap not in group:
            raise FeaturesError(f"{self.path}: scale {scale} has no tap {tap!r}; it has {', '.join(self.taps(scale))}")
        return np.asarray(self._read(group[tap]), dtype=np.float32)

    def scale_attrs(self, scale: str) -> dict:
        """The attributes of one scale as stored (``input_length``, ``sample_rate``,
        ``model_hash``, ``num_params``, and in newer files ``block``, ``multi``, ``tap_layers``)."""
        return {key: _attr(value) for key, value in self._group(scale).attrs.items()}

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
