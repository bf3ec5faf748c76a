"""Kill campaign: SIGKILL each stage at random moments, resume it, compare with an uninterrupted run.

Usage: python kill_campaign.py WORKDIR KILLS_PER_STAGE [SEED]
Tiny data: synth-tags (preset tiny) -> pretrain (tiny preset, 20 steps, 2 epochs per stage) -> extract.
Each kill: the stage starts in its own process group, is SIGKILLed (whole group, workers included)
after a uniform random delay within its uninterrupted wall time, then runs again to the end; the
outputs are compared with the uninterrupted run's (cache datasets; model weights and history;
features datasets).
"""
import os, random, shutil, signal, subprocess, sys, time
from pathlib import Path
import h5py, numpy as np

work = Path(sys.argv[1]); kills = int(sys.argv[2]); rng = random.Random(int(sys.argv[3]) if len(sys.argv) > 3 else 0)
work.mkdir(parents=True, exist_ok=True)
PY = [sys.executable, "-m", "msagg"]
def cmd(stage, out, up):
    if stage == "prepare":
        return PY + ["prepare", "--dataset", "synth-tags", "--preset", "tiny", "--out", str(out)]
    if stage == "pretrain":
        return PY + ["pretrain", "--cache", str(up["prepare"]), "--preset", "tiny", "--set", "steps_per_epoch=20",
                     "--set", "max_epochs_per_stage=2", "--out", str(out)]
    return PY + ["extract", "--pretrain", str(up["pretrain"]), "--cache", str(up["prepare"]), "--out", str(out)]

def h5_arrays(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out

def same_h5(a, b):
    x, y = h5_arrays(a), h5_arrays(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)

def outputs(stage, out):
    if stage == "prepare":
        return sorted((out / "cache").glob("*.h5"))
    if stage == "extract":
        return [out / "features.h5"]
    return sorted(out.glob("*/model.keras")) + sorted(out.glob("*/history.csv"))

def same(stage, a, b):
    if not (a / "DONE").exists() or not (b / "DONE").exists():
        return False
    if stage in ("prepare", "extract"):
        xa, xb = outputs(stage, a), outputs(stage, b)
        return [x.name for x in xa] == [x.name for x in xb] and all(same_h5(x, y) for x, y in zip(xa, xb))
    import zipfile, io
    for pa, pb in zip(outputs(stage, a), outputs(stage, b)):
        if pa.name != pb.name:
            return False
        if pa.suffix == ".csv":
            strip = lambda p: [",".join(c for i, c in enumerate(l.split(",")) if i not in drop) for l in p.read_text().splitlines()]
            header = pa.read_text().splitlines()[0].split(",")
            drop = {i for i, c in enumerate(header) if "sec" in c or "per_sec" in c or c in ("wall", "time")}
            if strip(pa) != strip(pb):
                return False
        else:
            wa = h5_arrays(io.BytesIO(zipfile.ZipFile(pa).read("model.weights.h5")))
            wb = h5_arrays(io.BytesIO(zipfile.ZipFile(pb).read("model.weights.h5")))
            if wa.keys() != wb.keys() or not all(np.array_equal(wa[k], wb[k]) for k in wa):
                return False
    return len(outputs(stage, a)) == len(outputs(stage, b)) > 0

def run(args, kill_after=None):
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    if kill_after is None:
        _, err = proc.communicate()
        if proc.returncode:
            raise SystemExit(err.decode()[-2000:])
        return proc.returncode
    try:
        proc.wait(timeout=kill_after)
        return proc.returncode  # finished before the kill
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return "killed"

ref = {}
times = {}
for stage in ("prepare", "pretrain", "extract"):
    out = work / "ref" / stage
    if not (out / "DONE").exists():
        start = time.time(); run(cmd(stage, out, ref)); times[stage] = time.time() - start
    else:
        times[stage] = 20.0
    ref[stage] = out
print("uninterrupted wall seconds:", {k: round(v, 1) for k, v in times.items()}, flush=True)
results = {}
for stage in ("prepare", "pretrain", "extract"):
    ok = killed = 0
    for k in range(kills):
        out = work / f"kill-{stage}-{k}"
        shutil.rmtree(out, ignore_errors=True)
        delay = rng.uniform(0.3, times[stage])
        status = run(cmd(stage, out, ref), kill_after=delay)
        killed += status == "killed"
        run(cmd(stage, out, ref))
        good = same(stage, out, ref[stage])
        ok += good
        print(f"{stage} kill {k}: after {delay:.1f} s ({status}), resumed output identical: {good}", flush=True)
        shutil.rmtree(out, ignore_errors=True)
    results[stage] = (killed, ok, kills)
for stage, (killed, ok, n) in results.items():
    print(f"{stage}: {n} runs, {killed} killed mid-run, {ok} of {n} resumed to identical outputs")
