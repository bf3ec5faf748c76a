"""The classify stage's report: results tables in the shape of the paper's Tables 1 and 2 (markdown, CSV)."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Mapping

from msagg.data.formats.features import FeaturesFile
from msagg.stages.songs.classifiers import CLASSIFIERS
from msagg.stages.songs.metrics import METRICS, PRIMARY
from msagg.stages.runs.pretrain_run import PretrainRun, PretrainRunError, pretrain_dir_of
from msagg.stages.training import MIN_VAL_LOSS_IMPROVEMENT

METRIC_TITLES = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "accuracy": "Accuracy", "macro_f1": "Macro F1"}
GROUP_ORDER = ("multi-level", "multi-scale", "learned + classic", "classic")
CLASSIC_TITLES = {"mfcc": "MFCC", "musicnn": "musicnn"}
CLASSIC_TEXT = {
    "mfcc": "MFCC: 20 coefficients with their deltas and second deltas, mean and standard deviation over the song "
            "(librosa).",
    "musicnn": "musicnn: the teacher's layers, musicnn's MTT tagger's two back-end pools of each 3-s patch "
               "(mean and max over time of its 753 mid-end channels) averaged over the song.",
}


def end_to_end_rows(ff: FeaturesFile, features_dir: str | os.PathLike) -> dict[str, Any]:
    """The end-to-end SampleCNNs' test metrics from the pretrain run, when comparable.

    They are comparable only when the models were trained on the features' own dataset (then
    both are scored on its test split).

    Returns:
        ``{"available": bool, "note": str, "scales": {scale: {metric: value, "learned": bool | None}}}``
        (``learned``: pretrain's ``msagg.stages.training.learning_check``, None for runs without it).
    """
    pretrain_dir = pretrain_dir_of(features_dir)
    pretrain_dataset = ff.pretrain_dataset or "an unknown dataset"
    if not ff.pretrain_dataset or ff.pretrain_dataset != ff.dataset:
        return {"available": False, "note": f"n/a (models trained on {pretrain_dataset})", "scales": {}}
    try:
        run = PretrainRun(pretrain_dir) if pretrain_dir else None
    except PretrainRunError:
        run = None
    if run is None:
        return {"available": False, "note": "n/a (pretrain run not found)", "scales": {}}
    rows = {}
    for scale in ff.scales:
        try:
            info = run.metrics(scale)
        except PretrainRunError:
            continue
        test = info.get("test") if isinstance(info.get("test"), dict) else info
        rows[scale] = {**{m: test.get(m) for m in METRICS[ff.task]}, "learned": info.get("learned")}
    if not rows:
        return {"available": False, "note": f"n/a (no metrics.json in {pretrain_dir})", "scales": {}}
    return {"available": True, "note": f"from {pretrain_dir} (its own test split)", "scales": rows}


def fmt(summary: Mapping[str, Any] | None, bold: bool = False) -> str:
    """``{"mean", "std", "values"}`` -> "0.912" or "0.912 ± 0.004" (several runs); "n/a" if none."""
    if not summary or summary.get("mean") is None:
        return "n/a"
    text = f"{summary['mean']:.3f}"
    if len([v for v in summary["values"] if v is not None]) > 1:
        text += f" ± {summary['std']:.3f}"
    return f"**{text}**" if bold else text


def _header_lines(report: Mapping[str, Any]) -> list[str]:
    task = report["task"]
    n = report["num_tracks"]
    held_out = "" if report["validation"] == "valid split" else f"; {report['validation']}"
    lines = [f"# {report['dataset']}: song-level {'tagging' if task == 'tags' else 'classification'} "
             "with multi-level and multi-scale SampleCNN features", ""]
    lines.append(f"- Dataset: **{report['dataset']}**, task: {task} ({len(report['label_names'])} "
                 f"{'tags' if task == 'tags' else 'classes'}); test tracks: **{n['test']}** "
                 f"(train {n['train']}, valid {n['valid']}{held_out})")
    lines.append(f"- Features: `{report['features']}` (song pooling: {report['song_pool']}); models pretrained on "
                 f"**{report['pretrain_dataset'] or 'unknown'}**")
    chance = report["chance"]
    if task == "tags":
        pr = "n/a" if chance["pr_auc"] is None else f"{chance['pr_auc']:.3f}"
        lines.append(f"- Chance: ROC-AUC 0.500; PR-AUC {pr} (mean frequency of the scored tags in test)")
        left = report["left_out"]
        lines.append(f"- Tags scored: {len(report['label_names']) - len(left)} of {len(report['label_names'])}"
                     + (f"; left out (no positive or no negative test track): {', '.join(left)}" if left else ""))
    else:
        lines.append(f"- Chance: accuracy {chance['accuracy_uniform']:.3f} (uniform guess over "
                     f"{len(report['label_names'])} classes), {chance['accuracy_majority']:.3f} (majority class)")
        if report["left_out"]:
            lines.append(f"- Classes absent from test (left out of macro F1): {', '.join(report['left_out'])}")
    if report["num_excluded"]:
        lines.append(f"- Tracks left out for non-finite features: {report['num_excluded']}")
    if "musicnn" not in report.get("classic", []):
        lines.append("- No musicnn reference row: the features were extracted without the teacher's layers (extract "
                     "computes them where the musicnn package is installed: `make teacher`, then extract again)")
    if report["repeats"] > 1:
        lines.append(f"- MLP: mean ± std (sample std) over {report['repeats']} seeds; logistic regression is "
                     "deterministic (one run)")
    lines += chosen_lines(report)
    if report.get("predictor_default"):
        lines.append(predictor_line(report))
    lines.append("")
    return lines


PREDICTOR_RULES = {"chosen": "the chosen row", "all": "the all-scales set"}


def chosen_lines(report: Mapping[str, Any]) -> list[str]:
    """results.md's header line on the chosen row, or on why there is none."""
    chosen, info = report.get("chosen"), report.get("choice")
    if not info:
        return []
    metric = PRIMARY[report["task"]]
    if not chosen:
        why = ("no classifier it cross-validates was trained (logreg, svm)" if not info["classifiers"]
               else "too few train and valid songs to cross-validate")
        return [f"- No chosen row: {why}"]
    return [f"- Chosen by {info['folds']}-fold cross-validation of the {info['songs']} train and valid songs: "
            f"**{chosen['feature_set']}** with {_classifier_text(chosen)}; cross-validated "
            f"{METRIC_TITLES[metric]} {chosen[f'cv_{metric}']:.3f}, test {METRIC_TITLES[metric]} "
            f"**{fmt(chosen['test'][metric])}** (section \"Chosen by cross-validation\")"]


def _classifier_text(selected: Mapping[str, Any]) -> str:
    """"RBF SVM (C 10)", "Logistic regression (C 0.1)"."""
    entry = CLASSIFIERS.get(selected["classifier"])
    title = entry.title if entry else selected["classifier"]
    c = (selected.get("params") or {}).get("C")
    return title if c is None else f"{title} (C {c:g})"


def predictor_line(report: Mapping[str, Any]) -> str:
    """results.md's line on the classifier ``msagg predict --classify`` applies (models/index.json's
    ``default``), called by the name index.json gives it."""
    default = report["predictor_default"]
    name, rule = default["feature_set"], default["rule"]
    entry = CLASSIFIERS.get(default.get("classifier"))
    return (f"- `msagg predict --classify` applies the default classifier ({entry.title if entry else 'n/a'}): "
            f"**{name}** ({PREDICTOR_RULES.get(rule, rule)}, `--predictor-set {rule}`; `models/index.json` "
            "\"default\")")


MAX_CHOICE_ROWS = 10


def choice_section(report: Mapping[str, Any]) -> list[str]:
    """"Chosen by cross-validation": what the chosen row is, then each set's selected classifier,
    best cross-validated score first (at most ``MAX_CHOICE_ROWS``; lines, none without a choice)."""
    chosen, info = report.get("chosen"), report.get("choice")
    if not chosen:
        return []
    metric = PRIMARY[report["task"]]
    metrics = METRICS[report["task"]]
    titles = ", ".join(CLASSIFIERS[c].title for c in info["classifiers"])
    lines = ["## Chosen by cross-validation", "",
             f"The chosen row is the feature set, classifier and C with the best mean {METRIC_TITLES[metric]} "
             f"over {info['folds']} folds of the {info['songs']} train and valid songs (test songs take no part; "
             f"cross-validated: {titles}; the MLP is not, it would train k more times per set). Each fold fits "
             "the standardization on its own training songs. The chosen classifier is then refitted with that C "
             "on all train and valid songs and scored on test: that is the classifier `msagg predict` applies. "
             "Below, each set's own best classifier, best cross-validated score first.", "",
             f"| Feature set | Classifier | CV {METRIC_TITLES[metric]} | "
             + " | ".join(f"Test {METRIC_TITLES[m]}" for m in metrics) + " |",
             "|---|---|---:|" + "---:|" * len(metrics)]
    ranked = sorted(((name, r) for name, r in report["feature_sets"].items() if r.get("selected")),
                    key=lambda item: -item[1]["selected"][f"cv_{metric}"])
    for name, r in ranked[:MAX_CHOICE_ROWS]:
        sel = r["selected"]
        label = f"**{_set_label(report, r)}** (chosen)" if name == chosen["feature_set"] else _set_label(report, r)
        cells = [f"{label} `{name}`", _classifier_text(sel), f"{sel[f'cv_{metric}']:.3f}"]
        lines.append("| " + " | ".join(cells + [fmt(sel["test"][m]) for m in metrics]) + " |")
    lines.append("")
    return lines


def _set_label(report: Mapping[str, Any], r: Mapping[str, Any]) -> str:
    """The Feature set cell: "3^9", "all 3 scales (3^8 + 3^9 + 4^6)", "MFCC", "all 3 scales + MFCC"."""
    label = " + ".join(r["scales"])
    if len(r["scales"]) == report["num_scales"] and report["num_scales"] > 1:
        label = f"all {report['num_scales']} scales" + ("" if r.get("classic") else f" ({label})")
    classic = " + ".join(CLASSIC_TITLES.get(c, c) for c in r.get("classic", []))
    return " + ".join(p for p in (label, classic) if p)


def baseline_summary(report: Mapping[str, Any]) -> list[str]:
    """"Learned features vs the classic baseline": the all-scales set, each classic set, and both
    joined, for every classifier, with the classifier cross-validation selected for the set (lines;
    none when the features hold no classic set)."""
    sets = report["feature_sets"]
    rows = [(name, r) for name, r in sets.items()
            if r["group"] in ("learned + classic", "classic")
            or (r["group"] in ("multi-scale", "multi-level") and len(r["scales"]) == report["num_scales"]
                and r["layers_label"].startswith("last 3"))]
    if not report.get("classic") or not rows:
        return []
    metric = PRIMARY[report["task"]]
    title = METRIC_TITLES[metric]
    clfs = list(report["classifiers"])
    names = [CLASSIC_TITLES.get(c, c) for c in report["classic"]]
    heading = ("the MFCC baseline" if names == ["MFCC"]
               else f"the reference sets ({', '.join(names)})")
    lines = [f"## Learned features vs {heading}", "",
             f"Test {title}. " + " ".join(CLASSIC_TEXT.get(c, c) for c in report["classic"])
             + " A joined set weighs each of its blocks (the learned layers, each reference set) by one over the "
             "square root of its dimension after standardizing, so that "
             "every block holds the same variance and none swamps another, and then by a weight chosen by "
             "cross-validation of the train and valid songs (alike, one block alone, or one at half weight), so "
             "that a join never scores below its best part there. Last column: the classifier "
             "cross-validation selected for that set, refitted on the train and valid songs (test scores take "
             "no part in the choice).", "",
             "| Feature set | Dim | " + " | ".join(CLASSIFIERS[c].title for c in clfs) + " | Selected by CV |",
             "|---|---:|" + "---:|" * (len(clfs) + 1)]
    for name, r in rows:
        cells = [_set_label(report, r), str(r["dim"])]
        cells += [fmt(r["classifiers"][c]["test"][metric]) if c in r["classifiers"] else "n/a" for c in clfs]
        selected = r.get("selected")
        cells.append(f"{fmt(selected['test'][metric])} ({CLASSIFIERS[selected['classifier']].title})" if selected
                     else "n/a")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _group_title(group: str, members: list[Mapping[str, Any]]) -> str:
    if group == "multi-level":
        return "Multi-level: one model's layers (cf. the paper's Table 1)"
    teacher = any("musicnn" in r.get("classic", []) for r in members)
    if group == "learned + classic":
        return ("Learned + reference: SampleCNN layers joined to hand-crafted features or the teacher's layers"
                if teacher else "Learned + classic: SampleCNN layers joined to hand-crafted features")
    if group == "classic":
        return ("Reference sets: hand-crafted features and the teacher's layers" if teacher
                else "Classic baseline: hand-crafted features")
    if all(r["layers_label"] == "last 3 each" for r in members):
        return "Multi-scale: last 3 layers of several models (cf. Table 2)"
    return "Multi-scale: layers of several models (cf. Table 2)"


def results_markdown(report: Mapping[str, Any]) -> str:
    """The results tables in the shape of the paper's Tables 1 and 2, one table per classifier,
    then the per-label scores of the single layers (``per_label_layers``) when the report has them.

    Args:
        report: The classify stage's metrics.json content.
    """
    metrics = METRICS[report["task"]]
    lines = _header_lines(report) + choice_section(report) + baseline_summary(report)
    e2e = report["end_to_end"]
    for clf in report["classifiers"]:
        lines += CLASSIFIERS[clf].introduce(report)
        header = ["Feature set", "Layers", "Dim"] + [METRIC_TITLES[m] for m in metrics]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|---|---:|" + "---:|" * len(metrics))
        results = {name: fs_rep for name, fs_rep in report["feature_sets"].items() if clf in fs_rep["classifiers"]}
        best_value = {m: max((r["classifiers"][clf]["test"][m]["mean"] for r in results.values()
                              if r["classifiers"][clf]["test"][m]["mean"] is not None), default=None)
                      for m in metrics}
        blank = " |" * (len(header) - 1)
        for group in GROUP_ORDER:
            members = [r for r in results.values() if r["group"] == group]
            if not members:
                continue
            lines.append(f"| **{_group_title(group, members)}** |" + blank)
            for r in members:
                cells = [_set_label(report, r), r["layers_label"], str(r["dim"])]
                for m in metrics:
                    s = r["classifiers"][clf]["test"][m]
                    cells.append(fmt(s, bold=s["mean"] is not None and s["mean"] == best_value[m]))
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("| **End-to-end SampleCNN (song = mean of its segments' outputs)** |" + blank)
        if e2e["available"]:
            for scale, vals in e2e["scales"].items():
                name = scale + (" (did not learn)" if vals.get("learned") is False else "")
                cells = [name, "output", "—"] + ["n/a" if vals.get(m) is None else f"{vals[m]:.3f}" for m in metrics]
                lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append(f"| {e2e['note']} | | |" + " n/a |" * len(metrics))
        lines.append("")
    lines.append("Bold: best feature set per column. End-to-end rows "
                 f"{e2e['note'] if e2e['available'] else 'not comparable'}.")
    unlearned = [s for s, vals in e2e["scales"].items() if vals.get("learned") is False]
    if unlearned:
        lines.append(f"Did not learn in pretraining: {', '.join(unlearned)} (best validation loss less than "
                     f"{100 * MIN_VAL_LOSS_IMPROVEMENT:.0f}% below the first epoch's): their scores, and the "
                     "features of their layers, are those of a model that learned nothing.")
    if report.get("per_label_layers"):
        lines += ["", *per_label_layers_markdown(report["per_label_layers"])[:-1]]
    return "\n".join(lines) + "\n"


def results_csv(report: Mapping[str, Any]) -> str:
    """One row per feature set and classifier (mean and std of each metric), the chosen row (group
    "chosen"), then one per end-to-end model."""
    metrics = METRICS[report["task"]]
    fields = ["feature_set", "group", "scales", "layers", "classic", "classifier", "dim", "num_runs"]
    fields += [f"{m}_{k}" for m in metrics for k in ("mean", "std")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for name, r in report["feature_sets"].items():
        for clf, res in r["classifiers"].items():
            row = {"feature_set": name, "group": r["group"], "scales": "+".join(r["scales"]),
                   "layers": ",".join(r["layers"]), "classic": "+".join(r.get("classic", [])), "classifier": clf, "dim": r["dim"], "num_runs": res["num_runs"]}
            for m in metrics:
                row[f"{m}_mean"] = res["test"][m]["mean"]
                row[f"{m}_std"] = res["test"][m]["std"]
            writer.writerow(row)
    chosen = report.get("chosen")
    if chosen:
        r = report["feature_sets"][chosen["feature_set"]]
        row = {"feature_set": chosen["feature_set"], "group": "chosen", "scales": "+".join(r["scales"]),
               "layers": ",".join(r["layers"]), "classic": "+".join(r.get("classic", [])),
               "classifier": chosen["classifier"], "dim": r["dim"], "num_runs": 1}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = chosen["test"][m]["mean"], ""
        writer.writerow(row)
    for scale, vals in report["end_to_end"]["scales"].items():
        row = {"feature_set": f"{scale}@end-to-end", "group": "end-to-end", "scales": scale, "layers": "output",
               "classifier": "sample_cnn", "dim": "", "num_runs": 1}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = vals.get(m), ""
        writer.writerow(row)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# Which layer suits which label: per-label scores of the single-layer sets (the paper's Figure 2)

NO_GROUP = "all"
"""The one group of labels of a dataset that does not group them (``msagg.data.adapters.label_groups``)."""


def per_label_layers(report: Mapping[str, Any], classifier: str, metric: str,
                     groups: Mapping[str, str] | None) -> dict[str, Any] | None:
    """The per-label test score of every single-layer set (``<scale>@<tap>``) for one classifier.

    Args:
        report: The classify stage's metrics.json content (its ``feature_sets``).
        classifier: The classifier whose scores are taken (classify's kept one).
        metric: The per-label metric ("roc_auc" for tags, "f1" for classes).
        groups: label -> group, ordered by group (None: every label in one group, ``NO_GROUP``).

    Returns:
        ``{"metric", "classifier", "columns": [set name], "column_scales", "column_taps",
        "rows": {label: {"group", "scores": {set: score | None}, "best": [set]}},
        "group_summary": {group: {"labels", "mean": {set: mean | None}, "tap_wins": {tap: n},
        "best_tap": [tap]}}}`` (a row's best: the sets at its maximum; a tap wins a row when one
        of its sets is at the maximum); None when no single-layer set was trained with
        ``classifier``.
    """
    columns = [name for name, r in report["feature_sets"].items()
               if len(r["scales"]) == 1 and len(r["layers"]) == 1 and classifier in r["classifiers"]]
    if not columns:
        return None
    sets = report["feature_sets"]
    taps = {name: sets[name]["layers"][0] for name in columns}
    labels = list(groups) if groups else list(report["label_names"])
    rows = {}
    for label in labels:
        scores = {name: sets[name]["classifiers"][classifier]["per_label"].get(metric, {}).get(label)
                  for name in columns}
        values = [v for v in scores.values() if v is not None]
        top = max(values, default=None)
        rows[label] = {"group": groups[label] if groups else NO_GROUP, "scores": scores,
                       "best": [n for n, v in scores.items() if top is not None and v == top]}
    summary: dict[str, Any] = {}
    for group in dict.fromkeys(r["group"] for r in rows.values()):
        members = [label for label, r in rows.items() if r["group"] == group]
        means = {}
        for name in columns:
            values = [rows[label]["scores"][name] for label in members if rows[label]["scores"][name] is not None]
            means[name] = sum(values) / len(values) if values else None
        wins = {tap: 0 for tap in dict.fromkeys(taps.values())}
        for label in members:
            for tap in dict.fromkeys(taps[n] for n in rows[label]["best"]):
                wins[tap] += 1
        most = max(wins.values(), default=0)
        summary[group] = {"labels": members, "mean": means, "tap_wins": wins,
                          "best_tap": [t for t, n in wins.items() if n == most and most > 0]}
    return {"metric": metric, "classifier": classifier, "columns": columns,
            "column_scales": [sets[n]["scales"][0] for n in columns], "column_taps": [taps[n] for n in columns],
            "rows": rows, "group_summary": summary}


def _score_text(value: float | None, bold: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"**{value:.3f}**" if bold else f"{value:.3f}"


def per_label_layers_markdown(section: Mapping[str, Any]) -> list[str]:
    """The "which layer suits which label" section of results.md (lines)."""
    columns = section["columns"]
    titles = [f"{s} {t}" for s, t in zip(section["column_scales"], section["column_taps"])]
    metric = {"f1": "F1", **METRIC_TITLES}.get(section["metric"], section["metric"])
    entry = CLASSIFIERS.get(section["classifier"])
    clf = entry.title if entry else section["classifier"]
    lines = ["## Which layer suits which label (cf. the paper's Figure 2)", "",
             f"Per-label test {metric} of each single layer of each model ({clf}). Bold: the best layer of "
             "each label. Per group: the mean over its labels, and how many labels each tap wins (ties count "
             "for every tap at the maximum).", ""]
    lines.append("| Label | " + " | ".join(titles) + " |")
    lines.append("|---|" + "---:|" * len(columns))
    blank = " |" * len(columns)
    grouped = len(section["group_summary"]) > 1 or NO_GROUP not in section["group_summary"]
    for group, summ in section["group_summary"].items():
        if grouped:
            lines.append(f"| **{group}** |" + blank)
        for label in summ["labels"]:
            row = section["rows"][label]
            cells = [_score_text(row["scores"][n], n in row["best"]) for n in columns]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        name = f"{group} mean" if grouped else "mean"
        lines.append(f"| *{name}* | " + " | ".join(_score_text(summ["mean"][n]) for n in columns) + " |")
    lines.append("")
    for group, summ in section["group_summary"].items():
        wins = ", ".join(f"{tap}: {n}" for tap, n in summ["tap_wins"].items())
        best = " and ".join(summ["best_tap"]) or "none"
        lines.append(f"- {group if grouped else 'All labels'} ({len(summ['labels'])}): tap winning most often "
                     f"**{best}** ({wins})")
    lines.append("")
    return lines


def per_label_layers_csv(section: Mapping[str, Any]) -> str:
    """per_label_layers.csv: one row per label and single-layer set (label, level, scale, tap, score)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["label", "level", "scale", "tap", "score"])
    for label, row in section["rows"].items():
        for name, scale, tap in zip(section["columns"], section["column_scales"], section["column_taps"]):
            value = row["scores"][name]
            writer.writerow([label, row["group"], scale, tap, "" if value is None else repr(float(value))])
    return buf.getvalue()
