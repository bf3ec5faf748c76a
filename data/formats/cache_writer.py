"""Writes audio caches of schema 2 (the layout is in ``msagg.data.formats.cache_layout``): shards, the index, linked indexes.

A shard is written by one process, one track at a time, under a temporary name that is renamed
once the shard is complete (``write_shard``): memory holds one track, and a killed writer leaves
only a temporary file that the next run removes. The index (``write_index``) is written last, from
the shards' summaries. Every file goes through ``msagg.data.atomic.CheckedFile``: the first write the
disk refuses raises ``WriteError`` naming the file, and nothing is left under its final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py
import numpy as np

from msagg.data.atomic import CheckedFile, atomic_write
from msagg.data.formats.cache import AudioCache
from msagg.data.formats.cache_layout import CHUNK_SAMPLES, INDEX_NAME, SCHEMA_VERSION, TEXT_TABLES, CacheError, to_int16
from msagg.data.integrity import CHECKSUM, chunk_byte_ranges, record_text_sha256, schema_version_problem, sha256_outside
from msagg.data.tracklist import TrackList

logger = logging.getLogger(__name__)

SHARD_KIND = "shard"
_STR = h5py.string_dtype("utf-8")


def shard_file_name(number: int) -> str:
    """``shard-00042.h5`` for shard 42."""
    return f"shard-{number:05d}.h5"


def write_shard(
    path: str | os.PathLike,
    tracks: Iterable[tuple[int, np.ndarray | str]],
    *,
    number: int,
    sample_rate: int,
    first: int = 0,
    num_planned: int | None = None,
    plan_id: str = "",
    on_track: Callable[[int, int | None], None] | None = None,
) -> dict:
    """Streams tracks into one shard file, written atomically.

    Args:
        path: The shard, e.g. ``<run>/cache/shard-00003.h5``; it appears only once complete.
        tracks: One ``(row, item)`` per planned track, in listing order: ``row`` its listing
            index, ``item`` its waveform (float (num_samples,) in [-1, 1], or int16 already
            quantised with ``to_int16``) or, for a track that failed, the reason (str). Consumed
            lazily, one track at a time.
        number: The shard's number.
        sample_rate: Hz, recorded.
        first: Listing index of the shard's first planned track.
        num_planned: Tracks planned in this shard (default: as many as ``tracks`` gives).
        plan_id: Identifies the plan the shard belongs to (a resumed prepare keeps only shards
            of its plan).
        on_track: Called after each track is written (or recorded as failed) with its row and
            number of samples (None when it failed).

    Returns:
        The shard's summary (JSON-ready): ``shard, file, first, end, rows, lengths, failed``
        (list of [row, reason]), ``num_samples, bytes, sha256``, ``meta_sha256, audio_ranges``
        (``shard_meta``).

    Raises:
        ValueError: For a waveform that is not 1-D or holds non-finite samples (naming it).
        WriteError: Naming ``path``, at the first write the disk refuses.
        Anything ``tracks`` raises. In every case no file is left behind.
    """
    path = Path(path)
    rows: list[int] = []
    lengths: list[int] = []
    failed: list[list] = []
    digest = hashlib.sha256()
    total = 0
    with atomic_write(path) as tmp:
        raw = CheckedFile(tmp, "w")
        try:
            with raw.checked(), h5py.File(raw, "w") as f:
                audio = f.create_dataset("audio", shape=(0,), maxshape=(None,), dtype=np.int16, chunks=(CHUNK_SAMPLES,),
                                         **CHECKSUM)
                for row, item in tracks:
                    if isinstance(item, str):
                        failed.append([int(row), item])
                        if on_track is not None:
                            on_track(row, None)
                        continue
                    quantised = _quantise(path, row, item)
                    audio.resize((total + quantised.shape[0],))
                    audio[total:] = quantised
                    raw.check()  # what left HDF5's cache was written: stop at the first failure
                    digest.update(quantised)
                    rows.append(int(row))
                    lengths.append(int(quantised.shape[0]))
                    total += quantised.shape[0]
                    if on_track is not None:
                        on_track(row, int(quantised.shape[0]))
                num_planned = len(rows) + len(failed) if num_planned is None else int(num_planned)
                f.create_dataset("rows", data=np.asarray(rows, dtype=np.int64), **CHECKSUM)
                f.create_dataset("lengths", data=np.asarray(lengths, dtype=np.int64), **CHECKSUM)
                f.create_dataset("failed_rows", data=np.asarray([r for r, _ in failed], dtype=np.int64), **CHECKSUM)
                _strings(f, "failed_reasons", [reason for _, reason in failed])
                f.attrs.update({"schema_version": SCHEMA_VERSION, "kind": SHARD_KIND, "shard": int(number),
                                "first": int(first), "num_planned": num_planned, "plan_id": plan_id,
                                "sample_rate": int(sample_rate), "sha256": digest.hexdigest()})
        finally:
            raw.close()
        meta = shard_meta(tmp)
    return {"shard": int(number), "file": path.name, "first": int(first), "end": int(first) + num_planned,
            "rows": rows, "lengths": lengths, "failed": failed, "num_samples": int(total),
            "bytes": path.stat().st_size, "sha256": digest.hexdigest(), **meta}


def shard_meta(path: str | os.PathLike) -> dict:
    """What the index records to check a shard before HDF5 parses it (a finished shard, trusted here).

    Returns:
        ``{"audio_ranges": [[start, end], ...], "meta_sha256": str}``: the byte ranges of the
        shard's /audio chunks (Fletcher-32 covers them) and the sha256 of every other byte.
    """
    with h5py.File(path, "r") as f:
        ranges = chunk_byte_ranges(f["audio"])
    return {"audio_ranges": [[a, b] for a, b in ranges], "meta_sha256": sha256_outside(path, ranges)}


def _quantise(path: Path, row: int, wave) -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise ValueError(f"{path}: track {row}: expected a 1-D waveform, got shape {wave.shape}")
    try:
        return np.ascontiguousarray(to_int16(wave), dtype="<i2")  # little-endian: the sha256 is of these bytes
    except ValueError as err:
        raise ValueError(f"{path}: track {row}: {err}") from None


def read_shard_summary(path: str | os.PathLike) -> dict:
    """The summary ``write_shard`` returned, read back from a finished shard (for a resumed prepare).

    Adds ``plan_id``, ``num_planned`` and ``sample_rate`` from its attributes. Reads the tables,
    not the samples (their checksums are verified when they are read); ``meta_sha256`` is of the
    file as it is now.

    Raises:
        CacheError: Naming the file, if it is not a readable shard of this schema.
    """
    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("kind") != SHARD_KIND or schema_version_problem(a.get("schema_version"), SCHEMA_VERSION):
                raise CacheError(f"{path}: not an audio cache shard of schema version {SCHEMA_VERSION}")
            failed_rows = f["failed_rows"][()].tolist()
            reasons = f["failed_reasons"].asstr()[()].tolist()
            summary = {"shard": int(a["shard"]), "file": path.name, "first": int(a["first"]),
                       "end": int(a["first"]) + int(a["num_planned"]), "rows": f["rows"][()].tolist(),
                       "lengths": f["lengths"][()].tolist(), "failed": [list(x) for x in zip(failed_rows, reasons)],
                       "num_samples": int(f["audio"].shape[0]), "bytes": path.stat().st_size, "sha256": str(a["sha256"]),
                       "plan_id": str(a["plan_id"]), "num_planned": int(a["num_planned"]),
                       "sample_rate": int(a["sample_rate"])}
        return {**summary, **shard_meta(path)}
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise CacheError(f"{path}: not a readable audio cache shard ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


def write_index(path: str | os.PathLike, tracklist: TrackList, shards: Sequence[dict], *, sample_rate: int,
                config_hash: str = "") -> Path:
    """Writes ``index.h5`` over shards written by ``write_shard`` in the same folder, atomically.

    Args:
        path: Destination, ``<run>/cache/index.h5``.
        tracklist: The tracks of the cache in order (those that failed removed; names escaped
            as the cache holds them): the decoded tracks of ``shards``, shard after shard.
            ``tracklist.skipped`` becomes ``/skipped``.
        shards: Every shard's summary, in shard order (``write_shard``, ``read_shard_summary``).
        sample_rate: Hz.
        config_hash: Hash of the prepare config that made the cache.

    Returns:
        ``path`` as a Path.

    Raises:
        ValueError: If the shards do not hold one track per track of ``tracklist``.
        WriteError: Naming ``path``, if the disk refuses a write; nothing is left behind.
    """
    counts = [len(s["lengths"]) for s in shards]
    if sum(counts) != len(tracklist):
        raise ValueError(f"{path}: the shards hold {sum(counts)} tracks, the track list {len(tracklist)}")
    shard = np.repeat(np.arange(len(shards), dtype=np.int64), counts)
    lengths = np.concatenate([np.asarray(s["lengths"], dtype=np.int64) for s in shards]) if shards else np.zeros(0, np.int64)
    offsets = np.concatenate([np.cumsum([0, *s["lengths"][:-1]], dtype=np.int64) if s["lengths"] else np.zeros(0, np.int64)
                              for s in shards]) if shards else np.zeros(0, np.int64)
    # A summary without the raw-byte check (from another writer) records "": read unchecked, as older caches.
    ranges = [(number, a, b) for number, s in enumerate(shards) if s.get("meta_sha256")
              for a, b in s.get("audio_ranges", ())]
    return _write_index(Path(path), tracklist, sample_rate=sample_rate, config_hash=config_hash,
                        audio_config_hash=config_hash, linked=False, files=[s["file"] for s in shards],
                        num_samples=[s["num_samples"] for s in shards], sizes=[s["bytes"] for s in shards],
                        sha256=[s["sha256"] for s in shards], meta_sha256=[s.get("meta_sha256", "") for s in shards],
                        audio_ranges=ranges, shard=shard, offsets=offsets, lengths=lengths)


def linked_rows(path: Path, tracklist: TrackList, store: AudioCache, rows: Sequence[int]) -> np.ndarray:
    """``rows`` as int64, checked to hold one valid track index of ``store`` per track of ``tracklist``.

    Raises:
        ValueError: Naming ``path`` and ``store``, for a wrong count or an index out of range.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    if rows.shape[0] != len(tracklist):
        raise ValueError(f"{path}: got {rows.shape[0]} rows of {store.path} for {len(tracklist)} tracks")
    if rows.size and (rows.min() < 0 or rows.max() >= store.num_tracks):
        raise ValueError(f"{path}: rows out of range for {store.path} ({store.num_tracks} tracks)")
    return rows


def write_linked_cache(path: str | os.PathLike, tracklist: TrackList, store: AudioCache, rows: Sequence[int], *,
                       config_hash: str = "") -> Path:
    """Writes a cache whose tracks are tracks of another cache, without copying their samples.

    The new index holds its own tables (``tracklist``'s ids, sources, labels, label names,
    split, split_info, skipped) and, for its track i, where ``store``'s track ``rows[i]`` lies;
    its shard table is ``store``'s, each shard named by its path relative to ``path``'s folder
    (a store that is itself linked is skipped over; a schema-1 store is one shard). Atomic.

    Args:
        path: Destination, usually ``<run>/cache/index.h5``.
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
    here = os.path.abspath(path.parent)
    files = [os.path.relpath(os.path.abspath(f), here) for f in store.shard_files]
    _write_index(path, tracklist, sample_rate=store.sample_rate, config_hash=config_hash,
                 audio_config_hash=store.audio_config_hash, linked=True, files=files,
                 num_samples=store.shard_num_samples, sizes=store.shard_bytes, sha256=store.shard_sha256,
                 meta_sha256=store.shard_meta_sha256, audio_ranges=store.shard_audio_ranges, shard=store.shard_of[rows],
                 offsets=store.offsets[rows], lengths=store.lengths[rows])
    logger.info("wrote %s: %d tracks, audio linked to %s, %d skipped", path, len(tracklist), store.audio_store,
                len(tracklist.skipped))
    return path


def _write_index(path: Path, tracklist: TrackList, *, sample_rate: int, config_hash: str, audio_config_hash: str,
                 linked: bool, files, num_samples, sizes, sha256, meta_sha256, audio_ranges, shard, offsets,
                 lengths) -> Path:
    with atomic_write(path) as tmp:
        raw = CheckedFile(tmp, "w")
        try:
            with raw.checked(), h5py.File(raw, "w") as f:
                f.attrs.update({"schema_version": SCHEMA_VERSION, "sample_rate": int(sample_rate),
                                "task": tracklist.task, "dataset": tracklist.name,
                                "split_info": json.dumps(tracklist.split_info, sort_keys=True, default=str), "config_hash": config_hash,
                                "audio_config_hash": audio_config_hash, "linked": bool(linked)})
                write_tables(f, tracklist)
                for name, data in (("shard", shard), ("offsets", offsets), ("lengths", lengths)):
                    f.create_dataset(name, data=np.asarray(data, dtype=np.int64).reshape(-1), **CHECKSUM)
                group = f.create_group("shards")
                _strings(group, "file", files)
                group.create_dataset("num_samples", data=np.asarray(num_samples, dtype=np.int64).reshape(-1), **CHECKSUM)
                group.create_dataset("bytes", data=np.asarray(sizes, dtype=np.int64).reshape(-1), **CHECKSUM)
                _strings(group, "sha256", sha256)
                _strings(group, "meta_sha256", meta_sha256)
                group.create_dataset("audio_ranges", data=np.asarray(audio_ranges, dtype=np.int64).reshape(-1, 3),
                                     **CHECKSUM)
                record_text_sha256(f, TEXT_TABLES)
        finally:
            raw.close()
    return path


def _strings(f: h5py.Group, name: str, values) -> None:
    """A UTF-8 string dataset (empty ones too, which h5py cannot infer from ``[]``)."""
    values = [str(v) for v in values]
    if values:
        f.create_dataset(name, data=values, dtype=_STR)
    else:
        f.create_dataset(name, shape=(0,), dtype=_STR)


def write_tables(f: h5py.File, tracklist: TrackList) -> None:
    """The per-track tables every cache holds: ids, sources, labels, label names, split, skipped."""
    _strings(f, "track_ids", tracklist.track_ids)
    _strings(f, "sources", tracklist.sources)
    f.create_dataset("labels", data=np.asarray(tracklist.labels, dtype=np.uint8).reshape(len(tracklist), -1),
                     **CHECKSUM)
    _strings(f, "label_names", tracklist.label_names)
    _strings(f, "split", tracklist.split)
    skipped = [[str(source), str(reason)] for source, reason in tracklist.skipped]
    if skipped:
        f.create_dataset("skipped", data=skipped, dtype=_STR)
    else:
        f.create_dataset("skipped", shape=(0, 2), dtype=_STR)


def write_cache(folder: str | os.PathLike, tracklist: TrackList, waveforms: Iterable[np.ndarray], *,
                sample_rate: int, config_hash: str = "", tracks_per_shard: int | None = None) -> Path:
    """Writes a whole cache folder (shards, then the index) from waveforms in memory or streamed.

    For tests and library use; the prepare stage decodes shard by shard (``msagg.stages.engines.decode``).

    Args:
        folder: The cache folder, usually ``<run>/cache``; created if missing.
        tracklist: The tracks, in order (names as the cache holds them).
        waveforms: One waveform per track, in the same order (float in [-1, 1], or int16).
        sample_rate: Hz.
        config_hash: Hash of the prepare config that made the cache.
        tracks_per_shard: Consecutive tracks per shard (default: all in one).

    Returns:
        ``folder`` as a Path.

    Raises:
        ValueError: If the number of waveforms differs from the number of tracks, or a waveform
            is not 1-D or holds non-finite samples.
        WriteError: Naming the file, at the first write the disk refuses. On any error, the files
            this call wrote are removed.
    """
    folder = Path(folder)
    n = len(tracklist)
    per = max(1, int(tracks_per_shard or n or 1))
    made = not folder.exists()
    written: list[Path] = []
    waves = iter(waveforms)
    try:
        summaries = []
        for number, first in enumerate(range(0, max(n, 1), per)):
            rows = range(first, min(first + per, n))

            def items(rows=rows):
                for row in rows:
                    wave = next(waves, None)
                    if wave is None:
                        raise ValueError(f"{folder}: got {row} waveforms for {n} tracks")
                    yield row, wave

            path = folder / shard_file_name(number)
            summaries.append(write_shard(path, items(), number=number, first=first, num_planned=len(rows),
                                         sample_rate=sample_rate))
            written.append(path)
        if next(waves, None) is not None:
            raise ValueError(f"{folder}: more waveforms than the {n} tracks of the list")
        written.append(folder / INDEX_NAME)
        write_index(folder / INDEX_NAME, tracklist, summaries, sample_rate=sample_rate, config_hash=config_hash)
    except BaseException:
        for path in written:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        if made:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder
