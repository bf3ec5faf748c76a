"""Decoding for the prepare stage: ``decode_shard``, ``decode_all`` and the local process pool.

The listing is cut into shards of consecutive tracks (``msagg.stages.engines.shard_plan``: ``plan_shards``,
recorded in ``cache/plan.json`` with the listing's sha256; its names are importable from here). Each shard is decoded by one call of
``decode_shard``, which appends its tracks one at a time to the shard's temporary file and renames
it once complete (``msagg.data.formats.cache_writer.write_shard``): memory holds one track per worker, the disk
holds nothing but the cache, and a killed run loses at most the shards in flight. A re-run keeps
the finished shards of the same plan (``finished_shards``: failed tracks are recorded in their
shard, so they are not tried again, except in strict mode) and decodes the others; a listing that
changed starts the cache again. ``msagg.stages.prepare`` then writes ``cache/index.h5``.

Engines: ``decode_all`` plans, resumes, shows progress and collects the summaries; the shards
left to do are decoded in this process, in a spawn-context process pool (workers end themselves
when the process that started them dies, even by SIGKILL: ``_worker_init``), or by another
engine given as ``engine`` (``msagg.stages.engines.ray_decode``: Ray tasks) that runs the same plain function
``decode_shard``. ``msagg.stages.prepare`` gets the summaries in shard order.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import logging
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from msagg.data.audio import AudioError
from msagg.data.errors import MsaggError
from msagg.data.formats.cache_layout import to_int16
from msagg.data.formats.cache_writer import shard_file_name, write_shard
from msagg.data.names import escape_name, unescape_name
from msagg.data.tracklist import TrackList, load_source
from msagg.stages.engines.shard_plan import (  # noqa: F401 (the plan's names, importable from here as before)
    DEFAULT_SHARD_MB, DEFAULT_TRACK_SEC, ESTIMATE_SAMPLE, MB, MIN_SHARDS, ShardPlan, estimate_track_seconds,
    finished_shards, listing_digest, open_cache_dir, plan_shards,
)

logger = logging.getLogger(__name__)

PARENT_POLL_SEC = 0.5
"""Where the kernel cannot signal a worker at its parent's death, how often the worker looks."""

PROGRESS_POLL_SEC = 0.1
"""How often the progress reader of the local pool looks whether decoding ended."""

END_WAIT_SEC = 2.0
"""How long an interrupted run gives its decoding workers to end on SIGTERM before SIGKILL."""


Engine = Callable[[str, "ShardPlan", list, bool, Callable[[dict], None], Callable[[int, "int | None"], None]], None]
"""Another engine for ``decode_all`` (see there)."""


class PrepareError(MsaggError):
    """The prepare stage cannot go on; the message names the file or dataset and the reason."""


def _decode(source: str, sample_rate: int) -> np.ndarray | str:
    """One track as int16, or the reason it cannot be used (escaped: one line of valid UTF-8)."""
    try:
        wave = load_source(source, sample_rate)
        if wave.ndim != 1 or wave.shape[0] == 0:
            raise AudioError(source, f"decoded to an empty or malformed waveform (shape {wave.shape})")
        return to_int16(wave)
    except AudioError as err:
        return escape_name(err.reason)
    except (ValueError, OSError) as err:
        return escape_name(str(err) or type(err).__name__)


class _Abandoned(Exception):
    """Ends a shard early: strict mode met a bad track, or the caller asked to stop."""


def decode_shard(cache_dir: str | os.PathLike, plan: ShardPlan, shard: int, sources: Sequence[str], *,
                 strict: bool = False, on_track: Callable[[int, int | None], None] | None = None,
                 stop: Callable[[], bool] | None = None) -> dict:
    """Decodes one shard of the plan into ``cache_dir/shard-NNNNN.h5`` (a plain function: any engine runs it).

    Tracks are decoded and appended one at a time to the shard's temporary file, which is renamed
    once every track is in; so memory holds one track, and an interrupted call leaves no shard.
    Arguments and result pickle (and the result is JSON-ready).

    Args:
        cache_dir: The cache folder (``<run>/cache``) that ``open_cache_dir`` made.
        plan: The plan of that folder.
        shard: Which shard.
        sources: The sources of ``plan.tracks(shard)``, in order (``tracklist.sources[i]``).
        strict: Stop at the first track that cannot be decoded, writing nothing.
        on_track: Called after each track with its listing index and number of samples (None
            for a track that failed).
        stop: Polled before each track; when it returns True the shard is abandoned.

    Returns:
        The summary of ``msagg.data.formats.cache_writer.write_shard`` (``shard, file, first, end, rows,
        lengths, failed`` as [listing index, escaped reason], ``num_samples, bytes, sha256``)
        with ``written`` True and ``seconds``; or, when nothing was written, ``written`` False
        and ``failed`` holding the track that stopped a strict run ([] when ``stop`` did).

    Raises:
        WriteError: Naming the shard, if the disk refuses a write (nothing is left behind).
    """
    started = time.perf_counter()
    rows = plan.tracks(shard)
    if len(sources) != len(rows):
        raise ValueError(f"shard {shard}: got {len(sources)} sources for tracks {rows.start}..{rows.stop - 1}")
    failure: list = []

    def tracks():
        for row, source in zip(rows, sources):
            if stop is not None and stop():
                raise _Abandoned
            item = _decode(source, plan.sample_rate)
            if strict and isinstance(item, str):
                failure.append([row, item])
                raise _Abandoned
            yield row, item

    try:
        summary = write_shard(Path(cache_dir) / shard_file_name(shard), tracks(), number=shard,
                              sample_rate=plan.sample_rate, first=rows.start, num_planned=len(rows),
                              plan_id=plan.plan_id, on_track=on_track)
    except _Abandoned:
        summary = {"shard": shard, "file": shard_file_name(shard), "first": rows.start, "end": rows.stop,
                   "written": False, "failed": failure}
    else:
        summary["written"] = True
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def decode_all(tracklist: TrackList, cache_dir: Path, *, sample_rate: int, shard_mb: float, strict: bool,
               workers: int, progress: bool, engine: Engine | None = None) -> tuple[list[dict], dict]:
    """Decodes every shard of the cache folder's plan that is not finished, with the local engine or ``engine``.

    Args:
        workers: Decoding processes of the local engine (1: this process); with ``engine``, the
            shards it decodes at once (recorded and logged only).
        engine: Runs ``decode_shard`` elsewhere: called as ``engine(cache_dir, plan, tasks, strict,
            finished, on_track)`` with ``tasks`` the ``(shard, sources)`` to decode; it calls
            ``finished(summary)`` for each shard as it ends (which raises ``PrepareError`` for
            a strict failure: the engine then stops its other shards) and ``on_track(row,
            num_samples or None)`` for each track, when it can (``msagg.stages.engines.ray_decode``).

    Returns:
        (summaries of every shard in shard order, throughput of this run: decoded (files),
        audio_samples, seconds, workers, num_shards, shards_decoded).

    Raises:
        PrepareError: In strict mode, naming the first file that cannot be decoded; when a worker
            process died.
    """
    plan = open_cache_dir(cache_dir, tracklist, sample_rate=sample_rate, shard_mb=shard_mb)
    done = finished_shards(cache_dir, plan, strict=strict)
    todo = [s for s in range(plan.num_shards) if s not in done]
    workers = min(workers, max(1, len(todo)))
    num_todo = sum(len(plan.tracks(s)) for s in todo)
    if done:
        logger.info("resuming: %d of %d shards decoded earlier; %d tracks to decode", len(done), plan.num_shards,
                    num_todo)
    logger.info("decoding %d tracks in %d shards at %d Hz with %d worker%s", num_todo, len(todo), sample_rate,
                workers, "" if workers == 1 else "s")
    stats = {"decoded": 0, "audio_samples": 0, "seconds": 0.0, "workers": workers, "num_shards": plan.num_shards,
             "shards_decoded": 0}
    started = time.perf_counter()
    seen = {"samples": 0}

    def on_track(row: int, num_samples: int | None) -> None:
        bar.update(1)
        seen["samples"] += num_samples or 0
        elapsed = time.perf_counter() - started
        if elapsed > 0:
            bar.set_postfix_str(f"{seen['samples'] / sample_rate / elapsed:.0f}x realtime", refresh=False)

    def finished(summary: dict) -> None:
        if not summary["written"]:
            if summary["failed"]:
                row, reason = summary["failed"][0]
                raise PrepareError(f"{escape_name(tracklist.sources[row])}: {unescape_text(reason)} "
                                   "(strict mode; without it the file would be skipped)")
            return
        done[summary["shard"]] = summary
        stats["decoded"] += len(summary["rows"])
        stats["audio_samples"] += summary["num_samples"]
        stats["shards_decoded"] += 1
        for row, reason in summary["failed"]:
            logger.warning("skipping %s: %s", escape_name(tracklist.sources[row]), reason)

    tasks = [(s, [tracklist.sources[i] for i in plan.tracks(s)]) for s in todo]
    # Shown first inside the try, whose end closes it: had tqdm shown it while making it, an interruption
    # right then would leave its line unended (it ends only the line of a bar it knows it showed).
    bar = tqdm(total=len(tracklist), initial=len(tracklist) - num_todo, unit="file", desc=f"prepare {tracklist.name}",
               disable=not progress, dynamic_ncols=True, smoothing=0.05, delay=float("inf"))
    try:
        bar.delay = 0.0
        bar.refresh()
        if engine is not None:
            engine(str(cache_dir), plan, tasks, strict, finished, on_track)
        elif workers == 1:
            for shard, sources in tasks:
                finished(decode_shard(cache_dir, plan, shard, sources, strict=strict, on_track=on_track))
        else:
            _decode_in_pool(str(cache_dir), plan, tasks, strict, workers, finished, on_track)
    finally:
        bar.close()
        stats["seconds"] = time.perf_counter() - started
    if stats["decoded"]:
        audio_sec = stats["audio_samples"] / sample_rate
        logger.info("decoded %d files (%.1f min of audio) in %.1f s: %.2f files/s, %.1f s of audio per second "
                    "(%.1f per worker)", stats["decoded"], audio_sec / 60, stats["seconds"],
                    stats["decoded"] / stats["seconds"], audio_sec / stats["seconds"],
                    audio_sec / stats["seconds"] / workers)
    return [done[s] for s in range(plan.num_shards)], stats


def _decode_in_pool(cache_dir: str, plan: ShardPlan, tasks: list, strict: bool, workers: int, finished,
                    on_track) -> None:
    """One shard per task; tracks are reported through a queue as workers finish them.

    Workers ignore SIGINT (a Ctrl-C reaches the whole process group): this process decides. On an
    error, running shards stop at their next track; on an interruption (``KeyboardInterrupt``,
    ``msagg.stages.runs.interrupt.Interrupted``) the workers are ended at once, leaving temporary
    files a re-run removes. Nothing this process does here waits on a lock a worker may hold when
    it dies: the stop flag is a plain shared byte, and progress is read with a timeout.
    """
    # spawn, not fork: the parent may hold threads (TensorFlow, h5py) that a fork would copy mid-lock.
    context = multiprocessing.get_context("spawn")
    events, stop, ended = context.Queue(), context.RawValue("b", 0), threading.Event()

    def report():  # until decoding ended and nothing more came
        while True:
            try:
                row, num_samples = events.get(timeout=PROGRESS_POLL_SEC)
            except queue.Empty:
                if ended.is_set():
                    return
                continue
            except (OSError, EOFError, ValueError):
                return
            on_track(row, num_samples)

    reporter = threading.Thread(target=report, name="decode-progress", daemon=True)
    reporter.start()
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init,
                                                  initargs=(os.getpid(), events, stop))
    pending: set = set()
    try:
        with _sigint_blocked():  # inherited by the workers until _worker_init ignores it
            pending = {pool.submit(_decode_shard_in_worker, cache_dir, plan, shard, sources, strict)
                       for shard, sources in tasks}
        for future in concurrent.futures.as_completed(pending):
            finished(future.result())
    except concurrent.futures.BrokenExecutor:
        raise PrepareError(
            f"a decoding process died (out of memory?); finished shards are kept in {cache_dir}: "
            "run again to resume, perhaps with fewer workers"
        ) from None
    except BaseException as err:
        if not isinstance(err, Exception):  # interrupted: no shard is waited for
            _end_workers(pool)
        raise
    finally:
        # Queued shards are dropped; running ones stop at their next track, leaving no file.
        stop.value = 1
        for future in pending:
            future.cancel()
        try:
            pool.shutdown(wait=True, cancel_futures=True)
        finally:
            ended.set()
            reporter.join(timeout=5)


def _end_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """Ends the pool's workers now (SIGTERM, then SIGKILL for any still there after ``END_WAIT_SEC``)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # the executor names no public way
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.terminate()
    deadline = time.monotonic() + END_WAIT_SEC
    for process in processes:
        with contextlib.suppress(OSError, ValueError):
            process.join(max(0.0, deadline - time.monotonic()))
            if process.exitcode is None:
                process.kill()
                process.join(1.0)


@contextlib.contextmanager
def _sigint_blocked():
    """SIGINT blocked in this thread for the block (processes started in it inherit the mask);
    a SIGINT that comes meanwhile waits, or is taken by another thread, and is not lost."""
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


_EVENTS = None
_STOP = None


def _decode_shard_in_worker(cache_dir: str, plan: ShardPlan, shard: int, sources: list[str], strict: bool) -> dict:
    events, stop = _EVENTS, _STOP
    return decode_shard(cache_dir, plan, shard, sources, strict=strict,
                        on_track=None if events is None else lambda row, n: events.put((row, n)),
                        stop=None if stop is None else lambda: bool(stop.value))


def _worker_init(parent_pid: int, events=None, stop=None) -> None:
    """Makes a decoding worker ignore SIGINT and end when the process that started it dies, however it dies.

    A Ctrl-C reaches every process of the terminal's process group: the parent decides what its
    workers do (``_decode_in_pool``), so a worker ignores SIGINT; it was started with SIGINT
    blocked, so one sent while it started is dropped here too.

    A pool's workers wait on a queue whose writing end they hold themselves, so a parent killed by
    SIGKILL (or the OOM killer) would leave them waiting forever, reparented to PID 1. On Linux the
    kernel sends SIGKILL at the parent's death (``PR_SET_PDEATHSIG``; strictly, at the end of the
    thread that started the worker, which is the one waiting on the pool), even to a worker busy in
    C code; elsewhere a daemon thread compares ``os.getppid()`` with ``parent_pid`` every
    ``PARENT_POLL_SEC``. Either way the parent may have died before this ran: checked last.
    ``events`` (a queue for progress) and ``stop`` (a shared byte, set to stop) are kept for ``decode_shard``.
    """
    global _EVENTS, _STOP
    _EVENTS, _STOP = events, stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
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


def unescape_text(text: str) -> str:
    try:
        return unescape_name(text)
    except ValueError:  # written by an older msagg, unescaped
        return text


def num_workers(workers: int | None) -> int:
    if workers is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:
            return max(1, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise PrepareError(f"workers must be an integer >= 1, got {workers!r}")
    return workers


def decoder(config: Any, workers: int, options: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager:
    """prepare's local engine: no object to hand shards to (None), so ``decode_all`` decodes them in
    ``workers`` processes of this machine. It takes no options (they are the Ray engine's)."""
    if options:
        raise TypeError(f"the local engine takes no options, got {', '.join(sorted(options))}")
    return contextlib.nullcontext()
