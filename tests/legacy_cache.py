"""The schema-1 audio cache writer of msagg before the sharded cache, kept to test that old caches still read.

msagg no longer writes this layout (``msagg.data.formats.cache_layout`` documents it); these are the writers it
used, unchanged but for their names, so that tests can make real schema-1 files: single-file
caches (``write_cache_v1``) and caches linked to another one's /audio (``write_linked_cache_v1``).
``as_before_text_sha256`` turns a schema-2 index into one of msagg before the text and raw-byte checks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable, Sequence

import h5py
import numpy as np

from msagg.data.atomic import CheckedFile, atomic_write
from msagg.data.formats.cache import CHUNK_SAMPLES, to_int16
from msagg.data.formats.cache_writer import linked_rows
from msagg.data.integrity import CHECKSUM
from msagg.data.tracklist import TrackList

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FLUSH_SAMPLES = 1 << 22
_STR = h5py.string_dtype("utf-8")


def write_cache_v1(
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


def write_linked_cache_v1(path: str | os.PathLike, tracklist: TrackList, store,
                       rows: Sequence[int], *, config_hash: str = "") -> Path:
    """Writes a cache whose tracks are tracks of another cache, without copying their samples.

    The new file holds its own tables (``tracklist``'s ids, sources, labels, label names, split,
    split_info, skipped) and the offsets and lengths of ``store``'s tracks ``rows``; its
    ``/audio`` is an external link to the file holding ``store``'s samples (``store.audio_store``,
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
    rows = linked_rows(path, tracklist, store, rows)
    # Lexical paths (no symlinks resolved) on both sides, as the reader joins them.
    target = os.path.relpath(os.path.abspath(store.audio_store), os.path.abspath(path.parent))
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


def as_before_text_sha256(index: str | os.PathLike) -> None:
    """Removes what msagg added to a schema-2 ``index.h5`` with the text tables' and the shards' raw-byte
    checks (the attribute ``text_sha256``, /shards/meta_sha256, /shards/audio_ranges), in place."""
    with h5py.File(index, "a") as f:
        del f.attrs["text_sha256"], f["shards/meta_sha256"], f["shards/audio_ranges"]
