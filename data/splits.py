"""Deterministic train/valid/test splits: stratified, k-fold, folds named in file names, official files."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
# k-fold: the share of the non-test tracks held out for validation. With 5 folds this gives
# 70 / 10 / 20 %, the same proportions as DEFAULT_FRACTIONS.
KFOLD_VALID_FRACTION = 0.125

SPLITS_DIR = Path(__file__).parent / "splits"
OFFICIAL_FILES = {
    "gtzan": {s: f"gtzan/{s}_filtered.txt" for s in SPLITS},
    "mtat": {s: f"mtat/{s}.txt" for s in SPLITS},
}
MTAT_TAGS_FILE = "mtat/top50_tags.txt"
MTAT_COLUMNS_FILE = "mtat/top50_columns.tsv"


def split_counts(split: Sequence[str]) -> dict[str, int]:
    """Number of tracks per split name, in the order train, valid, test."""
    values = list(split)
    return {s: values.count(s) for s in SPLITS}


def _normalized(fractions: Sequence[float], num: int) -> np.ndarray:
    frac = np.asarray(fractions, dtype=np.float64)
    if frac.shape != (num,) or np.any(frac < 0) or frac.sum() <= 0 or frac[0] <= 0:
        raise ValueError(f"fractions must be {num} non-negative numbers with a positive first one, got {fractions}")
    return frac / frac.sum()


def _check_labels(labels: np.ndarray, task: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (num_tracks, num_labels), got shape {labels.shape}")
    if task not in ("tags", "classes"):
        raise ValueError(f"task must be 'tags' or 'classes', got {task!r}")
    if task == "classes" and np.any(labels.sum(axis=1) > 1):
        raise ValueError("task 'classes' needs one label per track at most (one-hot rows)")
    return labels.astype(bool)


def _assign_classes(y: np.ndarray, frac: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per class: shuffle its tracks, give each group its share.

    A class's shares are what each group still lacks of its target over all classes seen so
    far, rounded by largest remainder: each class is split within one track of ``frac``, and
    the rounding of small classes is carried over instead of always favouring the same group.
    """
    num_groups = len(frac)
    group = np.full(len(y), -1, dtype=np.int64)
    keys = np.where(y.any(axis=1), y.argmax(axis=1), -1)  # tracks without a label form their own stratum
    assigned = np.zeros(num_groups)
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        idx = idx[rng.permutation(len(idx))]
        want = np.clip(frac * (assigned.sum() + len(idx)) - assigned, 0, None)
        want = np.round(want * len(idx) / want.sum(), 9)
        counts = np.floor(want).astype(np.int64)
        left = len(idx) - counts.sum()
        if left > 0:
            order = np.lexsort((np.arange(num_groups), -frac, -(want - counts)))
            counts[order[:left]] += 1
        group[idx] = np.repeat(np.arange(num_groups), counts)
        assigned += counts
    return group


def _assign_tags(y: np.ndarray, frac: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Iterative stratification (Sechidis, Tsoumakas & Vlahavas 2011).

    Repeatedly takes the label with the fewest unassigned tracks and gives each of its tracks (in
    a seeded random order) to the group most short of that label; ties go to the group most
    short of tracks overall, then to the lower group index. Tracks without labels fill the groups
    most short of tracks.
    """
    num_tracks = len(y)
    group = np.full(num_tracks, -1, dtype=np.int64)
    want_label = frac[:, None] * y.sum(axis=0)[None, :].astype(np.float64)  # (groups, labels)
    want_total = frac * num_tracks
    remaining = y.sum(axis=0).astype(np.int64)
    order = rng.permutation(num_tracks)
    free = np.ones(num_tracks, dtype=bool)
    while np.any(remaining > 0):
        active = np.flatnonzero(remaining > 0)
        label = active[np.argmin(remaining[active])]
        for t in order[free[order] & y[order, label]]:
            col = want_label[:, label]
            best = np.flatnonzero(col >= col.max() - 1e-9)
            if len(best) > 1:
                total = want_total[best]
                best = best[total >= total.max() - 1e-9]
            g = best[0]
            group[t] = g
            free[t] = False
            tags = np.flatnonzero(y[t])
            want_label[g, tags] -= 1
            want_total[g] -= 1
            remaining[tags] -= 1
    for t in order[free[order]]:
        g = int(np.argmax(want_total))
        group[t] = g
        want_total[g] -= 1
    return group


def _ensure_first_group(y: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Moves one track into group 0 for every label that has tracks but none there."""
    group = group.copy()
    for label in np.flatnonzero(y.any(axis=0) & ~(y & (group == 0)[:, None]).any(axis=0)):
        candidates = np.flatnonzero(y[:, label])
        # take the track from the group that holds most of this label
        sizes = np.bincount(group[candidates], minlength=group.max() + 1)
        pick = candidates[group[candidates] == int(np.argmax(sizes))][0]
        group[pick] = 0
    return group


def _assign(y: np.ndarray, task: str, frac: np.ndarray, rng: np.random.Generator, first_complete: bool) -> np.ndarray:
    group = _assign_classes(y, frac, rng) if task == "classes" else _assign_tags(y, frac, rng)
    return _ensure_first_group(y, group) if first_complete else group


def stratified_split(
    labels: np.ndarray, task: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 0
) -> tuple[list[str], dict]:
    """A deterministic stratified train/valid/test split.

    Classes: each class's tracks are shuffled with ``seed`` and shared out by ``fractions``.
    Tags: iterative stratification (Sechidis et al. 2011), the rarest labels placed first.
    Every label that has tracks has at least one in train.

    Args:
        labels: (num_tracks, num_labels) uint8 multi-hot (one-hot for classes).
        task: "tags" or "classes".
        fractions: Shares of train, valid, test (normalized to sum to 1).
        seed: Seed of the shuffles; the same inputs give the same split.

    Returns:
        (split, split_info): "train" / "valid" / "test" per track, and how it was made
        (kind "stratified", method, seed, fractions, counts).

    Raises:
        ValueError: For bad shapes, task or fractions.
    """
    y = _check_labels(labels, task)
    frac = _normalized(fractions, 3)
    group = _assign(y, task, frac, np.random.default_rng(seed), first_complete=True)
    split = [SPLITS[g] for g in group]
    info = {
        "kind": "stratified",
        "method": "per-class shuffle" if task == "classes" else "iterative stratification",
        "seed": int(seed),
        "fractions": [float(f) for f in frac],
        "counts": split_counts(split),
    }
    return split, info


def kfold(
    labels: np.ndarray, task: str, k: int, fold: int, seed: int = 0, valid_fraction: float = KFOLD_VALID_FRACTION
) -> tuple[list[str], dict]:
    """Stratified k-fold cross-validation: test = fold ``fold`` (1-based), valid = a stratified
    slice of the other folds, train = the rest.

    The fold assignment depends only on ``labels``, ``task``, ``k`` and ``seed``, so the k calls
    with fold = 1..k test every track exactly once.

    Args:
        labels: (num_tracks, num_labels) uint8 multi-hot.
        task: "tags" or "classes".
        k: Number of folds, at least 2.
        fold: The test fold, 1 <= fold <= k.
        seed: Seed of the fold assignment and of the valid slice.
        valid_fraction: Share of the non-test tracks used for validation.

    Returns:
        (split, split_info) with kind "kfold", folds, fold, seed, valid_fraction, counts.

    Raises:
        ValueError: For k < 2, a fold outside 1..k, or a bad valid_fraction.
    """
    y = _check_labels(labels, task)
    if not isinstance(k, (int, np.integer)) or k < 2:
        raise ValueError(f"folds must be an integer >= 2, got {k!r}")
    if not isinstance(fold, (int, np.integer)) or not 1 <= fold <= k:
        raise ValueError(f"fold must be between 1 and {k} (folds are numbered from 1), got {fold!r}")
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    rng = np.random.default_rng(seed)
    folds = _assign(y, task, np.full(k, 1.0 / k), rng, first_complete=False)
    test = folds == fold - 1
    rest = np.flatnonzero(~test)
    sub = _assign(y[rest], task, np.array([1 - valid_fraction, valid_fraction]), rng, first_complete=True)
    split = np.full(len(y), "test", dtype=object)
    split[rest] = np.where(sub == 0, "train", "valid")
    split = list(split)
    info = {
        "kind": "kfold",
        "folds": int(k),
        "fold": int(fold),
        "seed": int(seed),
        "valid_fraction": float(valid_fraction),
        "counts": split_counts(split),
    }
    return split, info


def _fold_key(value) -> int | str:
    text = str(value).strip()
    return int(text) if text.isdigit() else text


def folds_from_names(
    names: Sequence[str],
    pattern: str,
    fold,
    *,
    valid: str = "next",
    labels: np.ndarray | None = None,
    task: str | None = None,
    seed: int = 0,
) -> tuple[list[str], dict]:
    """Official folds written in file names (ESC-10: ``1-100032-A.ogg`` is in fold 1).

    The first group of ``pattern`` (searched in each name) is the track's fold; numbers compare
    as numbers ("01" is fold 1). test = fold ``fold``. By default valid = the next fold
    cyclically (fold 5 -> fold 1) and train = the remaining folds: folds keep clips cut from one
    recording together, so a held-out fold is the only validation set that does not leak. The
    published protocols train on all other folds; ``valid="slice"`` comes closer to that by
    holding out a stratified ``KFOLD_VALID_FRACTION`` of them instead (needs ``labels``, ``task``).

    Args:
        names: File names (or paths; the pattern is searched, not matched at the start).
        pattern: Regular expression with at least one group, e.g. ``r"^(\\d)-"``.
        fold: The test fold, as written in the names (int or str).
        valid: "next" or "slice".
        labels, task, seed: For ``valid="slice"``.

    Returns:
        (split, split_info) with kind "folds_from_names", pattern, fold, folds, valid, counts.

    Raises:
        ValueError: Listing every name the pattern does not match, an unknown fold, fewer than
        3 folds with ``valid="next"``, or a bad pattern.
    """
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"fold_from_name {pattern!r} is not a valid regular expression: {err}") from None
    if regex.groups < 1:
        raise ValueError(f"fold_from_name {pattern!r} needs a group, e.g. '^(\\d)-'")
    if valid not in ("next", "slice"):
        raise ValueError(f"valid must be 'next' or 'slice', got {valid!r}")
    keys, unmatched = [], []
    for name in names:
        m = regex.search(str(name))
        if m is None or m.group(1) is None:
            unmatched.append(str(name))
            keys.append(None)
        else:
            keys.append(_fold_key(m.group(1)))
    if unmatched:
        shown = ", ".join(unmatched[:20]) + (f", ... ({len(unmatched) - 20} more)" if len(unmatched) > 20 else "")
        raise ValueError(f"fold_from_name {pattern!r} matches no fold in {len(unmatched)} names: {shown}")
    values = sorted(set(keys), key=lambda v: (isinstance(v, str), v))
    test_key = _fold_key(fold)
    if test_key not in values:
        raise ValueError(f"fold {fold!r} is not among the folds found in the names: {values}")
    keys_arr = np.array([str(v) for v in keys], dtype=object)
    test = keys_arr == str(test_key)
    info = {"kind": "folds_from_names", "pattern": pattern, "fold": test_key, "folds": values, "valid": valid}
    if valid == "next":
        if len(values) < 3:
            raise ValueError(f"valid='next' needs at least 3 folds, found {values}; use valid='slice'")
        valid_key = values[(values.index(test_key) + 1) % len(values)]
        info["valid_fold"] = valid_key
        split = np.where(test, "test", np.where(keys_arr == str(valid_key), "valid", "train"))
    else:
        if labels is None or task is None:
            raise ValueError("valid='slice' needs labels and task")
        y = _check_labels(labels, task)
        rest = np.flatnonzero(~test)
        frac = np.array([1 - KFOLD_VALID_FRACTION, KFOLD_VALID_FRACTION])
        sub = _assign(y[rest], task, frac, np.random.default_rng(seed), first_complete=True)
        split = np.full(len(keys), "test", dtype=object)
        split[rest] = np.where(sub == 0, "train", "valid")
        info.update(seed=int(seed), valid_fraction=KFOLD_VALID_FRACTION)
    split = [str(s) for s in split]
    info["counts"] = split_counts(split)
    return split, info


def read_split_file(path: str | Path) -> list[str]:
    """Reads a split file: one entry a line; blank lines and lines starting with '#' are ignored.

    Raises:
        FileNotFoundError: If the file does not exist.
    """
    with open(path, encoding="utf-8") as f:
        return [s for s in (line.strip() for line in f) if s and not s.startswith("#")]


def _official_files(dataset: str) -> dict[str, str]:
    if dataset not in OFFICIAL_FILES:
        raise ValueError(f"no official split for {dataset!r}; known: {sorted(OFFICIAL_FILES)}")
    return OFFICIAL_FILES[dataset]


def official_split(dataset: str) -> dict[str, list[str]]:
    """The committed official split of ``dataset`` ("gtzan" or "mtat").

    Returns:
        {"train": [...], "valid": [...], "test": [...]}: the lines of the split files
        (GTZAN ``genre/genre.000NN.wav``, MTAT ``dir/name.mp3``), in file order.

    Raises:
        ValueError: For an unknown dataset or an entry listed in two splits.
    """
    lists = {s: read_split_file(SPLITS_DIR / rel) for s, rel in _official_files(dataset).items()}
    seen: dict[str, str] = {}
    for s, entries in lists.items():
        for e in entries:
            if e in seen:
                raise ValueError(f"official {dataset} split lists {e!r} in both {seen[e]} and {s}")
            seen[e] = s
    return lists


def official_split_info(dataset: str) -> dict:
    """The ``split_info`` of an official split: kind "official", dataset, files (package-relative)."""
    files = _official_files(dataset)
    return {"kind": "official", "dataset": dataset, "files": {s: f"data/splits/{rel}" for s, rel in files.items()}}


def mtat_top50() -> list[tuple[str, str]]:
    """The 50 MagnaTagATune tags of the SampleCNN papers, in their order.

    Returns:
        (name, annotations_final.csv column) pairs, e.g. ("noVocals", "no vocals").

    Raises:
        ValueError: If ``top50_columns.tsv`` and ``top50_tags.txt`` disagree.
    """
    names = read_split_file(SPLITS_DIR / MTAT_TAGS_FILE)
    rows = [line.split("\t") for line in read_split_file(SPLITS_DIR / MTAT_COLUMNS_FILE)]
    pairs = [(r[0].strip(), r[1].strip()) for r in rows[1:] if len(r) >= 2]  # rows[0] is the header
    if [p[0] for p in pairs] != names:
        raise ValueError(f"{MTAT_COLUMNS_FILE} does not list the names of {MTAT_TAGS_FILE} in the same order")
    return pairs
