"""The audio cache: every track of a dataset as int16 in one HDF5 file, with labels and split.

Layout (schema version 1; docs/DESIGN.md is the reference):

    attrs  schema_version=1, sample_rate, task, dataset, split_info (JSON), config_hash
    /audio        int16 (total_samples,)      all tracks, concatenated
    /offsets      int64 (num_tracks,)         where each track starts in /audio
    /lengths      int64 (num_tracks,)         its number of samples
    /track_ids    str (num_tracks,)
    /sources      str (num_tracks,)
    /labels       uint8 (num_tracks, num_labels)
    /label_names  str (num_labels,)
    /split        str (num_tracks,)           train / valid / test
    /skipped      str (num_skipped, 2)        source, reason

The numeric datasets (/audio, /offsets, /lengths, /labels) carry HDF5's per-chunk Fletcher-32
checksum, verified on every read: a damaged chunk raises ``CacheError`` naming the tracks whose
samples lie in it. Caches written before the checksum existed read as before (unverified).
The writer streams through ``data.atomic.CheckedFile``: a failed write (a full disk) raises
``WriteError`` at once and leaves no file behind.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from data.atomic import CheckedFile, atomic_write
from data.errors import MsaggError
from data.integrity import CHECKSUM, damaged_ranges, describe_read_error, name_some, ranges_text, schema_version_problem
from data.runs import run_file
from data.tracklist import SPLITS, TrackList

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
INT16_SCALE = 32767
"""float -> int16: clip to [-1, 1] and multiply by this (so +1.0 fits)."""
READ_SCALE = 32768
"""int16 -> float: divide by this (so every value lies in [-1, 1))."""
CHUNK_SAMPLES = 1 << 16
"""HDF5 chunk of /audio (128 KiB): small enough that a random crop reads little beyond itself."""
FLUSH_SAMPLES = 1 << 22
"""The writer buffers this many samples (8 MiB of int16) before growing /audio."""

_STR = h5py.string_dtype("utf-8")


class CacheError(MsaggError):
    """An audio cache that cannot be read; the message names the file and the reason."""


def to_int16(wave: np.ndarray) -> np.ndarray:
    """Quantises a float waveform for the cache.

    Args:
        wave: float (num_samples,), nominally in [-1, 1]; louder samples are clipped.

    Returns:
        int16 (num_samples,): ``round(clip(wave, -1, 1) * 32767)``.

    Raises:
        ValueError: If the waveform holds NaN or infinity.
    """
    wave = np.asarray(wave)
    if wave.dtype == np.int16:
        return wave
    if not np.isfinite(wave).all():
        raise ValueError("waveform holds non-finite samples (NaN or infinity)")
    return np.round(np.clip(wave, -1.0, 1.0) * INT16_SCALE).astype(np.int16)


def write_cache(
    path: str | os.PathLike,
    tracklist: TrackList,
    waveforms: Iterable[np.ndarray],
    *,
    sample_rate: int,
    config_hash: str = "",
    flush_samples: int = FLUSH_SAMPLES,
) -> Path:
    """Streams waveforms into a new cache file, written atomically.

    The audio is appended in blocks of about ``FLUSH_SAMPLES``, so memory does not grow with the
    size of the corpus.

    Args:
        path: Destination, usually ``<run>/cache.h5``; replaced only once complete.
        tracklist: The tracks that go into the cache, in order (tracks that failed to decode
            already removed); ``tracklist.skipped`` becomes ``/skipped``.
        waveforms: One waveform per track of ``tracklist``, in the same order: float
            (num_samples,) in [-1, 1], or int16 already quantised with ``to_int16``.
        sample_rate: Rate of the waveforms, Hz.
        config_hash: Hash of the prepare config that made the cache.
        flush_samples: Samples buffered in memory before they are appended to ``/audio``.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If the number of waveforms differs from the number of tracks, or a waveform
            is not 1-D or holds non-finite samples.
        WriteError: Naming ``path``, at the first write the disk refuses (checked after every
            block); nothing is left behind.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        raw = CheckedFile(tmp, "w")
        try:
            with raw.checked():
                total = _write_layout(raw, path, tracklist, waveforms, sample_rate, config_hash, flush_samples)
        finally:
            raw.close()
    logger.info("wrote %s: %d tracks, %.1f min of audio at %d Hz, %d skipped",
                path, len(tracklist), total / sample_rate / 60, sample_rate, len(tracklist.skipped))
    return path


def _write_layout(raw: CheckedFile, path: Path, tracklist: TrackList, waveforms: Iterable[np.ndarray],
                  sample_rate: int, config_hash: str, flush_samples: int) -> int:
    """Writes the whole layout through ``raw``; returns the number of samples."""
    num_tracks = len(tracklist)
    offsets = np.zeros(num_tracks, dtype=np.int64)
    lengths = np.zeros(num_tracks, dtype=np.int64)
    with h5py.File(raw, "w") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["sample_rate"] = int(sample_rate)
        f.attrs["task"] = tracklist.task
        f.attrs["dataset"] = tracklist.name
        f.attrs["split_info"] = json.dumps(tracklist.split_info, sort_keys=True, default=str)
        f.attrs["config_hash"] = config_hash
        audio = f.create_dataset("audio", shape=(0,), maxshape=(None,), dtype=np.int16, chunks=(CHUNK_SAMPLES,),
                                 **CHECKSUM)
        pending: list[np.ndarray] = []
        num_pending = 0
        total = 0
        count = 0

        def flush():
            nonlocal pending, num_pending
            if num_pending:
                start = audio.shape[0]
                audio.resize((start + num_pending,))
                audio[start:] = np.concatenate(pending)
                raw.check()  # the chunks that left HDF5's cache were written: stop at the first failure
            pending, num_pending = [], 0

        for count, wave in enumerate(waveforms, start=1):
            if count > num_tracks:
                raise ValueError(f"{path}: more waveforms than the {num_tracks} tracks of the list")
            wave = np.asarray(wave)
            if wave.ndim != 1:
                raise ValueError(f"{path}: track {count - 1} ({tracklist.sources[count - 1]}): expected a "
                                 f"1-D waveform, got shape {wave.shape}")
            try:
                quantised = to_int16(wave)
            except ValueError as err:
                raise ValueError(f"{path}: track {count - 1} ({tracklist.sources[count - 1]}): {err}") from None
            offsets[count - 1] = total
            lengths[count - 1] = quantised.shape[0]
            total += quantised.shape[0]
            pending.append(quantised)
            num_pending += quantised.shape[0]
            if num_pending >= flush_samples:
                flush()
        if count != num_tracks:
            raise ValueError(f"{path}: got {count} waveforms for {num_tracks} tracks")
        flush()
        f.create_dataset("offsets", data=offsets, **CHECKSUM)
        f.create_dataset("lengths", data=lengths, **CHECKSUM)
        f.create_dataset("track_ids", data=list(tracklist.track_ids), dtype=_STR)
        f.create_dataset("sources", data=list(tracklist.sources), dtype=_STR)
        f.create_dataset("labels", data=np.asarray(tracklist.labels, dtype=np.uint8), **CHECKSUM)
        f.create_dataset("label_names", data=list(tracklist.label_names), dtype=_STR)
        f.create_dataset("split", data=list(tracklist.split), dtype=_STR)
        skipped = [[str(source), str(reason)] for source, reason in tracklist.skipped]
        if skipped:
            f.create_dataset("skipped", data=skipped, dtype=_STR)
        else:
            f.create_dataset("skipped", shape=(0, 2), dtype=_STR)
    return total


FILE_NAME = "cache.h5"
"""The audio cache's name in a prepare run folder."""

_DATASETS = ("audio", "offsets", "lengths", "track_ids", "sources", "labels", "label_names", "split", "skipped")
_ATTRS = ("schema_version", "sample_rate", "task", "dataset", "split_info", "config_hash")


class AudioCache:
    """Reads an audio cache; the file stays open, waveforms are read on demand.

    Use as a context manager (or call ``close``). Pickling a reader pickles its path, and the
    copy opens the file again, so it can be handed to worker processes.

    Args:
        path: A prepare run folder, or a ``cache.h5`` written by ``write_cache``.

    Attributes:
        path: The file.
        sample_rate: Hz.
        task: "tags" or "classes".
        dataset: Dataset name.
        split_info: How the split was made (dict).
        config_hash: Hash of the prepare config that made the cache.
        label_names: list[str] (num_labels).
        track_ids, sources: np str arrays (num_tracks,).
        labels: uint8 (num_tracks, num_labels).
        split: np str array (num_tracks,).
        offsets, lengths: int64 (num_tracks,), samples.
        skipped: list of (source, reason) left out when the cache was made.

    Raises:
        CacheError: If the file is missing, is not a readable HDF5 file, has another
            ``schema_version`` (or one that is not an integer), lacks part of the layout, or a
            table fails its checksum.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = run_file(path, FILE_NAME)
        self._file = None
        if not self.path.is_file():
            raise CacheError(f"{self.path}: no such audio cache (run `msagg prepare` first)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise CacheError(f"{self.path}: not a readable HDF5 audio cache ({err})") from None
        try:
            self._read_metadata(self._file)
        except BaseException:
            self.close()
            raise
        self._audio = self._file["audio"]

    def _read_metadata(self, f: h5py.File) -> None:
        version = f.attrs.get("schema_version")
        if version is None:
            raise CacheError(f"{self.path}: not an audio cache (no schema_version attribute)")
        problem = schema_version_problem(version, SCHEMA_VERSION)
        if problem:
            raise CacheError(f"{self.path}: audio cache {problem} is not supported (this msagg reads schema "
                             f"version {SCHEMA_VERSION}, an integer); prepare the dataset again")
        missing = [f"/{name}" for name in _DATASETS if name not in f] + [
            f"attribute {name}" for name in _ATTRS if name not in f.attrs]
        if missing:
            raise CacheError(f"{self.path}: incomplete audio cache, missing {', '.join(missing)}")
        self.sample_rate = int(f.attrs["sample_rate"])
        self.task = str(f.attrs["task"])
        self.dataset = str(f.attrs["dataset"])
        self.split_info = json.loads(f.attrs["split_info"])
        self.config_hash = str(f.attrs["config_hash"])

        def read(name: str, text: bool = False) -> np.ndarray:
            try:
                return f[name].asstr()[()] if text else f[name][()]
            except OSError as err:
                raise CacheError(f"{self.path}: damaged audio cache: /{name} {describe_read_error(err)}; "
                                 f"prepare the dataset again") from None

        self.label_names = [str(s) for s in read("label_names", True)]
        self.track_ids = np.asarray(read("track_ids", True), dtype=str)
        self.sources = np.asarray(read("sources", True), dtype=str)
        self.labels = np.asarray(read("labels"), dtype=np.uint8)
        self.split = np.asarray(read("split", True), dtype=str)
        self.offsets = np.asarray(read("offsets"), dtype=np.int64)
        self.lengths = np.asarray(read("lengths"), dtype=np.int64)
        self.skipped = [(str(a), str(b)) for a, b in read("skipped", True).reshape(-1, 2)]
        n = self.offsets.shape[0]
        shapes = {"lengths": self.lengths.shape[0], "track_ids": self.track_ids.shape[0],
                  "sources": self.sources.shape[0], "labels": self.labels.shape[0], "split": self.split.shape[0]}
        bad = {k: v for k, v in shapes.items() if v != n}
        if bad or self.labels.shape[1:] != (len(self.label_names),):
            raise CacheError(f"{self.path}: inconsistent audio cache: {n} offsets but {bad or shapes}, "
                             f"labels {self.labels.shape} for {len(self.label_names)} label names")

    @property
    def num_tracks(self) -> int:
        """Number of tracks."""
        return int(self.offsets.shape[0])

    @property
    def num_labels(self) -> int:
        """Number of labels (columns of ``labels``)."""
        return len(self.label_names)

    @property
    def total_samples(self) -> int:
        """Samples of all tracks together."""
        return int(self.lengths.sum())

    def __len__(self) -> int:
        return self.num_tracks

    def indices(self, split: str) -> np.ndarray:
        """Track indices of one split.

        Args:
            split: "train", "valid" or "test".

        Returns:
            int64 (num_tracks_in_split,), ascending.
        """
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        return np.flatnonzero(self.split == split).astype(np.int64)

    def _check_index(self, i: int) -> int:
        if self._file is None:
            raise ValueError(f"{self.path}: the audio cache is closed")
        i = int(i)
        if not 0 <= i < self.num_tracks:
            raise IndexError(f"{self.path}: track index {i} out of range (0..{self.num_tracks - 1})")
        return i

    @property
    def checksummed(self) -> bool:
        """Whether /audio carries Fletcher-32 checksums (False for caches written before them)."""
        return bool(self._audio.fletcher32)

    def _samples(self, start: int, stop: int) -> np.ndarray:
        """int16 samples ``[start, stop)`` of /audio; ``CacheError`` naming the tracks of a damaged chunk."""
        try:
            return self._audio[start:stop]
        except OSError as err:
            ranges = damaged_ranges(self._audio, start, stop)
            hit = np.zeros(self.num_tracks, dtype=bool)
            for lo, hi in ranges:
                hit |= (self.offsets < hi) & (self.offsets + self.lengths > lo)
            raise CacheError(
                f"{self.path}: damaged audio cache: samples {ranges_text(ranges)} {describe_read_error(err)}; "
                f"tracks affected: {name_some(self.track_ids[hit])}; prepare the dataset again"
            ) from None

    def track(self, i: int) -> np.ndarray:
        """A whole track.

        Returns:
            float32 (lengths[i],) in [-1, 1).

        Raises:
            CacheError: If its samples fail their checksum (naming every track of the damaged chunks).
        """
        i = self._check_index(i)
        start = int(self.offsets[i])
        return self._samples(start, start + int(self.lengths[i])).astype(np.float32) / READ_SCALE

    def crop(self, i: int, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)`` of a track; what lies outside the track is zeros.

        Args:
            i: Track index.
            start: First sample (may be negative or beyond the end: those samples are zero).
            length: Number of samples.

        Returns:
            float32 (length,).

        Raises:
            CacheError: If those samples fail their checksum.
        """
        i = self._check_index(i)
        start, length = int(start), int(length)
        if length < 0:
            raise ValueError(f"crop length must be >= 0, got {length}")
        out = np.zeros(length, dtype=np.float32)
        lo, hi = max(start, 0), min(start + length, int(self.lengths[i]))
        if hi > lo:
            base = int(self.offsets[i])
            out[lo - start : hi - start] = self._samples(base + lo, base + hi).astype(np.float32) / READ_SCALE
        return out

    def close(self) -> None:
        """Closes the file (idempotent)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "AudioCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        return {"path": str(self.path)}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def __repr__(self) -> str:
        return f"AudioCache({str(self.path)!r}, dataset={self.dataset!r}, num_tracks={self.num_tracks})"
