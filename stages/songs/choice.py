"""Choosing the feature set and the classifier by cross-validation inside the training songs.

A validation split of a few dozen songs cannot choose reliably among some thirty feature sets and
several classifiers, so classify chooses by k-fold cross-validation of the train and valid songs
together (test songs never take part): folds stratified by class for a classes task, shuffled with
the classify seed; a tags task, plain shuffled folds. For each feature set, each cross-validated
classifier (``ClassifierType.cross_validated`` and savable: the logistic regression and the SVM) and
each C of its grid, a fit on k - 1 folds (its standardizer and block weights fitted on those folds
only) scores the held-out fold with the task's primary metric; the mean over folds is the score.

- A set's *selected* classifier: its best (classifier, C), refitted with that C on all train and
  valid songs and scored on test.
- The *chosen* row: the selected classifier of the set with the best score (ties: the earlier set
  in the report's order, then the earlier classifier, then the C nearest 1). It is the classifier
  ``msagg predict --classify`` applies by default.

The MLP is not cross-validated (k more Keras trainings per set); its rows are reported as before.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from msagg.stages.songs.classifiers import CLASSIFIERS, ClassifyError, Trained, train_classifier
from msagg.stages.songs.metrics import METRICS, PRIMARY, mean_std, score
from msagg.stages.songs.scaling import Standardizer, weightings

CV_FOLDS = 5
"""Folds of the train and valid songs (fewer when there are fewer songs, or songs per class)."""


def candidates(classifiers: Sequence[str]) -> list[str]:
    """The classifiers among ``classifiers`` the choice cross-validates (cheap to fit, and
    savable, so that ``msagg predict`` can apply the chosen one), in their order."""
    return [c for c in classifiers if CLASSIFIERS[c].cross_validated and CLASSIFIERS[c].savable]


def cv_folds(labels: np.ndarray, task: str, num_folds: int = CV_FOLDS, seed: int = 0
             ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds of the songs the choice is made on.

    Args:
        labels: uint8 (n, num_labels) of those songs.
        task: "classes" (folds stratified by class) or "tags".
        num_folds: Folds wanted; fewer when there are fewer songs, or (classes) fewer songs in the
            largest class.
        seed: Seed of the shuffle.

    Returns:
        ``[(fit positions, held-out positions)]``, int64 positions into ``labels``; empty for fewer
        than two songs.
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    n = len(labels)
    if task == "classes":
        y = np.asarray(labels).argmax(axis=1)
        k = min(num_folds, n, int(np.bincount(y).max()) if n else 0)
        splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if k >= 2 else None
    else:
        y, k = None, min(num_folds, n)
        splitter = KFold(k, shuffle=True, random_state=seed) if k >= 2 else None
    if splitter is None:
        return []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class with fewer songs than folds
        return [(fit.astype(np.int64), held.astype(np.int64)) for fit, held in splitter.split(np.zeros((n, 1)), y)]


def cross_validate(x: np.ndarray, labels: np.ndarray, task: str, blocks: Sequence[int], kinds: Sequence[str],
                   folds: Sequence[tuple[np.ndarray, np.ndarray]], config, seed: int,
                   weights: Sequence[float] | None = None) -> dict[str, dict[str, Any]]:
    """The held-out score of every classifier and C on every fold.

    Args:
        x: float32 (n, dim) unscaled features of the songs ``folds`` index.
        labels: uint8 (n, num_labels).
        task: "tags" or "classes".
        blocks: The set's block dimensions (``featuresets.block_dims``).
        kinds: Classifiers to cross-validate (``candidates``).
        folds: ``cv_folds``' folds.
        config: MLP hyper-parameters (classify's Config).
        seed: The classifiers' seed.
        weights: The blocks' weights (``choose_weights``); None: alike.

    Returns:
        ``{kind: {C as text ("" for a kind without C): {"mean", "std", "values"}}}``: the primary
        metric per fold (a fold whose fit rows hold a single class, or whose held-out songs score
        nothing, counts as missing).
    """
    primary = PRIMARY[task]
    values: dict[str, dict[str, list]] = {kind: {} for kind in kinds}
    for fit, held in folds:
        std = Standardizer.fit(x[fit], blocks, weights)
        x_fit, x_held = std(x[fit]), std(x[held])
        for kind in kinds:
            try:
                trained = train_classifier(kind, task, x_fit, labels[fit], x_held, labels[held], config, seed)
            except ClassifyError:
                trained = None
            if trained is not None and trained.params.get("valid_by_C"):
                by_c = trained.params["valid_by_C"]
            else:
                by_c = {"": None if trained is None else score(task, labels[held], trained.predict(x_held))[primary]}
            for c, value in by_c.items():
                values[kind].setdefault(c, []).append(value)
    return {kind: {c: mean_std([v for v in vs if v is not None]) for c, vs in by_c.items()}
            for kind, by_c in values.items()}


def choose_weights(x: np.ndarray, labels: np.ndarray, task: str, blocks: Sequence[int], kinds: Sequence[str],
                  folds: Sequence[tuple[np.ndarray, np.ndarray]], config, seed: int) -> tuple[float, ...] | None:
    """The weights of a joined set's blocks with the best cross-validated score (``scaling.weightings``).

    Scored with the first of ``kinds`` (the logistic regression where it runs: the cheapest) over its C
    grid, on the same folds as the choice; ties go to the earlier weighting (all alike first). Every
    classifier of the set then uses these weights.

    Returns:
        The weights, or None for a set of one block, without folds or classifiers to score with.
    """
    if len(blocks) < 2 or not folds or not kinds:
        return None
    kind = "logreg" if "logreg" in kinds else kinds[0]
    best, best_value = None, None
    for weights in weightings(len(blocks)):
        found = best_of(cross_validate(x, labels, task, blocks, [kind], folds, config, seed, weights))
        if found is not None and (best_value is None or found[2] > best_value):
            best, best_value = weights, found[2]
    return best


def best_of(cv: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> tuple[str, str, float] | None:
    """The (kind, C text, mean score) with the best mean in ``cross_validate``'s result; ties go to
    the earlier kind, then to the C nearest 1. None when nothing scored."""
    best, best_key = None, None
    for kind, by_c in cv.items():
        for c, summary in by_c.items():
            if summary["mean"] is None:
                continue
            key = (summary["mean"], -abs(math.log10(float(c))) if c else 0.0)
            if best_key is None or key > best_key:
                best, best_key = (kind, c, summary["mean"]), key
    return best


def select(x: np.ndarray, labels: np.ndarray, task: str, label_names: Sequence[str], blocks: Sequence[int],
           rows: Mapping[str, np.ndarray], kinds: Sequence[str], folds: Sequence[tuple[np.ndarray, np.ndarray]],
           config, seed: int, weights: Sequence[float] | None = None) -> tuple[dict[str, Any], Trained, Standardizer] | None:
    """One feature set's selected classifier: cross-validated, refitted on all train and valid songs, tested.

    Args:
        x: float32 (num_tracks, dim) unscaled features of every track.
        labels: uint8 (num_tracks, num_labels).
        task, label_names: As the features file has them.
        blocks: The set's block dimensions.
        rows: ``split_rows``' rows: the folds index the sorted train and valid rows, the test rows score.
        kinds, folds, config, seed, weights: As ``cross_validate``.

    Returns:
        ``(entry, trained, standardizer)``, entry = ``{"classifier", "params": {"C"} or {},
        "cv_<primary>": mean, "cv": cross_validate's result, "test": {metric: mean_std},
        "per_label": {...}}``; None when no fold scored.
    """
    fit_rows = np.sort(np.concatenate([rows["train"], rows["valid"]]))
    cv = cross_validate(x[fit_rows], labels[fit_rows], task, blocks, kinds, folds, config, seed, weights)
    best = best_of(cv)
    if best is None:
        return None
    kind, c, value = best
    std = Standardizer.fit(x[fit_rows], blocks, weights)
    x_fit = std(x[fit_rows])
    trained = train_classifier(kind, task, x_fit, labels[fit_rows], None if c else x_fit, labels[fit_rows], config,
                               seed, c_values=(float(c),) if c else None)
    test = score(task, labels[rows["test"]], trained.predict(std(x[rows["test"]])), label_names)
    entry = {"classifier": kind, "params": {"C": float(c)} if c else {}, f"cv_{PRIMARY[task]}": value, "cv": cv,
             "test": {m: mean_std([test[m]]) for m in METRICS[task]}, "per_label": test["per_label"]}
    return entry, trained, std
