"""Multi-run protocols over the stages: k-fold cross-validation (e.g. ESC-10's five folds)."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from msagg.data.atomic import write_json, write_text
from msagg.data.errors import ConfigError, MsaggError
from msagg.pipeline.config import resolve
from msagg.stages.songs.metrics import mean_std
from msagg.stages.runs.folder import config_hash, read_json_config

logger = logging.getLogger(__name__)

AUDIO_DIR = "audio"
"""``<out>/audio``: crossval's prepare run that decodes the dataset once; every fold's prepare links to it."""

VARIANTS_DIR = "variants"
"""``<out>/fold<i>/variants/<name>``: the pretrain, extract and classify runs of a compared variant."""

VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}")

# Published figures quoted in reports (../shared/README.md), as fractions.
REFERENCES: dict[str, list[tuple[str, float]]] = {
    "esc10": [
        ("Random forest on MFCC (Piczak 2015)", 0.727),
        ("Piczak's CNN (Piczak 2015)", 0.805),
        ("Human listeners (Piczak 2015)", 0.957),
    ],
}


def fold_prepare_config(prep_dir: Path, prepare_options: Mapping[str, Any], audio_from: str | Path | None):
    """The prepare config of one fold: its options, linked to the audio store ``audio_from``.

    A fold whose prepare folder already holds the same options without ``audio_from`` (made by
    an msagg from before crossval decoded once, finished or interrupted) keeps that config, so a
    finished fold stays finished and an interrupted one resumes.

    Returns:
        ``msagg.stages.prepare.Config``.
    """
    from msagg.stages import prepare

    config = resolve(prepare.Config, options=dict(prepare_options))
    if audio_from is None or config.audio_from is not None:
        return config
    try:
        stored = config_hash(read_json_config(prep_dir / "config.json"))
    except (FileNotFoundError, MsaggError):
        stored = None
    if stored is not None and stored == config_hash(prepare.pin_inputs(config)):
        logger.info("%s: prepared without audio_from (an older msagg); kept", prep_dir)
        return config
    return dataclasses.replace(config, audio_from=str(audio_from))


def store_options(per_fold: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The prepare options of the audio store: the first fold's, without ``top_k``.

    The store's split is never used. ``top_k`` is dropped because for single-label datasets it
    skips the tracks of classes outside the top k of the fold's train split, which another
    fold may keep.
    """
    options = dict(per_fold[0])
    options.pop("top_k", None)
    return options


def run_fold(fold_dir: Path, *, prepare_options: Mapping[str, Any], preset: str, pretrain_sets: Sequence[str] = (),
             classify_options: Mapping[str, Any] | None = None, workers: int | None = None,
             pretrained: str | Path | None = None, extract_options: Mapping[str, Any] | None = None,
             audio_from: str | Path | None = None,
             variants: Sequence[tuple[str, Sequence[str]]] = ()) -> dict:
    """Runs prepare, pretrain, extract and classify for one fold; returns classify's metrics.json.

    With ``variants`` ((name, extra pretrain sets) pairs), each variant then pretrains, extracts
    and classifies again from the same prepared fold, in ``<fold>/variants/<name>/``, with its
    sets after ``pretrain_sets``; its metrics are under ``"variants"`` of the returned dict.

    With ``pretrained`` (a finished pretrain run), no model is trained: the fold's audio goes
    through those models (transfer), and only the song-level classifiers learn from the fold.
    With ``audio_from`` (a finished prepare run of the dataset), the fold's prepare decodes
    nothing and links to that run's audio (``fold_prepare_config``).
    """
    from msagg.stages import prepare

    prep_dir = fold_dir / "prepare"
    prepare.run(fold_prepare_config(prep_dir, prepare_options, audio_from), prep_dir, workers=workers)
    metrics = _learn(fold_dir, prep_dir, preset=preset, pretrain_sets=pretrain_sets, pretrained=pretrained,
                     extract_options=extract_options, classify_options=classify_options)
    if variants:
        metrics["variants"] = {
            name: _learn(fold_dir / VARIANTS_DIR / name, prep_dir, preset=preset,
                         pretrain_sets=[*pretrain_sets, *sets], pretrained=None, extract_options=extract_options,
                         classify_options=classify_options)
            for name, sets in variants}
    return metrics


def _learn(run_dir: Path, prep_dir: Path, *, preset: str, pretrain_sets: Sequence[str],
           pretrained: str | Path | None, extract_options: Mapping[str, Any] | None,
           classify_options: Mapping[str, Any] | None) -> dict:
    """pretrain (unless ``pretrained``), extract and classify in ``run_dir``; classify's metrics.json."""
    from msagg.stages import classify, extract, pretrain

    pre_dir, ext_dir, cls_dir = (run_dir / s for s in ("pretrain", "extract", "classify"))
    if pretrained is None:
        pretrain.run(pretrain_config(preset, prep_dir, pretrain_sets), pre_dir)
    else:
        pre_dir = Path(pretrained)
    extract.run(resolve(extract.Config, options={"pretrain": str(pre_dir), "cache": str(prep_dir),
                                                 **(extract_options or {})}), ext_dir)
    classify.run(resolve(classify.Config, options={"features": str(ext_dir), **(classify_options or {})}), cls_dir)
    return json.loads((cls_dir / "metrics.json").read_text())


def pretrain_config(preset: str, prep_dir: str | Path, sets: Sequence[str]):
    """pretrain's Config for a fold: the preset, the fold's cache, the ``key=value`` sets (checked)."""
    from msagg.stages import pretrain

    return resolve(pretrain.Config, presets=pretrain.PRESETS, preset=preset, options={"cache": str(prep_dir)},
                   sets=sets)


def parse_variants(specs: Sequence[str], pretrain_sets: Sequence[str] = (), preset: str = "demo"
                   ) -> list[tuple[str, list[str]]]:
    """``NAME: KEY=VALUE KEY=VALUE ...`` specs (crossval --compare) as (name, sets) pairs, each checked.

    Every variant's sets are resolved with pretrain's Config (after ``pretrain_sets``), so a bad
    key or value is an error before any fold runs.

    Raises:
        pipeline.config.ConfigError: naming the spec and what is wrong with it.
    """
    parsed: list[tuple[str, list[str]]] = []
    for spec in specs:
        name, sep, rest = spec.partition(":")
        name, sets = name.strip(), rest.split()
        if not sep or not VARIANT_NAME.fullmatch(name):
            raise ConfigError(f"--compare {spec!r}: expected NAME: KEY=VALUE [KEY=VALUE ...] with NAME of letters, "
                              "digits, '_', '.', '+', '-' (at most 40)")
        if not sets or not all("=" in item for item in sets):
            raise ConfigError(f"--compare {spec!r}: give at least one KEY=VALUE after '{name}:'")
        if name in {n for n, _ in parsed} or name == "base":
            raise ConfigError(f"--compare {spec!r}: the name {name!r} is taken")
        try:
            pretrain_config(preset, "unused", [*pretrain_sets, *sets])
        except ConfigError as err:
            raise ConfigError(f"--compare {spec!r}: {err}") from None
        parsed.append((name, sets))
    return parsed


def summarize(fold_metrics: Mapping[int, Mapping[str, Any]]) -> dict:
    """Means and standard deviations over folds of every feature set x classifier and end-to-end model."""
    first = next(iter(fold_metrics.values()))
    task = first["task"]
    metric = "accuracy" if task == "classes" else "roc_auc"
    rows: dict[str, dict[str, Any]] = {}
    for fs_name, entry in first["feature_sets"].items():
        for clf in entry["classifiers"]:
            values = [m["feature_sets"][fs_name]["classifiers"][clf]["test"][metric]["mean"] for m in fold_metrics.values()]
            rows[f"{fs_name} ({clf})"] = {"feature_set": fs_name, "classifier": clf, "group": entry["group"],
                                          **mean_std([v for v in values if v is not None])}
        if entry.get("selected"):  # per fold, the classifier cross-validation selected for the set
            picked = [m["feature_sets"][fs_name].get("selected") for m in fold_metrics.values()]
            values = [p["test"][metric]["mean"] for p in picked if p]
            chosen = sorted({p["classifier"] for p in picked if p})
            rows[f"{fs_name} (selected by CV)"] = {
                "feature_set": fs_name, "classifier": f"selected by CV ({', '.join(chosen)})", "group": entry["group"],
                **mean_std([v for v in values if v is not None])}
    picks = [m.get("chosen") for m in fold_metrics.values()]
    if any(picks):  # per fold, the set and classifier cross-validation chose among all
        names = sorted({f"{p['feature_set']} {p['classifier']}" for p in picks if p})
        rows["chosen"] = {"feature_set": "chosen by CV", "classifier": ", ".join(names), "group": "chosen",
                          **mean_std([p["test"][metric]["mean"] for p in picks if p])}
    for scale in first["end_to_end"].get("scales", {}):
        values = [m["end_to_end"]["scales"].get(scale, {}).get(metric) for m in fold_metrics.values()]
        rows[f"{scale} end-to-end"] = {"feature_set": scale, "classifier": "end-to-end SampleCNN",
                                       "group": "end-to-end", **mean_std([v for v in values if v is not None])}
    return {"task": task, "metric": metric, "folds": sorted(fold_metrics), "rows": rows}


def summary_markdown(summary: Mapping[str, Any], dataset: str, preset: str, references: Sequence[tuple[str, float]]) -> str:
    """The cross-validation table, published references last."""
    metric = summary["metric"]
    title = "Accuracy" if metric == "accuracy" else "ROC-AUC"
    folds = ", ".join(str(f) for f in summary["folds"])
    if summary.get("pretrained"):
        head = f"models transferred from `{summary['pretrained']}`"
        how = (f"Each fold: prepare with that fold as test split, extract with the models of {summary['pretrained']} "
               "(trained on other data; no pretraining here), classify.")
    else:
        sets = f" (with {', '.join(summary['pretrain_sets'])})" if summary.get("pretrain_sets") else ""
        head = f"pretrain preset `{preset}`{sets}"
        how = "Each fold: prepare with that fold as test split, pretrain SampleCNNs on the training folds, extract, classify."
    extra = ", ".join(f"{k} {v}" for k, v in (summary.get("extract_options") or {}).items())
    lines = [
        f"# {dataset}: {len(summary['folds'])}-fold cross-validation (folds {folds}), {head}",
        "",
        f"{how}{f' Extract: {extra}.' if extra else ''} {title}: mean ± std over folds (one classifier seed per "
        "fold). Classifiers marked \"selected by CV\": per fold, the one (and its C) with the best score in a "
        "cross-validation of that fold's train and valid songs, refitted on them. \"chosen by CV\": per fold, the "
        "feature set and classifier that cross-validation chose among all (the row `msagg predict` applies).",
        "",
        f"| Feature set | Classifier | {title} | per fold |",
        "|---|---|---:|---|",
    ]
    ordered = sorted(summary["rows"].values(), key=lambda r: -(r["mean"] if r["mean"] is not None else -1))
    for row in ordered:
        mean = "n/a" if row["mean"] is None else f"{row['mean']:.3f} ± {row['std']:.3f}"
        per_fold = " ".join(f"{v:.3f}" for v in row["values"])
        lines.append(f"| {row['feature_set']} | {row['classifier']} | {mean} | {per_fold} |")
    if summary.get("variants"):
        lines += ["", *comparison_markdown(summary)]
    if references:
        lines += ["", "Published references (from ../shared/README.md; they train on all four other folds, "
                  "msagg on three, the fourth being the validation split for early stopping):", "",
                  f"| Method | {title} |", "|---|---:|"]
        lines += [f"| {name} | {value:.3f} |" for name, value in references]
    return "\n".join(lines) + "\n"


def comparison_markdown(summary: Mapping[str, Any]) -> list[str]:
    """The lines of crossval.md's side-by-side table of the base and its ``--compare`` variants.

    Rows are the base table's rows whose features the pretrained models make (the reference sets
    alone, MFCC and musicnn, are the same in every variant and left out), in the base table's order.
    """
    metric = summary["metric"]
    title = "accuracy" if metric == "accuracy" else "ROC-AUC"
    variants = summary["variants"]
    base_sets = " ".join(summary.get("pretrain_sets") or []) or "the preset as it is"
    lines = [f"## Variants compared ({title}, mean ± std over the same folds)", "",
             f"Every variant pretrains, extracts and classifies again from the same prepared folds. base: {base_sets}; "
             + "; ".join(f"{name}: {' '.join(v['sets'])}" for name, v in variants.items()) + ". The reference "
             "rows alone (MFCC, musicnn) do not depend on pretraining and are the same in every variant (above).", "",
             "| Feature set | Classifier | base | " + " | ".join(variants) + " |",
             "|---|---|---:|" + "---:|" * len(variants)]

    def cell(row):
        return "n/a" if not row or row["mean"] is None else f"{row['mean']:.3f} ± {row['std']:.3f}"

    ordered = sorted(((key, row) for key, row in summary["rows"].items() if row["group"] != "classic"),
                     key=lambda kv: -(kv[1]["mean"] if kv[1]["mean"] is not None else -1))
    for key, row in ordered:
        cells = [cell(row)] + [cell(v["rows"].get(key)) for v in variants.values()]
        lines.append(f"| {row['feature_set']} | {row['classifier']} | " + " | ".join(cells) + " |")
    return lines


def fold_options(prepare_options: Mapping[str, Any], num_folds: int) -> list[dict[str, Any]]:
    """The prepare options of every fold, each checked by prepare's Config before any fold runs.

    Fold i is the test split of fold i: the dataset's official folds in its file names
    (``fold_from_name``, or the adapter's own pattern, e.g. esc10's), else stratified k-fold.

    Raises:
        data.adapters.DatasetError: For an unknown dataset.
        pipeline.config.ConfigError: For options that no fold can use, naming the bad value.
    """
    from msagg.data import adapters
    from msagg.stages import prepare

    adapter = adapters.get_adapter(prepare_options.get("dataset", prepare.Config.dataset))
    pattern = prepare_options.get("fold_from_name")
    per_fold = [{**prepare_options, **adapter.crossval_fold(fold, num_folds, pattern)} for fold in range(1, num_folds + 1)]
    for options in per_fold:
        resolve(prepare.Config, options=options)
    return per_fold


def crossval(out_dir: str | Path, *, prepare_options: Mapping[str, Any], num_folds: int, preset: str,
             pretrain_sets: Sequence[str] = (), classify_options: Mapping[str, Any] | None = None,
             workers: int | None = None, references: Sequence[tuple[str, float]] = (),
             pretrained: str | Path | None = None, extract_options: Mapping[str, Any] | None = None,
             compare: Sequence[str] = ()) -> Path:
    """Runs every stage for each fold and writes ``crossval.md`` / ``crossval.json`` in ``out_dir``.

    The dataset is decoded once, into the prepare run ``<out>/audio`` (the first fold's options
    without ``top_k``; used only as the audio store); each fold's prepare lists the tracks with
    its own split and links to that audio (``audio_from``) instead of decoding it again. Every
    fold is its own set of run folders (``fold<i>/prepare`` ...), so an interrupted protocol
    resumes where it stopped and a finished one is a no-op. Folds an older msagg prepared
    without ``audio_from`` keep their own caches (``fold_prepare_config``); ``<out>/audio`` is
    made only if some fold needs it.

    Args:
        out_dir: Where the folds and the summary go.
        prepare_options: prepare Config keys (dataset, source, fold_from_name, split_seed, ...);
            ``fold`` (and ``folds`` for k-fold) are set per fold by ``fold_options``.
        num_folds: How many folds (numbered from 1), each the test split once.
        preset: The pretrain preset.
        pretrain_sets: Extra ``key=value`` overrides for pretrain.
        classify_options: classify Config keys.
        workers: Decoding processes for prepare.
        references: (name, value) published figures printed under the table.
        pretrained: A finished pretrain run to transfer in every fold instead of pretraining on
            the fold's training tracks (e.g. ``runs/general/pretrain``); ``preset`` and
            ``pretrain_sets`` are then unused.
        extract_options: extract Config keys (e.g. ``song_pool``).
        compare: Variants to compare with the base, as ``NAME: KEY=VALUE ...`` pretrain sets
            (``parse_variants``), e.g. ``"augment: augment=true"``: each fold also pretrains,
            extracts and classifies each variant from the same prepared fold, and crossval.md
            gets a side-by-side table. Not with ``pretrained``.

    Returns:
        The path of ``crossval.md``.

    Raises:
        pipeline.config.ConfigError: For a bad ``compare`` spec, or ``compare`` with ``pretrained``.
    """
    from msagg.stages import prepare

    out_dir = Path(out_dir)
    if compare and pretrained is not None:
        raise ConfigError("--compare needs pretraining in every fold; it cannot be used with --pretrained")
    variants = parse_variants(compare, pretrain_sets, preset)
    folds = fold_options(prepare_options, num_folds)
    audio_dir = out_dir / AUDIO_DIR
    linked = [fold_prepare_config(out_dir / f"fold{fold}" / "prepare", options, audio_dir).audio_from is not None
              for fold, options in enumerate(folds, start=1)]
    if any(linked):
        logger.info("decoding the dataset once into %s", audio_dir)
        prepare.run(resolve(prepare.Config, options=store_options(folds)), audio_dir, workers=workers)
    metrics = {}
    for fold, options in enumerate(folds, start=1):
        logger.info("fold %d of %d", fold, num_folds)
        metrics[fold] = run_fold(out_dir / f"fold{fold}", prepare_options=options, preset=preset,
                                 pretrain_sets=pretrain_sets, classify_options=classify_options, workers=workers,
                                 pretrained=pretrained, extract_options=extract_options, audio_from=audio_dir,
                                 variants=variants)
    summary = summarize(metrics)
    dataset = next(iter(metrics.values()))["dataset"]
    summary.update({"dataset": dataset, "preset": preset, "references": [list(r) for r in references],
                    "pretrained": None if pretrained is None else str(pretrained),
                    "pretrain_sets": list(pretrain_sets), "extract_options": dict(extract_options or {})})
    if variants:
        summary["variants"] = {name: {"sets": sets, **summarize({f: m["variants"][name] for f, m in metrics.items()})}
                               for name, sets in variants}
    write_json(out_dir / "crossval.json", summary)
    path = out_dir / "crossval.md"
    write_text(path, summary_markdown(summary, dataset, preset, references))
    return path
