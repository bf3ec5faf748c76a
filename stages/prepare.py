"""Stage 1, prepare: decode a dataset once into the audio cache (cache.h5) and list what was skipped.

Decoding runs in a process pool; each finished track is saved at once as ``parts/<index>.npy``
(a failed one as ``parts/<index>.err`` with its reason), so a killed run loses at most the files
in flight and a re-run decodes only what is missing. The workers end themselves when this process
dies, even by SIGKILL (``_worker_init``). Then the parts are streamed into ``cache.h5`` (written
atomically), ``skipped.csv`` is written and ``parts/`` removed.

File names are bytes: any name the file system holds (not UTF-8, with a newline, a leading dash)
is listed and decoded. The cache (h5py stores UTF-8 text), ``skipped.csv``, the logs and the error
messages hold names as ``data.tracklist.escape_name`` writes them (``caf\\xe9.ogg`` for the
Latin-1 bytes ``b"caf\\xe9.ogg"``, ``a\\nb.wav`` for a newline): the track ids, sources, label
names and skipped entries of the cache, and both columns of ``skipped.csv``.
``os.fsencode(unescape_name(source))`` gives a file's name back as bytes.

With ``audio_from`` (another finished prepare run of the same dataset and rate, the *audio
store*), nothing is decoded: the dataset is listed as usual, each listed track is found by its id
in the store, and ``cache.h5`` is a small linked cache (``data.cache.write_linked_cache``) holding
this run's own tables and an external link to the store's audio. ``msagg crossval`` decodes a
dataset once this way and gives each fold its own split.
"""

from __future__ import annotations

import concurrent.futures
import csv
import ctypes
import dataclasses
import hashlib
import logging
import multiprocessing
import numbers
import os
import re
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from data.atomic import atomic_write, remove_stale_temps, write_text
from data.audio import AudioError
from data import adapters
from data.adapters import AdapterOptions
from data.errors import ConfigError, MsaggError
from data import cache as cache_lib
from data.cache import AudioCache, to_int16, write_cache, write_linked_cache
from data.integrity import check_same_run, require_done
from data.runs import run_file, run_folder
from data.tracklist import TrackList, escape_name, load_source, unescape_name
from stages.runfolder import OMIT_NONE, RunFolder, lock_scope

logger = logging.getLogger(__name__)

CACHE_NAME = cache_lib.FILE_NAME
SKIPPED_NAME = "skipped.csv"
PARTS_NAME = "parts"
IN_FLIGHT_PER_WORKER = 4
"""Futures queued per worker: enough to keep workers busy, few enough that memory stays flat."""
PARENT_POLL_SEC = 0.5
"""Where the kernel cannot signal a worker at its parent's death, how often the worker looks."""

PRESETS: dict[str, dict] = {
    # A few hundred tracks of 10-30 s: about 1.7 h of audio, ~270 MB of cache.
    "demo": {"num_tracks": 300, "min_sec": 10.0, "max_sec": 30.0},
    # The general pretraining corpus (`make pretrain-general`, synth-gm-tags): 2000 tracks of
    # 10-20 s, about 8.3 h of audio, ~2.6 GB of cache at 22050 Hz.
    "general": {"num_tracks": 2000, "min_sec": 10.0, "max_sec": 20.0},
    # Tests and smoke runs: seconds to make.
    "tiny": {"num_tracks": 24, "min_sec": 2.0, "max_sec": 4.0},
}


class PrepareError(MsaggError):
    """The prepare stage cannot go on; the message names the file or dataset and the reason."""


def _field(default, help: str, **metadata):
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(AdapterOptions):
    """What goes into an audio cache: the dataset, the adapter's options, and the rate.

    Every field of ``data.adapters.AdapterOptions`` (the generated corpus's size; split_seed,
    folds, fold, fold_from_name, fold_valid, top_k, split) is a field of this config too; each
    field's help text is in its metadata.

    Attributes:
        dataset: Adapter name, a key of ``data.adapters.ADAPTERS``.
        source: Where the dataset lives (a folder, a CSV file, a dataset root); None for the
            embedded synthetic datasets.
        sample_rate: Rate of the cache (and of the models), Hz.
        strict: Fail on the first file that cannot be decoded instead of skipping it.
        audio_from: A finished prepare run (folder, or its cache.h5) of the same dataset and
            sample rate holding every listed track; its audio is linked, not decoded again.
            Recorded as the run's upstream. None: decode.
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
        "nothing is decoded, cache.h5 holds this run's tracks, labels and split and links to that run's audio "
        "(move the two run folders together). Example: --audio-from runs/esc10/audio.", path=True, **{OMIT_NONE: True})

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
            bad("audio_from", "must be a prepare run folder (or its cache.h5) or None")
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
) -> Path:
    """Runs the prepare stage into ``out_dir``, resuming an interrupted run of the same config.

    Args:
        config: The stage config; ``pin_inputs`` fills in what it leaves unpinned (config.json
            records the result).
        out_dir: The run folder.
        workers: Decoding processes (default: the usable cores); 1 decodes in this process.
            Does not change the result.
        overwrite: Replace a run folder that holds another config (or a finished run), and
            decode again the tracks an interrupted run had finished or found unreadable.
        progress: Show a progress bar.
        tracklist: Use this track list instead of asking the adapter named by
            ``config.dataset`` (for tests and library use; its ``name`` must equal
            ``config.dataset``, and the config should describe where it came from).

    Returns:
        The path of ``cache.h5``.

    Raises:
        stages.runfolder.RunConflictError: If ``out_dir`` holds another config.
        stages.runfolder.RunFolderBusy: If another process is running a stage in ``out_dir``.
        PrepareError: With ``config.strict``, for the first file that cannot be decoded (naming it
            and the reason); in any mode, when no track at all could be decoded.
        data.adapters.DatasetError: For a dataset the adapter refuses.
        data.soundfont.SoundFontError: For synth-gm-*, a SoundFont that cannot be used (``pin_inputs``).
    """
    started = time.perf_counter()
    workers = _num_workers(workers)
    if tracklist is not None and tracklist.name != config.dataset:
        raise PrepareError(f"track list {tracklist.name!r} does not match config dataset {config.dataset!r}")
    config = pin_inputs(config)
    out_dir = Path(out_dir)
    store_dir = None if config.audio_from is None else run_folder(config.audio_from)
    folder = RunFolder(out_dir, "prepare", config,
                       upstream=None if store_dir is None else {"audio_from": store_dir}).lock()
    cache_path = out_dir / CACHE_NAME
    if store_dir is not None and not (folder.done and not overwrite):
        _check_store_dir(store_dir, out_dir)  # before anything is written here
    if not folder.start(overwrite):
        return cache_path
    remove_stale_temps(out_dir)  # temps of atomic writes (cache.h5, parts) a killed run left
    parts = out_dir / PARTS_NAME
    if overwrite and parts.exists():
        shutil.rmtree(parts)
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

    if store_dir is not None:
        return _link_to_store(config, folder, tracklist, store_dir, started=started)

    stats = _decode_all(tracklist, parts, config, workers=workers, progress=progress)
    done, failed = _scan_parts(parts)
    keep = [i for i in range(len(tracklist)) if i in done]
    skipped = list(tracklist.skipped) + [(tracklist.sources[i], failed[i]) for i in sorted(failed)]
    _write_skipped(out_dir / SKIPPED_NAME, skipped)
    if not keep:
        first_source, first_reason = skipped[0]
        raise PrepareError(
            f"{tracklist.name}: none of the {len(tracklist)} tracks could be decoded (first: "
            f"{escape_name(first_source)}: {first_reason}); reasons in {out_dir / SKIPPED_NAME}. Fix the files, "
            "then run again with --overwrite"
        )

    kept = _subset(tracklist, keep, skipped)
    write_cache(cache_path, _as_text(kept), _read_parts(parts, keep), sample_rate=config.sample_rate,
                config_hash=folder.hash)
    shutil.rmtree(parts)

    audio_sec = stats["audio_samples"] / config.sample_rate
    return _finish(folder, tracklist, kept, skipped, started, {
        "num_decoded_this_run": stats["decoded"],
        "files_per_sec": _rate(stats["decoded"], stats["seconds"]),
        "realtime_factor": _rate(audio_sec, stats["seconds"]),
        "realtime_factor_per_worker": _rate(audio_sec, stats["seconds"] * stats["workers"]),
        "workers": stats["workers"],
    })


def _finish(folder: RunFolder, tracklist: TrackList, kept: TrackList, skipped: list[tuple[str, str]],
            started: float, stats: dict) -> Path:
    """Writes DONE with the run's summary (``stats`` added), last; returns the cache's path."""
    out_dir = folder.path
    cache_path = out_dir / CACHE_NAME
    seconds = time.perf_counter() - started
    summary = {
        "num_tracks": len(kept),
        "num_skipped": len(skipped),
        "num_listed": len(tracklist),
        "seconds": round(seconds, 3),
        **stats,
        "cache_bytes": cache_path.stat().st_size,
    }
    for split in ("train", "valid", "test"):
        count = sum(1 for s in kept.split if s == split)
        summary[f"num_{split}"] = count
        if count == 0:
            logger.warning("%s: the %s split is empty", tracklist.name, split)
    if skipped:
        logger.warning("%s: %d of %d tracks skipped; reasons in %s", tracklist.name, len(skipped),
                       len(tracklist) + len(tracklist.skipped), out_dir / SKIPPED_NAME)
    folder.finish(summary)
    logger.info("prepare %s: %d tracks in %s (%.1f s)", tracklist.name, len(kept), cache_path, seconds)
    return cache_path


# ----------------------------------------------------------------------------- audio_from

def _check_store_dir(store_dir: Path, out_dir: Path) -> None:
    """Refuses an audio store that is this very folder or an unfinished prepare run."""
    if os.path.abspath(store_dir) == os.path.abspath(out_dir):
        raise PrepareError(f"{out_dir}: audio_from names this run folder itself; give another prepare run")
    require_done(store_dir, "prepare")


def _link_to_store(config: Config, folder: RunFolder, tracklist: TrackList, store_dir: Path, *,
                   started: float) -> Path:
    """Writes ``cache.h5`` as a cache linked to the audio of the prepare run ``store_dir``."""
    out_dir = folder.path
    done = require_done(store_dir, "prepare")
    with AudioCache(run_file(config.audio_from, CACHE_NAME)) as store:
        check_same_run(store.path, store.config_hash, done)
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
        write_linked_cache(out_dir / CACHE_NAME, _as_text(kept), store, [rows[i] for i in keep],
                           config_hash=folder.hash)
        linked = {"num_decoded_this_run": 0, "audio_from": str(store_dir), "audio_file": str(store.audio_file)}
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
            skipped.append((source, _unescape_text(skipped_there[src])))
        else:
            lacking.append(f"{tid} ({src})")
    for problems, what in ((lacking, "lacks track"), (moved, "holds another file as track")):
        if problems:
            more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
            raise PrepareError(f"{store.path}: the audio store {what} {problems[0]}{more} that {tracklist.name} "
                               "lists; audio_from must be a prepare run of the same files (prepare it again)")
    return rows, skipped


def _unescape_text(text: str) -> str:
    try:
        return unescape_name(text)
    except ValueError:  # written by an older msagg, unescaped
        return text


def _rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 3) if amount and seconds > 0 else None


def _num_workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PrepareError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


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


# ----------------------------------------------------------------------------- parts/

_PART = re.compile(r"^(\d{6,})\.(npy|err)$")


def _part(parts: Path, index: int, kind: str) -> Path:
    return parts / f"{index:06d}.{kind}"


def _listing_digest(tracklist: TrackList) -> str:
    text = "\n".join(escape_name(s) for s in tracklist.sources)  # escaped names hold no newline
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _open_parts(parts: Path, tracklist: TrackList) -> None:
    """Creates ``parts/``, or checks that the one left by a killed run decoded this very listing.

    The config hash does not cover the files a folder adapter finds; if files were added or
    removed since, part indices would point at other tracks, so the old parts are dropped.
    """
    digest = _listing_digest(tracklist)
    marker = parts / "listing.sha256"
    if parts.exists():
        if marker.is_file() and marker.read_text().strip() == digest:
            return
        logger.warning("%s: left by a run over another listing of the dataset; decoding again", parts)
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    write_text(marker, digest + "\n")


def _scan_parts(parts: Path) -> tuple[set[int], dict[int, str]]:
    """Indices of finished tracks, and of failed tracks with their reasons."""
    done, failed = set(), {}
    if parts.is_dir():
        for entry in parts.iterdir():
            m = _PART.match(entry.name)
            if m and m.group(2) == "npy":
                done.add(int(m.group(1)))
            elif m:
                failed[int(m.group(1))] = _read_reason(entry)
    return done, failed


def _write_reason(path: Path, reason: str) -> None:
    with atomic_write(path) as tmp:
        tmp.write_text(escape_name(reason) + "\n", encoding="utf-8")  # escaped: one line, valid UTF-8


def _read_reason(path: Path) -> str:
    return _unescape_text(path.read_text(encoding="utf-8", errors="replace").strip())


def _read_parts(parts: Path, keep: list[int]) -> Iterator[np.ndarray]:
    for index in keep:
        yield np.load(_part(parts, index, "npy"))


def _decode_one(index: int, source: str, sample_rate: int, parts: str) -> tuple[int, int, str | None]:
    """Decodes one track into ``parts/<index>.npy`` (runs in a worker process).

    Returns:
        (index, num_samples, None) on success, (index, 0, reason) for a file that cannot be used.
    """
    try:
        wave = load_source(source, sample_rate)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise AudioError(source, f"decoded to an empty or malformed waveform (shape {wave.shape})")
        quantised = to_int16(wave)
    except AudioError as err:
        return index, 0, err.reason
    except (ValueError, OSError) as err:
        return index, 0, str(err) or type(err).__name__
    # Not fsynced: a part only has to survive a killed process (the kernel keeps its pages); a
    # power cut during prepare is not covered for parts (the finished cache.h5 is fsynced).
    with atomic_write(_part(Path(parts), index, "npy"), durable=False) as tmp, open(tmp, "wb") as fh:
        np.save(fh, quantised)
    return index, int(quantised.shape[0]), None


def _decode_all(tracklist: TrackList, parts: Path, config: Config, *, workers: int, progress: bool) -> dict:
    """Decodes every track that has neither a ``.npy`` nor an ``.err`` in ``parts/``.

    Returns:
        Throughput of this run: decoded (files), audio_samples, seconds, workers.
    """
    _open_parts(parts, tracklist)
    done, failed = _scan_parts(parts)
    if config.strict:
        # A strict run must fail on these again (or decode them if they were fixed).
        for index in failed:
            _part(parts, index, "err").unlink()
        failed = {}
    todo = [i for i in range(len(tracklist)) if i not in done and i not in failed]
    workers = min(workers, max(1, len(todo)))
    if done or failed:
        logger.info("resuming: %d tracks decoded and %d failed earlier; %d to decode",
                    len(done), len(failed), len(todo))
    logger.info("decoding %d tracks at %d Hz with %d worker%s", len(todo), config.sample_rate, workers,
                "" if workers == 1 else "s")
    stats = {"decoded": 0, "audio_samples": 0, "seconds": 0.0, "workers": workers}
    bar = tqdm(total=len(tracklist), initial=len(tracklist) - len(todo), unit="file", desc=f"prepare {tracklist.name}",
               disable=not progress, dynamic_ncols=True, smoothing=0.05)
    started = time.perf_counter()

    def finished(index: int, num_samples: int, reason: str | None) -> None:
        bar.update(1)
        source = tracklist.sources[index]
        if reason is None:
            stats["decoded"] += 1
            stats["audio_samples"] += num_samples
            elapsed = time.perf_counter() - started
            if elapsed > 0:
                bar.set_postfix_str(f"{stats['audio_samples'] / config.sample_rate / elapsed:.0f}x realtime",
                                    refresh=False)
            return
        if config.strict:
            raise PrepareError(f"{escape_name(source)}: {reason} "
                               "(strict mode; without it the file would be skipped)")
        _write_reason(_part(parts, index, "err"), reason)
        logger.warning("skipping %s: %s", escape_name(source), reason)

    try:
        if workers == 1:
            for index in todo:
                finished(*_decode_one(index, tracklist.sources[index], config.sample_rate, str(parts)))
        else:
            _decode_in_pool(todo, tracklist.sources, config.sample_rate, parts, workers, finished)
    finally:
        bar.close()
        stats["seconds"] = time.perf_counter() - started
    if stats["decoded"]:
        audio_sec = stats["audio_samples"] / config.sample_rate
        logger.info("decoded %d files (%.1f min of audio) in %.1f s: %.2f files/s, %.1f s of audio per second "
                    "(%.1f per worker)", stats["decoded"], audio_sec / 60, stats["seconds"],
                    stats["decoded"] / stats["seconds"], audio_sec / stats["seconds"],
                    audio_sec / stats["seconds"] / workers)
    return stats


def _decode_in_pool(todo: list[int], sources: list[str], sample_rate: int, parts: Path, workers: int, finished) -> None:
    # spawn, not fork: the parent may hold threads (TensorFlow, h5py) that a fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    pending: set[concurrent.futures.Future] = set()
    queue = iter(todo)
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                initargs=(os.getpid(),)) as pool:
        try:
            while True:
                while len(pending) < workers * IN_FLIGHT_PER_WORKER:
                    index = next(queue, None)
                    if index is None:
                        break
                    pending.add(pool.submit(_decode_one, index, sources[index], sample_rate, str(parts)))
                if not pending:
                    return
                ready, pending = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in ready:
                    finished(*future.result())
        except concurrent.futures.BrokenExecutor:
            raise PrepareError(
                f"a decoding process died (out of memory?); finished tracks are kept in {parts}: "
                "run again to resume, perhaps with fewer workers"
            ) from None
        finally:
            # Tracks already running finish and keep their parts; queued ones are dropped.
            for future in pending:
                future.cancel()


def _worker_init(parent_pid: int) -> None:
    """Makes a decoding worker end when the process that started it dies, however it dies.

    A pool's workers wait on a queue whose writing end they hold themselves, so a parent killed by
    SIGKILL (or the OOM killer) would leave them waiting forever, reparented to PID 1. On Linux the
    kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``; strictly, at the end of the
    thread that started the worker, which is the one waiting on the pool), even to a worker busy in
    C code; elsewhere a daemon thread compares ``os.getppid()`` with ``parent_pid`` every
    ``PARENT_POLL_SEC``. Either way the parent may have died before this ran: checked last.
    """
    if not _kill_at_parent_death():
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="watch-parent", daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def _kill_at_parent_death() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1  # <linux/prctl.h>
        return libc.prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SEC)
    os._exit(1)
