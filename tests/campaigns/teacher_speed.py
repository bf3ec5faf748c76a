"""Seconds per minute of audio of the teacher's taggram (60 s of noise at 16 kHz), best of 3, per model (needs make teacher)."""
import time
import numpy as np
from msagg.stages import quiet
quiet.import_backend()
from msagg.stages.teacher import load_teacher
wave = np.random.default_rng(0).normal(0, 0.1, 16000 * 60).astype(np.float32)
for name in ("MTT_musicnn", "MSD_musicnn"):
    teacher = load_teacher(name)
    teacher.taggram(wave, 16000)
    best = min((lambda t: (teacher.taggram(wave, 16000), time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(3))
    print(f"{name}: taggram {best:.2f} s per minute of audio")
