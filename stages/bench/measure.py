"""What the benchmarks share: peak resident memory, disk usage, and their figures' plain-text tables.

``own_peak_rss_mb`` reads the peak of this process's own address space (``VmHWM``), not
``ru_maxrss``, which Linux carries over from the parent into a spawned process; ``DiskWatcher``
samples the bytes a folder occupies from a thread, to find a stage's peak disk use.
"""

from __future__ import annotations

import os
import platform
import resource
import threading
from pathlib import Path

DISK_POLL_SEC = 0.05
"""How often ``DiskWatcher`` samples, seconds."""


def sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (not decimals, so the tiny rates of test
    scales do not round to 0)."""
    return float(f"{value:.{digits}g}")


def lay_out(cells: list[list[str]], text: list[bool]) -> list[str]:
    """The lines of a plain-text table: ``cells[0]`` the header, then a rule, then the rows;
    column i left-aligned where ``text[i]`` (labels), else right-aligned (numbers)."""
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    lines = ["  ".join(c.ljust(w) if t else c.rjust(w) for c, w, t in zip(r, widths, text)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths).rstrip())
    return lines


def rusage_mb(who: int) -> float:
    peak = resource.getrusage(who).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**20 if platform.system() == "Darwin" else 2**10), 1)


def own_peak_rss_mb() -> float:
    """This process's peak resident memory, MB (2^20 bytes).

    Linux's ``ru_maxrss`` survives ``exec``: a spawned process starts with its parent's RSS at
    the time it was started (the CLI's, with the backend loaded: some 800 MB), so the peak of
    the address space itself (``VmHWM``, fresh after ``exec``) is read where there is one.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 2**10, 1)  # kB
    except (OSError, ValueError, IndexError):
        pass
    return rusage_mb(resource.RUSAGE_SELF)


def tree_bytes(path: str | os.PathLike) -> int:
    """Bytes the files under ``path`` occupy on disk (allocated blocks, as ``du``; sizes where the
    platform gives no blocks). Files that vanish while it walks are skipped."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(folder, name))
            except OSError:  # renamed or removed meanwhile
                continue
            blocks = getattr(st, "st_blocks", None)
            total += blocks * 512 if blocks is not None else st.st_size
    return total


class DiskWatcher:
    """Samples ``tree_bytes(path)`` every ``interval`` seconds from a thread, while in its ``with``.

    Attributes:
        peak: The largest sample (bytes), one taken at the end included.
        samples: How many samples were taken.
    """

    def __init__(self, path: str | os.PathLike, interval: float = DISK_POLL_SEC):
        self.path = Path(path)
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="disk-watcher", daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, tree_bytes(self.path))
        self.samples += 1

    def _watch(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> "DiskWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
