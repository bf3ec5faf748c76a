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

A linked cache (``write_linked_cache``; ``msagg prepare --audio-from RUN``, crossval's folds)
holds every table above itself, but its ``/audio`` is an HDF5 external link to the ``/audio`` of
another cache (the *audio store*), stored as the path from this file's folder to that file, so
that run folders moved together keep working. Its offsets point into the store's ``/audio``,
and two attributes, present only then, pin the store:

    attrs  audio_config_hash          config_hash of the store
           audio_num_samples          length of the store's /audio

``AudioCache`` follows the link itself (relative to the cache's folder, never to the working
directory), and refuses a store that is missing or was replaced (another hash or length).

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
from typing import Iterable, Sequence

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


def _write_attrs(f: h5py.File, tracklist: TrackList, sample_rate: int, config_hash: str) -> None:
    f.attrs["schema_version"] = SCHEMA_VERSION
    f.attrs["sample_rate"] = int(sample_rate)
    f.attrs["task"] = tracklist.task
    f.attrs["dataset"] = tracklist.name
    f.attrs["split_info"] = json.dumps(tracklist.split_info, sort_keys=True, default=str)
    f.attrs["config_hash"] = config_hash


def _write_tables(f: h5py.File, tracklist: TrackList, offsets: np.ndarray, lengths: np.ndarray) -> None:
    """Every dataset but /audio."""
    f.create_dataset("offsets", data=np.asarray(offsets, dtype=np.int64), **CHECKSUM)
    f.create_dataset("lengths", data=np.asarray(lengths, dtype=np.int64), **CHECKSUM)
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


def _write_layout(raw: CheckedFile, path: Path, tracklist: TrackList, waveforms: Iterable[np.ndarray],
                  sample_rate: int, config_hash: str, flush_samples: int) -> int:
    """Writes the whole layout through ``raw``; returns the number of samples."""
    num_tracks = len(tracklist)
    offsets = np.zeros(num_tracks, dtype=np.int64)
    lengths = np.zeros(num_tracks, dtype=np.int64)
    with h5py.File(raw, "w") as f:
        _write_attrs(f, tracklist, sample_rate, config_hash)
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
        _write_tables(f, tracklist, offsets, lengths)
    return total


def write_linked_cache(path: str | os.PathLike, tracklist: TrackList, store: "AudioCache",
                       rows: Sequence[int], *, config_hash: str = "") -> Path:
    """Writes a cache whose tracks are tracks of another cache, without copying their samples.

    The new file holds its own tables (``tracklist``'s ids, sources, labels, label names, split,
    split_info, skipped) and the offsets and lengths of ``store``'s tracks ``rows``; its
    ``/audio`` is an external link to the file holding ``store``'s samples (``store.audio_file``,
    itself when not linked), by the path relative to ``path``'s folder. Written atomically.

    Args:
        path: Destination, usually ``<run>/cache.h5``.
        tracklist: The tracks of the new cache, in order (names escaped as the cache holds them).
        store: An open cache holding these tracks' samples; its sample rate becomes this one's.
        rows: For each track of ``tracklist``, its index in ``store``.
        config_hash: Hash of the prepare config that made the cache.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If ``rows`` does not hold one valid index of ``store`` per track.
        WriteError: Naming ``path``, if the disk refuses a write; nothing is left behind.
    """
    path = Path(path)
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.shape[0] != len(tracklist):
        raise ValueError(f"{path}: got {rows.shape[0]} rows of {store.path} for {len(tracklist)} tracks")
    if rows.size and (rows.min() < 0 or rows.max() >= store.num_tracks):
        raise ValueError(f"{path}: rows out of range for {store.path} ({store.num_tracks} tracks)")
    # Lexical paths (no symlinks resolved) on both sides, as the reader joins them.
    target = os.path.relpath(os.path.abspath(store.audio_file), os.path.abspath(path.parent))
    with atomic_write(path) as tmp:
        raw = CheckedFile(tmp, "w")
        try:
            with raw.checked(), h5py.File(raw, "w") as f:
                _write_attrs(f, tracklist, store.sample_rate, config_hash)
                f.attrs["audio_config_hash"] = store.audio_config_hash
                f.attrs["audio_num_samples"] = int(store.audio_num_samples)
                f["audio"] = h5py.ExternalLink(target, "/audio")
                _write_tables(f, tracklist, store.offsets[rows], store.lengths[rows])
        finally:
            raw.close()
    logger.info("wrote %s: %d tracks, audio linked to %s, %d skipped", path, len(tracklist), target,
                len(tracklist.skipped))
    return path


FILE_NAME = "cache.h5"
"""The audio cache's name in a prepare run folder."""

_DATASETS = ("audio", "offsets", "lengths", "track_ids", "sources", "labels", "label_names", "split", "skipped")
_ATTRS = ("schema_version", "sample_rate", "task", "dataset", "split_info", "config_hash")
_LINK_ATTRS = ("audio_config_hash", "audio_num_samples")
"""Attributes of a linked cache only (its /audio an external link)."""


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
        linked: Whether /audio is an external link to another cache's /audio (the audio store).
        audio_file: The file whose /audio holds the samples: ``path`` itself, or for a linked
            cache the audio store its /audio links to.
        audio_config_hash: config_hash of ``audio_file``.
        audio_num_samples: Length of that /audio (every track's samples lie within it).

    Raises:
        CacheError: If the file is missing, is not a readable HDF5 file, has another
            ``schema_version`` (or one that is not an integer), lacks part of the layout, or a
            table fails its checksum; for a linked cache, if its audio store is missing,
            unreadable or was replaced (naming both files).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = run_file(path, FILE_NAME)
        self._file = None
        self._store = None
        if not self.path.is_file():
            raise CacheError(f"{self.path}: no such audio cache (run `msagg prepare` first)")
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as err:
            raise CacheError(f"{self.path}: not a readable HDF5 audio cache ({err})") from None
        try:
            self._read_metadata(self._file)
            self._audio = self._open_audio(self._file)
        except BaseException:
            self.close()
            raise

    def _open_audio(self, f: h5py.File) -> h5py.Dataset:
        """The /audio dataset: this file's, or the one its external link names (opened here)."""
        link = f.get("audio", getlink=True)
        self.linked = isinstance(link, h5py.ExternalLink)
        if not self.linked:
            self.audio_file = self.path
            self.audio_config_hash = self.config_hash
            audio = f["audio"]
            self.audio_num_samples = int(audio.shape[0])
            return audio
        # Joined to this file's folder lexically, as the writer made it: HDF5 would also try the
        # working directory, where another file of that name may lie.
        store = Path(os.path.normpath(self.path.parent / link.filename))
        self.audio_file = store
        missing = [name for name in _LINK_ATTRS if name not in f.attrs]
        if missing:
            raise CacheError(f"{self.path}: incomplete audio cache, /audio links to {store} but attribute "
                             f"{', '.join(missing)} is missing")
        expected = (str(f.attrs["audio_config_hash"]), int(f.attrs["audio_num_samples"]))
        if not store.is_file():
            raise CacheError(f"{self.path}: its audio lies in {store}, which is missing (move prepare run folders "
                             "together, or prepare the dataset again)")
        try:
            self._store = h5py.File(store, "r")
        except OSError as err:
            raise CacheError(f"{self.path}: its audio lies in {store}, which is not a readable HDF5 file "
                             f"({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
        audio = self._store.get(link.path)
        if not isinstance(audio, h5py.Dataset) or audio.ndim != 1 or audio.dtype != np.int16:
            raise CacheError(f"{self.path}: its audio lies in {store}, which holds no int16 {link.path}")
        found = (str(self._store.attrs.get("config_hash", "")), int(audio.shape[0]))
        if found != expected:
            raise CacheError(f"{self.path}: its audio store {store} was replaced (config hash {found[0]}, "
                             f"{found[1]} samples; expected {expected[0]}, {expected[1]}); prepare the dataset again")
        self.audio_config_hash, self.audio_num_samples = found
        end = self.offsets + self.lengths
        if self.num_tracks and (self.offsets.min() < 0 or end.max() > self.audio_num_samples):
            raise CacheError(f"{self.path}: tracks lie outside the {self.audio_num_samples} samples of its audio "
                             f"store {store}; prepare the dataset again")
        return audio

    def _read_metadata(self, f: h5py.File) -> None:
        version = f.attrs.get("schema_version")
        if version is None:
            raise CacheError(f"{self.path}: not an audio cache (no schema_version attribute)")
        problem = schema_version_problem(version, SCHEMA_VERSION)
        if problem:
            raise CacheError(f"{self.path}: audio cache {problem} is not supported (this msagg reads schema "
                             f"version {SCHEMA_VERSION}, an integer); prepare the dataset again")
        # /audio is checked as a link: an external one to a missing file is reported by _open_audio.
        missing = [f"/{name}" for name in _DATASETS if f.get(name, getlink=True) is None] + [
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
            where = "" if not self.linked else f" (its audio store {self.audio_file})"
            raise CacheError(
                f"{self.path}: damaged audio cache{where}: samples {ranges_text(ranges)} {describe_read_error(err)}; "
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
        """Closes the file, and its audio store if linked (idempotent)."""
        if self._store is not None:
            self._store.close()
            self._store = None
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
