"""Cost of the Fletcher-32 checksum: writing a sharded cache and reading pretraining crops, with and
without it, alternated in one process (3 rounds). Usage: python checksum_cost.py TMPDIR"""
import sys, time, shutil
from pathlib import Path
import numpy as np
from msagg.data.formats import cache_writer
from msagg.data.formats.cache import AudioCache
from msagg.data.tracklist import TrackList
from msagg.stages.training.crops import CropSequence

tmp = Path(sys.argv[1]); tmp.mkdir(parents=True, exist_ok=True)
n, sec, rate = 120, 20, 22050
rng = np.random.default_rng(0)
waves = [(rng.standard_normal(sec * rate) * 3000).astype(np.int16) for _ in range(n)]
tl = TrackList(name="toy", task="tags", label_names=["a", "b"], track_ids=[f"t{i}" for i in range(n)],
               sources=[f"s{i}" for i in range(n)], labels=(rng.random((n, 2)) < .5).astype(np.uint8),
               split=["train"] * n)
res = {True: {"write": [], "crops": []}, False: {"write": [], "crops": []}}
for rnd in range(3):
    for on in (True, False):
        cache_writer.CHECKSUM = {"fletcher32": True} if on else {}
        folder = tmp / f"c{int(on)}"
        shutil.rmtree(folder, ignore_errors=True)
        t = time.perf_counter()
        cache_writer.write_cache(folder, tl, waves, sample_rate=rate, tracks_per_shard=30)
        res[on]["write"].append(n * sec / (time.perf_counter() - t))
        with AudioCache(folder) as cache:
            assert cache.checksummed == on
            seq = CropSequence(cache, np.arange(n), 59049, 23, 60, seed=rnd)
            t = time.perf_counter()
            for i in range(60):
                seq[i]
            res[on]["crops"].append(60 * 23 / (time.perf_counter() - t))
for on in (True, False):
    print(f"checksum {'on ' if on else 'off'}: write {np.median(res[on]['write']):7.0f} s of audio/s "
          f"(runs {', '.join(f'{x:.0f}' for x in res[on]['write'])}); 3^9 crops {np.median(res[on]['crops']):7.0f} segments/s "
          f"(runs {', '.join(f'{x:.0f}' for x in res[on]['crops'])})")
