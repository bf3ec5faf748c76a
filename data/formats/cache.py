"""The audio cache reader, ``AudioCache``: the tables at open, each shard's samples on first read.

The layout, the names of its files and the resolvers from a user's path (``cache_file``,
``cache_run_folder``) are in ``msagg.data.formats.cache_layout``, whose docstring is the reference;
they are importable from here too. The writers are in ``msagg.data.formats.cache_writer``.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
from pathlib import Path

import h5py
import numpy as np

from msagg.data.formats.cache_layout import (  # noqa: F401 (the layout's names, importable from here as before)
    CHUNK_SAMPLES, DIR_NAME, INDEX_NAME, INT16_SCALE, LEGACY_FILE_NAME, PLAN_NAME, READ_SCALE, SCHEMA_VERSION,
    SCHEMA_VERSIONS, CacheError, ShardRange, cache_file, cache_run_folder, to_int16,
)
from msagg.data.formats.cache_v1 import first_line, open_v1_audio
from msagg.data.integrity import (damaged_ranges, describe_read_error, name_some, ranges_text, schema_version_problem,
                                  checked_outside, text_sha256_problem)
from msagg.data.splits import SPLITS

logger = logging.getLogger(__name__)

MAX_OPEN_SHARDS = 64
"""Shard files a reader keeps open at once (the least recently used one is closed first)."""

_TABLES = ("track_ids", "sources", "labels", "label_names", "split", "skipped", "offsets", "lengths")
_ATTRS = ("schema_version", "sample_rate", "task", "dataset", "split_info", "config_hash")
_V2_TABLES = ("shard", "shards/file", "shards/num_samples", "shards/bytes", "shards/sha256")
_V2_ATTRS = ("audio_config_hash", "linked")
_META_TABLES = ("shards/meta_sha256", "shards/audio_ranges")
"""Tables of the raw-byte shard check (absent from indexes of older msagg: their shards read unchecked)."""


class AudioCache:
    """Reads an audio cache (schema 2, sharded, or schema 1); waveforms are read on demand.

    The tables are read at open; each shard file is opened the first time one of its tracks is
    read, and stays open (at most ``MAX_OPEN_SHARDS`` at once). Use as a context manager (or call
    ``close``). Pickling a reader pickles its path, and the copy opens the cache again (no shard
    open), so it can be handed to worker processes. Safe to share between threads.

    Args:
        path: A prepare run folder, its ``cache/`` folder or ``index.h5``, or a schema-1
            ``cache.h5`` (``cache_file``).

    Attributes:
        path: The file opened: ``cache/index.h5``, or a schema-1 ``cache.h5``.
        schema_version: 2, or 1.
        sample_rate: Hz.
        task: "tags" or "classes".
        dataset: Dataset name.
        split_info: How the split was made (dict).
        config_hash: Hash of the prepare config that made the cache.
        label_names: list[str] (num_labels).
        track_ids, sources: np str arrays (num_tracks,).
        labels: uint8 (num_tracks, num_labels).
        split: np str array (num_tracks,).
        shard_of: int64 (num_tracks,), the shard holding each track (0 for schema 1).
        offsets, lengths: int64 (num_tracks,), samples: where each track starts in its shard.
        skipped: list of (source, reason) left out when the cache was made.
        linked: Whether the samples lie in another prepare run's cache (the audio store).
        shard_files: list[Path], the files holding the samples (schema 1: the cache itself, or
            the store its /audio links to).
        shard_num_samples, shard_bytes: int64 (num_shards,), their /audio lengths and file sizes.
        shard_sha256: list[str], sha256 of each /audio ("" where unknown: a schema-1 file).
        shard_meta_sha256: list[str], sha256 of each shard file's bytes outside its audio chunks
            ("" where unknown: a schema-1 file, or an index of an older msagg).
        shard_audio_ranges: int64 (num_ranges, 3), shard, start, end: the byte ranges of the
            shard files holding audio chunks.
        audio_store: Where the samples lie: the folder of the shards (schema 2), or the file.
        audio_config_hash: config_hash of the run that decoded the samples.
        audio_num_samples: Samples of all shards together.

    Raises:
        CacheError: If the file is missing, is not a readable HDF5 file, has an unknown
            ``schema_version`` (or one that is not an integer), lacks part of the layout, or a
            table fails its checksum (Fletcher-32, or ``text_sha256`` for the text tables); if a
            shard holding tracks is missing or has another size;
            for a schema-1 linked cache, if its audio store is missing, unreadable or was
            replaced. Messages name the cache and the shard or store.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = cache_file(path)
        self._closed = False
        self._lock = threading.RLock()
        self._open: collections.OrderedDict[int, tuple[h5py.File | None, h5py.Dataset]] = collections.OrderedDict()
        self._keep: list[h5py.File] = []
        if not self.path.is_file():
            raise CacheError(f"{self.path}: no such audio cache (run `msagg prepare` first)")
        try:
            f = h5py.File(self.path, "r")
        except OSError as err:
            raise CacheError(f"{self.path}: not a readable HDF5 audio cache ({first_line(err)})") from None
        try:
            self._read_metadata(f)
            if self.schema_version == 1:
                self._keep.append(f)
                self._open[0] = (None, self._v1_shard(f))
            else:
                f.close()
                self._check_shard_files()
        except BaseException:
            f.close()
            self.close()
            raise

    # --- reading the tables --------------------------------------------------------------------

    def _read_metadata(self, f: h5py.File) -> None:
        version = f.attrs.get("schema_version")
        if version is None:
            raise CacheError(f"{self.path}: not an audio cache (no schema_version attribute)")
        if f.attrs.get("kind") == "shard":
            raise CacheError(f"{self.path}: a shard of an audio cache, not the cache; give its folder "
                             f"({self.path.parent}) or the prepare run folder")
        problems = [schema_version_problem(version, v) for v in SCHEMA_VERSIONS]
        if all(problems):
            raise CacheError(f"{self.path}: audio cache {problems[-1]} is not supported (this msagg reads schema "
                             f"versions {', '.join(map(str, SCHEMA_VERSIONS))}, integers); prepare the dataset again")
        self.schema_version = int(version)
        v2 = self.schema_version == 2
        # A schema-1 /audio is checked as a link: an external one to a missing file is reported later.
        names = _TABLES + (_V2_TABLES if v2 else ("audio",))
        missing = [f"/{name}" for name in names if f.get(name, getlink=True) is None] + [
            f"attribute {name}" for name in _ATTRS + (_V2_ATTRS if v2 else ()) if name not in f.attrs]
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

        text = {name: read(name, True) for name in ("label_names", "track_ids", "sources", "split", "skipped")}
        if v2:
            text.update({name: read(name, True) for name in ("shards/file", "shards/sha256")})
            if all(f.get(name, getlink=True) is not None for name in _META_TABLES):
                text["shards/meta_sha256"] = read("shards/meta_sha256", True)
        problem = text_sha256_problem(f, text)
        if problem:
            raise CacheError(f"{self.path}: damaged audio cache: {problem}; prepare the dataset again")
        self.label_names = [str(s) for s in text["label_names"]]
        self.track_ids = np.asarray(text["track_ids"], dtype=str)
        self.sources = np.asarray(text["sources"], dtype=str)
        self.labels = np.asarray(read("labels"), dtype=np.uint8)
        self.split = np.asarray(text["split"], dtype=str)
        self.offsets = np.asarray(read("offsets"), dtype=np.int64)
        self.lengths = np.asarray(read("lengths"), dtype=np.int64)
        self.skipped = [(str(a), str(b)) for a, b in text["skipped"].reshape(-1, 2)]
        n = self.offsets.shape[0]
        shapes = {"lengths": self.lengths.shape[0], "track_ids": self.track_ids.shape[0],
                  "sources": self.sources.shape[0], "labels": self.labels.shape[0], "split": self.split.shape[0]}
        if v2:
            self.shard_of = np.asarray(read("shard"), dtype=np.int64)
            shapes["shard"] = self.shard_of.shape[0]
        else:
            self.shard_of = np.zeros(n, dtype=np.int64)
        bad = {k: v for k, v in shapes.items() if v != n}
        if bad or self.labels.shape[1:] != (len(self.label_names),):
            raise CacheError(f"{self.path}: inconsistent audio cache: {n} offsets but {bad or shapes}, "
                             f"labels {self.labels.shape} for {len(self.label_names)} label names")
        if not v2:
            return
        files = [str(s) for s in text["shards/file"]]
        self.shard_num_samples = np.asarray(read("shards/num_samples"), dtype=np.int64)
        self.shard_bytes = np.asarray(read("shards/bytes"), dtype=np.int64)
        self.shard_sha256 = [str(s) for s in text["shards/sha256"]]
        if "shards/meta_sha256" in text:
            self.shard_meta_sha256 = [str(s) for s in text["shards/meta_sha256"]]
            self.shard_audio_ranges = np.asarray(read("shards/audio_ranges"), dtype=np.int64)
        else:
            self.shard_meta_sha256 = [""] * len(files)
            self.shard_audio_ranges = np.zeros((0, 3), dtype=np.int64)
        if not (len(files) == len(self.shard_num_samples) == len(self.shard_bytes) == len(self.shard_sha256)
                == len(self.shard_meta_sha256)) or self.shard_audio_ranges.shape[1:] != (3,):
            raise CacheError(f"{self.path}: inconsistent audio cache: the tables of /shards differ in length")
        # Joined to the index's folder lexically, as the writer made them (never the working directory).
        self.shard_files = [Path(os.path.normpath(self.path.parent / name)) for name in files]
        end = self.offsets + self.lengths
        if n and (self.shard_of.min() < 0 or self.shard_of.max() >= len(files) or self.offsets.min() < 0
                  or (end > self.shard_num_samples[np.clip(self.shard_of, 0, max(len(files) - 1, 0))]).any()):
            raise CacheError(f"{self.path}: inconsistent audio cache: tracks lie outside their shards")
        self.linked = bool(f.attrs["linked"])
        self.audio_config_hash = str(f.attrs["audio_config_hash"])
        self.audio_num_samples = int(self.shard_num_samples.sum())
        parents = {p.parent for p in self.shard_files}
        if len(files) == 1 and not self.shard_sha256[0]:  # linked to a schema-1 cache: the file
            self.audio_store = self.shard_files[0]
        else:
            self.audio_store = parents.pop() if len(parents) == 1 else self.path.parent

    def _v1_shard(self, f: h5py.File) -> h5py.Dataset:
        """A schema-1 cache as a table of one shard: the file holding /audio (opened and checked here)."""
        v1 = open_v1_audio(self.path, f, self.config_hash, self.offsets, self.lengths)
        if v1.handle is not None:
            self._keep.append(v1.handle)
        self.linked = v1.linked
        self.shard_files = [v1.file]
        self.shard_num_samples = np.array([v1.num_samples], dtype=np.int64)
        self.shard_bytes = np.array([v1.file.stat().st_size], dtype=np.int64)
        self.shard_sha256 = [""]
        self.shard_meta_sha256 = [""]
        self.shard_audio_ranges = np.zeros((0, 3), dtype=np.int64)
        self.audio_store = v1.file
        self.audio_config_hash = v1.config_hash
        self.audio_num_samples = v1.num_samples
        return v1.audio

    # --- shards --------------------------------------------------------------------------------

    def _shard_error(self, shard: int, problem: str) -> CacheError:
        """One line naming the cache, the shard, what is wrong and the tracks it holds."""
        path = self.shard_files[shard]
        tracks = name_some(self.track_ids[self.shard_of == shard])
        if self.linked:
            return CacheError(f"{self.path}: its audio lies in {path}, which {problem} (tracks {tracks}; move "
                              "prepare run folders together, or prepare the dataset again)")
        return CacheError(f"{self.path}: audio shard {path} {problem} (tracks {tracks}); prepare the dataset again")

    def _check_shard_files(self) -> None:
        """Every shard holding tracks of this cache exists with the size the index records."""
        for shard in np.unique(self.shard_of).tolist():
            try:
                size = self.shard_files[shard].stat().st_size
            except FileNotFoundError:
                raise self._shard_error(shard, "is missing") from None
            except OSError as err:
                raise self._shard_error(shard, f"cannot be read ({err.strerror or err})") from None
            if size != self.shard_bytes[shard]:
                raise self._shard_error(shard, f"was replaced ({size} bytes; expected {self.shard_bytes[shard]})")

    def _check_shard_bytes(self, shard: int) -> None:
        """Before HDF5 parses a shard (damaged metadata can make it loop forever): its metadata is the recorded one."""
        expected = self.shard_meta_sha256[shard]
        if not expected:  # an index of an older msagg, or a schema-1 audio store
            return
        ranges = self.shard_audio_ranges[self.shard_audio_ranges[:, 0] == shard, 1:].tolist()
        try:
            found = checked_outside(self.shard_files[shard], ranges, expected)
        except OSError as err:
            raise self._shard_error(shard, f"cannot be read ({err.strerror or err})") from None
        if found:
            raise self._shard_error(shard, f"was replaced or damaged (the sha256 of its HDF5 metadata is {found[:16]}, "
                                           f"the index records {expected[:16]})")

    def _open_shard(self, shard: int) -> tuple[h5py.File, h5py.Dataset]:
        """Opens a schema-2 shard file, checking that it is the one the index records."""
        path = self.shard_files[shard]
        if not path.is_file():
            raise self._shard_error(shard, "is missing")
        self._check_shard_bytes(shard)
        try:
            f = h5py.File(path, "r")
        except OSError as err:
            raise self._shard_error(shard, f"is not a readable HDF5 file ({first_line(err)})") from None
        try:
            audio = f.get("audio")
            expected = self.shard_sha256[shard]
            if expected:
                found = str(f.attrs.get("sha256", ""))
            else:  # a schema-1 audio store: its config hash stands for its identity
                found, expected = str(f.attrs.get("config_hash", "")), self.audio_config_hash
            if not isinstance(audio, h5py.Dataset) or audio.ndim != 1 or audio.dtype != np.int16:
                raise self._shard_error(shard, "holds no int16 /audio")
            if found != expected or audio.shape[0] != self.shard_num_samples[shard]:
                raise self._shard_error(shard, f"was replaced (sha256 or hash {found[:16] or '-'}, {audio.shape[0]} "
                                               f"samples; expected {expected[:16]}, {self.shard_num_samples[shard]})")
        except BaseException:
            f.close()
            raise
        return f, audio

    def _audio(self, shard: int) -> h5py.Dataset:
        """The /audio of a shard, opened on first use (call with ``_lock`` held)."""
        entry = self._open.get(shard)
        if entry is not None:
            self._open.move_to_end(shard)
            return entry[1]
        f, audio = self._open_shard(shard)
        self._open[shard] = (f, audio)
        while len(self._open) > MAX_OPEN_SHARDS:
            _, (old, _) = self._open.popitem(last=False)
            if old is not None:
                old.close()
        return audio

    @property
    def shards(self) -> list[ShardRange]:
        """The cache's rows cut where the shard changes, in cache order: each range lies in one file.

        A decoded cache gives one range per shard that holds tracks (shards hold consecutive
        tracks); a schema-1 cache gives one range of every row. A distributed reader can take the
        ranges one by one, each reading a single file.
        """
        n = self.num_tracks
        if n == 0:
            return []
        cuts = (np.flatnonzero(np.diff(self.shard_of)) + 1).tolist()
        return [ShardRange(int(self.shard_of[a]), self.shard_files[int(self.shard_of[a])], a, b)
                for a, b in zip([0, *cuts], [*cuts, n])]

    # --- tracks --------------------------------------------------------------------------------

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
        if self._closed:
            raise ValueError(f"{self.path}: the audio cache is closed")
        i = int(i)
        if not 0 <= i < self.num_tracks:
            raise IndexError(f"{self.path}: track index {i} out of range (0..{self.num_tracks - 1})")
        return i

    @property
    def checksummed(self) -> bool:
        """Whether the /audio of every shard carries Fletcher-32 checksums (False for old schema-1 caches)."""
        with self._lock:
            return all(bool(self._audio(s).fletcher32) for s in np.unique(self.shard_of).tolist())

    def _samples(self, i: int, start: int, stop: int) -> np.ndarray:
        """int16 samples ``[start, stop)`` of track ``i``; ``CacheError`` naming the tracks of a damaged chunk."""
        shard = int(self.shard_of[i])
        base = int(self.offsets[i])
        with self._lock:
            audio = self._audio(shard)
            try:
                return audio[base + start : base + stop]
            except OSError as err:
                ranges = damaged_ranges(audio, base + start, base + stop)
                why = describe_read_error(err)
        hit = np.zeros(self.num_tracks, dtype=bool)
        for lo, hi in ranges:
            hit |= (self.shard_of == shard) & (self.offsets < hi) & (self.offsets + self.lengths > lo)
        if self.schema_version == 2:
            where = f" shard {self.shard_files[shard]}"
        else:
            where = "" if not self.linked else f" (its audio store {self.audio_store})"
        raise CacheError(
            f"{self.path}: damaged audio cache{where}: samples {ranges_text(ranges)} {why}; "
            f"tracks affected: {name_some(self.track_ids[hit])}; prepare the dataset again")

    def track(self, i: int) -> np.ndarray:
        """A whole track.

        Returns:
            float32 (lengths[i],) in [-1, 1).

        Raises:
            CacheError: If its shard is missing or was replaced, or its samples fail their checksum
                (naming every track of the damaged chunks).
        """
        i = self._check_index(i)
        return self._samples(i, 0, int(self.lengths[i])).astype(np.float32) / READ_SCALE

    def crop(self, i: int, start: int, length: int) -> np.ndarray:
        """Samples ``[start, start + length)`` of a track; what lies outside the track is zeros.

        Args:
            i: Track index.
            start: First sample (may be negative or beyond the end: those samples are zero).
            length: Number of samples.

        Returns:
            float32 (length,).

        Raises:
            CacheError: As ``track``.
        """
        i = self._check_index(i)
        start, length = int(start), int(length)
        if length < 0:
            raise ValueError(f"crop length must be >= 0, got {length}")
        out = np.zeros(length, dtype=np.float32)
        lo, hi = max(start, 0), min(start + length, int(self.lengths[i]))
        if hi > lo:
            out[lo - start : hi - start] = self._samples(i, lo, hi).astype(np.float32) / READ_SCALE
        return out

    def close(self) -> None:
        """Closes every open file (idempotent)."""
        with self._lock:
            self._closed = True
            for f, _ in self._open.values():
                if f is not None:
                    f.close()
            self._open.clear()
            for f in self._keep:
                f.close()
            self._keep.clear()

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
