"""The training loop of the pretrain stage: one SampleCNN per scale, on random crops of an audio cache.

``msagg.stages.pretrain`` checks the config and the run folder, then hands the run to ``train_scales``.
The input is ``msagg.stages.training.crops``, validation and test scoring
``msagg.stages.training.evaluation``, the per-epoch records (history.csv, TensorBoard scalars,
curves.png) ``msagg.stages.training.log``, the per-epoch checkpoint ``msagg.stages.training.checkpoint``.

Resuming is deterministic: a run killed at any point and resumed ends with the same weights,
history and best epoch as one never interrupted. Each epoch ends with one checkpoint folder,
committed by a single rename, that holds the model with its optimizer, the best model so far, the
loop state and every random state training draws from (``checkpoint.rng_state``); a resumed run restores the
epoch's other files (model.keras, history.csv, curves.png) from it and replays the epoch it lost.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
import time
import zlib
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from msagg.models import sample_cnn, specs
from msagg.stages.runs import pretrain_run
from msagg.stages.runs.pretrain_run import load_model, mark_scale_done, save_model, write_scale_metrics
from msagg.stages.songs.metrics import PRIMARY
from msagg.stages.training import MIN_VAL_LOSS_IMPROVEMENT, PretrainError, learning_check
from msagg.stages.training import checkpoint, crops
from msagg.stages.training import targets as targets_lib
from msagg.stages.training import devices as devices_lib
from msagg.stages.training import log as training_log
from msagg.stages.training.crops import CropSequence
from msagg.stages.training.evaluation import predict_segments, segment_loss, song_metrics, song_predictions

logger = logging.getLogger(__name__)

SUMMARY_KEYS = ("num_params", "input_length", "epochs", "best_epoch", "best_val_loss", "best_val_song_metric",
                "learned", "val_loss_improvement", "test", "seconds", "segments_per_sec")
"""What summary.json keeps of each scale's metrics."""


def resolve_devices(config: Any) -> devices_lib.Devices:
    """The devices ``config.devices`` names on this machine, checked against ``config.batch_size``.

    Raises:
        DevicesError: More devices than the machine has (naming those it has), or several on a
            backend without data parallelism.
        ConfigError: If ``devices="all"`` finds a device count that does not divide ``batch_size``.
    """
    devices = devices_lib.resolve(config.devices)
    devices_lib.check_batch(config.batch_size, devices.count)
    return devices


def train_scales(config: Any, cache, out_dir: Path, *, devices: devices_lib.Devices, progress: bool,
                 eval_batch_size: int, tensorboard: bool,
                 on_epoch_end: Callable[[str, dict], None] | None, targets=None) -> dict[str, dict]:
    """Trains (or resumes, or skips) every scale of ``config`` into ``out_dir/<scale>/``.

    ``targets`` (``msagg.stages.training.targets``) is what the models fit; None: the cache's labels.

    Returns:
        Scale -> the ``SUMMARY_KEYS`` of its metrics.json.
    """
    summary: dict[str, dict] = {}
    targets = targets if targets is not None else targets_lib.DatasetTargets(cache)
    keras.utils.set_random_seed(config.seed)
    for scale in config.scales:
        with devices_lib.data_parallel(devices):
            metrics = _train_scale(config, scale, cache, targets, pretrain_run.scale_dir(out_dir, scale), devices=devices,
                                   progress=progress, eval_batch_size=eval_batch_size, tensorboard=tensorboard,
                                   on_epoch_end=on_epoch_end)
        summary[scale] = {k: metrics.get(k) for k in SUMMARY_KEYS}
    return summary


# ---------------------------------------------------------------------------------------------
# Models and files


def _dtype(config: Any) -> str | None:
    """The Keras dtype policy the models are built with (None for float32: the builder's default)."""
    return specs.build_dtype(config.precision)


def _build(config: Any, scale: str, num_labels: int, task: str) -> keras.Model:
    """The uncompiled SampleCNN of ``config`` at ``scale`` (its block type, head and precision)."""
    return sample_cnn.build_sample_cnn(scale, num_labels, task, width=config.width, block=config.block,
                                       multi=config.multi, dtype=_dtype(config))


FEATURES_HEAD = "teacher_features"
"""The linear layer that fits the teacher's features (a training model's second output; never saved in model.keras)."""


def _with_features_head(model: keras.Model, num_features: int) -> keras.Model:
    """The training model that also fits teacher features: the SampleCNN's output, and a linear layer
    beside its output layer (reading what the output layer reads) with ``num_features`` outputs."""
    hidden = model.get_layer("output").input
    head = keras.layers.Dense(num_features, name=FEATURES_HEAD, dtype="float32")(hidden)
    return keras.Model(model.inputs, [model.outputs[0], head], name=model.name)


def _tags_view(model: keras.Model) -> keras.Model:
    """The SampleCNN inside a training model (the model itself without a features head); shares its weights."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=model.name)


def _compile(model: keras.Model, task: str, learning_rate: float, features_weight: float = 0.0) -> None:
    # A fresh optimizer at every learning-rate stage resets the momentum, as the authors'
    # recompile did.
    optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, nesterov=True)
    loss = "binary_crossentropy" if task == "tags" else "categorical_crossentropy"
    if len(model.outputs) > 1:  # the teacher's features, beside the labels: mean squared error, weighted
        model.compile(optimizer=optimizer, loss=[loss, "mean_squared_error"], loss_weights=[1.0, features_weight])
    else:
        model.compile(optimizer=optimizer, loss=loss)
    # Built now, so that a checkpoint written before the next step holds the full optimizer.
    optimizer.build(model.trainable_variables)


def _scale_seed(seed: int, scale: str) -> int:
    """A per-scale seed that does not depend on which other scales run."""
    return (seed * 1_000_003 + zlib.crc32(scale.encode())) % (2**31 - 1)


# ---------------------------------------------------------------------------------------------
# Training


def _validation_tracks(config: Any, cache) -> np.ndarray:
    valid = np.asarray(cache.indices("valid"), dtype=np.int64)
    if config.val_max_tracks is not None and valid.size > config.val_max_tracks:
        rng = np.random.default_rng([config.seed, 7])
        valid = np.sort(rng.choice(valid, size=config.val_max_tracks, replace=False))
    return valid


def _fresh_state(config: Any) -> dict[str, Any]:
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
    config: Any,
    scale: str,
    cache,
    targets,
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

    task, num_labels = targets.task, len(targets.label_names)
    train = np.asarray(cache.indices("train"), dtype=np.int64)
    valid = _validation_tracks(config, cache)
    if train.size == 0 or valid.size == 0:
        raise PretrainError(f"{config.cache}: pretraining needs train and valid tracks; the cache has "
                            f"{train.size} train and {valid.size} valid tracks")
    valid_songs = targets_lib.song_metric_labels(targets, targets.songs(valid))
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
        if len(model.outputs) != (2 if targets.num_features else 1):
            raise PretrainError(f"{resume_from}: this checkpoint was trained with{'out' if targets.num_features else ''} "
                                "teacher features; resume with the config that wrote it")
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
        if targets.num_features:
            model = _with_features_head(model, targets.num_features)
        _compile(model, task, config.learning_rate, config.teacher_features)
        state = _fresh_state(config)
    tags_model = _tags_view(model)  # what validation scores and model.keras keeps
    num_params = int(sum(np.prod(w.shape) for w in tags_model.trainable_weights))
    if targets.num_features:
        logger.info("%s: fitting the teacher's %d features too (a linear head, mean squared error, weight %g)",
                    scale, targets.num_features, config.teacher_features)
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
    sequence = CropSequence(cache, train, input_length, local_batch, steps, seed=crop_seed, augment=augment,
                            targets=targets)
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
            seg_preds = predict_segments(tags_model, cache, valid, input_length, eval_batch_size)
            val_loss = segment_loss(task, [targets.segments(t, len(p), input_length) for t, p in zip(valid, seg_preds)],
                                    seg_preds)
            val_metric = song_metrics(task, valid_songs, song_predictions(seg_preds))[PRIMARY[task]]
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
                best_holder.set_weights(tags_model.get_weights())
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
                        tags_model.set_weights(load_model(best_path).get_weights())
                    _compile(model, task, state["lr"], config.teacher_features)
                    logger.info("%s: lr stage %d, best weights reloaded, lr %.3g", scale,
                                state["lr_stage"] + 1, state["lr"])
            rng = checkpoint.rng_state(model)  # the next epoch starts from it, killed here or not
            checkpoint.write_checkpoint(ckpt, model, state, rng, best_path)
            if on_epoch_end is not None:
                on_epoch_end(scale, dict(row))
    finally:
        scalars.close()

    metrics = _finish_scale(config, scale, cache, targets, folder, state, num_params, eval_batch_size, devices)
    write_scale_metrics(folder, metrics)
    mark_scale_done(folder, {"scale": scale, "best_epoch": state["best_epoch"]})
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics


def _finish_scale(config: Any, scale: str, cache, targets, folder: Path, state: dict, num_params: int,
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
        test_metrics = song_metrics(targets.task, targets_lib.song_metric_labels(targets, targets.songs(test)),
                                    song_predictions(seg_preds))
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
        "task": targets.task,
        "label_names": list(targets.label_names),
        "width": config.width,
        "block": config.block,
        "multi": config.multi,
        "num_params": num_params,
        "epochs": state["epoch"],
        "best_epoch": state["best_epoch"],
        "best_val_loss": state["best_val_loss"],
        "song_metric": PRIMARY[targets.task],
        "best_val_song_metric": best_row.get("val_song_metric"),
        **learning_check(history),
        "num_test_tracks": int(test.size),
        "test": test_metrics,
        "seconds": round(seconds, 1),
        "segments_per_sec": round(float(np.mean(rates)), 2) if rates else None,
        "precision": config.precision,
        "devices": devices.describe(),
    }
    logger.info("%s: test %s", scale, json.dumps(test_metrics))
    if metrics["learned"] is False:
        logger.warning("%s did not learn: its best validation loss %.4f (epoch %s) is %.1f%% below its first "
                       "epoch's %.4f, less than the %.0f%% that counts as learning; its scores and features are "
                       "no better than an untrained model's (a higher learning_rate, more epochs or a dataset "
                       "with learnable labels may help)", scale, state["best_val_loss"], state["best_epoch"],
                       100 * metrics["val_loss_improvement"], metrics["first_val_loss"],
                       100 * MIN_VAL_LOSS_IMPROVEMENT)
    return metrics
