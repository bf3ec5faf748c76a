"""The benchmark commands of the ``msagg`` command line: ``msagg bench`` and ``msagg bench-pipeline``."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import click

from msagg.models.blocks import describe_blocks
from msagg.models.specs import PAPER_SCALES, PRECISIONS
from msagg.pipeline.clitools import FolderPath, friendly_errors


@click.command()
@click.option("--scales", default=",".join(PAPER_SCALES),
              show_default=True, help="Comma-separated scales to measure.")
@click.option("--block", "blocks", default="basic", show_default=True,
              help=f"Comma-separated block types to measure at every scale: {describe_blocks()}.")
@click.option("--multi/--no-multi", default=False, show_default=True,
              help="Kim et al.'s multi-level head (global max pooling of the last three blocks, concatenated) "
                   "instead of each block type's own head.")
@click.option("--width", type=float, default=1.0, show_default=True, help="Width multiplier (1.0 = the paper).")
@click.option("--batch-size", type=int, default=23, show_default=True, help="Training batch (the paper's 23).")
@click.option("--precision", "precisions", default="float32", show_default=True,
              help="Comma-separated precisions to measure side by side: float32, bf16 (bfloat16 layers with float32 "
                   "weights, Keras' mixed_bfloat16), e.g. --precision float32,bf16.")
@click.option("--quick", is_flag=True, help="Very few steps: a smoke test, not a measurement.")
@click.option("--out", "out_file", type=FolderPath("file"), default="runs/bench/bench.json",
              show_default=True, help="Where to write the JSON results.")
@friendly_errors
def bench(scales, blocks, multi, width, batch_size, precisions, quick, out_file):
    """Measure training and inference throughput of the SampleCNN family.

    Prints, per scale, block type and precision: training and inference segments/s, real-time
    factor at 22050 Hz, achieved GFLOP/s (from counted multiply-adds) and peak resident memory;
    writes the same as JSON.

    \b
    Examples:
      msagg bench
      msagg bench --scales 3^9 --width 0.25
      msagg bench --scales 3^9 --block basic,se,res,rese --multi
      msagg bench --scales 3^9 --precision float32,bf16
      KERAS_BACKEND=jax msagg bench   # on a GPU machine with JAX
    """
    from msagg.data.atomic import write_json
    from msagg.stages.bench import models as stage

    request = {"scales": _comma_list(scales), "blocks": _comma_list(blocks), "precisions": _comma_list(precisions),
               "multi": multi, "width": width, "batch_size": batch_size, "quick": quick}
    _check_bench_request(stage.plan, out_file, **request)
    started = time.time()
    rows = stage.run_benchmark(**request)
    click.echo(stage.format_table(rows))
    write_json(out_file, {"rows": rows, "seconds": round(time.time() - started, 1)})
    click.echo(f"written: {out_file}")


@click.command("bench-pipeline")
@click.option("--tracks", "num_tracks", type=click.IntRange(min=1), default=16, show_default=True,
              help="N: generated tracks of the smaller corpus; the larger holds 4N. 21000 is MTAT-sized (mind the "
                   "disk: about 1.3 MB per 29 s track, 4N of them at once).")
@click.option("--track-sec", type=click.FloatRange(min=0, min_open=True), default=29.0, show_default=True,
              help="Seconds per generated track (29: MTAT's clips).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Decoding processes of prepare (default: the number of cores).")
@click.option("--scales", default=",".join(PAPER_SCALES),
              show_default=True, help="Comma-separated scales of the models the extract step runs.")
@click.option("--width", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Width multiplier of those models (1.0 = the paper).")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="float32", show_default=True,
              help="What extract's models compute in: float32 or bf16 (bfloat16 layers, float32 weights).")
@click.option("--batch-size", "extract_batch_size", type=click.IntRange(min=1), default=64, show_default=True,
              help="extract's segments per forward pass (at most: long-input models take fewer, to bound memory).")
@click.option("--work", "work_dir", type=FolderPath(),
              help="Folder for the generated corpora, models and features: new, empty, or one this benchmark filled "
                   "before (emptied first). Default: a temporary folder.")
@click.option("--keep", is_flag=True, help="Keep the generated data (otherwise removed as soon as measured).")
@click.option("--out", "out_file", type=FolderPath("file"), default="runs/bench/pipeline.json",
              show_default=True, help="Where to write the JSON results.")
@friendly_errors
def bench_pipeline(num_tracks, track_sec, workers, scales, width, precision, extract_batch_size, work_dir, keep,
                   out_file):
    """Measure the input pipeline at two corpus sizes: speed, memory and disk.

    Generates N synth-tags tracks, then 4N, and on each runs, every step in its own process:
    prepare (files/s, real-time factor, cache size, and the run folder's peak size on disk while it
    runs, sampled, against its final size), the pretrain input pipeline (random crops from the
    cache, no model: segments/s at 3^9's and 2^13's input lengths) and extract with untrained
    models of every --scales at --width (real-time factor). Prints the table, each step's peak
    resident memory at 4N over that at N (a step above 1.20 is flagged, as is a disk peak above
    1.05 times the final size), and writes the same as JSON.

    \b
    Examples:
      msagg bench-pipeline                        # 16 and 64 tracks of 29 s, eight full-width scales
      msagg bench-pipeline --tracks 64 --scales 3^9 --width 0.25
      msagg bench-pipeline --tracks 21000 --scales 3^9 --work /data/bench --keep   # MTAT-sized
    """
    from msagg.data.atomic import write_json
    from msagg.stages.bench import pipeline as stage

    settings = stage.Settings(num_tracks=num_tracks, track_sec=track_sec, workers=workers, width=width,
                              scales=tuple(_comma_list(scales)), precision=precision,
                              extract_batch_size=extract_batch_size)
    _check_bench_request(stage.plan, out_file, settings)
    report = stage.run_benchmark(settings, work_dir=work_dir, keep=keep)
    click.echo(stage.format_table(report))
    write_json(out_file, report)
    click.echo(f"written: {out_file}")
    if report["work_dir"]:
        click.echo(f"data kept: {report['work_dir']}")


def _comma_list(text: str) -> list[str]:
    """The non-empty items of a comma-separated option value, stripped."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _check_bench_request(plan, out_file: str, *args, **kwargs) -> None:
    """A benchmark's request checked before its first (slow) step: ``plan(*args, **kwargs)``'s
    ValueError as a usage error, and an ``--out`` whose folder cannot be made as the OSError it is."""
    try:
        plan(*args, **kwargs)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    folder = Path(out_file).parent
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
    folder.mkdir(parents=True, exist_ok=True)
