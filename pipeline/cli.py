"""The `msagg` command line: one subcommand per stage, plus predict, embed and bench."""

from __future__ import annotations

import os
from pathlib import Path

import click

from msagg.pipeline.clitools import (CROSSVAL_SKIPS, DEBUG_ENV, EPILOG_CONFIG, FolderPath, config_options,
                                     field_options, friendly_errors, setup_logging, STATE)
from msagg.pipeline import bench_cli, embed_cli, predict_cli, teach_cli
from msagg.pipeline.config import resolve
from msagg.data.classic import CLASSIC
from msagg.data.segments import SEGMENTINGS
from msagg.stages import classify as classify_stage, extract as extract_stage, prepare as prepare_stage
from msagg.stages import pretrain as pretrain_stage
from msagg.models.specs import PRECISIONS
from msagg.models.blocks import BLOCKS, describe_blocks
from msagg.stages.songs.classifiers import CLASSIFIERS, describe_classifiers
from msagg.stages.engines import ADDRESS_HELP, ENGINES, describe_engines


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="How much to log on stderr.",
)
@click.option("--debug", is_flag=True, help=f"Show the traceback of every error (also: {DEBUG_ENV}=1).")
@click.version_option(package_name="msagg")
def main(log_level: str, debug: bool) -> None:
    """msagg: multi-level and multi-scale SampleCNN features for music classification.

    The pipeline of Lee & Nam (2017) in four stages, each writing a run folder
    (config.json, metadata.json, outputs, DONE):

    \b
      msagg prepare   decode a dataset once into an audio cache (HDF5)
      msagg pretrain  train SampleCNNs at several scales (m^n) on a cache
      msagg extract   pool the last three layers of every model over whole songs
      msagg classify  song-level classifiers on those features; results tables and plots
      msagg teach     label a cache with a real-music tagger (musicnn), to pretrain on
      msagg predict   tag or classify audio files with trained runs
      msagg embed     the song vectors of audio files, into one HDF5 or .npz file
      msagg bench     training/inference throughput of the SampleCNN family
      msagg bench-pipeline  prepare, training input and extract at N and 4N tracks: speed, memory, disk

    \b
    Quick start (what `make demo` runs):
      msagg prepare --dataset synth-tags --preset demo --out runs/demo/prepare/synth-tags
      msagg pretrain --cache runs/demo/prepare/synth-tags --preset demo --out runs/demo/pretrain
      msagg extract --pretrain runs/demo/pretrain --cache runs/demo/prepare/synth-tags --out runs/demo/extract/synth-tags
      msagg classify --features runs/demo/extract/synth-tags --out runs/demo/classify/synth-tags
    """
    STATE["debug"] = debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    setup_logging(log_level)
    STATE["verbose"] = log_level.lower() == "debug"


@main.command(epilog=EPILOG_CONFIG)
@field_options(prepare_stage.Config)
@click.option("--preset", type=click.Choice(list(prepare_stage.PRESETS)), help="Size preset for the synthetic datasets.")
@click.option("--workers", type=int, help="Decoding processes (default: the number of cores; with --engine ray and "
              "no --address, the CPUs of the Ray cluster started for the run). Does not change results.")
@config_options(prepare_stage.Config)
@friendly_errors
def prepare(preset, workers, out_dir, overwrite, config_file, sets, **options):
    """Decode a dataset once into an audio cache (OUT/cache/).

    Every track is decoded, mixed to mono and resampled to the model rate, then stored as int16
    in HDF5 shards of about --shard-mb each (each worker writes whole shards; a killed run resumes
    from the shards it finished), with an index holding labels, label names, task kind and split.
    Unreadable or empty files are listed with their reason in skipped.csv and left out (--strict
    makes them fatal). With --audio-from RUN (a finished prepare run of the same dataset and rate)
    nothing is decoded: the cache holds this run's tracks, labels and split, and links to RUN's
    shards. With --engine ray, each shard is decoded by a Ray task, into the run folder (on a
    filesystem every node sees): the same cache.

    \b
    Examples:
      msagg prepare --dataset synth-tags --preset demo --out runs/demo/prepare/synth-tags
      msagg prepare --dataset folder --source ~/sounds --out runs/mine/prepare/mine
      msagg prepare --dataset folder --source "../shared/datasets/esc10" \\
          --fold-from-name '^(\\d)-' --fold 1 --out runs/esc10/prepare/fold1
      msagg prepare --dataset esc10 --source ../shared/datasets/esc10 --fold 2 \\
          --audio-from runs/esc10/prepare/fold1 --out runs/esc10/prepare/fold2
      msagg prepare --dataset csv --source tracks.csv --top-k 50 --out runs/msd/prepare/msd
      msagg prepare --dataset mtat --source /shared/mtat --out /shared/runs/mtat/prepare/mtat \\
          --engine ray --address HEAD:6379
    """
    config = resolve(prepare_stage.Config, presets=prepare_stage.PRESETS, preset=preset, config_file=config_file,
                     options=options, sets=sets)
    path = prepare_stage.run(config, Path(out_dir), workers=workers, overwrite=overwrite)
    click.echo(f"audio cache: {path}")


@main.command(epilog=EPILOG_CONFIG)
@click.option("--cache", type=FolderPath(), help="A prepare run folder (holding cache/).")
@click.option(
    "--preset",
    default="demo",
    show_default=True,
    help="A preset. paper: all eight scales at full width with the authors' recipe (for a GPU); paper-se, "
    "paper-rese: Kim et al. (2018)'s SE-multi and ReSE-2-multi 3^9 models with that recipe; demo: a "
    "few reduced-width scales, minutes on 2 CPU cores; demo-rese: demo with ReSE-2-multi models; "
    "tiny: seconds, for tests.",
)
@click.option("--scales", help="Comma-separated scales to train, e.g. 3^8,3^9 (overrides the preset).")
@click.option("--width", type=float, help="Multiplier on every layer's filters (1.0 = the paper).")
@click.option("--block", type=click.Choice(list(BLOCKS)),
              help=f"Building block (default: the preset's): {describe_blocks()}.")
@click.option(
    "--multi/--no-multi",
    default=None,
    help="Classify from the last three blocks concatenated (Kim et al.'s -multi models) or from the last "
    "block only (default: the preset's).",
)
@click.option(
    "--augment/--no-augment",
    default=None,
    help="Augment the training crops (default: the preset's; on in demo and demo-rese, off in paper*): "
    "random gain, polarity, noise, pitch shift and mixup, each set by an augment_* key and off at 0, e.g. "
    "--set augment_gain_db=6 --set augment_polarity=0.5 --set augment_noise_snr_db=10,40 (none: off) "
    "--set augment_noise_prob=0.5 --set augment_pitch_semitones=2 --set augment_pitch_prob=0.5 "
    "--set augment_mixup_alpha=0.2 --set augment_mixup_prob=1 (these are the defaults).",
)
@click.option(
    "--devices",
    metavar="N|all",
    help="Devices to train on (default 1: one device, as msagg always ran): a count, or 'all' (every GPU/TPU, "
    "else every CPU device). More than one trains data parallel through Keras' distribution API (JAX: "
    "DataParallel; TensorFlow: MirroredStrategy). The batch size stays the global batch of one step, split "
    "evenly over the devices (it must divide: 23 does not split over 2, use --set batch_size=22 or 24), and "
    "the learning rate is unchanged. Asking for more devices than the machine has is an error listing them.",
)
@click.option(
    "--precision",
    type=click.Choice(["float32", "bf16"]),
    help="float32 (default, the paper) or bf16: layers compute in bfloat16 with float32 weights and float32 "
    "outputs (Keras' mixed_bfloat16); faster on GPUs/TPUs and CPUs with bfloat16 units.",
)
@click.option("--teacher-labels", type=FolderPath(), help="A `msagg teach` run of this cache: fit the teacher's tag "
              "probabilities (--set targets=aligned|song, --set vocabulary=MTT|MSD|both) instead of the cache's labels; "
              "--set teacher_features=W also fits the teacher's own features with weight W (a teach run made with "
              "--set features=true).")
@config_options(pretrain_stage.Config)
@friendly_errors
def pretrain(cache, preset, scales, width, block, multi, augment, devices, precision, teacher_labels, out_dir, overwrite,
             config_file, sets):
    """Train one SampleCNN per scale on an audio cache's train split.

    Random segment crops of the train split, SGD with Nesterov momentum 0.9, batch 23, lr 0.01;
    early stopping on validation loss (patience 3), then the best weights are reloaded and the
    learning rate is multiplied by 0.2, five stages in all. Each epoch logs the song-level
    validation ROC-AUC (tags) or accuracy (classes). Killed runs resume from their last epoch.

    Writes per scale: model.keras (best), history.csv, curves.png (losses and validation metric per
    epoch, redrawn after every epoch), metrics.json (song-level test metrics of the end-to-end
    model), tensorboard/.

    \b
    Examples:
      msagg pretrain --cache runs/demo/prepare/synth-tags --preset demo --out runs/demo/pretrain
      msagg pretrain --cache runs/mtat/prepare/mtat --preset paper --out runs/mtat/pretrain
      msagg pretrain --cache runs/demo/prepare/synth-tags --block rese --multi --out runs/demo/pretrain-rese
      msagg pretrain --cache runs/demo/prepare/synth-tags --no-augment --out runs/demo/pretrain-noaug
      msagg pretrain --cache runs/demo/prepare/synth-tags --scales 3^9 --set max_epochs_per_stage=2 \\
          --out runs/try/pretrain
      KERAS_BACKEND=jax msagg pretrain --cache runs/mtat/prepare/mtat --preset paper --devices all \\
          --set batch_size=24 --precision bf16 --out runs/mtat/pretrain-4gpu
    """
    config = resolve(
        pretrain_stage.Config,
        presets=pretrain_stage.PRESETS,
        preset=preset,
        config_file=config_file,
        options=dict(cache=cache, scales=scales and tuple(s.strip() for s in scales.split(",")), width=width,
                     block=block, multi=multi, augment=augment, devices=devices, precision=precision,
                     teacher_labels=teacher_labels),
        sets=sets,
    )
    path = pretrain_stage.run(config, Path(out_dir), overwrite=overwrite)
    click.echo(f"pretrained models: {path}")


@main.command(epilog=EPILOG_CONFIG)
@click.option("--pretrain", "pretrain_dir", type=FolderPath(), help="A pretrain run folder.")
@click.option(
    "--cache",
    type=FolderPath(),
    help="A prepare run folder of the target dataset (may differ from the pretraining dataset).",
)
@click.option(
    "--song-pool",
    type=click.Choice(["mean", "max", "meanmax", "meanstd"]),
    help="How segment vectors become one song vector (default mean, the paper's; meanmax concatenates mean "
    "and max, meanstd mean and standard deviation).",
)
@click.option("--segments", type=click.Choice(SEGMENTINGS),
              help="How a song is cut into segments: cover (default: the non-overlapping segments plus one that "
              "ends at the song's end, so no sample is left out) or drop (the remainder after the last whole "
              "segment is left out, as extract did before this option).")
@click.option("--scales", help="Comma-separated scales to use (default: every model of the pretrain run).")
@click.option("--classic", "classic", multiple=True, type=click.Choice(["auto", *CLASSIC, "none"]),
              help="Reference features stored beside the learned ones for the baseline rows of every report: "
              "mfcc (20 MFCCs + deltas, mean and std over the song, by librosa), musicnn (the teacher's layers: "
              "musicnn's MTT tagger, averaged over 3-s patches; needs `make teacher`), none. Repeatable. Default "
              "auto: mfcc, and musicnn when the musicnn package is installed.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Segments per forward pass.")
@click.option("--engine", type=click.Choice(list(ENGINES)), help=f"Where to compute: {describe_engines()}.")
@click.option("--address", help=ADDRESS_HELP)
@click.option("--precision", type=click.Choice(list(PRECISIONS)),
              help="What the models compute in, whatever they were trained in: float32 (default) or bf16 (bfloat16 "
              "layers, Keras' mixed_bfloat16; faster where the hardware has bfloat16 units). The stored features "
              "are float32 either way.")
@config_options(extract_stage.Config)
@friendly_errors
def extract(pretrain_dir, cache, song_pool, segments, scales, classic, batch_size, engine, address, precision,
            out_dir, overwrite, config_file, sets):
    """Song-level features from the last three layers of every pretrained model.

    Each track is read once; for every model its segments (non-overlapping, plus one ending at the
    track's end) go through one forward pass that yields the three taps (-3, -2, -1), each
    max-pooled over time within a segment and then averaged (or max-pooled) over the song. Beside them, MFCC statistics of the same audio
    and, when musicnn is installed, the teacher's layers (the reference rows of every report). Writes features.h5 (layout: docs/outputs.md);
    a killed extraction resumes from the last track written. With --engine ray, ranges of tracks
    are computed on Ray actors (one per node or GPU) and written in order: the same file.

    \b
    Examples:
      msagg extract --pretrain runs/demo/pretrain --cache runs/demo/prepare/synth-genre \\
          --out runs/demo/extract/synth-genre
      msagg extract --pretrain runs/demo/pretrain --cache runs/demo/prepare/synth-genre \\
          --out runs/demo/extract/synth-genre --engine ray --address HEAD:6379
      msagg extract --pretrain runs/mtat/pretrain --cache runs/gtzan/prepare/gtzan --song-pool meanmax \\
          --out runs/gtzan/extract/from-mtat
    """
    config = resolve(
        extract_stage.Config,
        config_file=config_file,
        options=dict(pretrain=pretrain_dir, cache=cache, song_pool=song_pool, segments=segments,
                     scales=scales and tuple(s.strip() for s in scales.split(",")),
                     classic=() if "none" in classic else (tuple(classic) or None),
                     engine=engine, address=address, precision=precision),
        sets=sets,
    )
    path = extract_stage.run(config, Path(out_dir), batch_size=batch_size, overwrite=overwrite)
    click.echo(f"features: {path}")


@main.command(epilog=EPILOG_CONFIG)
@click.option("--features", type=FolderPath(), help="An extract run folder (holding features.h5).")
@click.option(
    "--combo",
    "combos",
    multiple=True,
    help="A multi-scale combination of last-three-layer features, e.g. --combo 3^8+3^9 (the same as "
    "--feature-set 3^8+3^9). Repeatable; with neither --combo nor --feature-set: the paper's Table 2 "
    "combinations present in the file, plus all scales.",
)
@click.option(
    "--feature-set",
    "specs",
    multiple=True,
    metavar="SPEC",
    help="A feature set SCALES[@LAYERS]: SCALES is 'all' or scales joined by '+', LAYERS is 'last3' (the "
    "default) or taps among -3, -2, -1 joined by ','. Repeatable. Examples: --feature-set 3^8+3^9@-1 "
    "(one layer of several models), --feature-set 3^9@-2,-1, --feature-set all@last3.",
)
@click.option("--repeats", type=int, help="Train each classifier with this many seeds; report mean and std.")
@click.option(
    "--classifier",
    "classifiers",
    multiple=True,
    type=click.Choice(list(CLASSIFIERS)),
    help=f"Which song-level classifiers (default all): {describe_classifiers()}. Repeatable.",
)
@click.option("--tsne-label", help="Label that colours the t-SNE plot (default: the class, or the commonest tag).")
@click.option("--predictor-set", type=click.Choice(list(classify_stage.PREDICTOR_SETS)),
              help="The classifier `msagg predict` applies by default: chosen (the set, classifier and C chosen by "
              "cross-validation of the train and valid songs; default) or all (the all-scales set).")
@config_options(classify_stage.Config)
@friendly_errors
def classify(features, combos, specs, repeats, classifiers, tsne_label, predictor_set, out_dir, overwrite, config_file,
             sets):
    """Train song-level classifiers on aggregated features and report the results tables.

    Feature sets: every scale's -3, -2, -1 layer and the three concatenated, then multi-scale
    combinations of the last-three features (or the sets given with --combo / --feature-set),
    then the MFCC baseline alone and joined to all scales (when extract stored it; --feature-set
    mfcc, all+mfcc). Features are standardized with train statistics (a joined set's blocks weighted
    alike); metrics are computed on the test split (ROC-AUC and PR-AUC for tags, accuracy and macro
    F1 for classes). The chosen row: the set, classifier and C chosen by a 5-fold cross-validation
    of the train and valid songs (--set cv_folds=K), which predict applies. Writes metrics.json,
    results.csv, results.md (the paper's Tables 1 and 2) and plots/ (per-tag ROC-AUC bars, t-SNE
    of -3 vs -1 layer features).

    \b
    Examples:
      msagg classify --features runs/demo/extract/synth-tags --out runs/demo/classify/synth-tags
      msagg classify --features runs/mtat/extract/mtat --combo 3^8+3^9 --repeats 10 --out runs/mtat/classify
      msagg classify --features runs/demo/extract/synth-genre --feature-set 3^8+3^9@-1 \\
          --feature-set all@-1 --out runs/demo/classify/layers
    """
    with_layers = [c for c in combos if "@" in c]
    if with_layers:
        raise click.BadParameter(f"{with_layers[0]!r}: --combo takes scales only (e.g. 3^8+3^9); "
                                 "use --feature-set for layers", param_hint="--combo")
    config = resolve(
        classify_stage.Config,
        config_file=config_file,
        options=dict(features=features, feature_sets=tuple(combos) + tuple(specs) or None, repeats=repeats,
                     classifiers=tuple(classifiers) or None, tsne_label=tsne_label, predictor_set=predictor_set),
        sets=sets,
    )
    path = classify_stage.run(config, Path(out_dir), overwrite=overwrite)
    results = path / "results.md" if path.is_dir() else path
    if results.is_file():
        click.echo(results.read_text())
    click.echo(f"results: {results}")


@main.command()
@field_options(prepare_stage.Config, skip=CROSSVAL_SKIPS, required=("dataset",))
@click.option("--num-folds", type=int, default=5, show_default=True,
              help="How many folds, each the test split once: the dataset's official folds in its file names "
              "(esc10, or --fold-from-name), else stratified k-fold drawn with --split-seed.")
@click.option("--preset", default="demo", show_default=True,
              help="The pretrain preset used in every fold (as for msagg pretrain: paper, demo, tiny, ...).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a pretrain config key, e.g. --set augment=false. Repeatable.")
@click.option("--classifier", "classifiers", multiple=True, type=click.Choice(list(CLASSIFIERS)),
              help=f"Song-level classifiers (default all: {', '.join(CLASSIFIERS)}).")
@click.option("--pretrained", type=FolderPath(),
              help="Transfer: extract every fold with this finished pretrain run (e.g. runs/general/pretrain) "
              "instead of pretraining on the fold's training tracks.")
@click.option("--song-pool", type=click.Choice(["mean", "max", "meanmax", "meanstd"]),
              help="Song pooling of extract (default mean).")
@click.option("--compare", "compare", multiple=True, metavar="'NAME: KEY=VALUE ...'",
              help="Also run a variant of the pretraining in every fold, from the same prepared audio, and put it "
              "beside the base in crossval.md, e.g. --compare 'augment: augment=true'. Its KEY=VALUE pretrain sets "
              "(space-separated) apply after --set. Repeatable; its runs go to OUT/fold<i>/variants/NAME.")
@click.option("--workers", type=int, help="Decoding processes for prepare.")
@click.option("--out", "out_dir", required=True, type=FolderPath(),
              help="Folder for the folds' run folders and the summary (crossval.md, crossval.json).")
@friendly_errors
def crossval(num_folds, preset, sets, classifiers, pretrained, song_pool, compare, workers, out_dir,
             **prepare_options):
    """Run every stage once per fold and report the mean score over folds.

    The audio is decoded once (into OUT/audio); then for each fold i: prepare with fold i as the
    test split (linked to that audio), pretrain SampleCNNs on the other folds only, extract,
    classify. The summary table (crossval.md) lists every feature set's mean
    and standard deviation over folds, and the published references for known datasets.
    Every fold's prepare config is checked before the first fold runs. Interrupted protocols
    resume; finished folds are not run again.

    \b
    Examples:
      msagg crossval --dataset esc10 --source ../shared/datasets/esc10 --out runs/esc10-base
      msagg crossval --dataset folder --source ~/sounds --num-folds 10 --preset tiny --out runs/mine-cv
      msagg crossval --dataset esc10 --source ../shared/datasets/esc10 --pretrained runs/general/pretrain \\
          --out runs/esc10-general   # transfer: no pretraining per fold
      msagg crossval --dataset esc10 --source ../shared/datasets/esc10 --compare 'augment: augment=true' \\
          --out runs/esc10   # make eval-esc10: augmentation off (base) and on, side by side
    """
    from msagg.pipeline import protocols

    options = {k: v for k, v in prepare_options.items() if v is not None}
    classify_options = {"classifiers": tuple(classifiers)} if classifiers else {}
    path = protocols.crossval(out_dir, prepare_options=options, num_folds=num_folds, preset=preset,
                              pretrain_sets=sets, classify_options=classify_options, workers=workers,
                              references=protocols.REFERENCES.get(options["dataset"], []), pretrained=pretrained,
                              extract_options={"song_pool": song_pool} if song_pool else None, compare=compare)
    click.echo(path.read_text())
    click.echo(f"summary: {path}")


main.add_command(teach_cli.teach)
main.add_command(predict_cli.predict)
main.add_command(embed_cli.embed)
main.add_command(bench_cli.bench)
main.add_command(bench_cli.bench_pipeline)


if __name__ == "__main__":  # pragma: no cover
    main()
