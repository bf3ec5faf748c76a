"""Decoding for the prepare stage: a pool of worker processes that write one part per track.

Each finished track is saved at once as ``parts/<index>.npy`` (a failed one as ``parts/<index>.err``
with its reason), so a killed run loses at most the files in flight and a re-run decodes only what
is missing; ``parts/listing.sha256`` ties the parts to the listing they were decoded from. The
workers end themselves when the process that started them dies, even by SIGKILL (``_worker_init``).
``stages.prepare`` streams the parts into ``cache.h5`` and removes them.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import hashlib
import logging
import multiprocessing
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

from data.atomic import atomic_write, write_text
from data.audio import AudioError
from data.cache import to_int16
from data.errors import MsaggError
from data.tracklist import TrackList, escape_name, load_source, unescape_name

logger = logging.getLogger(__name__)

PARTS_NAME = "parts"
IN_FLIGHT_PER_WORKER = 4
"""Futures queued per worker: enough to keep workers busy, few enough that memory stays flat."""
PARENT_POLL_SEC = 0.5
"""Where the kernel cannot signal a worker at its parent's death, how often the worker looks."""


class PrepareError(MsaggError):
    """The prepare stage cannot go on; the message names the file or dataset and the reason."""


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


def scan_parts(parts: Path) -> tuple[set[int], dict[int, str]]:
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
    return unescape_text(path.read_text(encoding="utf-8", errors="replace").strip())


def read_parts(parts: Path, keep: list[int]) -> Iterator[np.ndarray]:
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


def decode_all(tracklist: TrackList, parts: Path, *, sample_rate: int, strict: bool, workers: int,
               progress: bool) -> dict:
    """Decodes every track that has neither a ``.npy`` nor an ``.err`` in ``parts/``.

    Returns:
        Throughput of this run: decoded (files), audio_samples, seconds, workers.
    """
    _open_parts(parts, tracklist)
    done, failed = scan_parts(parts)
    if strict:
        # A strict run must fail on these again (or decode them if they were fixed).
        for index in failed:
            _part(parts, index, "err").unlink()
        failed = {}
    todo = [i for i in range(len(tracklist)) if i not in done and i not in failed]
    workers = min(workers, max(1, len(todo)))
    if done or failed:
        logger.info("resuming: %d tracks decoded and %d failed earlier; %d to decode",
                    len(done), len(failed), len(todo))
    logger.info("decoding %d tracks at %d Hz with %d worker%s", len(todo), sample_rate, workers,
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
                bar.set_postfix_str(f"{stats['audio_samples'] / sample_rate / elapsed:.0f}x realtime",
                                    refresh=False)
            return
        if strict:
            raise PrepareError(f"{escape_name(source)}: {reason} "
                               "(strict mode; without it the file would be skipped)")
        _write_reason(_part(parts, index, "err"), reason)
        logger.warning("skipping %s: %s", escape_name(source), reason)

    try:
        if workers == 1:
            for index in todo:
                finished(*_decode_one(index, tracklist.sources[index], sample_rate, str(parts)))
        else:
            _decode_in_pool(todo, tracklist.sources, sample_rate, parts, workers, finished)
    finally:
        bar.close()
        stats["seconds"] = time.perf_counter() - started
    if stats["decoded"]:
        audio_sec = stats["audio_samples"] / sample_rate
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
