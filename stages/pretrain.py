"""Pretrain stage: one SampleCNN per m^n scale, trained on random crops of an audio cache."""

from __future__ import annotations

import csv
import dataclasses
import io
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

from data import segments as segments_lib
from data.atomic import atomic_write, write_json, write_text
from data.cache import AudioCache
from models import sample_cnn
from stages.checks import check_int, check_number
from stages.metrics import METRICS, PRIMARY, score
from stages.runfolder import RunFolder

logger = logging.getLogger(__name__)

HISTORY_FIELDS = ("epoch", "lr_stage", "lr", "loss", "val_loss", "val_song_metric", "seconds", "segments_per_sec")
"""Columns of ``<scale>/history.csv``, one row per epoch (epoch counts from 1, lr_stage from 0;
loss is the epoch's mean training loss, segments_per_sec the training throughput; val_song_metric
is ``stages.metrics.PRIMARY[task]``: ROC-AUC for tags, accuracy for classes)."""

_EPS = 1e-7  # Keras' probability clip in its cross-entropy losses.


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What the pretrain stage trains. Defaults are the authors' recipe.

    Attributes:
        cache: A prepare run folder holding ``cache.h5``.
        scales: Scale keys to train, e.g. ("3^8", "3^9"); "3x9" and "3**9" are normalized.
        width: Multiplier on every layer's filters (1.0 = the paper).
        batch_size: Segments per training step.
        learning_rate: SGD learning rate of the first learning-rate stage.
        lr_decay: Factor on the learning rate from one stage to the next.
        num_lr_stages: Learning-rate stages (0.01 to 0.000016 with the defaults).
        patience: Epochs without a lower validation loss that end a stage.
        max_epochs_per_stage: Cap on the epochs of one stage (None: only patience ends it).
        steps_per_epoch: Training steps per epoch (None: one pass over the train split's
            segments at that scale, i.e. ceil(num_train_segments / batch_size)).
        val_max_tracks: Validate on at most this many valid tracks (a seeded subset; None: all).
        seed: Seed of weight initialization, dropout and crop sampling.
    """

    cache: str
    scales: tuple[str, ...] = sample_cnn.PAPER_SCALES
    width: float = 1.0
    batch_size: int = 23
    learning_rate: float = 0.01
    lr_decay: float = 0.2
    num_lr_stages: int = 5
    patience: int = 3
    max_epochs_per_stage: int | None = None
    steps_per_epoch: int | None = None
    val_max_tracks: int | None = None
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.cache, os.PathLike):
            object.__setattr__(self, "cache", os.fspath(self.cache))
        if not isinstance(self.cache, str) or not self.cache:
            raise ValueError(f"cache must be a prepare run folder, got {self.cache!r}")
        scales = (self.scales,) if isinstance(self.scales, str) else self.scales
        if not scales:
            raise ValueError("scales must name at least one scale, got an empty list")
        normalized = tuple(sample_cnn.parse_scale(str(s)) for s in scales)
        duplicates = sorted({s for s in normalized if normalized.count(s) > 1})
        if duplicates:
            raise ValueError(f"scales lists {', '.join(duplicates)} more than once")
        object.__setattr__(self, "scales", normalized)
        check_number("width", self.width, low=0.0, low_open=True)
        check_number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_number("lr_decay", self.lr_decay, low=0.0, low_open=True, high=1.0)
        for name in ("batch_size", "num_lr_stages", "patience"):
            check_int(name, getattr(self, name), low=1)
        for name in ("max_epochs_per_stage", "steps_per_epoch", "val_max_tracks"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)
        check_int("seed", self.seed, low=0)


PRESETS: dict[str, dict[str, Any]] = {
    # The authors' recipe for all eight scales at full width: days on a GPU.
    "paper": {"scales": sample_cnn.PAPER_SCALES, "width": 1.0},
    # Three quarter-width scales (two at m=3, so the multi-scale 3^8+3^9 combination exists, and
    # one at m=4), three learning-rate stages of at most 4 epochs of 40 steps: about 4-5 minutes on
    # 2 CPU cores for 300 synth tracks. So short a schedule learns little at lr 0.01; 0.05 learned
    # the most of 0.01-0.2 on synth-tags (0.1 was as good for 3^8 and 4^6 but unstable for 3^9).
    "demo": {
        "scales": ("3^8", "3^9", "4^6"),
        "width": 0.25,
        "learning_rate": 0.05,
        "num_lr_stages": 3,
        "patience": 3,
        "max_epochs_per_stage": 4,
        "steps_per_epoch": 40,
        "val_max_tracks": 60,
    },
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


class CropSequence(keras.utils.PyDataset):
    """Batches of random segment crops of a cache's tracks, read straight from the cache.

    Each batch draws ``batch_size`` tracks uniformly (with replacement) and one uniformly placed
    crop of ``input_length`` samples from each; a track shorter than a segment is zero-padded.
    Batch ``index`` of epoch ``epoch`` depends only on (seed, epoch, index), so an epoch is the same
    whether or not the run was interrupted before it.

    Args:
        cache: An open ``data.cache.AudioCache``.
        indices: Track indices to sample from (e.g. ``cache.indices("train")``).
        input_length: Samples per crop (the model's input length).
        batch_size: Crops per batch.
        steps: Batches per epoch.
        seed: Base seed.
        epoch: The epoch the next pass belongs to; ``on_epoch_end`` advances it.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` of ``PyDataset``.

    Each item is ``(x, y)``: x float32 (batch_size, input_length) waveforms, y float32
    (batch_size, num_labels) labels.
    """

    def __init__(self, cache, indices, input_length: int, batch_size: int, steps: int, seed: int = 0,
                 epoch: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.cache = cache
        self.indices = np.asarray(indices, dtype=np.int64)
        if self.indices.size == 0:
            raise ValueError("CropSequence needs at least one track")
        if input_length < 1 or batch_size < 1 or steps < 1:
            raise ValueError(f"input_length, batch_size and steps must be >= 1, got {input_length}, "
                             f"{batch_size}, {steps}")
        self.input_length = int(input_length)
        self.batch_size = int(batch_size)
        self.steps = int(steps)
        self.seed = int(seed)
        self.epoch = int(epoch)
        self.lengths = np.asarray(cache.lengths, dtype=np.int64)[self.indices]
        self.labels = np.asarray(cache.labels)[self.indices].astype(np.float32)  # (tracks, labels)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} out of range (0..{self.steps - 1})")
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        picks = rng.integers(0, self.indices.size, size=self.batch_size)
        x = np.empty((self.batch_size, self.input_length), dtype=np.float32)
        for row, pick in enumerate(picks):
            room = max(int(self.lengths[pick]) - self.input_length, 0)
            start = int(rng.integers(0, room + 1))
            x[row] = self.cache.crop(int(self.indices[pick]), start, self.input_length)
        return x, self.labels[picks]

    def on_epoch_end(self) -> None:
        self.epoch += 1


# ---------------------------------------------------------------------------------------------
# Models and files


def load_model(path: str | os.PathLike) -> keras.Model:
    """Loads a ``.keras`` model written by this stage (``safe_mode=True``).

    Raises:
        ValueError: If the file does not exist, naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    return keras.saving.load_model(path, safe_mode=True)


def _save_model(model: keras.Model, path: Path) -> None:
    """Saves the whole model atomically."""
    with atomic_write(path) as tmp:
        model.save(tmp)


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


def _write_history(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in HISTORY_FIELDS})
    write_text(path, buf.getvalue())


class _ScalarLog:
    """TensorBoard scalars through tf.summary, when TensorFlow is importable; otherwise nothing."""

    def __init__(self, folder: Path, enabled: bool = True):
        self._writer = None
        if not enabled:
            return
        try:
            import tensorflow as tf
        except ImportError:
            logger.info("TensorFlow is not importable: no TensorBoard logs in %s", folder)
            return
        if keras.backend.backend() != "tensorflow":
            # Keep TensorFlow off the GPU that the JAX (or torch) backend is using.
            try:
                tf.config.set_visible_devices([], "GPU")
            except (RuntimeError, ValueError):
                pass
        # tf.summary.scalar needs the tensorboard package; the low-level write with the scalars
        # plugin's metadata writes the same events without it.
        from tensorflow.core.framework import summary_pb2

        self._metadata = summary_pb2.SummaryMetadata()
        self._metadata.plugin_data.plugin_name = "scalars"
        self._metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(folder))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            for key, value in scalars.items():
                if value is not None and math.isfinite(value):
                    tf.summary.write(key, tf.constant(value, tf.float32), step=step, metadata=self._metadata)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


# ---------------------------------------------------------------------------------------------
# Evaluation


def predict_segments(model: keras.Model, cache, indices, input_length: int, batch_size: int = 32) -> list[np.ndarray]:
    """Predictions for every non-overlapping segment of each track.

    Batches always hold ``batch_size`` rows (the last one zero-padded) so that compiled
    prediction functions see one shape.

    Args:
        model: A SampleCNN (inference mode is used).
        cache: An open ``AudioCache``.
        indices: Track indices.
        input_length: The model's input length, samples.
        batch_size: Segments per forward pass.

    Returns:
        One float32 (num_segments, num_labels) array per track, in the order of ``indices``.
    """
    indices = [int(i) for i in indices]
    out: list[list[np.ndarray]] = [[] for _ in indices]
    buf = np.zeros((batch_size, input_length), dtype=np.float32)
    owners: list[int] = []

    def flush():
        preds = np.asarray(model.predict_on_batch(buf), dtype=np.float32)
        for owner, pred in zip(owners, preds):
            out[owner].append(pred)
        owners.clear()

    for pos, index in enumerate(indices):
        for seg in segments_lib.segment(cache.track(index), input_length):
            buf[len(owners)] = seg
            owners.append(pos)
            if len(owners) == batch_size:
                flush()
    if owners:
        buf[len(owners):] = 0.0
        flush()
    return [np.stack(rows) for rows in out]


def segment_loss(task: str, labels: np.ndarray, seg_preds: list[np.ndarray]) -> float:
    """Mean training loss over all segments (each segment carries its track's labels)."""
    y = np.concatenate([np.repeat(labels[i : i + 1], len(p), axis=0) for i, p in enumerate(seg_preds)])
    p = np.clip(np.concatenate(seg_preds).astype(np.float64), _EPS, 1.0 - _EPS)
    y = y.astype(np.float64)
    if task == "tags":
        per_segment = -np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p), axis=1)
    else:
        p = p / p.sum(axis=1, keepdims=True)
        per_segment = -np.sum(y * np.log(p), axis=1)
    return float(np.mean(per_segment))


def song_predictions(seg_preds: list[np.ndarray]) -> np.ndarray:
    """A song's prediction is the mean of its segments' predictions: (num_tracks, num_labels)."""
    return np.stack([p.mean(axis=0) for p in seg_preds])


def song_metrics(task: str, labels: np.ndarray, song_preds: np.ndarray) -> dict[str, Any]:
    """Song-level metrics of the end-to-end model (``stages.metrics.score`` without per-label detail).

    Returns:
        tags: ``roc_auc``, ``pr_auc`` and ``num_labels_left_out``; classes: ``accuracy`` and
        ``macro_f1``. Metrics that cannot be computed are None; no tracks give ``{}``.
    """
    labels = np.asarray(labels)
    if labels.shape[0] == 0:
        return {}
    scores = score(task, labels, song_preds)
    out = {m: scores[m] for m in METRICS[task]}
    if task == "tags":
        out["num_labels_left_out"] = len(scores["left_out"])
    return out


# ---------------------------------------------------------------------------------------------
# Training


def _steps_per_epoch(config: Config, cache, train: np.ndarray, input_length: int) -> int:
    if config.steps_per_epoch is not None:
        return config.steps_per_epoch
    lengths = np.asarray(cache.lengths)[train]
    total = sum(segments_lib.num_segments(int(n), input_length) for n in lengths)
    return max(1, math.ceil(total / config.batch_size))


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
    progress: bool,
    eval_batch_size: int,
    tensorboard: bool,
    on_epoch_end: Callable[[str, dict], None] | None,
) -> dict[str, Any]:
    """Trains (or resumes, or skips) one scale; returns its metrics.json content."""
    spec = sample_cnn.get_spec(scale)
    input_length = spec.input_length
    metrics_path, done_path, ckpt = folder / "metrics.json", folder / "DONE", folder / "checkpoint"
    if done_path.is_file() and metrics_path.is_file():
        logger.info("%s: already trained; skipping", scale)
        shutil.rmtree(ckpt, ignore_errors=True)
        return json.loads(metrics_path.read_text())

    task, num_labels = cache.task, len(cache.label_names)
    train = np.asarray(cache.indices("train"), dtype=np.int64)
    valid = _validation_tracks(config, cache)
    if train.size == 0 or valid.size == 0:
        raise ValueError(f"{config.cache}: pretraining needs train and valid tracks; the cache has "
                         f"{train.size} train and {valid.size} valid tracks")
    valid_labels = np.asarray(cache.labels)[valid]
    steps = _steps_per_epoch(config, cache, train, input_length)
    seed = _scale_seed(config.seed, scale)
    folder.mkdir(parents=True, exist_ok=True)

    # The best model is kept uncompiled, so other stages load it without optimizer state.
    best_holder = sample_cnn.build_sample_cnn(scale, num_labels, task, width=config.width)
    if (ckpt / "state.json").is_file() and (ckpt / "last.keras").is_file():
        state = json.loads((ckpt / "state.json").read_text())
        model = load_model(ckpt / "last.keras")
        logger.info("%s: resuming after epoch %d (lr stage %d, lr %.3g)", scale, state["epoch"],
                    state["lr_stage"] + 1, state["lr"])
    else:
        keras.utils.set_random_seed(seed)
        model = sample_cnn.build_sample_cnn(scale, num_labels, task, width=config.width)
        _compile(model, task, config.learning_rate)
        state = _fresh_state(config)
    num_params = int(sum(np.prod(w.shape) for w in model.trainable_weights))
    logger.info("%s: %d trainable parameters, input %d samples (%.2f s), %d steps of %d per epoch",
                scale, num_params, input_length, input_length / cache.sample_rate, steps, config.batch_size)

    sequence = CropSequence(cache, train, input_length, config.batch_size, steps, seed=seed)
    scalars = _ScalarLog(folder / "tensorboard", enabled=tensorboard)
    try:
        while state["lr_stage"] < config.num_lr_stages:
            epoch = state["epoch"]
            sequence.epoch = epoch
            started = time.perf_counter()
            # A live bar on a terminal; in a log file one line per epoch rather than a redraw per step.
            verbose = (1 if sys.stdout.isatty() else 2) if progress else 0
            fitted = model.fit(sequence, epochs=epoch + 1, initial_epoch=epoch, verbose=verbose)
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
                _save_model(best_holder, folder / "model.keras")
            else:
                state["wait"] += 1
            state["history"].append(row)
            _write_history(folder / "history.csv", state["history"])
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
                    if (folder / "model.keras").is_file():
                        model.set_weights(load_model(folder / "model.keras").get_weights())
                    _compile(model, task, state["lr"])
                    logger.info("%s: lr stage %d, best weights reloaded, lr %.3g", scale,
                                state["lr_stage"] + 1, state["lr"])
            # state.json is written last: a run killed before it redoes this epoch. (A model.keras
            # saved above by such an epoch is then at worst better than the recorded best.)
            _save_model(model, ckpt / "last.keras")
            write_json(ckpt / "state.json", state)
            if on_epoch_end is not None:
                on_epoch_end(scale, dict(row))
    finally:
        scalars.close()

    metrics = _finish_scale(config, scale, cache, folder, state, num_params, eval_batch_size)
    write_json(metrics_path, metrics)
    write_json(done_path, {"scale": scale, "best_epoch": state["best_epoch"]})
    shutil.rmtree(ckpt, ignore_errors=True)
    return metrics


def _finish_scale(config: Config, scale: str, cache, folder: Path, state: dict, num_params: int,
                  eval_batch_size: int) -> dict[str, Any]:
    spec = sample_cnn.get_spec(scale)
    history = state["history"]
    if not (folder / "model.keras").is_file():
        raise RuntimeError(f"{scale}: no epoch reached a finite validation loss; training diverged")
    best = load_model(folder / "model.keras")
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
    }
    logger.info("%s: test %s", scale, json.dumps(test_metrics))
    return metrics


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
        out_dir: The run folder (``<scale>/`` subfolders, ``summary.json``).
        overwrite: Replace a folder that holds another config (or redo a finished one).
        progress: Keras progress bars per epoch.
        eval_batch_size: Segments per forward pass in validation and test.
        tensorboard: Write TensorBoard scalars (when TensorFlow is importable).
        on_epoch_end: Called as ``on_epoch_end(scale, history_row)`` after each epoch's
            checkpoint is written (a hook for tests and tools; an exception stops the run, which
            then resumes from that checkpoint).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        RunConflictError: If ``out_dir`` holds another config and ``overwrite`` is False.
        CacheError: If the cache is missing or of an unknown schema.
        ValueError: If the cache lacks train or valid tracks.
    """
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir, "pretrain", config, upstream={"cache": config.cache})
    if not folder.start(overwrite):
        return out_dir
    summary: dict[str, Any] = {}
    with AudioCache(config.cache) as cache:
        logger.info("pretrain on %s: %d tracks, task %s, %d labels, %d Hz", config.cache, cache.num_tracks,
                    cache.task, len(cache.label_names), cache.sample_rate)
        keras.utils.set_random_seed(config.seed)
        for scale in config.scales:
            metrics = _train_scale(config, scale, cache, out_dir / scale, progress=progress,
                                   eval_batch_size=eval_batch_size, tensorboard=tensorboard,
                                   on_epoch_end=on_epoch_end)
            summary[scale] = {k: metrics.get(k) for k in ("num_params", "input_length", "epochs", "best_epoch",
                                                           "best_val_loss", "best_val_song_metric", "test",
                                                           "seconds", "segments_per_sec")}
    write_json(out_dir / "summary.json", summary)
    folder.finish({"scales": list(config.scales)})
    return out_dir
