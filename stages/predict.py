"""Tag or classify new audio files with a finished pretrain run or classify run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from msagg.data.audio import AudioError, load
from msagg.data.segments import segment
from msagg.stages import quiet

logger = logging.getLogger(__name__)

BATCH_SIZE = 64
"""Segments per forward pass of the end-to-end models."""


def _load_all(paths: Sequence[str], sample_rate: int, min_samples: int,
              needed_by: str) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Decodes every file once; unreadable ones and those too short to score become error entries.

    A file shorter than ``min_samples`` (the longest input segment of the models that score it) is
    not scored: zero-padded to a segment, a clip of a few samples is mostly silence the models
    never saw in training, and they would give it confident scores that describe the padding.

    Args:
        paths: Audio files.
        sample_rate: The models' rate, Hz.
        min_samples: The fewest samples (at ``sample_rate``) a file may hold to be scored.
        needed_by: What needs them, for the message (e.g. "the 3^9 model's input").

    Returns:
        (waves: path -> float32 (num_samples,), errors: ``{"path", "error", "reason"}`` per file
        not scored; ``error`` is the reason after the file's name).
    """
    waves, errors = {}, []
    for path in paths:
        try:
            wave = load(path, sample_rate)
            if wave.shape[0] < min_samples:
                raise AudioError(path, f"too short to score: {_seconds(wave.shape[0], sample_rate)} long, at least "
                                       f"{_seconds(min_samples, sample_rate)} needed ({needed_by})")
            waves[path] = wave
        except AudioError as err:
            errors.append({"path": path, "error": str(err), "reason": err.reason})
    return waves, errors


def _seconds(num_samples: int, sample_rate: int) -> str:
    """"0.000454 s", "2.68 s": three significant digits, so a few samples never read as 0."""
    return f"{num_samples / sample_rate:.3g} s"


def _model_inputs(input_lengths: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """Scale -> (its input length in samples, what to call it in a message)."""
    return {scale: (int(n), f"the {scale} model's input") for scale, n in input_lengths.items()}


def _longest(needs: Mapping[str, tuple[int, str]]) -> tuple[int, str]:
    """The longest of the inputs ``_model_inputs`` describes (and any others): (samples, what needs them)."""
    return max(needs.values(), key=lambda need: need[0])


def _song_scores(model, waves: Sequence[np.ndarray], input_length: int, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """Per song, the mean over its segments of the model's outputs: float32 (len(waves), num_labels).

    The segments of all songs go through the model together, in batches of one fixed shape.
    """
    from msagg.stages.engines.taps import fixed_batches

    per_song = [segment(w, input_length) for w in waves]
    segments = np.concatenate(per_song)
    batch_size = min(batch_size, len(segments))
    outputs = np.concatenate([np.asarray(out)[:k] for k, out in
                              fixed_batches(model.predict_on_batch, segments, batch_size)])
    bounds = np.cumsum([len(s) for s in per_song])[:-1]
    return np.stack([part.mean(axis=0) for part in np.split(outputs, bounds)])


def predict_end_to_end(paths: Sequence[str], pretrain_dir: str | Path) -> list[dict]:
    """Scores files with every end-to-end SampleCNN of a pretrain run, averaged over scales.

    Args:
        paths: Audio files.
        pretrain_dir: A finished pretrain run folder.

    Returns:
        One dict per file, in order: ``{"path", "scores": {label: float}, "task", "models"}``, or
        ``{"path", "error", "reason"}`` for a file not scored: unreadable, or shorter than the
        longest input segment of the models (``error``: "<file>: <reason>").

    Raises:
        PretrainRunError: For an unfinished run or a missing or broken model file.
    """
    from msagg.stages.runs.pretrain_run import PretrainRun

    run = PretrainRun(pretrain_dir)
    quiet.import_backend()  # the run is checked; its models need the backend
    scales = run.select()
    first = run.metrics(scales[0])
    labels, task = first["label_names"], first["task"]
    needs = _model_inputs({s: run.input_length(s) for s in scales})
    waves, errors = _load_all(paths, run.sample_rate, *_longest(needs))
    totals = np.zeros((len(waves), len(labels)), np.float64)
    if waves:
        for scale in scales:
            totals += _song_scores(run.load(scale), list(waves.values()), run.input_length(scale))
    results = {
        path: {
            "path": path,
            "task": task,
            "models": scales,
            "scores": {name: round(float(s / len(scales)), 6) for name, s in zip(labels, total)},
        }
        for path, total in zip(waves, totals)
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

    Raises:
        PredictorError, PretrainRunError: For a run without saved classifiers, or whose pretrain
            run is gone, unfinished or changed.
    """
    from msagg.stages.songs.predictor import load_predictor

    predictor = load_predictor(classify_dir)
    quiet.import_backend()  # the run is checked; its models need the backend
    from msagg.stages.engines import taps

    pretrain = predictor.pretrain
    pretrain.check_sample_rate(predictor.sample_rate, f"the classifier's features ({classify_dir})",
                               predictor.scales)
    from msagg.data.classic import TEACHER_SETS, frame_length
    from msagg.stages.songs.featuresets import CLASSIC_KEY

    needs = _model_inputs({s: pretrain.input_length(s) for s in predictor.scales})
    needs.update({name: (frame_length(predictor.sample_rate), f"one {name} frame") for name in predictor.fs.classic
                  if name not in TEACHER_SETS})  # the teacher repeats a short song to fill its 3-s patch
    needs = needs or {"teacher": (1, "one sample")}
    waves, errors = _load_all(paths, predictor.sample_rate, *_longest(needs))
    results = {e["path"]: e for e in errors}
    if waves:
        features = (taps.song_features(list(waves.values()), pretrain, predictor.scales,
                                       song_pool=predictor.song_pool, precision=predictor.precision,
                                       segments=predictor.segments)
                    if predictor.scales else {})
        if predictor.fs.classic:
            features[CLASSIC_KEY] = {name: taps.reference_features(name, list(waves.values()), predictor.sample_rate)
                                     for name in predictor.fs.classic}
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
