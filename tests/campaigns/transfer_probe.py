"""How well a features file's song vectors transfer, measured quickly: a standardized logistic regression
(C among 0.01 to 10, chosen by 4-fold CV of the training songs) per feature set, on ESC-10's 5 official
folds (folds from the track ids) or a cache's own train+valid / test split (FSDD). Each block of a joined
set is standardized and weighed by 1/sqrt(dim). Used to compare pretraining recipes of the general family
(teacher vocabularies, targets, teacher features) before training a whole family.

Usage: python tests/campaigns/transfer_probe.py FEATURES [--scales 4^6] [--mfcc-from FEATURES]
(FEATURES: an extract run, e.g. msagg extract --pretrain RUN --cache ESC10_PREPARE --classic none --out X;
--mfcc-from: a features file of the same cache holding /classic/mfcc, for the learned + MFCC row)
Prints: dataset, feature set, dimensions, mean accuracy, std over folds (0 for one split)."""
import argparse
import re

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.preprocessing import StandardScaler

from msagg.data.formats.features import FeaturesFile

parser = argparse.ArgumentParser()
parser.add_argument("features")
parser.add_argument("--scales", default="", help="comma-separated scales (default: all of the file's)")
parser.add_argument("--mfcc-from", default="", help="a features file of the same cache holding /classic/mfcc")
args = parser.parse_args()
f = FeaturesFile(args.features)
scales = args.scales.split(",") if args.scales else f.scales
y = f.labels.argmax(1)
learned = {f"{s}@{t}": f.get(s, t) for s in scales for t in f.taps(s)}
classic = {c: f.get_classic(c) for c in f.classic}
if args.mfcc_from:
    other = FeaturesFile(args.mfcc_from)
    if list(other.track_ids) != list(f.track_ids):
        raise SystemExit(f"{args.mfcc_from}: another cache's features")
    classic["mfcc"] = other.get_classic("mfcc")


def join(blocks):
    return np.concatenate([(b - b.mean(0)) / (b.std(0) + 1e-6) / np.sqrt(b.shape[1]) for b in blocks], axis=1)


def score(x, train, test):
    scaler = StandardScaler().fit(x[train])
    search = GridSearchCV(LogisticRegression(max_iter=3000), {"C": [0.01, 0.1, 1, 10]},
                          cv=StratifiedKFold(4, shuffle=True, random_state=0))
    search.fit(scaler.transform(x[train]), y[train])
    return float((search.predict(scaler.transform(x[test])) == y[test]).mean())


if f.dataset == "esc10":
    fold = np.array([int(re.search(r"/(\d)-", t).group(1)) for t in f.track_ids])
    splits = [(np.flatnonzero(fold != k), np.flatnonzero(fold == k)) for k in range(1, 6)]
else:
    splits = [(np.flatnonzero(f.split != "test"), np.flatnonzero(f.split == "test"))]
sets = {"learned": list(learned.values())}
for s in scales:
    sets[f"{s} all taps"] = [learned[f"{s}@{t}"] for t in f.taps(s)]
if "mfcc" in classic:
    sets["mfcc"] = [classic["mfcc"]]
    sets["learned+mfcc"] = list(learned.values()) + [classic["mfcc"]]
for name, blocks in sets.items():
    x = join(blocks)
    accuracy = [score(x, train, test) for train, test in splits]
    print(f"{f.dataset}\t{name}\t{x.shape[1]}\t{np.mean(accuracy):.3f}\t{np.std(accuracy):.3f}", flush=True)
