"""Largest difference of the teacher port's tag probabilities from the original musicnn's recorded ones
(tests/data/musicnn_reference.npz), per model, over every patch of the fixture clips, float16 front end
as the original's (needs make teacher). Usage: python tests/campaigns/teacher_agreement.py TMPDIR"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import musicnn_clips  # noqa: E402
from msagg.data import melspec  # noqa: E402
from msagg.data.audio import load  # noqa: E402
from msagg.stages.teacher import TEACHERS, load_teacher  # noqa: E402

reference = dict(np.load(Path(__file__).resolve().parents[1] / "data" / "musicnn_reference.npz"))
paths = musicnn_clips.write_clips(Path(sys.argv[1]))
for name in TEACHERS:
    teacher = load_teacher(name, float16_log=True)
    worst = max(float(np.abs(teacher.taggram(load(path, melspec.SAMPLE_RATE), melspec.SAMPLE_RATE)
                             - reference[f"{name}/{clip}/taggram"]).max()) for clip, path in paths.items())
    print(f"{name}: max |port - original| = {worst:.2e} over {len(paths)} clips")
