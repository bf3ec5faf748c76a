"""The audio cache's layout, names and path resolvers (the reader is ``msagg.data.formats.cache``).

The cache holds every track of a dataset as int16 at the model rate, with labels and split.
This docstring is the one place the layout is documented (docs/DESIGN.md mirrors it).

Schema version 2 (written since the sharded cache): a folder, ``<prepare run>/cache/``::

    cache/index.h5      the tables, and where each track's samples lie
    cache/shard-00000.h5, shard-00001.h5, ...    the samples, about ``shard_mb`` each
    cache/plan.json     how the listing was cut into shards (read by a resumed prepare)

``index.h5``::

    attrs  schema_version=2, sample_rate, task, dataset, split_info (JSON), config_hash,
           audio_config_hash (config_hash of the run that decoded the shards: config_hash
           itself, or the audio store's for a linked cache), linked (bool),
           text_sha256 (JSON: each text table's path -> sha256 of its values, ``TEXT_TABLES``)
    /track_ids    str (num_tracks,)           in listing order: track i of the cache is row i
    /sources      str (num_tracks,)
    /labels       uint8 (num_tracks, num_labels)
    /label_names  str (num_labels,)
    /split        str (num_tracks,)           train / valid / test
    /skipped      str (num_skipped, 2)        source, reason
    /shard        int64 (num_tracks,)         the shard holding each track
    /offsets      int64 (num_tracks,)         where the track starts in that shard's /audio
    /lengths      int64 (num_tracks,)         its number of samples
    /shards/file          str (num_shards,)   the shard's path relative to index.h5's folder
    /shards/num_samples   int64 (num_shards,) length of its /audio
    /shards/bytes         int64 (num_shards,) its file size
    /shards/sha256        str (num_shards,)   sha256 of its /audio (int16 little-endian bytes)
    /shards/meta_sha256   str (num_shards,)   sha256 of the shard file's bytes outside its /audio
                                              chunks ("" where unknown: a schema-1 audio store)
    /shards/audio_ranges  int64 (num_ranges, 3)  shard, start, end: the byte ranges of the
                                              shard files that hold /audio's chunks, ascending

A shard (``shard-NNNNN.h5``, written by one worker, ``msagg.data.formats.cache_writer.write_shard``)::

    attrs  schema_version=2, kind="shard", shard (its number), first (listing index of its first
           planned track), num_planned, plan_id, sample_rate, sha256 (of /audio)
    /audio           int16 (num_samples,)     its decoded tracks, concatenated
    /rows            int64 (num_kept,)        listing index of each decoded track, ascending
    /lengths         int64 (num_kept,)
    /failed_rows     int64 (num_failed,)      listing index of each track that failed
    /failed_reasons  str (num_failed,)

Shards hold consecutive tracks of the listing, so row ranges of the cache map onto shards
(``AudioCache.shards``). The reader checks at open that every shard holding tracks exists with
the recorded size; the first time a process reads a shard, that the sha256 of its bytes outside
the audio chunks is ``meta_sha256`` (read as raw bytes, before HDF5 parses the file: damaged HDF5
metadata can make the library loop forever), then that its sha256 attribute and length are the
recorded ones: a missing, replaced or damaged shard raises ``CacheError`` naming the shard and its
tracks. The audio chunks carry Fletcher-32 (below), so every byte of a shard is covered, and
the check reads only the shard's metadata (about 0.03% of it).

A *linked* cache (``write_linked_cache``; ``msagg prepare --audio-from RUN``, crossval's folds)
is an ``index.h5`` alone: its own tables, and shard entries that point into the audio store's
cache folder by relative path (``../../audio/cache/shard-00000.h5``), so that run folders moved
together keep working; ``linked`` is true and ``audio_config_hash`` is the store's. A store of
schema 1 is one shard (its ``cache.h5``, sha256 "": checked by config_hash and length instead).

Schema version 1 (msagg before the sharded cache; still read, never written): one file
``<prepare run>/cache.h5``::

    attrs  schema_version=1, sample_rate, task, dataset, split_info (JSON), config_hash
    /audio /offsets /lengths /track_ids /sources /labels /label_names /split /skipped
           (as above; /offsets into the one /audio of all tracks concatenated)

and its linked form: ``/audio`` an HDF5 external link to another cache's ``/audio``, by the path
from this file's folder, with attrs ``audio_config_hash`` and ``audio_num_samples`` pinning it.
Such a cache reads as one shard.

Integrity: the numeric datasets of every file carry HDF5's per-chunk Fletcher-32 checksum,
verified on every read: a damaged chunk raises ``CacheError`` naming the shard and the tracks
whose samples lie in it. The text tables of the index (which take no filter) are checked against
``text_sha256`` at open. Schema-1 caches written before the checksum existed read unverified, and
caches written before ``text_sha256`` and ``/shards/meta_sha256`` existed read without those checks.
The writers (``msagg.data.formats.cache_writer``) stream through ``msagg.data.atomic.CheckedFile`` under a temporary
name: a failed write (a full disk) raises ``WriteError`` at once and leaves no file behind.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np

from msagg.data.errors import MsaggError
from msagg.data.runs import run_folder

SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
"""Versions the reader takes (1: the single-file cache of older msagg)."""
INT16_SCALE = 32767
"""float -> int16: clip to [-1, 1] and multiply by this (so +1.0 fits)."""
READ_SCALE = 32768
"""int16 -> float: divide by this (so every value lies in [-1, 1))."""
CHUNK_SAMPLES = 1 << 16
"""HDF5 chunk of /audio (128 KiB): small enough that a random crop reads little beyond itself."""
DIR_NAME = "cache"
"""The audio cache's folder in a prepare run folder."""
INDEX_NAME = "index.h5"
PLAN_NAME = "plan.json"
LEGACY_FILE_NAME = "cache.h5"
"""The schema-1 cache's name in a prepare run folder."""
TEXT_TABLES = ("track_ids", "sources", "label_names", "split", "skipped", "shards/file", "shards/sha256",
               "shards/meta_sha256")
"""The text tables of a schema-2 index, each covered by its ``text_sha256`` attribute."""


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


def cache_file(path: str | os.PathLike) -> Path:
    """The file ``AudioCache`` opens for ``path``.

    Args:
        path: A prepare run folder, its ``cache/`` folder, the ``index.h5`` in it, or a
            schema-1 ``cache.h5`` (or a prepare run folder holding one).

    Returns:
        ``path`` when it is a file (or names none that exists); else ``cache/index.h5`` of the
        folder, or its ``cache.h5`` when it holds only that.
    """
    path = Path(path)
    if path.is_file() or not path.is_dir():
        return path
    for inside in (path / INDEX_NAME, path / DIR_NAME / INDEX_NAME, path / LEGACY_FILE_NAME):
        if inside.is_file():
            return inside
    # Nothing finished there: name the index it would hold (a cache folder's, else a run folder's).
    if path.name == DIR_NAME and not (path / DIR_NAME).is_dir() and not (path / "config.json").exists():
        return path / INDEX_NAME
    return path / DIR_NAME / INDEX_NAME


def cache_run_folder(path: str | os.PathLike) -> Path:
    """The prepare run folder of a cache given as ``cache_file`` takes it (the folder that holds ``DONE``)."""
    path = Path(path)
    if not path.exists():
        return run_folder(path)
    file = cache_file(path)
    if file.name == INDEX_NAME and file.parent.name == DIR_NAME:
        return file.parent.parent
    return file.parent


@dataclasses.dataclass(frozen=True)
class ShardRange:
    """Rows ``[first, end)`` of a cache, whose samples all lie in one shard file.

    Attributes:
        shard: The shard's number in the cache's shard table.
        path: Its file.
        first, end: Row range in cache order.
    """

    shard: int
    path: Path
    first: int
    end: int
