"""Stage 1, prepare: decode a dataset once into the audio cache (``cache/``) and list what was skipped.

The cache is a folder of shards of consecutive tracks, about ``shard_mb`` each, and an index
(``msagg.data.formats.cache_layout`` documents the layout). Decoding runs in a process pool (``msagg.stages.engines.decode``),
or with engine "ray" as Ray tasks (``msagg.stages.engines.ray_decode``): each worker decodes one shard at a
time, appending track after track to the shard's temporary file and renaming it when complete,
so no second copy of the audio is ever made (the disk peaks at the cache's size) and a killed
run loses at most the shards in flight: a re-run decodes only the shards that are missing. Then
``cache/index.h5`` and ``skipped.csv`` are written.

File names are bytes: any name the file system holds (not UTF-8, with a newline, a leading dash)
is listed and decoded. The cache (h5py stores UTF-8 text), ``skipped.csv``, the logs and the error
messages hold names as ``msagg.data.names.escape_name`` writes them (``caf\\xe9.ogg`` for the
Latin-1 bytes ``b"caf\\xe9.ogg"``, ``a\\nb.wav`` for a newline): the track ids, sources, label
names and skipped entries of the cache, and both columns of ``skipped.csv``.
``os.fsencode(unescape_name(source))`` gives a file's name back as bytes.

With ``audio_from`` (another finished prepare run of the same dataset and rate, the *audio
store*), nothing is decoded: the dataset is listed as usual, each listed track is found by its id
in the store, and ``cache/`` holds only an index (``msagg.data.formats.cache_writer.write_linked_cache``) with
this run's own tables and the store's shards named by relative path. ``msagg crossval`` decodes a
dataset once this way and gives each fold its own split.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import numbers
import os
import shutil
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from msagg.data.atomic import atomic_write, remove_stale_temps
from msagg.data import adapters
from msagg.data.adapters import AdapterOptions
from msagg.data.errors import ConfigError
from msagg.data.formats import cache_layout
from msagg.data.formats.cache import AudioCache
from msagg.data.formats.cache_writer import write_index, write_linked_cache
from msagg.data.names import escape_name
from msagg.data.tracklist import TrackList
from msagg.stages.engines.decode import PrepareError, decode_all, num_workers, unescape_text
from msagg.stages.engines import ADDRESS_HELP, ENGINES, check_engine, describe_engines
from msagg.stages.engines.shard_plan import DEFAULT_SHARD_MB
from msagg.stages.runs.folder import OMIT_DEFAULT, OMIT_NONE, RUNTIME, RunFolder, lock_scope
from msagg.stages.runs.upstream import Upstream, open_upstream, upstream_folder

logger = logging.getLogger(__name__)

CACHE_NAME = cache_layout.DIR_NAME
PARTS_NAME = "parts"
"""Where an older msagg kept decoded tracks while it ran; removed when such a run is resumed."""
SKIPPED_NAME = "skipped.csv"

PRESETS: dict[str, dict] = {
    # A few hundred tracks of 10-30 s: about 1.7 h of audio, ~270 MB of cache.
    "demo": {"num_tracks": 300, "min_sec": 10.0, "max_sec": 30.0},
    # The rendered general corpus (`make pretrain-general-gm`, synth-gm-tags): 2000 tracks of
    # 10-20 s, about 8.3 h of audio, ~2.6 GB of cache at 22050 Hz.
    "general-gm": {"num_tracks": 2000, "min_sec": 10.0, "max_sec": 20.0},
    # Tests and smoke runs: seconds to make.
    "tiny": {"num_tracks": 24, "min_sec": 2.0, "max_sec": 4.0},
}


def _field(default, help: str, **metadata):
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(AdapterOptions):
    """What goes into an audio cache: the dataset, the adapter's options, and the rate.

    Every field of ``msagg.data.adapters.AdapterOptions`` (the generated corpus's size; split_seed,
    folds, fold, fold_from_name, fold_valid, top_k, split) is a field of this config too; each
    field's help text is in its metadata.

    Attributes:
        dataset: Adapter name, a key of ``msagg.data.adapters.ADAPTERS``.
        source: Where the dataset lives (a folder, a CSV file, a dataset root); None for the
            embedded synthetic datasets.
        sample_rate: Rate of the cache (and of the models), Hz.
        strict: Fail on the first file that cannot be decoded instead of skipping it.
        audio_from: A finished prepare run (folder, or its cache) of the same dataset and
            sample rate holding every listed track; its audio is linked, not decoded again.
            Recorded as the run's upstream. None: decode.
        shard_mb: About how many MB (10^6 bytes) of int16 audio a shard holds (a corpus is cut
            into at least ``msagg.stages.engines.shard_plan.MIN_SHARDS`` shards when it has the tracks). In the
            config hash only when not the default, so older run folders keep theirs.
        engine: Where the shards are decoded: "local" (processes of this machine) or "ray" (one
            Ray task per shard, ``msagg.stages.engines.ray_decode``). The cache is the same either way, so the
            engine is a ``RUNTIME`` field: not in config.json nor the hash.
        address: The Ray cluster to use with engine "ray" ("HOST:6379", "ray://HOST:10001",
            "auto"); None: a Ray cluster of this machine's cores, started for the run.
            ``RUNTIME`` as well.
    """

    dataset: str = _field("synth-tags", "Dataset adapter: " + "; ".join(
        f"{a.name} ({a.summary})" for a in adapters.ADAPTERS.values()) + ". Example: --dataset folder.")
    source: str | None = _field(
        None, "Where the dataset lives: a folder (folder, esc10, mtat, gtzan, fsdd) or a CSV file (csv). "
        "Example: --source ~/data/GTZAN.", path=True)
    sample_rate: int = _field(22050, "Rate of the cache and the models, Hz (default 22050).")
    strict: bool = _field(False, "Fail on the first unreadable file instead of skipping it.")
    audio_from: str | None = _field(
        None, "A finished prepare run of the same dataset and sample rate whose decoded audio this run reuses: "
        "nothing is decoded, the cache holds this run's tracks, labels and split and links to that run's audio "
        "(move the two run folders together). Example: --audio-from runs/esc10/audio.", path=True, **{OMIT_NONE: True})
    shard_mb: float = _field(
        DEFAULT_SHARD_MB, f"About how many MB of audio each file of the cache (a shard) holds (default "
        f"{DEFAULT_SHARD_MB:g}); small corpora are cut into at least 32 shards so every worker has some.",
        **{OMIT_DEFAULT: True})
    engine: str = _field("local", f"Where to decode: {describe_engines()}.", choices=tuple(ENGINES), **{RUNTIME: True})
    address: str | None = _field(None, ADDRESS_HELP, **{RUNTIME: True})

    def __post_init__(self):
        def bad(name: str, why: str):
            raise ConfigError(f"prepare: {name}={getattr(self, name)!r}: {why}")

        if not isinstance(self.dataset, str) or not self.dataset.strip():
            bad("dataset", "must be a dataset name, e.g. 'synth-tags' or 'folder'")
        if self.source is not None and (not isinstance(self.source, str) or not self.source.strip()):
            bad("source", "must be a path (a folder or a CSV file) or None")
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, numbers.Integral) \
                or self.sample_rate < 1000:
            bad("sample_rate", "must be an integer rate in Hz, at least 1000")
        if not isinstance(self.strict, bool):
            bad("strict", "must be true or false")
        if self.audio_from is not None and (not isinstance(self.audio_from, str) or not self.audio_from.strip()):
            bad("audio_from", "must be a prepare run folder (or its cache) or None")
        if isinstance(self.shard_mb, bool) or not isinstance(self.shard_mb, numbers.Real) \
                or not 0 < self.shard_mb < float("inf"):
            bad("shard_mb", "must be a positive number of MB, e.g. 1024")
        check_engine(self.engine, self.address, "prepare: ")
        # A dataset the registry does not know is refused when listed (prepare.run can be given
        # a track list of its own); its options are checked by the rules that hold for all.
        problems = self.problems(adapters.ADAPTERS.get(self.dataset))
        if problems:
            raise ConfigError("prepare: " + "; ".join(problems))


def list_tracks(config: Config) -> TrackList:
    """Asks the dataset's adapter for its track list (validated before any decoding).

    Raises:
        data.adapters.DatasetError: Listing every problem found in the dataset.
    """
    return adapters.make_tracklist(config.dataset, config.source, config.adapter_options())


def pin_inputs(config: Config) -> Config:
    """The config with the identity of the files it names by path filled in (``adapters.pin_options``).

    synth-gm-*: ``soundfont_sha256``, the sha256 of the SoundFont file, so that the config hash (and
    the run folder's identity) changes with the file, not only with its path.

    Raises:
        data.errors.MsaggError: One line naming a SoundFont that is missing, unreadable or not the
            one ``soundfont_sha256`` pins, or saying how to install a missing renderer.
    """
    changes = adapters.pin_options(config.dataset, config.adapter_options())
    return dataclasses.replace(config, **changes) if changes else config


@lock_scope
def run(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    tracklist: TrackList | None = None,
    engine_options: Mapping[str, Any] | None = None,
) -> Path:
    """Runs the prepare stage into ``out_dir``, resuming an interrupted run of the same config.

    Args:
        config: The stage config; ``pin_inputs`` fills in what it leaves unpinned (config.json
            records the result).
        out_dir: The run folder.
        workers: Decoding processes (default: the usable cores); 1 decodes in this process.
            With engine "ray" and no address, the CPUs of the Ray cluster started for the run.
            Does not change the result.
        overwrite: Replace a run folder that holds another config (or a finished run), and
            decode again the shards an interrupted run had finished.
        progress: Show a progress bar.
        tracklist: Use this track list instead of asking the adapter named by
            ``config.dataset`` (for tests and library use; its ``name`` must equal
            ``config.dataset``, and the config should describe where it came from).
        engine_options: With engine "ray": keyword options of ``msagg.stages.engines.ray_decode.ShardDecoder``
            (``max_retries``, ``die_once``).

    Returns:
        The cache folder, ``out_dir/cache`` (``out_dir/cache.h5`` for a run an older msagg finished).

    Raises:
        stages.runs.folder.RunConflictError: If ``out_dir`` holds another config.
        stages.runs.lock.RunFolderBusy: If another process is running a stage in ``out_dir``.
        PrepareError: With ``config.strict``, for the first file that cannot be decoded (naming it
            and the reason); in any mode, when no track at all could be decoded.
        data.adapters.DatasetError: For a dataset the adapter refuses.
        msagg.data.synth.soundfont.SoundFontError: For synth-gm-*, a SoundFont that cannot be used (``pin_inputs``).
        RayEngineError: With engine "ray": Ray is not installed, the cluster cannot
            be reached (nothing is written in either case), or a worker kept dying.
    """
    started = time.perf_counter()
    workers = num_workers(workers)
    if tracklist is not None and tracklist.name != config.dataset:
        raise PrepareError(f"track list {tracklist.name!r} does not match config dataset {config.dataset!r}")
    config = pin_inputs(config)
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir, "prepare", config).lock()
    to_do = not (folder.done and not overwrite)
    store = _open_store(config.audio_from, out_dir) if config.audio_from is not None and to_do else None
    decodes = config.audio_from is None and to_do
    decoder = ENGINES[config.engine].module("decode").decoder if decodes else None
    with decoder(config, workers, engine_options) if decoder else contextlib.nullcontext() as engine:
        # The engine (Ray's absence, an unreachable cluster) and the audio store were met before this writes.
        if not folder.start(overwrite, upstream=None if store is None else {"audio_from": store}):
            return _cache_of(out_dir)
        remove_stale_temps(out_dir)  # temps of atomic writes (shards, the index) a killed run left
        _remove_unfinished(out_dir, overwrite)
        if tracklist is None:
            tracklist = list_tracks(config)
        if len(tracklist) == 0:
            raise PrepareError(f"{config.dataset}: the dataset has no tracks to decode"
                               + (f" ({len(tracklist.skipped)} skipped while listing)" if tracklist.skipped else ""))
        logger.info("%s: %d tracks listed (%d skipped while listing)", tracklist.name, len(tracklist),
                    len(tracklist.skipped))
        if config.strict and tracklist.skipped:
            source, reason = tracklist.skipped[0]
            more = f" (and {len(tracklist.skipped) - 1} more)" if len(tracklist.skipped) > 1 else ""
            raise PrepareError(f"{escape_name(source)}: {reason}{more} "
                               "(strict mode; without it the file would be skipped)")
        if store is not None:
            return _link_to_store(config, folder, tracklist, store, started=started)
        return _decode(config, folder, tracklist, started=started, workers=workers, progress=progress, engine=engine)


def _decode(config: Config, folder: RunFolder, tracklist: TrackList, *, started: float, workers: int, progress: bool,
            engine=None) -> Path:
    """Decodes the shards left to do (``decode_all``, locally or with ``engine``), writes the index, finishes."""
    out_dir = folder.path
    cache_dir = out_dir / CACHE_NAME
    shards, stats = decode_all(tracklist, cache_dir, sample_rate=config.sample_rate, shard_mb=config.shard_mb,
                               strict=config.strict, workers=workers if engine is None else engine.workers,
                               progress=progress, engine=engine)
    keep = [row for shard in shards for row in shard["rows"]]
    failed = sorted((row, reason) for shard in shards for row, reason in shard["failed"])
    skipped = list(tracklist.skipped) + [(tracklist.sources[row], unescape_text(reason)) for row, reason in failed]
    _write_skipped(out_dir / SKIPPED_NAME, skipped)
    if not keep:
        first_source, first_reason = skipped[0]
        raise PrepareError(
            f"{tracklist.name}: none of the {len(tracklist)} tracks could be decoded (first: "
            f"{escape_name(first_source)}: {first_reason}); reasons in {out_dir / SKIPPED_NAME}. Fix the files, "
            "then run again with --overwrite"
        )

    kept = _subset(tracklist, keep, skipped)
    write_index(cache_dir / cache_layout.INDEX_NAME, _as_text(kept), shards, sample_rate=config.sample_rate,
                config_hash=folder.hash)
    # Every decoder of this run has ended and the folder is locked: a temp still here is a killed
    # run's, whose workers were still exiting (so looked alive) when this run started.
    remove_stale_temps(cache_dir, recursive=False, writers_ended=True)

    audio_sec = stats["audio_samples"] / config.sample_rate
    return _finish(folder, tracklist, kept, skipped, started, {
        "num_decoded_this_run": stats["decoded"],
        "files_per_sec": _rate(stats["decoded"], stats["seconds"]),
        "realtime_factor": _rate(audio_sec, stats["seconds"]),
        "realtime_factor_per_worker": _rate(audio_sec, stats["seconds"] * stats["workers"]),
        "workers": stats["workers"],
        "num_shards": stats["num_shards"],
        "engine": config.engine,
        **({config.engine: engine.summary()} if engine is not None else {}),
    })


def _cache_of(out_dir: Path) -> Path:
    """The cache of a finished run folder: ``cache/``, or the ``cache.h5`` of an older msagg's run."""
    legacy = out_dir / cache_layout.LEGACY_FILE_NAME
    return legacy if legacy.is_file() and not (out_dir / CACHE_NAME).exists() else out_dir / CACHE_NAME


def _remove_unfinished(out_dir: Path, overwrite: bool) -> None:
    """Removes what an unfinished run of an older msagg left (``parts/``, ``cache.h5``), and with
    ``overwrite`` the shards a killed run of this config left (otherwise they are resumed)."""
    for name in (PARTS_NAME, cache_layout.LEGACY_FILE_NAME) + ((CACHE_NAME,) if overwrite else ()):
        path = out_dir / name
        if path.is_dir():
            logger.info("%s: removing what an unfinished run left", path)
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _finish(folder: RunFolder, tracklist: TrackList, kept: TrackList, skipped: list[tuple[str, str]],
            started: float, stats: dict) -> Path:
    """Writes DONE with the run's summary (``stats`` added), last; returns the cache's path."""
    out_dir = folder.path
    cache_path = out_dir / CACHE_NAME
    seconds = time.perf_counter() - started
    cache_bytes = sum(p.stat().st_size for p in cache_path.iterdir() if p.is_file())
    summary = {
        "num_tracks": len(kept),
        "num_skipped": len(skipped),
        "num_listed": len(tracklist),
        "seconds": round(seconds, 3),
        **stats,
        "cache_bytes": cache_bytes,
    }
    for split in ("train", "valid", "test"):
        count = sum(1 for s in kept.split if s == split)
        summary[f"num_{split}"] = count
        if count == 0:
            logger.warning("%s: the %s split is empty", tracklist.name, split)
    if skipped:
        logger.warning("%s: %d of %d tracks skipped; reasons in %s", tracklist.name, len(skipped),
                       len(tracklist) + len(tracklist.skipped), out_dir / SKIPPED_NAME)
    if warnings := adapters.label_warnings(kept):  # logged too: a single class, labels without train tracks
        summary["warnings"] = warnings
    folder.finish(summary)
    logger.info("prepare %s: %d tracks in %s (%.1f s)", tracklist.name, len(kept), cache_path, seconds)
    return cache_path


# ----------------------------------------------------------------------------- audio_from

def _open_store(audio_from: str, out_dir: Path) -> Upstream:
    """The audio store: a finished prepare run other than this very folder (before anything is written here)."""
    if os.path.abspath(upstream_folder(audio_from, "prepare")) == os.path.abspath(out_dir):
        raise PrepareError(f"{out_dir}: audio_from names this run folder itself; give another prepare run")
    return open_upstream(audio_from, "prepare")


def _link_to_store(config: Config, folder: RunFolder, tracklist: TrackList, store_run: Upstream, *,
                   started: float) -> Path:
    """Writes ``cache/index.h5`` as a cache linked to the audio of the prepare run ``store_run``."""
    out_dir = folder.path
    with AudioCache(store_run.file) as store:
        store_run.check_file(store.path, store.config_hash)
        if (store.dataset, store.sample_rate) != (tracklist.name, config.sample_rate):
            raise PrepareError(
                f"{store.path}: audio_from must be a prepare run of the same dataset and sample rate: it holds "
                f"{store.dataset} at {store.sample_rate} Hz, this run {tracklist.name} at {config.sample_rate} Hz")
        rows, skipped_there = _store_rows(tracklist, store)
        if config.strict and skipped_there:
            source, reason = skipped_there[0]
            raise PrepareError(f"{escape_name(source)}: {reason} (skipped in {store.path}; strict mode; "
                               "without it the file would be skipped)")
        keep = [i for i, row in enumerate(rows) if row >= 0]
        skipped = list(tracklist.skipped) + skipped_there
        _write_skipped(out_dir / SKIPPED_NAME, skipped)
        if not keep:
            raise PrepareError(f"{store.path}: holds none of the {len(tracklist)} tracks {tracklist.name} lists "
                               f"(every one was skipped there; reasons in {out_dir / SKIPPED_NAME})")
        kept = _subset(tracklist, keep, skipped)
        write_linked_cache(out_dir / CACHE_NAME / cache_layout.INDEX_NAME, _as_text(kept), store,
                           [rows[i] for i in keep], config_hash=folder.hash)
        linked = {"num_decoded_this_run": 0, "audio_from": str(store_run.folder), "audio_store": str(store.audio_store)}
    return _finish(folder, tracklist, kept, skipped, started, linked)


def _store_rows(tracklist: TrackList, store: AudioCache) -> tuple[list[int], list[tuple[str, str]]]:
    """Each listed track's index in ``store`` (-1 for one the store skipped), and those skipped.

    Tracks are matched by id (both sides escaped, as the cache holds them); the source must match
    too. A track the store skipped (found by its source in the store's ``/skipped``) is skipped
    here with the store's reason.

    Returns:
        (rows, skipped): rows[i] for track i of ``tracklist``; skipped as (source, reason), unescaped.

    Raises:
        PrepareError: One line naming the first listed track the store lacks (or holds from
            another source), and how many more.
    """
    index = {tid: row for row, tid in enumerate(store.track_ids.tolist())}
    skipped_there: dict[str, str] = {}
    for source, reason in store.skipped:
        skipped_there.setdefault(source, reason)
    rows, skipped, lacking, moved = [], [], [], []
    for track_id, source in zip(tracklist.track_ids, tracklist.sources):
        tid, src = escape_name(track_id), escape_name(source)
        row = index.get(tid)
        if row is not None and store.sources[row] == src:
            rows.append(row)
            continue
        rows.append(-1)
        if row is not None:
            moved.append(f"{tid} (from {src} here, from {store.sources[row]} there)")
        elif src in skipped_there:
            skipped.append((source, unescape_text(skipped_there[src])))
        else:
            lacking.append(f"{tid} ({src})")
    for problems, what in ((lacking, "lacks track"), (moved, "holds another file as track")):
        if problems:
            more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
            raise PrepareError(f"{store.path}: the audio store {what} {problems[0]}{more} that {tracklist.name} "
                               "lists; audio_from must be a prepare run of the same files (prepare it again)")
    return rows, skipped


def _rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 3) if amount and seconds > 0 else None


def _subset(tracklist: TrackList, keep: list[int], skipped: list[tuple[str, str]]) -> TrackList:
    return dataclasses.replace(
        tracklist,
        track_ids=[tracklist.track_ids[i] for i in keep],
        sources=[tracklist.sources[i] for i in keep],
        labels=np.asarray(tracklist.labels)[np.asarray(keep, dtype=np.int64)],
        split=[tracklist.split[i] for i in keep],
        skipped=skipped,
    )


def _as_text(tracklist: TrackList) -> TrackList:
    """The track list with every name in the escaped form text files and the cache hold."""
    return dataclasses.replace(
        tracklist,
        label_names=[escape_name(n) for n in tracklist.label_names],
        track_ids=[escape_name(t) for t in tracklist.track_ids],
        sources=[escape_name(s) for s in tracklist.sources],
        skipped=[(escape_name(s), escape_name(r)) for s, r in tracklist.skipped],
    )


def _write_skipped(path: Path, skipped: list[tuple[str, str]]) -> None:
    """Writes ``skipped.csv`` (UTF-8, one line per entry): source and reason, both escaped."""
    with atomic_write(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["source", "reason"])
        writer.writerows((escape_name(source), escape_name(reason)) for source, reason in skipped)
