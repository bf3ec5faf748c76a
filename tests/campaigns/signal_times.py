"""Signal-to-exit seconds of `msagg prepare` (300 small wavs, 2 workers, SIGINT) and `msagg pretrain --preset tiny`
(SIGTERM), 5 each, through the signal tests' Command helper. Usage: python tests/campaigns/signal_times.py TMPDIR"""
import re, signal, sys, shutil
from pathlib import Path
import numpy as np, soundfile as sf
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_faults_signals import Command
root = Path(sys.argv[1]); shutil.rmtree(root, ignore_errors=True)
src = root / "audio"; t = np.arange(1000) / 4000
for i in range(300):
    (src / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
    sf.write(src / "ab"[i % 2] / f"t{i:04d}.wav", (0.3 * np.sin(2 * np.pi * (300 + 7 * i) * t)).astype(np.float32), 4000)
Command(["prepare", "--dataset", "synth-tags", "--preset", "tiny", "--workers", "1", "--out", root / "tags"]).proc.wait()
for k in range(5):
    out = root / f"prep{k}"
    c = Command(["prepare", "--dataset", "folder", "--source", src, "--sample-rate", "4000", "--workers", "2", "--out", out])
    c.wait_for(lambda: re.search(r"prepare audio: .*\b([1-9]\d*)/300", c.output) is not None, "progress")
    print(f"prepare SIGINT at progress: {c.interrupt(signal.SIGINT):.2f} s", flush=True)
for k in range(5):
    out = root / f"pre{k}"
    c = Command(["pretrain", "--cache", root / "tags", "--preset", "tiny", "--out", out])
    c.wait_for(lambda: "Epoch 1" in c.output or "epoch 1" in c.output, "first epoch")
    print(f"pretrain SIGTERM in epoch 1: {c.interrupt(signal.SIGTERM):.2f} s", flush=True)
