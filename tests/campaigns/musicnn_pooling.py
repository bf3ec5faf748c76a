"""Which pooling of the teacher's per-patch outputs makes the best song vector for the musicnn reference
row: 5-fold cross-validated accuracy of a standardized logistic regression (C chosen among 0.01 to 10 by
the mean over folds) on a prepared cache, for each candidate (needs make teacher).
Usage: python tests/campaigns/musicnn_pooling.py CACHE [FOLD_REGEX]
(CACHE: a prepare run folder, e.g. runs/demo/prepare/synth-genre; FOLD_REGEX: folds from the track
ids, e.g. "/(\\d)-" for ESC-10, else stratified folds)"""
import re
import sys
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from msagg.data.formats.cache import AudioCache
from msagg.stages import quiet

quiet.import_backend()
from msagg.stages.teacher import load_teacher  # noqa: E402

teacher = load_teacher("MTT_musicnn")
with AudioCache(sys.argv[1]) as cache:
    y = cache.labels.argmax(axis=1)
    ids = [str(t) for t in cache.track_ids]
    began, outputs, seconds = time.monotonic(), [], 0.0
    for i in range(cache.num_tracks):
        wave = cache.track(i)
        seconds += wave.size / cache.sample_rate
        outputs.append(teacher.features(wave, cache.sample_rate))
    print(f"{cache.num_tracks} tracks, {seconds / 60:.1f} min of audio in {time.monotonic() - began:.1f} s")


def pooled(key, *stats):
    return np.stack([np.concatenate([getattr(np, s)(o[key], axis=0) for s in stats]) for o in outputs])


candidates = {
    "penultimate mean": pooled("penultimate", "mean"),
    "penultimate mean+max": pooled("penultimate", "mean", "max"),
    "penultimate mean+std": pooled("penultimate", "mean", "std"),
    "taggram mean": pooled("taggram", "mean"),
    "penultimate mean+max, taggram mean": np.concatenate([pooled("penultimate", "mean", "max"),
                                                          pooled("taggram", "mean")], axis=1),
    "back-end pools (mean_pool, max_pool) mean": np.concatenate([pooled("mean_pool", "mean"),
                                                                 pooled("max_pool", "mean")], axis=1),
}
if len(sys.argv) > 2:
    groups = [int(re.search(sys.argv[2], t).group(1)) for t in ids]
    folds = [(np.flatnonzero(np.not_equal(groups, g)), np.flatnonzero(np.equal(groups, g))) for g in sorted(set(groups))]
else:
    folds = list(StratifiedKFold(5, shuffle=True, random_state=0).split(np.zeros(len(y)), y))
for name, x in candidates.items():
    best = max((cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)), x, y,
                                cv=folds).mean(), c) for c in (0.01, 0.1, 1.0, 10.0))
    print(f"{name:45s} dim {x.shape[1]:5d}  accuracy {best[0]:.3f} (C {best[1]:g})")
