"""Stage 1, prepare: decode a dataset once into the audio cache (cache.h5) and list what was skipped.

Decoding runs in a process pool; each finished track is saved at once as ``parts/<index>.npy``
(a failed one as ``parts/<index>.err`` with its reason), so a killed run loses at most the files
in flight and a re-run decodes only what is missing. Then the parts are streamed into
``cache.h5`` (written atomically), ``skipped.csv`` is written and ``parts/`` removed.
"""

from __future__ import annotations

import concurrent.futures
import csv
import dataclasses
import hashlib
import io
import logging
import multiprocessing
import os
import re
import shutil
import time
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from data.atomic import atomic_write, stale_temps, write_text
from data.audio import AudioError
from data.errors import MsaggError
from data import adapters
from data import cache as cache_lib
from data.cache import to_int16, write_cache
from data.tracklist import TrackList, load_source
from stages.runfolder import RunFolder

logger = logging.getLogger(__name__)

CACHE_NAME = cache_lib.FILE_NAME
SKIPPED_NAME = "skipped.csv"
PARTS_NAME = "parts"
SPLIT_KINDS = ("official", "random")
IN_FLIGHT_PER_WORKER = 4
"""Futures queued per worker: enough to keep workers busy, few enough that memory stays flat."""

PRESETS: dict[str, dict] = {
    # A few hundred tracks of 10-30 s: about 1.7 h of audio, ~270 MB of cache.
    "demo": {"num_tracks": 300, "min_sec": 10.0, "max_sec": 30.0},
    # Tests and smoke runs: seconds to make.
    "tiny": {"num_tracks": 24, "min_sec": 2.0, "max_sec": 4.0},
}


class PrepareError(MsaggError):
    """The prepare stage cannot go on; the message names the file or dataset and the reason."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What goes into an audio cache.

    Attributes:
        dataset: Adapter name: synth-tags, synth-genre, folder, csv, mtat, gtzan, ...
        source: Where the dataset lives (a folder, a CSV file, a dataset root); None for the
            embedded synthetic datasets.
        num_tracks: Synthetic datasets only: how many tracks to generate.
        seed: Synthetic datasets only: generator seed.
        min_sec: Synthetic datasets only: shortest track, seconds.
        max_sec: Synthetic datasets only: longest track, seconds.
        sample_rate: Rate of the cache (and of the models), Hz.
        split_seed: Seed of the stratified split or of the k folds, when one is drawn.
        folds: k-fold cross-validation: number of folds (with ``fold``, 1-based).
        fold: The test fold: 1..folds, or the fold as written in the names with
            ``fold_from_name``.
        fold_from_name: A regex whose first group is a file's fold (``^(\\d)-`` for ESC-10).
        top_k: Keep the K most frequent tags of the training split (csv, mtat).
        split: "official" or "random" where the adapter offers both (gtzan).
        strict: Fail on the first file that cannot be decoded instead of skipping it.
    """

    dataset: str = "synth-tags"
    source: str | None = None
    num_tracks: int = 300
    seed: int = 0
    min_sec: float = 10.0
    max_sec: float = 30.0
    sample_rate: int = 22050
    split_seed: int = 0
    folds: int | None = None
    fold: int | None = None
    fold_from_name: str | None = None
    top_k: int | None = None
    split: str | None = None
    strict: bool = False

    def __post_init__(self):
        def bad(name: str, why: str):
            raise ValueError(f"prepare: {name}={getattr(self, name)!r}: {why}")

        def is_int(value) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

        def is_number(value) -> bool:
            return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)

        if not isinstance(self.dataset, str) or not self.dataset.strip():
            bad("dataset", "must be a dataset name, e.g. 'synth-tags' or 'folder'")
        if self.source is not None and (not isinstance(self.source, str) or not self.source.strip()):
            bad("source", "must be a path (a folder or a CSV file) or None")
        if not is_int(self.num_tracks) or self.num_tracks < 1:
            bad("num_tracks", "must be an integer >= 1")
        for name in ("seed", "split_seed"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                bad(name, "must be an integer >= 0")
        if not is_number(self.min_sec) or not self.min_sec > 0:
            bad("min_sec", "must be a number of seconds > 0")
        if not is_number(self.max_sec) or not self.max_sec >= self.min_sec:
            bad("max_sec", f"must be a number of seconds >= min_sec ({self.min_sec})")
        if not is_int(self.sample_rate) or self.sample_rate < 1000:
            bad("sample_rate", "must be an integer rate in Hz, at least 1000")
        if self.folds is not None and (not is_int(self.folds) or self.folds < 2):
            bad("folds", "must be an integer >= 2 (or None for no cross-validation)")
        if self.folds is not None and self.fold_from_name is not None:
            bad("folds", "give folds (k-fold cross-validation) or fold_from_name (folds in file names), not both")
        if self.fold_from_name is not None:
            try:
                groups = re.compile(self.fold_from_name).groups
            except (re.error, TypeError) as err:
                bad("fold_from_name", f"not a valid regular expression ({err})")
            if groups < 1:
                bad("fold_from_name", "needs a group that captures the fold, e.g. '^(\\d)-'")
        if self.fold is not None:
            if not is_int(self.fold):
                bad("fold", "must be an integer")
            # Some datasets (esc10) name their official folds in the file names by default.
            if self.folds is None and self.fold_from_name is None and self.dataset not in adapters.DEFAULT_FOLD_PATTERNS:
                bad("fold", "needs folds (k-fold cross-validation) or fold_from_name (folds in file names)")
            if self.folds is not None and not 1 <= self.fold <= self.folds:
                bad("fold", f"must be between 1 and folds={self.folds} (folds are numbered from 1)")
        elif self.folds is not None or self.fold_from_name is not None:
            bad("fold", "must say which fold is the test split when folds or fold_from_name is given")
        if self.top_k is not None and (not is_int(self.top_k) or self.top_k < 1):
            bad("top_k", "must be an integer >= 1 (or None to keep every tag)")
        if self.split is not None and self.split not in SPLIT_KINDS:
            bad("split", f"must be one of {SPLIT_KINDS} (or None for the adapter's default)")
        if not isinstance(self.strict, bool):
            bad("strict", "must be true or false")


def adapter_options(config: Config) -> dict:
    """The keyword arguments ``data.adapters.make_tracklist`` takes from a prepare config."""
    return {
        "num_tracks": config.num_tracks,
        "seed": config.seed,
        "min_sec": config.min_sec,
        "max_sec": config.max_sec,
        "split_seed": config.split_seed,
        "folds": config.folds,
        "fold": config.fold,
        "fold_from_name": config.fold_from_name,
        "top_k": config.top_k,
        "split": config.split,
    }


def list_tracks(config: Config) -> TrackList:
    """Asks the dataset's adapter for its track list (validated before any decoding).

    Raises:
        data.adapters.DatasetError: Listing every problem found in the dataset.
    """
    return adapters.make_tracklist(config.dataset, source=config.source, **adapter_options(config))


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
        config: The stage config.
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
        PrepareError: With ``config.strict``, for the first file that cannot be decoded (naming it
            and the reason); in any mode, when no track at all could be decoded.
        data.adapters.DatasetError: For a dataset the adapter refuses.
    """
    started = time.perf_counter()
    workers = _num_workers(workers)
    if tracklist is not None and tracklist.name != config.dataset:
        raise ValueError(f"track list {tracklist.name!r} does not match config dataset {config.dataset!r}")
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir, "prepare", config)
    cache_path = out_dir / CACHE_NAME
    if not folder.start(overwrite):
        return cache_path
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
        raise PrepareError(f"{source}: {reason}{more} (strict mode; without it the file would be skipped)")

    stats = _decode_all(tracklist, parts, config, workers=workers, progress=progress)
    done, failed = _scan_parts(parts)
    keep = [i for i in range(len(tracklist)) if i in done]
    skipped = list(tracklist.skipped) + [(tracklist.sources[i], failed[i]) for i in sorted(failed)]
    _write_skipped(out_dir / SKIPPED_NAME, skipped)
    if not keep:
        first_source, first_reason = skipped[0]
        raise PrepareError(
            f"{tracklist.name}: none of the {len(tracklist)} tracks could be decoded (first: {first_source}: "
            f"{first_reason}); reasons in {out_dir / SKIPPED_NAME}. Fix the files, then run again with --overwrite"
        )

    kept = _subset(tracklist, keep, skipped)
    for stale in stale_temps(cache_path):
        stale.unlink()
    write_cache(cache_path, kept, _read_parts(parts, keep), sample_rate=config.sample_rate, config_hash=folder.hash)
    shutil.rmtree(parts)

    seconds = time.perf_counter() - started
    audio_sec = stats["audio_samples"] / config.sample_rate
    summary = {
        "num_tracks": len(keep),
        "num_skipped": len(skipped),
        "num_listed": len(tracklist),
        "seconds": round(seconds, 3),
        "num_decoded_this_run": stats["decoded"],
        "files_per_sec": _rate(stats["decoded"], stats["seconds"]),
        "realtime_factor": _rate(audio_sec, stats["seconds"]),
        "realtime_factor_per_worker": _rate(audio_sec, stats["seconds"] * stats["workers"]),
        "workers": stats["workers"],
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
    logger.info("prepare %s: %d tracks in %s (%.1f s)", tracklist.name, len(keep), cache_path, seconds)
    return cache_path


def _rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 3) if amount and seconds > 0 else None


def _num_workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
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


def _write_skipped(path: Path, skipped: list[tuple[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["source", "reason"])
    writer.writerows(skipped)
    write_text(path, buffer.getvalue())


# ----------------------------------------------------------------------------- parts/

_PART = re.compile(r"^(\d{6,})\.(npy|err)$")


def _part(parts: Path, index: int, kind: str) -> Path:
    return parts / f"{index:06d}.{kind}"


def _listing_digest(tracklist: TrackList) -> str:
    text = "\n".join(tracklist.sources)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def _open_parts(parts: Path, tracklist: TrackList) -> None:
    """Creates ``parts/``, or checks that the one left by a killed run decoded this very listing.

    The config hash does not cover the files a folder adapter finds; if files were added or
    removed since, part indices would point at other tracks, so the old parts are dropped.
    """
    digest = _listing_digest(tracklist)
    marker = parts / "listing.sha256"
    if parts.exists():
        if marker.is_file() and marker.read_text().strip() == digest:
            for stale in parts.glob(".*.tmp-*"):
                stale.unlink()
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
                failed[int(m.group(1))] = entry.read_text().strip()
    return done, failed


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
    with atomic_write(_part(Path(parts), index, "npy")) as tmp, open(tmp, "wb") as fh:
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
            raise PrepareError(f"{source}: {reason} (strict mode; without it the file would be skipped)")
        write_text(_part(parts, index, "err"), reason + "\n")
        logger.warning("skipping %s: %s", source, reason)

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
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
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
