"""The ``msagg predict`` command: tag or classify audio files and folders with a trained run."""

from __future__ import annotations

import csv
import io
import json
import sys

import click

from msagg.data.atomic import write_text
from msagg.data.collection import audio_files
from msagg.data.names import escape_name
from msagg.pipeline.clitools import FolderPath, friendly_errors

FORMATS = ("text", "csv", "json")


@click.command()
@click.argument("audio", nargs=-1, required=True, type=click.Path())
@click.option("--pretrain", "pretrain_dir", type=FolderPath(),
              help="A pretrain run folder (or general, the family msagg ships): predict with its end-to-end models "
              "(mean over scales).")
@click.option("--classify", "classify_dir", type=FolderPath(),
              help="A classify run folder: extract features with its models and apply its default classifier "
              "(models/index.json's \"default\", named in its results.md).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True,
              help="text: the --top labels of each file, one line each; csv: a row per file (or per window with "
              "--over-time) and a column per label; json: one document with every score.")
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.option("--out", "out_file", type=FolderPath("file"), help="Write the predictions to this file instead of "
              "the standard output.")
@click.option("--over-time", is_flag=True, help="Also score consecutive windows as long as the longest model's input, "
              "with their start times (with --pretrain).")
@click.option("--top", "top_k", type=click.IntRange(min=1), default=5, show_default=True,
              help="How many labels to print per file (at least 1; text format).")
@friendly_errors
def predict(audio, pretrain_dir, classify_dir, fmt, as_json, out_file, over_time, top_k):
    """Tag or classify audio files (and folders, recursively) with a trained run or a shipped family.

    With --pretrain, each scale's end-to-end SampleCNN scores the file's segments and the song
    score is their mean (averaged over scales); the models are loaded once for all files, and
    each file is read block by block. With --classify, features are extracted with the models
    that classify run was built on and its default song-level classifier is applied: the set and
    classifier chosen by cross-validation, or with classify --predictor-set all the all-scales set
    (results.md and models/index.json name it). Files that cannot be read, or are shorter than the
    models' longest input segment, are reported and not scored; the others are still predicted
    (exit status 1 if any was not).

    \b
    Examples:
      msagg predict song.wav --pretrain runs/demo/pretrain
      msagg predict a.mp3 b.flac --classify runs/demo/classify/synth-genre --json
      msagg predict ~/Music --pretrain general --format csv --out tags.csv
      msagg predict song.wav --pretrain general --over-time --format json
    """
    from msagg.stages import predict as stage

    if bool(pretrain_dir) == bool(classify_dir):
        raise click.UsageError("give exactly one of --pretrain DIR or --classify DIR")
    fmt = "json" if as_json else fmt
    results = stage.predict_files(audio_files(audio), pretrain=pretrain_dir, classify=classify_dir,
                                  over_time=over_time, progress=True)
    if fmt != "json":
        for r in results:
            if "error" in r:
                click.echo(f"{escape_name(r['path'])}: not scored: {r.get('reason', r['error'])}", err=True)
    text = {"json": as_json_text, "csv": as_csv, "text": as_text}[fmt](results, top_k)
    if out_file:
        write_text(out_file, text)
        click.echo(f"predictions: {escape_name(out_file)}", err=True)
    else:
        click.echo(text, nl=False)
    if any("error" in r for r in results):
        sys.exit(1)


def as_json_text(results: list[dict], top_k: int) -> str:
    """Every result as one JSON document (a list, in file order)."""
    return json.dumps(results, indent=2) + "\n"


def as_text(results: list[dict], top_k: int) -> str:
    """``path: label score, ...`` per scored file (its ``top_k`` labels), and with scores over time one
    indented line per window, ``  12.3 s: label score, ...``."""
    lines = []
    for r in results:
        if "error" in r:
            continue
        lines.append(f"{escape_name(r['path'])}: {_top(r['scores'], top_k)}")
        over_time = r.get("over_time")
        for start, row in zip(over_time["times"], over_time["scores"]) if over_time else ():
            lines.append(f"  {start:.2f} s: {_top(dict(zip(r['scores'], row)), top_k)}")
    return "".join(line + "\n" for line in lines)


def _top(scores: dict, top_k: int) -> str:
    top = sorted(scores.items(), key=lambda kv: -kv[1])[:top_k]
    return ", ".join(f"{name} {score:.3f}" for name, score in top)


def as_csv(results: list[dict], top_k: int) -> str:
    """A header, then a row per scored file (``path``, a column per label), or with scores over time
    a row per window (``path, start_sec``, a column per label)."""
    scored = [r for r in results if "error" not in r]
    labels = list(scored[0]["scores"]) if scored else []
    over_time = bool(scored) and "over_time" in scored[0]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", *(["start_sec"] if over_time else []), *labels])
    for r in scored:
        if over_time:
            for start, row in zip(r["over_time"]["times"], r["over_time"]["scores"]):
                writer.writerow([escape_name(r["path"]), start, *row])
        else:
            writer.writerow([escape_name(r["path"]), *(r["scores"][name] for name in labels)])
    return buffer.getvalue()
