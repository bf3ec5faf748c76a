"""Classify stage: song-level classifiers on multi-level, multi-scale features; results tables.

The parts live in their own modules: ``msagg.stages.songs.featuresets`` (which taps of which scales, and the
feature-set grammar), ``msagg.stages.songs.scaling`` (standardization, block weights of joined sets),
``msagg.stages.songs.classifiers`` (the MLP, the logistic regression, the SVM),
``msagg.stages.songs.choice`` (the set and classifier chosen by cross-validation),
``msagg.stages.songs.predictor`` (classifiers saved for ``msagg predict``) and ``msagg.stages.songs.report`` (the tables).
This module holds the stage's config and its run: train every set, write the report and plots.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from msagg.data.adapters import label_groups
from msagg.data.atomic import remove_stale_temps, write_json, write_text
from msagg.data.errors import ConfigError
from msagg.data.formats.features import FeaturesFile
from msagg.models.specs import SCALES
from msagg.stages.songs import choice, featuresets
from msagg.stages import quiet
from msagg.stages.checks import check_int
from msagg.stages.songs.featuresets import (FeatureSet, FeatureSetError, assemble, block_dims, feature_sets,
                                            read_features)
from msagg.stages.songs.metrics import METRICS, PRIMARY, chance_levels, mean_std, score
from msagg.stages.songs.predictor import DEFAULT_KEY, INDEX_FILE, MODELS_DIR, predictor_info, save_classifier
from msagg.stages.songs.report import (METRIC_TITLES, NO_GROUP, end_to_end_rows, fmt, per_label_layers, per_label_layers_csv,
                           results_csv, results_markdown)
from msagg.stages.runs.folder import RunFolder, lock_scope
from msagg.stages.runs.upstream import open_upstream
from msagg.stages.songs.classifiers import CLASSIFIERS, SAVABLE, ClassifyError, split_rows, train_classifier
from msagg.stages.songs.scaling import Standardizer
from msagg.stages.songs.mlp import MLP

logger = logging.getLogger(__name__)

PER_LABEL = {"tags": "roc_auc", "classes": "f1"}
MAX_TSNE_SONGS = 2000
PREDICTOR_SETS = ("chosen", "all")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(MLP):
    """What the classify stage trains and reports. Defaults are the paper's values.

    Attributes:
        features: An extract run folder (holding ``features.h5``).
        classifiers: Any of "mlp" (the paper's song-level MLP), "logreg" (logistic regression)
            and "svm" (RBF support-vector machine); the last two choose C on the validation split
            for their rows, and take part in the choice (``cv_folds``).
        hidden_layers, hidden_units, dropout, learning_rate, batch_size, epochs, patience: The
            MLP's hyper-parameters, inherited from ``msagg.stages.songs.classifiers.MLP``.
        repeats: MLP trainings with seeds ``seed .. seed + repeats - 1`` (mean and std reported).
        seed: First seed.
        feature_sets: Feature-set specs (grammar: ``msagg.stages.songs.featuresets``), e.g. ("3^8+3^9",
            "3^8+3^9@-1", "3^9@-2,-1", "all@-1"); stored in canonical form. Empty: the paper's
            Table 2 multi-scale sets present in the file. The all-scales last-three set is always
            included, and so are the file's classic sets (``mfcc``) alone and joined to it. (A comma-separated ``--set feature_sets=3^9@-2,-1,3^8+3^9`` keeps "-1"
            with the spec before it.)
        include_single: Also evaluate every scale's -3, -2, -1 and last-three features (Table 1).
        tsne_label: Label colouring the t-SNE map (None: the class, or the commonest tag).
        tsne: Draw the t-SNE map.
        cv_folds: Folds of the train and valid songs that choose the feature set, classifier and
            C (``msagg.stages.songs.choice``): the report's chosen row.
        predictor_set: The classifier ``msagg predict`` applies by default: "chosen" (the chosen
            row's) or "all" (the all-scales last-three set, the paper's aggregation, with the
            classifier cross-validation selected for it). Both are saved either way. Before the
            choice was cross-validated, "valid" named the set best on the validation split; it
            is refused, naming "chosen".
    """

    features: str
    classifiers: tuple[str, ...] = CLASSIFIERS
    repeats: int = 1
    seed: int = 0
    feature_sets: tuple[str, ...] = ()
    include_single: bool = True
    tsne_label: str | None = None
    tsne: bool = True
    cv_folds: int = choice.CV_FOLDS
    predictor_set: str = "chosen"

    def __post_init__(self):
        super().__post_init__()  # the MLP's hyper-parameters
        if isinstance(self.features, os.PathLike):
            object.__setattr__(self, "features", os.fspath(self.features))
        if not isinstance(self.features, str) or not self.features:
            raise ConfigError(f"features must be an extract run folder, got {self.features!r}")
        classifiers = (self.classifiers,) if isinstance(self.classifiers, str) else tuple(self.classifiers)
        bad = [c for c in classifiers if c not in CLASSIFIERS]
        if bad or not classifiers or len(set(classifiers)) != len(classifiers):
            raise ConfigError(f"classifiers must be distinct names among {', '.join(CLASSIFIERS)}, got {classifiers!r}")
        object.__setattr__(self, "classifiers", classifiers)
        check_int("repeats", self.repeats, 1)
        check_int("seed", self.seed, 0)
        check_int("cv_folds", self.cv_folds, 2)
        specs = (self.feature_sets,) if isinstance(self.feature_sets, str) else tuple(self.feature_sets)
        try:
            specs = tuple(dict.fromkeys(featuresets.normalize_spec(s, known=SCALES)
                                        for s in featuresets.join_continuations(specs)))
        except FeatureSetError as err:
            raise ConfigError(f"feature_sets: {err}") from None
        object.__setattr__(self, "feature_sets", specs)
        if self.predictor_set == "valid":
            raise ConfigError('predictor_set "valid" (the set best on the validation split) is gone: the set is '
                              'now chosen by cross-validation of the train and valid songs; use "chosen"')
        if self.predictor_set not in PREDICTOR_SETS:
            raise ConfigError(f"predictor_set must be one of {', '.join(PREDICTOR_SETS)}, got {self.predictor_set!r}")
        if self.tsne_label is not None and (not isinstance(self.tsne_label, str) or not self.tsne_label):
            raise ConfigError(f"tsne_label must be a label name, got {self.tsne_label!r}")


def _saved_classifier(keep: Mapping[str, tuple], name: str) -> str:
    """The classifier saved for the feature set ``name`` (one of ``keep``'s)."""
    return next(trained.kind for _, fs, trained, _ in keep.values() if fs.name == name)


def _selected_on(choice_info: Mapping[str, Any]) -> str:
    """How the saved classifiers were chosen, in words (index.json's ``selected_on``)."""
    if not choice_info["folds"]:
        return "nothing cross-validated: the all-scales set with the row's own classifier"
    return (f"{choice_info['folds']}-fold cross-validation of the {choice_info['songs']} train and valid songs "
            f"({choice_info['metric']}, seed {choice_info['seed']}), refitted on them all")


def _tsne_colours(task: str, label_names: Sequence[str], labels: np.ndarray, tsne_label: str | None):
    if task == "classes" and tsne_label is None:
        return labels.argmax(axis=1), list(label_names), "class"
    if tsne_label is None:
        j = int(labels.sum(axis=0).argmax())
    else:
        j = list(label_names).index(tsne_label)
    name = label_names[j]
    return labels[:, j].astype(int), [f"not {name}", name], name


def _plots(out_dir: Path, report: dict, ff: FeaturesFile, feats: Mapping[str, Mapping[str, np.ndarray]], rows: dict,
           config: Config, chosen_clf: str) -> list[str]:
    from msagg.stages.songs import plots  # matplotlib: loaded when a run gets this far, not to check options

    task = ff.task
    folder = out_dir / "plots"
    written = []
    reference = max(ff.scales, key=lambda s: int(ff.scale_attrs(s)["input_length"]))
    per_label_metric = PER_LABEL[task]
    chosen = report.get("chosen") or report.get("predictor_default")  # without a choice: the set predict applies
    single = f"{reference}@-1"
    series = {}
    for name in dict.fromkeys([chosen["feature_set"] if chosen else None, single]):
        rep = report["feature_sets"].get(name) if name else None
        if rep and chosen_clf in rep["classifiers"]:
            per = rep["classifiers"][chosen_clf]["per_label"][per_label_metric]
            series[f"{name} ({chosen_clf})"] = [per[label] for label in ff.label_names]
    if series:
        metric_title = "ROC-AUC" if task == "tags" else "F1"
        path = plots.per_label_bars(folder / f"per_label_{per_label_metric}.png", ff.label_names, series,
                                    metric_title, f"{ff.dataset}: per-{'tag' if task == 'tags' else 'class'} "
                                    f"test {metric_title}", chance=0.5 if task == "tags" else None)
        written.append(str(path.relative_to(out_dir)))
    layers = report.get("per_label_layers")
    if layers:
        labels = list(layers["rows"])
        groups = [layers["rows"][label]["group"] for label in labels]
        matrix = np.array([[np.nan if v is None else v for v in (layers["rows"][label]["scores"][n]
                                                                 for n in layers["columns"])] for label in labels])
        metric_title = "ROC-AUC" if task == "tags" else "F1"
        path = plots.per_label_heatmap(
            folder / "per_label_layers.png", labels, None if set(groups) == {NO_GROUP} else groups,
            [f"{s} {t}" for s, t in zip(layers["column_scales"], layers["column_taps"])], matrix, metric_title,
            f"{ff.dataset}: per-label test {metric_title} of each single layer ({layers['classifier']})",
            center=0.5 if task == "tags" else None)
        written.append(str(path.relative_to(out_dir)))
    test = rows["test"]
    if config.tsne and test.size >= 5:
        if test.size > MAX_TSNE_SONGS:
            test = np.sort(np.random.default_rng(config.seed).choice(test, MAX_TSNE_SONGS, replace=False))
        maps = {}
        for tap in ("-3", "-1"):
            x = np.asarray(feats[reference][tap], dtype=np.float32)
            std = Standardizer.fit(x[rows["train"]])
            maps[f"{reference} layer {tap}"] = plots.tsne_embed(std(x[test]), seed=config.seed)
        colour, names, what = _tsne_colours(task, ff.label_names, ff.labels[test], config.tsne_label)
        path = plots.tsne_maps(folder / "tsne.png", maps, colour, names,
                               f"{ff.dataset}: t-SNE of {test.size} test songs, coloured by {what}")
        written.append(str(path.relative_to(out_dir)))
    elif config.tsne:
        logger.info("too few test songs (%d) for a t-SNE map", test.size)
    return written


@lock_scope
def run(config: Config, out_dir: str | os.PathLike, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Trains and evaluates song-level classifiers on every feature set; writes the report.

    Args:
        config: The stage config.
        out_dir: The run folder: ``metrics.json``, ``results.csv``, ``results.md``,
            ``per_label_layers.csv`` (per-label scores of each single layer), ``plots/*.png``,
            ``models/`` (classifiers saved for ``msagg predict``).
        overwrite: Replace a folder holding another config (or redo a finished one).
        progress: Show a progress bar over feature sets.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        RunConflictError: If ``out_dir`` holds another config and ``overwrite`` is False.
        RunFolderBusy: If another process is running a stage in ``out_dir``.
        FeaturesError: For a missing, unfinished or unknown-version features file.
        FeatureSetError: For a feature set naming a scale that is not in the file.
        ClassifyError: For an unknown ``tsne_label``, or a file without train or test tracks.
        UnfinishedRunError: If the extract run folder (the folder holding it, for a path to the
            file) has no DONE marker, or its DONE belongs to another run than the file.
        FeaturesError: Also for features that fail their checksum, naming the rows.
        WriteError: When the disk refuses a write (naming the file); no DONE is written.
    """
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir, "classify", config).lock()
    if folder.done and not overwrite:
        logger.info("%s: classify already done with config %s; nothing to do", out_dir, folder.hash)
        return out_dir
    extracted = open_upstream(config.features, "extract")
    quiet.import_backend()  # every check above runs without the backend; the MLP needs it
    with FeaturesFile(extracted.file) as ff:
        extracted.check_file(ff.path, ff.config_hash)
        task, names = ff.task, ff.label_names
        sets = feature_sets(ff.scales, config.feature_sets, config.include_single, source=str(ff.path),
                            classic=ff.classic)
        if config.tsne_label is not None and config.tsne_label not in names:
            raise ClassifyError(f"tsne_label {config.tsne_label!r} is not a label of {ff.path}; "
                                f"labels: {', '.join(names)}")
        feats = read_features(ff)
        usable = np.ones(ff.num_tracks, dtype=bool)
        for taps in feats.values():
            for values in taps.values():
                usable &= np.isfinite(values).all(axis=1)
        num_excluded = int((~usable).sum())
        if num_excluded:
            logger.warning("%s: %d tracks with non-finite features left out", ff.path, num_excluded)
        rows, validation = split_rows(ff, np.flatnonzero(usable), config.seed)
        if not folder.start(overwrite, upstream={"features": extracted}):
            return out_dir
        remove_stale_temps(out_dir)  # temps of atomic writes (plots, models, reports) a killed run left
        y = {split: ff.labels[idx] for split, idx in rows.items()}
        chance = chance_levels(task, y["train"], y["test"])
        report: dict[str, Any] = {
            "dataset": ff.dataset,
            "task": task,
            "pretrain_dataset": ff.pretrain_dataset,
            "features": str(config.features),
            "features_config_hash": ff.config_hash,
            "song_pool": ff.song_pool,
            "label_names": names,
            "num_scales": len(ff.scales),
            "classic": list(ff.classic),
            "num_tracks": {split: int(idx.size) for split, idx in rows.items()},
            "num_excluded": num_excluded,
            "validation": validation,
            "chance": chance,
            "left_out": score(task, y["test"], np.zeros(y["test"].shape), names)["left_out"],
            "classifiers": list(config.classifiers),
            "repeats": config.repeats,
            "mlp": {k: getattr(config, k) for k in ("hidden_layers", "hidden_units", "dropout", "learning_rate",
                                                    "batch_size", "epochs", "patience")},
            "feature_sets": {},
            "end_to_end": end_to_end_rows(ff, config.features),
        }
        # The classifier of the per-label map and of the fallback predictor: the paper's MLP if
        # trained, else the first other one msagg predict can apply.
        kept = next((c for c in SAVABLE if c in config.classifiers), config.classifiers[0])
        all_name = FeatureSet.of(ff.scales).name
        primary = PRIMARY[task]
        kinds = choice.candidates(config.classifiers)
        fit_rows = np.sort(np.concatenate([rows["train"], rows["valid"]]))
        folds = choice.cv_folds(ff.labels[fit_rows], task, config.cv_folds, config.seed) if kinds else []
        report["choice"] = {"classifiers": kinds, "folds": len(folds), "songs": int(fit_rows.size), "seed": config.seed,
                            "metric": primary}
        keep: dict[str, tuple] = {}  # "chosen" / "all" -> (cv score, fs, trained, standardizer)
        began = time.monotonic()
        bar = tqdm(sets, desc="classify", unit="set", disable=not progress, dynamic_ncols=True)
        for fs in bar:
            bar.set_postfix_str(fs.name)
            x = assemble(feats, fs)
            blocks = block_dims(feats, fs)
            weights = choice.choose_weights(x[fit_rows], ff.labels[fit_rows], task, blocks, kinds, folds, config,
                                           config.seed)
            std = Standardizer.fit(x[rows["train"]], blocks, weights)
            xs = {split: std(x[idx]) for split, idx in rows.items()}
            entry = {"group": fs.group, "scales": list(fs.scales), "layers": list(fs.layers), "classic": list(fs.classic),
                     "layers_label": fs.layers_label, "dim": int(x.shape[1]), "blocks": list(blocks), "classifiers": {}}
            if weights is not None:
                entry["block_weights"] = list(weights)
            for clf in config.classifiers:
                seeds = [config.seed + r for r in range(config.repeats)] if clf == "mlp" else [config.seed]
                test_scores, valid_scores, epochs = [], [], []
                for seed in seeds:
                    trained = train_classifier(clf, task, xs["train"], y["train"], xs["valid"], y["valid"], config,
                                               seed)
                    test_scores.append(score(task, y["test"], trained.predict(xs["test"]), names))
                    valid_scores.append(score(task, y["valid"], trained.predict(xs["valid"]), names))
                    epochs.append(trained.epochs)
                    if not folds and clf == kept and clf in SAVABLE and seed == config.seed and fs.name == all_name:
                        keep["all"] = (None, fs, trained, std)  # nothing cross-validated: the row's own classifier
                per_label = {
                    key: {label: mean_std([s["per_label"][key][label] for s in test_scores])["mean"] for label in names}
                    for key in test_scores[0]["per_label"]
                }
                entry["classifiers"][clf] = {
                    "num_runs": len(seeds),
                    "seeds": seeds,
                    "test": {m: mean_std([s[m] for s in test_scores]) for m in METRICS[task]},
                    "valid": {m: mean_std([s[m] for s in valid_scores]) for m in METRICS[task]},
                    "per_label": per_label,
                    "epochs": epochs if clf == "mlp" else None,
                    "params": trained.params or None,
                }
                logger.info("%-28s %-6s %s", fs.name, clf, ", ".join(
                    f"{METRIC_TITLES[m]} {fmt(entry['classifiers'][clf]['test'][m])}" for m in METRICS[task]))
            selected = choice.select(x, ff.labels, task, names, blocks, rows, kinds, folds, config, config.seed,
                                     weights) if folds else None
            entry["selected"] = selected[0] if selected else None
            if selected:
                value = selected[0][f"cv_{primary}"]
                if "chosen" not in keep or value > keep["chosen"][0]:
                    keep["chosen"] = (value, fs, *selected[1:])
                if fs.name == all_name:
                    keep["all"] = (value, fs, *selected[1:])
            report["feature_sets"][fs.name] = entry
        bar.close()
        saved = []
        if "chosen" in keep:
            name = keep["chosen"][1].name
            report["chosen"] = {"feature_set": name, **{k: v for k, v in report["feature_sets"][name]["selected"].items()
                                                      if k != "cv"}}
        if keep:
            default = keep["all" if config.predictor_set == "all" and "all" in keep else "chosen"][1].name \
                if "chosen" in keep else keep["all"][1].name
            report["predictor_default"] = {"feature_set": default, "classifier": _saved_classifier(keep, default),
                                           "rule": config.predictor_set if "chosen" in keep else "all"}
            info = predictor_info(ff, config.features, config.seed, out_dir / MODELS_DIR)
            for key in ("chosen", "all"):
                if key in keep and keep[key][1].name not in saved:
                    _, fs, trained, std = keep[key]
                    save_classifier(trained, std, fs, out_dir / MODELS_DIR,
                                    {**info, "trained_on": "train" if key == "all" and "chosen" not in keep
                                     else "train+valid"})
                    saved.append(fs.name)
            write_json(out_dir / MODELS_DIR / INDEX_FILE,
                       {DEFAULT_KEY: default, "chosen": keep["chosen"][1].name if "chosen" in keep else None,
                        "all_scales": all_name, "saved": saved, "classifier": report["predictor_default"]["classifier"], "rule": report["predictor_default"]["rule"],
                        "selected_on": _selected_on(report["choice"])})
        report["saved_classifiers"] = saved
        layers = per_label_layers(report, kept, PER_LABEL[task], label_groups(ff.dataset, names))
        if layers is not None:
            report["per_label_layers"] = layers
        report["plots"] = _plots(out_dir, report, ff, feats, rows, config, kept)
        report["seconds"] = round(time.monotonic() - began, 1)
    write_json(out_dir / "metrics.json", report)
    write_text(out_dir / "results.csv", results_csv(report))
    markdown = results_markdown(report)
    write_text(out_dir / "results.md", markdown)
    if "per_label_layers" in report:
        write_text(out_dir / "per_label_layers.csv", per_label_layers_csv(report["per_label_layers"]))
    logger.info("wrote %s", out_dir / "results.md")
    chosen = report.get("chosen")
    folder.finish({"num_feature_sets": len(sets), "seconds": report["seconds"],
                   "chosen": {k: chosen[k] for k in ("feature_set", "classifier", "params")} if chosen else None})
    return out_dir
