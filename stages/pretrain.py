"""Pretrain stage: one SampleCNN per m^n scale, trained on random crops of an audio cache.

The training loop and the run folder are here; the input is ``msagg.stages.training.crops``, validation and test
scoring ``msagg.stages.training.evaluation``, the per-epoch records (history.csv, TensorBoard scalars, curves.png)
``msagg.stages.training.log``.

Resuming is deterministic: a run killed at any point and resumed ends with the same weights,
history and best epoch as one never interrupted. Each epoch ends with one checkpoint folder,
committed by a single rename, that holds the model with its optimizer, the best model so far, the
loop state and every random state training draws from (``checkpoint.rng_state``); a resumed run restores the
epoch's other files (model.keras, history.csv, curves.png) from it and replays the epoch it lost.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from msagg.data.atomic import remove_stale_temps, write_json
from msagg.data.formats.cache import AudioCache
from msagg.data.errors import ConfigError, MsaggError
from msagg.models import sample_cnn, specs
from msagg.stages.checks import check_int, check_number
# CropSequence, the evaluation functions and HISTORY_FIELDS were defined here before; importing
# them from this module keeps working.
from msagg.stages.training import augment as augment_lib
from msagg.stages.training import checkpoint, crops
from msagg.stages.training import devices as devices_lib
from msagg.stages.training.crops import CropSequence
from msagg.stages.training.evaluation import predict_segments, segment_loss, song_metrics, song_predictions
from msagg.stages.training import log as training_log
from msagg.stages.songs.metrics import PRIMARY
from msagg.stages.runs import pretrain_run
from msagg.stages.runs.pretrain_run import load_model, mark_scale_done, save_model, write_scale_metrics
from msagg.stages.runs.folder import OMIT_DEFAULT, RunFolder, lock_scope
from msagg.stages.runs.upstream import open_upstream

__all__ = ["Config", "PRESETS", "BLOCKS", "PretrainError", "run"]

logger = logging.getLogger(__name__)

BLOCKS = sample_cnn.BLOCKS
"""Building blocks of ``Config.block``: Lee et al.'s basic block, and Kim et al. (2018)'s SE, Res
and ReSE-2 blocks. (``msagg.models.sample_cnn`` owns the blocks; this list validates configs before a
model is built.)"""


PRECISIONS = tuple(specs.PRECISIONS)
"""Values of ``Config.precision``: "float32", or "bf16" (Keras' mixed_bfloat16: float32 weights,
bfloat16 computation, float32 outputs)."""


class PretrainError(MsaggError):
    """A pretraining run that cannot go on: no train or valid tracks, a diverged run, no model file."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What the pretrain stage trains. Defaults are the authors' recipe.

    Attributes:
        cache: A prepare run folder (or its ``cache/`` folder, or an older run's ``cache.h5``).
        scales: Scale keys to train, e.g. ("3^8", "3^9"); "3x9" and "3**9" are normalized.
        width: Multiplier on every layer's filters (1.0 = the paper).
        block: Building block of the strided convolutions, one of ``BLOCKS``: "basic" (Lee et al.
            2017), "se" (squeeze-and-excitation), "res" (residual) or "rese" (residual with SE, the
            ReSE-2 block of Kim et al. 2018).
        multi: Kim et al.'s "multi" variant: the classifier head reads the last three blocks'
            pooled outputs concatenated, not only the last one.
        batch_size: Segments per training step: the global batch, split evenly over the devices
            (it must divide by their number), so one step sees the same batch whatever the device
            count, and the learning rate is unchanged.
        learning_rate: SGD learning rate of the first learning-rate stage.
        lr_decay: Factor on the learning rate from one stage to the next.
        num_lr_stages: Learning-rate stages (0.01 to 0.000016 with the defaults).
        patience: Epochs without a lower validation loss that end a stage.
        max_epochs_per_stage: Cap on the epochs of one stage (None: only patience ends it).
        steps_per_epoch: Training steps per epoch (None: one pass over the train split's
            segments at that scale, i.e. ceil(num_train_segments / batch_size)).
        val_max_tracks: Validate on at most this many valid tracks (a seeded subset; None: all).
        seed: Seed of weight initialization, dropout, crop sampling and augmentation.
        augment: Augment the training crops (never validation or test) with the transforms the
            ``augment_*`` keys set, each off at 0 (the paper did not augment: off by default).
        augment_gain_db: Random gain, uniform in +-augment_gain_db dB.
        augment_polarity: Probability of flipping a crop's sign.
        augment_noise_snr_db: (low, high): white noise at an SNR drawn in that range, dB (None: off).
        augment_noise_prob: Probability that a crop gets noise.
        augment_pitch_semitones: Pitch shift, uniform in +-augment_pitch_semitones semitones (at most
            12): a crop 2^(s/12) times the input length is resampled to it with soxr.
        augment_pitch_prob: Probability that a crop is pitch-shifted.
        augment_mixup_alpha: Mixup of crops within a batch, weight ~ Beta(alpha, alpha); labels are
            mixed with the same weight (soft targets).
        augment_mixup_prob: Probability that a crop is mixed with another.
        devices: Devices to train on: a count (1: one device, msagg as it always ran) or "all"
            (every accelerator, else every CPU device Keras lists). More than one trains data
            parallel through Keras' distribution API (``msagg.stages.training.devices``: JAX ``DataParallel``,
            TensorFlow ``MirroredStrategy``); results then differ from one device's by rounding
            on JAX, and on TensorFlow also by per-device batch-norm statistics and dropout masks.
            Left out of config.json and the hash at 1, so earlier run folders keep their hash.
        precision: "float32" (the paper) or "bf16": layers compute in bfloat16 with float32
            weights and float32 outputs (Keras' "mixed_bfloat16" policy); faster where the
            hardware has bfloat16 units. Left out of config.json and the hash at "float32".

    The ``augment_*`` values matter only when ``augment`` is true; ``augmentation()`` gives the
    ``msagg.stages.training.augment.Augment`` in force.
    """

    cache: str
    scales: tuple[str, ...] = specs.PAPER_SCALES
    width: float = 1.0
    block: str = "basic"
    multi: bool = False
    batch_size: int = 23
    learning_rate: float = 0.01
    lr_decay: float = 0.2
    num_lr_stages: int = 5
    patience: int = 3
    max_epochs_per_stage: int | None = None
    steps_per_epoch: int | None = None
    val_max_tracks: int | None = None
    seed: int = 0
    augment: bool = False
    augment_gain_db: float = 6.0
    augment_polarity: float = 0.5
    augment_noise_snr_db: tuple[float, float] | None = (10.0, 40.0)
    augment_noise_prob: float = 0.5
    augment_pitch_semitones: float = 2.0
    augment_pitch_prob: float = 0.5
    augment_mixup_alpha: float = 0.2
    augment_mixup_prob: float = 1.0
    devices: int | str = dataclasses.field(default=1, metadata={OMIT_DEFAULT: True})
    precision: str = dataclasses.field(default="float32", metadata={OMIT_DEFAULT: True})

    def __post_init__(self):
        if isinstance(self.cache, os.PathLike):
            object.__setattr__(self, "cache", os.fspath(self.cache))
        if not isinstance(self.cache, str) or not self.cache:
            raise ConfigError(f"cache must be a prepare run folder, got {self.cache!r}")
        scales = (self.scales,) if isinstance(self.scales, str) else self.scales
        if not scales:
            raise ConfigError("scales must name at least one scale, got an empty list")
        try:
            normalized = tuple(specs.parse_scale(str(s)) for s in scales)
        except ValueError as err:
            raise ConfigError(f"scales: {err}") from None
        duplicates = sorted({s for s in normalized if normalized.count(s) > 1})
        if duplicates:
            raise ConfigError(f"scales lists {', '.join(duplicates)} more than once")
        object.__setattr__(self, "scales", normalized)
        check_number("width", self.width, low=0.0, low_open=True)
        if self.block not in BLOCKS:
            raise ConfigError(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if not isinstance(self.multi, bool):
            raise ConfigError(f"multi must be true or false, got {self.multi!r}")
        check_number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_number("lr_decay", self.lr_decay, low=0.0, low_open=True, high=1.0)
        for name in ("batch_size", "num_lr_stages", "patience"):
            check_int(name, getattr(self, name), low=1)
        for name in ("max_epochs_per_stage", "steps_per_epoch", "val_max_tracks"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)
        check_int("seed", self.seed, low=0)
        if not isinstance(self.augment, bool):
            raise ConfigError(f"augment must be true or false, got {self.augment!r}")
        checked = augment_lib.from_fields(self)  # validates every augment_* key, switched on or not
        object.__setattr__(self, "augment_noise_snr_db", checked.noise_snr_db)  # a JSON list -> a tuple
        object.__setattr__(self, "devices", devices_lib.check_request(self.devices))
        if isinstance(self.devices, int):  # "all" is checked once the devices are known (run)
            devices_lib.check_batch(self.batch_size, self.devices)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def augmentation(self) -> augment_lib.Augment:
        """The augmentation of the training crops: the ``augment_*`` values, or none when ``augment`` is off."""
        return augment_lib.from_fields(self) if self.augment else augment_lib.Augment()


_DEMO = {
    "scales": ("3^8", "3^9", "4^6"),
    "width": 0.25,
    "learning_rate": 0.05,
    "num_lr_stages": 3,
    "patience": 3,
    "max_epochs_per_stage": 4,
    "steps_per_epoch": 40,
    "val_max_tracks": 60,
    # No augmentation: on ESC-10 (5 folds, this schedule) turning on all five transforms at their
    # defaults cost 9 points of accuracy on the all-scales features (0.792 -> 0.700, README), so
    # it stays off until a measured setting helps (--augment turns it on).
    "augment": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The authors' recipe for all eight scales at full width: days on a GPU.
    "paper": {"scales": specs.PAPER_SCALES, "width": 1.0, "augment": False},
    # Kim, Lee & Nam (2018), "Sample-level CNN architectures for music auto-tagging using raw
    # waveforms": the 3^9 model at full width with SE blocks (SE-multi) or residual SE blocks
    # (ReSE-2-multi, their best on MagnaTagATune), the head on the last three blocks, same recipe.
    "paper-se": {"scales": ("3^9",), "width": 1.0, "block": "se", "multi": True, "augment": False},
    "paper-rese": {"scales": ("3^9",), "width": 1.0, "block": "rese", "multi": True, "augment": False},
    # Three quarter-width scales (two at m=3, so the multi-scale 3^8+3^9 combination exists, and
    # one at m=4), three learning-rate stages of at most 4 epochs of 40 steps: about 4-5 minutes on
    # 2 CPU cores for 300 synth tracks. So short a schedule learns little at lr 0.01; 0.05 learned
    # the most of 0.01-0.2 on synth-tags (0.1 was as good for 3^8 and 4^6 but unstable for 3^9).
    "demo": _DEMO,
    # demo with ReSE-2-multi models (Kim et al. 2018) instead of the basic blocks.
    "demo-rese": {**_DEMO, "block": "rese", "multi": True},
    # `make pretrain-general`: the demo's three quarter-width scales on the 2000-track synth-gm-tags
    # corpus, with a schedule about six times the demo's (3 stages of at most 8 epochs of 150
    # steps): about an hour on 2 CPU cores. The models are small (0.1 M parameters each) and are
    # meant to be transferred: `msagg extract --pretrain runs/general/pretrain --cache <your data>`.
    # No augmentation: the corpus is large and varied for models this small, and the first
    # measured run (README) had none.
    "general": {**_DEMO, "max_epochs_per_stage": 8, "steps_per_epoch": 150, "val_max_tracks": 100,
                "augment": False},
    # Seconds: the tiny test scales, one short epoch per stage.
    "tiny": {
        "scales": ("3^2", "4^2"),
        "width": 0.125,
        "batch_size": 4,
        "num_lr_stages": 2,
        "patience": 1,
        "max_epochs_per_stage": 1,
        "steps_per_epoch": 3,
        "val_max_tracks": 6,
    },
}


# ---------------------------------------------------------------------------------------------
# Models and files


def _dtype(config: Config) -> str | None:
    """The Keras dtype policy the models are built with (None for float32: the builder's default)."""
    return specs.build_dtype(config.precision)


def _build(config: Config, scale: str, num_labels: int, task: str) -> keras.Model:
    """The uncompiled SampleCNN of ``config`` at ``scale`` (its block type, head and precision)."""
    return sample_cnn.build_sample_cnn(scale, num_labels, task, width=config.width, block=config.block,
                                       multi=config.multi, dtype=_dtype(config))


def _compile(model: keras.Model, task: str, learning_rate: float) -> None:
    # A fresh optimizer at every learning-rate stage resets the momentum, as the authors'
    # recompile did.
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True)
    loss = "binary_crossentropy" if task == "tags" else "categorical_crossentropy"
    model.compile(optimizer=optimizer, loss=loss)
    # Built now, so that a checkpoint written before the next step holds the full optimizer.
    optimizer.build(model.trainable_variables)


def _scale_seed(seed: int, scale: str) -> int:
    """A per-scale seed that does not depend on which other scales run."""
    return (seed * 1_000_003 + zlib.crc32(scale.encode())) % (2**31 - 1)


# ---------------------------------------------------------------------------------------------
# Training


def _validation_tracks(config: Config, cache) -> np.ndarray:
    valid = np.asarray(cache.indices("valid"), dtype=np.int64)
    if config.val_max_tracks is not None and valid.size > config.val_max_tracks:
        rng = np.random.default_rng([config.seed, 7])
        valid = np.sort(rng.choice(valid, size=config.val_max_tracks, replace=False))
    return valid


def _fresh_state(config: Config) -> dict[str, Any]:
    return {
        "epoch": 0,  # epochs finished
        "lr_stage": 0,
        "lr": config.learning_rate,
        "epoch_in_stage": 0,
        "best_val_loss": None,
        "best_epoch": None,
        "wait": 0,
        "history": [],
    }


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _train_scale(
    config: Config,
    scale: str,
    cache,
    folder: Path,
    *,
    devices: devices_lib.Devices,
    progress: bool,
    eval_batch_size: int,
    tensorboard: bool,
    on_epoch_end: Callable[[str, dict], None] | None,
) -> dict[str, Any]:
    """Trains (or resumes, or skips) one scale; returns its metrics.json content.

    Runs inside ``devices_lib.data_parallel(devices)`` (the caller's), so every model it builds or
    loads is placed on the run's devices.
    """
    spec = specs.get_spec(scale)
    input_length = spec.input_length
    metrics_path, ckpt = folder / pretrain_run.METRICS_FILE, folder / checkpoint.CHECKPOINT_DIR
    best_path = folder / pretrain_run.MODEL_FILE
    if (folder / pretrain_run.DONE_FILE).is_file() and metrics_path.is_file():
        logger.info("%s: already trained; skipping", scale)
        shutil.rmtree(ckpt, ignore_errors=True)
        return json.loads(metrics_path.read_text())

    task, num_labels = cache.task, len(cache.label_names)
    train = np.asarray(cache.indices("train"), dtype=np.int64)
    valid = _validation_tracks(config, cache)
    if train.size == 0 or valid.size == 0:
        raise PretrainError(f"{config.cache}: pretraining needs train and valid tracks; the cache has "
                            f"{train.size} train and {valid.size} valid tracks")
    valid_labels = np.asarray(cache.labels)[valid]
    steps = config.steps_per_epoch or crops.steps_per_pass(np.asarray(cache.lengths)[train], input_length,
                                                           config.batch_size)
    seed = _scale_seed(config.seed, scale)
    folder.mkdir(parents=True, exist_ok=True)
    variant = specs.variant_name(config.block, config.multi)
    curves_title = f"{scale} on {cache.dataset}: {variant} blocks, width {config.width:g}"

    # The best model is kept uncompiled, so other stages load it without optimizer state.
    best_holder = _build(config, scale, num_labels, task)
    resume_from = checkpoint.latest_checkpoint(ckpt)
    rng = None
    if resume_from is not None:
        state = json.loads((resume_from / checkpoint.STATE_FILE).read_text())
        model = load_model(resume_from / checkpoint.LAST_FILE)
        checkpoint.check_learning_rate(model, state, resume_from)
        if (resume_from / checkpoint.RNG_FILE).is_file():
            rng = json.loads((resume_from / checkpoint.RNG_FILE).read_text())
        else:
            logger.warning("%s: %s holds no random state (written by an older msagg); the resumed run will "
                           "not repeat the interrupted one exactly", scale, resume_from)
        checkpoint.restore_epoch_files(folder, resume_from, state, PRIMARY[task], curves_title)
        logger.info("%s: resuming after epoch %d (lr stage %d, lr %.3g)", scale, state["epoch"],
                    state["lr_stage"] + 1, state["lr"])
    else:
        # A run killed in its first epoch may have left its files, and a temporary checkpoint.
        shutil.rmtree(ckpt, ignore_errors=True)
        shutil.rmtree(folder / "tensorboard", ignore_errors=True)
        for name in (pretrain_run.MODEL_FILE, "history.csv", "curves.png"):
            (folder / name).unlink(missing_ok=True)
        keras.utils.set_random_seed(seed)
        model = _build(config, scale, num_labels, task)
        _compile(model, task, config.learning_rate)
        state = _fresh_state(config)
    num_params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    logger.info("%s: %d trainable parameters, input %d samples (%.2f s), %d steps of %d per epoch",
                scale, num_params, input_length, input_length / cache.sample_rate, steps, config.batch_size)
    if devices.parallel:
        logger.info("%s: data parallel on %d devices (%s), %d segments per device and step", scale, devices.count,
                    ", ".join(devices.names), config.batch_size // devices.count)
        # Evaluation batches are padded anyway; each must split evenly over the devices too.
        eval_batch_size = devices.batch_multiple(eval_batch_size)
    if config.precision != "float32":
        logger.info("%s: %s precision (Keras policy %s)", scale, config.precision, _dtype(config))

    augment = config.augmentation()
    logger.info("%s: augmentation of the training crops: %s", scale, augment.describe())
    # On several hosts (JAX), each process draws its own share of every global batch.
    local_batch = config.batch_size // devices.num_processes
    crop_seed = seed if devices.num_processes == 1 else _scale_seed(seed, f"process{devices.process_index}")
    sequence = CropSequence(cache, train, input_length, local_batch, steps, seed=crop_seed, augment=augment)
    scalars = training_log.ScalarLog(folder / "tensorboard", enabled=tensorboard)
    try:
        while state["lr_stage"] < config.num_lr_stages:
            if rng is not None:
                # Every epoch but a fresh run's first starts from the random state recorded in the
                # last checkpoint, whether this process wrote it or resumed from it; what ran in
                # between (writing it, on_epoch_end, loading a model) cannot change the epoch.
                checkpoint.set_rng_state(model, rng)
            epoch = state["epoch"]
            # fit() calls the sequence's on_epoch_end once before it trains (Keras' EpochIterator
            # resets), so this epoch trains on crop epoch epoch + 1: still a function of the epoch.
            sequence.epoch = epoch
            started = time.perf_counter()
            # A live bar on a terminal; in a log file one line per epoch rather than a redraw per step.
            verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
            # shuffle: Keras draws each epoch's batch order from Python's random (checkpointed).
            fitted = model.fit(sequence, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose, shuffle=True)
            train_seconds = time.perf_counter() - started
            loss = float(fitted.history["loss"][-1])
            seg_preds = predict_segments(model, cache, valid, input_length, eval_batch_size)
            val_loss = segment_loss(task, valid_labels, seg_preds)
            val_metric = song_metrics(task, valid_labels, song_predictions(seg_preds))[PRIMARY[task]]
            row = {
                "epoch": epoch + 1,
                "lr_stage": state["lr_stage"],
                "lr": state["lr"],
                "loss": _finite(loss),
                "val_loss": _finite(val_loss),
                "val_song_metric": _finite(val_metric) if val_metric is not None else None,
                "seconds": round(time.perf_counter() - started, 3),
                "segments_per_sec": round(steps * config.batch_size / train_seconds, 2),
            }
            best = state["best_val_loss"]
            if math.isfinite(val_loss) and (best is None or val_loss < best):
                state.update(best_val_loss=val_loss, best_epoch=epoch + 1, wait=0)
                best_holder.set_weights(model.get_weights())
                save_model(best_path, best_holder)
            else:
                state["wait"] += 1
            state["history"].append(row)
            training_log.write_history(folder / "history.csv", state["history"])
            training_log.draw_curves(folder / "curves.png", state["history"], PRIMARY[task], curves_title)
            scalars.write(epoch + 1, {k: row[k] for k in ("loss", "val_loss", "val_song_metric", "lr",
                                                         "segments_per_sec")})
            logger.info(
                "%s epoch %d (lr stage %d, lr %.3g): loss %.4f, val_loss %.4f, val %s %s, %.1f s, %.1f segments/s%s",
                scale, epoch + 1, state["lr_stage"] + 1, state["lr"], loss, val_loss, PRIMARY[task],
                "n/a" if val_metric is None else f"{val_metric:.4f}", row["seconds"], row["segments_per_sec"],
                " (best)" if state["best_epoch"] == epoch + 1 else "",
            )

            state["epoch"] = epoch + 1
            state["epoch_in_stage"] += 1
            capped = config.max_epochs_per_stage is not None and state["epoch_in_stage"] >= config.max_epochs_per_stage
            if state["wait"] >= config.patience or capped:
                state.update(lr_stage=state["lr_stage"] + 1, epoch_in_stage=0, wait=0)
                if state["lr_stage"] < config.num_lr_stages:
                    state["lr"] = float(f"{config.learning_rate * config.lr_decay ** state['lr_stage']:.12g}")
                    if best_path.is_file():
                        model.set_weights(load_model(best_path).get_weights())
                    _compile(model, task, state["lr"])
                    logger.info("%s: lr stage %d, best weights reloaded, lr %.3g", scale,
                                state["lr_stage"] + 1, state["lr"])
            rng = checkpoint.rng_state(model)  # the next epoch starts from it, killed here or not
            checkpoint.write_checkpoint(ckpt, model, state, rng, best_path)
            if on_epoch_end is not None:
                on_epoch_end(scale, dict(row))
    finally:
        scalars.close()

    metrics = _finish_scale(config, scale, cache, folder, state, num_params, eval_batch_size, devices)
    write_scale_metrics(folder, metrics)
    mark_scale_done(folder, {"scale": scale, "best_epoch": state["best_epoch"]})
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics


def _finish_scale(config: Config, scale: str, cache, folder: Path, state: dict, num_params: int,
                  eval_batch_size: int, devices: devices_lib.Devices) -> dict[str, Any]:
    spec = specs.get_spec(scale)
    history = state["history"]
    if not (folder / pretrain_run.MODEL_FILE).is_file():
        raise PretrainError(f"{folder}: no epoch reached a finite validation loss; training diverged "
                            f"(a lower learning_rate may help)")
    best = load_model(folder / pretrain_run.MODEL_FILE)
    test = np.asarray(cache.indices("test"), dtype=np.int64)
    if test.size:
        seg_preds = predict_segments(best, cache, test, spec.input_length, eval_batch_size)
        test_metrics = song_metrics(cache.task, np.asarray(cache.labels)[test], song_predictions(seg_preds))
    else:
        logger.warning("%s: the cache has no test tracks; no test metrics", scale)
        test_metrics = {}
    best_row = next((r for r in history if r["epoch"] == state["best_epoch"]), {})
    seconds = float(sum(r["seconds"] for r in history))
    rates = [r["segments_per_sec"] for r in history]
    metrics = {
        "scale": scale,
        "input_length": spec.input_length,
        "sample_rate": int(cache.sample_rate),
        "task": cache.task,
        "label_names": list(cache.label_names),
        "width": config.width,
        "block": config.block,
        "multi": config.multi,
        "num_params": num_params,
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val_loss"],
        "song_metric": PRIMARY[cache.task],
        "best_val_song_metric": best_row.get("val_song_metric"),
        "num_test_tracks": int(test.size),
        "test": test_metrics,
        "seconds": round(seconds, 1),
        "segments_per_sec": round(float(np.mean(rates)), 2) if rates else None,
        "precision": config.precision,
        "devices": devices.describe(),
    }
    logger.info("%s: test %s", scale, json.dumps(test_metrics))
    return metrics


@lock_scope
def run(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    eval_batch_size: int = 32,
    tensorboard: bool = True,
    on_epoch_end: Callable[[str, dict], None] | None = None,
) -> Path:
    """Pretrains one SampleCNN per scale of ``config``.

    Args:
        config: The stage config.
        out_dir: The run folder (``summary.json``; per scale ``<scale>/`` with model.keras,
            history.csv, curves.png (redrawn after every epoch), metrics.json, tensorboard/).
        overwrite: Replace a folder that holds another config (or redo a finished one).
        progress: Keras progress bars per epoch.
        eval_batch_size: Segments per forward pass in validation and test.
        tensorboard: Write TensorBoard scalars (when TensorFlow is importable).
        on_epoch_end: Called as ``on_epoch_end(scale, history_row)`` after each epoch's
            checkpoint is committed (a hook for tests and tools; an exception stops the run, which
            then resumes from that checkpoint exactly as if it had not stopped).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DevicesError: Before anything is written, if ``config.devices`` asks for more devices than
            this machine has (naming those it has), or for several on a backend without data
            parallelism.
        ConfigError: If ``devices="all"`` finds a device count that does not divide ``batch_size``.
        RunConflictError: If ``out_dir`` holds another config and ``overwrite`` is False.
        RunFolderBusy: If another process is running a stage in ``out_dir``.
        CacheError: If the cache is missing or of an unknown schema.
        PretrainError: If the cache lacks train or valid tracks, or a scale's training diverged.
    """
    out_dir = Path(out_dir)
    devices = devices_lib.resolve(config.devices)
    devices_lib.check_batch(config.batch_size, devices.count)
    runtime = {"devices": devices.describe()}
    folder = RunFolder(out_dir, "pretrain", config, runtime=runtime).lock()
    if folder.done and not overwrite:
        logger.info("%s: pretrain already done with config %s; nothing to do", out_dir, folder.hash)
        return out_dir
    prepared = open_upstream(config.cache, "prepare")
    if not folder.start(overwrite, upstream={"cache": prepared}):
        return out_dir
    remove_stale_temps(out_dir)  # temps of atomic writes (model.keras, history.csv, ...) a killed run left
    summary: dict[str, Any] = {}
    with AudioCache(prepared.file) as cache:
        prepared.check_file(cache.path, cache.config_hash)
        logger.info("pretrain on %s: %d tracks, task %s, %d labels, %d Hz", config.cache, cache.num_tracks,
                    cache.task, len(cache.label_names), cache.sample_rate)
        keras.utils.set_random_seed(config.seed)
        for scale in config.scales:
            with devices_lib.data_parallel(devices):
                metrics = _train_scale(config, scale, cache, pretrain_run.scale_dir(out_dir, scale), devices=devices,
                                       progress=progress, eval_batch_size=eval_batch_size, tensorboard=tensorboard,
                                       on_epoch_end=on_epoch_end)
            summary[scale] = {k: metrics.get(k) for k in ("num_params", "input_length", "epochs", "best_epoch",
                                                           "best_val_loss", "best_val_song_metric", "test",
                                                           "seconds", "segments_per_sec")}
    write_json(out_dir / "summary.json", summary)
    folder.finish({"scales": list(config.scales), "devices": devices.count})
    return out_dir
