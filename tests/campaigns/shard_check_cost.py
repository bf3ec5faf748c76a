"""Cost of checking a shard before HDF5 parses it, on one shard of about 1 GB (3 rounds, medians).

Compares the sha256 of the whole file (what checking every byte at first open would read) with
what the reader checks (``sha256_outside``: the bytes outside the audio chunks, which carry
Fletcher-32), each from the page cache (warm) and after dropping this file's pages (cold:
``posix_fadvise(DONTNEED)``, this file only); and what writing the shard spends on ``shard_meta``.
Usage: python shard_check_cost.py TMPDIR [GB]
"""
import hashlib
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from msagg.data import integrity
from msagg.data.formats.cache_writer import shard_meta, write_shard

tmp = Path(sys.argv[1])
tmp.mkdir(parents=True, exist_ok=True)
gb = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
path = tmp / "shard-00000.h5"
track = (np.random.default_rng(0).standard_normal(5_000_000) * 3000).astype(np.int16)  # 10 MB, ~3.8 min at 22050 Hz
num_tracks = int(round(gb * 1e9 / track.nbytes))


def drop(file: Path) -> None:
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def whole(file: Path) -> str:
    with open(file, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


t = time.perf_counter()
summary = write_shard(path, ((i, np.roll(track, i)) for i in range(num_tracks)), number=0, sample_rate=22050)
write_s = time.perf_counter() - t
size = path.stat().st_size
ranges = summary["audio_ranges"]
meta_bytes = size - sum(b - a for a, b in ranges)
t = time.perf_counter()
shard_meta(path)
meta_write_s = time.perf_counter() - t

times = {"whole warm": [], "whole cold": [], "meta warm": [], "meta cold": []}
for _ in range(3):
    for kind, run in (("whole", lambda: whole(path)), ("meta", lambda: integrity.sha256_outside(path, ranges))):
        drop(path)
        t = time.perf_counter()
        run()
        times[f"{kind} cold"].append(time.perf_counter() - t)
        run()  # now in the page cache
        t = time.perf_counter()
        run()
        times[f"{kind} warm"].append(time.perf_counter() - t)

mb = size / 1e6
print(f"shard: {size / 1e9:.3f} GB, {len(ranges)} runs of audio chunks, {meta_bytes} bytes outside them "
      f"({100 * meta_bytes / size:.3f}%)")
print(f"write_shard: {write_s:.2f} s, of which shard_meta (chunk map + sha256 outside) {meta_write_s:.3f} s")
for name, values in times.items():
    median = statistics.median(values)
    read = mb if name.startswith("whole") else meta_bytes / 1e6
    print(f"{name:11s}: {median:8.4f} s ({read / median:8.0f} MB/s of what it reads; "
          f"{median * 1e9 / size:7.4f} s per GB of shard; runs {', '.join(f'{v:.4f}' for v in values)})")
path.unlink()
