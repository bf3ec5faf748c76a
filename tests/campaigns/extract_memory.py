"""Peak memory and speed of extracting the eight paper scales at full width (untrained weights), with
and without extract's per-model batch bound (``taps.BATCH_MEMORY_MB``), in float32 and bf16.

Each configuration runs in a fresh process (its own peak resident memory, VmHWM) through
``taps.features_of_waves``, extract's computation, on TRACKS tracks of 29 s of noise, batch 64.
Usage: python tests/campaigns/extract_memory.py [TRACKS]   (default 4)
"""

import json
import subprocess
import sys

CHILD = r"""
import json, sys, time
import numpy as np
from msagg.stages import quiet
quiet.import_backend()
import keras
from msagg.models import sample_cnn, specs
from msagg.stages.engines import taps

precision, bounded, num_tracks = sys.argv[1], sys.argv[2] == "bounded", int(sys.argv[3])
keras.utils.set_random_seed(0)
models = {}
for scale in specs.PAPER_SCALES:
    model = sample_cnn.build_sample_cnn(scale, 50, "tags", dtype=specs.build_dtype(precision))
    extractor = sample_cnn.build_tap_extractor(model, scale)
    models[scale] = taps.TapModel(
        scale=scale, input_length=specs.get_spec(scale).input_length, sample_rate=22050, extractor=extractor,
        channels={t: int(v.shape[-1]) for t, v in extractor.output.items()}, model_hash="", num_params=0,
        test_metrics={}, segment_bytes=taps.largest_activation_bytes(model) if bounded else 0)
rng = np.random.default_rng(0)
waves = [rng.normal(0, 0.1, 22050 * 29).astype(np.float32) for _ in range(num_tracks)]
taps.features_of_waves(waves[:1], models, "mean", 64, "cover")  # traces every model once
began = time.perf_counter()
taps.features_of_waves(waves, models, "mean", 64, "cover")
seconds = time.perf_counter() - began
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
print(json.dumps({"precision": precision, "batch": "bounded" if bounded else "64 for every model",
                  "peak_rss_mb": round(peak), "realtime_factor": round(num_tracks * 29 / seconds, 2)}))
"""

num_tracks = sys.argv[1] if len(sys.argv) > 1 else "4"
print(f"| precision | segments per pass | peak RSS (MB) | real-time factor ({num_tracks} x 29 s) |")
print("|---|---|---:|---:|")
for precision in ("float32", "bf16"):
    for bounded in ("unbounded", "bounded"):
        res = subprocess.run([sys.executable, "-c", CHILD, precision, bounded, num_tracks], capture_output=True,
                             text=True, check=True)
        row = json.loads(res.stdout.strip().splitlines()[-1])
        batch = row["batch"] if bounded == "unbounded" else "64, fewer for long-input models"
        print(f"| {precision} | {batch} | {row['peak_rss_mb']} | {row['realtime_factor']} |", flush=True)
