"""The ``msagg teach`` command: a real-music tagger labels a prepared cache for pretraining."""

from __future__ import annotations

from pathlib import Path

import click

from msagg.pipeline.clitools import EPILOG_CONFIG, FolderPath, config_options, friendly_errors
from msagg.pipeline.config import resolve
from msagg.stages import teach as teach_stage
from msagg.stages.teacher import INSTALL_COMMAND, TEACHERS


@click.command(epilog=EPILOG_CONFIG)
@click.option("--cache", type=FolderPath(), help="A prepare run folder (holding cache/).")
@click.option("--teacher", "teachers", multiple=True, type=click.Choice(TEACHERS),
              help=f"A musicnn tagger to run; repeatable (default: {' and '.join(TEACHERS)}).")
@config_options(teach_stage.Config)
@friendly_errors
def teach(cache, teachers, out_dir, overwrite, config_file, sets):
    """Label every track of a cache with a real-music tagger's tag probabilities (OUT/labels.h5).

    musicnn's MagnaTagATune and Million Song Dataset taggers (Pons & Serra 2019) answer for every
    3-s patch of every track, once; `msagg pretrain --teacher-labels OUT` then trains SampleCNNs
    on those answers (soft targets), so an unlabelled music collection becomes pretraining data.
    The weights come from the musicnn wheel, which msagg does not install by default:

    \b
      INSTALL_COMMAND   (or: make teacher)

    With --set features=true it also stores the first tagger's own view of every patch (its back
    end's mean and max pools, 1,506 numbers, float16), which pretrain can fit besides the tags
    (--set teacher_features=W).

    About 0.25 s per minute of audio and tagger on 2 CPU cores. A killed run resumes from the
    blocks of tracks it finished.

    \b
    Examples:
      msagg prepare --dataset unlabelled --source ~/Music --out runs/mine/prepare
      msagg teach --cache runs/mine/prepare --out runs/mine/teach
      msagg teach --cache runs/mine/prepare --set features=true --out runs/mine/teach-features
      msagg pretrain --cache runs/mine/prepare --teacher-labels runs/mine/teach --preset general \\
          --out runs/mine/pretrain
    """
    config = resolve(teach_stage.Config, presets={}, preset=None, config_file=config_file,
                     options=dict(cache=cache, teachers=tuple(teachers) or None), sets=sets)
    path = teach_stage.run(config, Path(out_dir), overwrite=overwrite)
    click.echo(f"teacher labels: {path}")


teach.help = teach.help.replace("INSTALL_COMMAND", INSTALL_COMMAND)
