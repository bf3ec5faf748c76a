"""Song-level evaluation of an end-to-end SampleCNN: segment predictions, loss, song metrics."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from msagg.data import segments as segments_lib
from msagg.stages.songs.metrics import METRICS, score

_EPS = 1e-7  # Keras' probability clip in its cross-entropy losses.


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


def segment_loss(task: str, labels, seg_preds: list[np.ndarray]) -> float:
    """Mean training loss over all segments.

    Args:
        labels: (num_tracks, num_labels), each segment carrying its track's labels; or one
            (num_segments, num_labels) array of targets per track (teacher targets aligned in time).
    """
    if isinstance(labels, list):
        y = np.concatenate(labels)
    else:
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
    """Song-level metrics of the end-to-end model (``msagg.stages.songs.metrics.score`` without per-label detail).

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
