"""Tag or classify new audio files with a finished pretrain run or classify run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from data.audio import AudioError, load
from data.segments import segment

logger = logging.getLogger(__name__)


def _segment_scores(model, wave: np.ndarray, input_length: int, batch_size: int = 64) -> np.ndarray:
    """Mean over a song's segments of the model's outputs: float32 (num_labels,)."""
    segments = segment(wave, input_length)
    outputs = [np.asarray(model.predict_on_batch(segments[i : i + batch_size])) for i in range(0, len(segments), batch_size)]
    return np.concatenate(outputs).mean(axis=0)


def _load_all(paths: Sequence[str], sample_rate: int) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Decodes every file once; unreadable ones become error entries."""
    waves, errors = {}, []
    for path in paths:
        try:
            waves[path] = load(path, sample_rate)
        except AudioError as err:
            errors.append({"path": path, "error": str(err)})
    return waves, errors


def predict_end_to_end(paths: Sequence[str], pretrain_dir: str | Path) -> list[dict]:
    """Scores files with every end-to-end SampleCNN of a pretrain run, averaged over scales.

    Args:
        paths: Audio files.
        pretrain_dir: A finished pretrain run folder.

    Returns:
        One dict per file, in order: ``{"path", "scores": {label: float}, "task", "models"}`` or
        ``{"path", "error"}`` for a file that could not be read.
    """
    from stages.extract import pretrain_scales, read_metrics
    from stages.pretrain import load_model

    pretrain_dir = Path(pretrain_dir)
    scales = pretrain_scales(pretrain_dir)
    infos = [read_metrics(pretrain_dir / scale / "metrics.json") for scale in scales]
    sample_rate, labels, task = infos[0]["sample_rate"], infos[0]["label_names"], infos[0]["task"]
    waves, errors = _load_all(paths, sample_rate)
    totals = {path: np.zeros(len(labels), np.float64) for path in waves}
    for scale, info in zip(scales, infos):
        model = load_model(pretrain_dir / scale / "model.keras")
        for path, wave in waves.items():
            totals[path] += _segment_scores(model, wave, info["input_length"])
    results = {
        path: {
            "path": path,
            "task": task,
            "models": scales,
            "scores": {name: round(float(s / len(scales)), 6) for name, s in zip(labels, total)},
        }
        for path, total in totals.items()
    }
    results.update({e["path"]: e for e in errors})
    return [results[p] for p in paths]


def predict_with_classifier(paths: Sequence[str], classify_dir: str | Path) -> list[dict]:
    """Scores files with a classify run: features from its models, then its saved classifier.

    Args:
        paths: Audio files.
        classify_dir: A finished classify run folder.

    Returns:
        As ``predict_end_to_end``, with ``"feature_set"`` naming the classifier's input.
    """
    from stages import extract
    from stages.predictor import load_predictor

    classify_dir = Path(classify_dir)
    predictor = load_predictor(classify_dir)
    sample_rate = predictor.sample_rate
    waves, errors = _load_all(paths, sample_rate)
    results = {e["path"]: e for e in errors}
    if waves:
        features = extract.song_features(list(waves.values()), predictor.pretrain_dir, predictor.scales,
                                         song_pool=predictor.song_pool)
        scores = predictor.predict(features)
        for row, path in enumerate(waves):
            results[path] = {
                "path": path,
                "task": predictor.task,
                "feature_set": predictor.feature_set,
                "scores": {name: round(float(s), 6) for name, s in zip(predictor.label_names, scores[row])},
            }
    return [results[p] for p in paths]


def predict_files(paths: Sequence[str], *, pretrain: str | None = None, classify: str | None = None) -> list[dict]:
    """Dispatches to the end-to-end models (``pretrain``) or the extract + classifier chain."""
    if pretrain:
        return predict_end_to_end(paths, pretrain)
    return predict_with_classifier(paths, classify)
