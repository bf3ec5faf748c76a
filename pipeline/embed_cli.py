"""The ``msagg embed`` command: song vectors of audio files and folders, a thin layer over ``msagg.stages.embed``."""

from __future__ import annotations

import click

from msagg.data.formats.embeddings import FORMATS
from msagg.data.formats.features import SONG_POOLS
from msagg.data.names import escape_name
from msagg.data.segments import SEGMENTINGS
from msagg.models.specs import PRECISIONS
from msagg.pipeline.clitools import FolderPath, friendly_errors


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--pretrain", default="general", show_default=True,
              help="The models: a finished pretrain run folder, or the family msagg ships (general).")
@click.option("--out", "out_dir", required=True, type=FolderPath("file"),
              help="The file to write (HDF5, or .npz). A stopped run resumes from the songs it finished "
              "(kept in OUT.parts/ until the file is written).")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="h5 (HDF5) or npz (default: npz for an --out ending in .npz, else h5).")
@click.option("--frames", is_flag=True,
              help="Also store every segment's vectors and start times (/frames/<scale>/<tap>, /frame_times/<scale>).")
@click.option("--song-pool", type=click.Choice(SONG_POOLS), default="mean", show_default=True,
              help="How segment vectors become the song vector (as extract's --song-pool).")
@click.option("--segments", type=click.Choice(SEGMENTINGS), default="cover", show_default=True,
              help="cover: every sample read (a last segment ends at the song's end); drop: the remainder is left out.")
@click.option("--scale", "scales", multiple=True, help="A scale of the family to use (e.g. 3^9); repeatable "
              "(default: all).")
@click.option("--precision", type=click.Choice(list(PRECISIONS)), default="float32", show_default=True,
              help="What the models compute in (bf16: faster on recent GPUs and CPUs; vectors stay float32).")
@click.option("--overwrite", is_flag=True, help="Replace an existing --out file.")
@friendly_errors
def embed(paths, pretrain, out_dir, fmt, frames, song_pool, segments, scales, precision, overwrite):
    """Write the multi-level multi-scale vectors of audio files (and folders, recursively).

    Per song, every scale's last three hidden layers (taps -3, -2, -1), max-pooled over time
    within each segment and pooled over the song, under the names features.h5 uses
    (/features/<scale>/<tap>, e.g. /features/3^9/-1), one row per song (/paths). With --frames,
    also one vector per segment with its start time. Files that cannot be read are named on one
    line each, skipped, listed at the end and in the file (/skipped). A stopped run (Ctrl-C, a
    crash, a full disk) resumes where it stopped when the same command is run again.

    \b
    Examples:
      msagg embed ~/Music --out music.h5
      msagg embed a.wav b.flac --pretrain runs/demo/pretrain --frames --out ab.npz
      msagg embed /data/mtat --scale 3^9 --song-pool meanstd --out mtat-3^9.h5
    """
    from msagg.stages import embed as stage

    summary = stage.run(list(paths), out_dir, pretrain=pretrain, frames=frames, song_pool=song_pool,
                        segments=segments, scales=tuple(scales), precision=precision, fmt=fmt, overwrite=overwrite)
    click.echo(f"embeddings: {escape_name(str(summary.out))} ({summary.num_songs} songs)")
    if summary.skipped:
        count = len(summary.skipped)
        click.echo(f"skipped {count} file{'s' if count != 1 else ''} that could not be read:", err=True)
        for path, reason in summary.skipped:
            click.echo(f"  {escape_name(path)}: {reason}", err=True)
