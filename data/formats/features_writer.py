"""Writes the features file (features.h5; the layout is documented in ``msagg.data.formats.features``).

Rows are written block by block into ``features.h5.partial`` through a checked file object (a
failed write is an error at once, never swallowed), flushed and fsynced before ``num_done``
advances, so a killed or failed run resumes from the last durable row; ``finalize`` renames the
finished file into place.
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

from msagg.data.atomic import CheckedFile, WriteError, fsync_dir
from msagg.data.formats.features import (DEFAULT_BLOCK, DEFAULT_PRECISION, PARTIAL_SUFFIX, SCHEMA_VERSION, SONG_POOLS, FeaturesError,
                           STRING_DTYPE, TEXT_TABLES, attr_value, scale_sort_key, tap_sort_key)
from msagg.data.integrity import (CHECKSUM, describe_read_error, record_text_sha256, schema_version_problem,
                                  text_sha256_problem)

logger = logging.getLogger(__name__)


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
        classic: Classic feature set name (``msagg.data.classic.CLASSIC``) -> its dim; written to
            ``/classic/<name>`` beside the learned features (empty: none).
        precision: What the models computed in ("float32" or "bf16"), the root attribute
            ``precision``; the features are stored as float32 either way.
        segments: How songs were cut ("cover" or "drop"), the root attribute ``segments``.

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
        classic: Mapping[str, int] | None = None,
        precision: str = DEFAULT_PRECISION,
        segments: str = "cover",
    ):
        self.path = Path(path)
        self.precision = str(precision)
        self.segments = str(segments)
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
        self.classic = {str(k): int(v) for k, v in (classic or {}).items()}
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
        if schema_version_problem(attr_value(h5.attrs.get("schema_version")), SCHEMA_VERSION):
            return "another schema version"
        damaged = text_sha256_problem(h5)
        if damaged:
            return f"damaged ({damaged})"
        if h5.attrs.get("config_hash") != config_hash:
            return "another config"
        if list(h5["track_ids"].asstr()[...]) != self.track_ids:
            return "other tracks"
        if set(h5["features"]) != set(self.scales):
            return "other scales"
        classic = h5["classic"] if "classic" in h5 else {}
        if {name: classic[name].shape[1] for name in classic} != self.classic:
            return "other classic features"
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
        h5.attrs["precision"] = self.precision
        h5.attrs["segments"] = self.segments
        h5.attrs["complete"] = False
        h5.attrs["num_done"] = 0
        h5.create_dataset("track_ids", data=_str_array(self.track_ids), dtype=STRING_DTYPE)
        h5.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8), **CHECKSUM)
        h5.create_dataset("label_names", data=_str_array(label_names), dtype=STRING_DTYPE)
        h5.create_dataset("split", data=_str_array(split), dtype=STRING_DTYPE)
        record_text_sha256(h5, TEXT_TABLES)
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
            for tap in sorted(info.dims, key=tap_sort_key):
                dim = int(info.dims[tap])
                group.create_dataset(tap, shape=(n, dim), dtype=np.float32, chunks=(min(n, 64), dim), **CHECKSUM)
            counts.create_dataset(scale, shape=(n,), dtype=np.int32, **CHECKSUM)
        if self.classic:
            classic = h5.create_group("classic")
            for name, dim in sorted(self.classic.items()):
                classic.create_dataset(name, shape=(n, dim), dtype=np.float32, chunks=(min(n, 64), dim), **CHECKSUM)

    @property
    def num_done(self) -> int:
        """Rows already final (written, flushed and fsynced, and so recorded in the file)."""
        return self._num_done

    def write(self, features: Mapping[str, Mapping[str, np.ndarray]], num_segments: Mapping[str, np.ndarray],
              classic: Mapping[str, np.ndarray] | None = None) -> None:
        """Appends a block of rows at ``num_done`` and flushes it.

        Args:
            features: Scale -> tap -> float32 (k, dim) for the next k tracks.
            num_segments: Scale -> (k,) segment counts.
            classic: Classic set name -> float32 (k, dim); every set given at creation.

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
        classic = dict(classic or {})
        if set(classic) != set(self.classic):
            raise FeaturesError(f"{self.partial}: expected classic features {sorted(self.classic)}, got {sorted(classic)}")
        classic_blocks = {name: np.asarray(classic[name], dtype=np.float32) for name in self.classic}
        for name, block in classic_blocks.items():
            if block.shape != (k, self.classic[name]):
                raise FeaturesError(f"{self.partial}: classic/{name}: expected ({k}, {self.classic[name]}), "
                                    f"got {block.shape}")
        with self._raw.checked():
            for (scale, tap), block in blocks.items():
                self._h5["features"][scale][tap][start : start + k] = block
            for scale in self.scales:
                self._h5["num_segments"][scale][start : start + k] = np.asarray(num_segments[scale], dtype=np.int32)
            for name, block in classic_blocks.items():
                self._h5["classic"][name][start : start + k] = block
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
    datasets = [h5["features"][scale][tap] for scale in h5["features"] for tap in h5["features"][scale]]
    datasets += [h5["classic"][name] for name in h5.get("classic", {})]
    for data in datasets:
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
    names += [f"classic/{name}" for name in h5.get("classic", {})]
    return names
