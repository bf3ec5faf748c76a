"""Tag or classify new audio files with a finished pretrain run or classify run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from msagg.data.audio import AudioError, load
from msagg.data.errors import MsaggError
from msagg.stages import quiet
from msagg.stages.family import Family, Tags, seconds_text

logger = logging.getLogger(__name__)


class PredictError(MsaggError):
    """Options predict cannot honour together."""


BATCH_SIZE = 64
"""Segments per forward pass of the end-to-end models."""
FILES_PER_PASS = 32
"""Files decoded and scored together by a classify run's models (memory: these files' audio)."""


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
                raise AudioError(path, f"too short to score: {seconds_text(wave.shape[0], sample_rate)} long, at least "
                                       f"{seconds_text(min_samples, sample_rate)} needed ({needed_by})")
            waves[path] = wave
        except AudioError as err:
            errors.append({"path": path, "error": str(err), "reason": err.reason})
    return waves, errors


def _model_inputs(input_lengths: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """Scale -> (its input length in samples, what to call it in a message)."""
    return {scale: (int(n), f"the {scale} model's input") for scale, n in input_lengths.items()}


def _longest(needs: Mapping[str, tuple[int, str]]) -> tuple[int, str]:
    """The longest of the inputs ``_model_inputs`` describes (and any others): (samples, what needs them)."""
    return max(needs.values(), key=lambda need: need[0])


def predict_end_to_end(paths: Sequence[str], pretrain_dir: str | Path, *, over_time: bool = False,
                       progress: bool = False) -> list[dict]:
    """Scores files with every end-to-end SampleCNN of a pretrain run, averaged over scales.

    The models are loaded once; each file is decoded and scored block by block
    (``msagg.stages.family.Family.tag_file``), so memory grows neither with the number of files
    nor with their length.

    Args:
        paths: Audio files.
        pretrain_dir: A finished pretrain run folder (or "general").
        over_time: Also give the scores of consecutive windows (``Family.tag``'s ``over_time``).
        progress: Show a progress bar over the files (on a terminal).

    Returns:
        One dict per file, in order: ``{"path", "scores": {label: float}, "task", "models"}`` (and
        with ``over_time``, ``"over_time": {"window_sec", "times", "scores"}``: window starts in
        seconds and one list of scores per window, in ``scores``' label order), or
        ``{"path", "error", "reason"}`` for a file not scored: unreadable, or shorter than the
        longest input segment of the models (``error``: "<file>: <reason>").

    Raises:
        PretrainRunError: For an unfinished run or a missing or broken model file.
    """
    family = Family(pretrain_dir, batch_size=BATCH_SIZE)
    family.end_to_end_models()  # the run is checked; load its models before the first file
    results = []
    for path in _bar(paths, progress):
        try:
            tags = family.tag_file(path, over_time=over_time)
        except AudioError as err:
            results.append({"path": path, "error": str(err), "reason": err.reason})
            continue
        results.append({"path": path, "task": tags.task, "models": family.scales, **tag_fields(tags)})
    return results


def tag_fields(tags: Tags) -> dict:
    """``scores`` (and ``over_time``) of a result, rounded to 6 decimals."""
    out: dict = {"scores": {name: round(float(s), 6) for name, s in tags.scores.items()}}
    if tags.over_time is not None:
        out["over_time"] = {"window_sec": round(float(tags.window_sec), 6),
                            "times": [round(float(t), 6) for t in tags.times],
                            "scores": [[round(float(s), 6) for s in row] for row in tags.over_time]}
    return out


def _bar(paths: Sequence[str], progress: bool):
    """A progress bar over the files, shown on a terminal only when ``progress``."""
    from tqdm.auto import tqdm

    return tqdm(paths, desc="predict", unit="file", disable=None if progress else True, dynamic_ncols=True)


def predict_with_classifier(paths: Sequence[str], classify_dir: str | Path, *, progress: bool = False) -> list[dict]:
    """Scores files with a classify run: features from its models, then its saved classifier.

    The models are loaded once; files are decoded and scored ``FILES_PER_PASS`` at a time.

    Args:
        paths: Audio files.
        classify_dir: A finished classify run folder.
        progress: Show a progress bar over the files (on a terminal).

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
    models = (taps.load_tap_models(pretrain, predictor.scales, precision=predictor.precision)
              if predictor.scales else {})
    results: dict[str, dict] = {}
    bar = _bar(paths, progress)
    for lo in range(0, len(paths), FILES_PER_PASS):
        waves, errors = _load_all(paths[lo:lo + FILES_PER_PASS], predictor.sample_rate, *_longest(needs))
        results.update({e["path"]: e for e in errors})
        if waves:
            features = (taps.pooled_features(list(waves.values()), models, song_pool=predictor.song_pool,
                                             segments=predictor.segments) if models else {})
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
        bar.update(len(paths[lo:lo + FILES_PER_PASS]))
    bar.close()
    return [results[p] for p in paths]


def predict_files(paths: Sequence[str], *, pretrain: str | None = None, classify: str | None = None,
                  over_time: bool = False, progress: bool = False) -> list[dict]:
    """Dispatches to the end-to-end models (``pretrain``) or the extract + classifier chain.

    Raises:
        PredictError: For ``over_time`` with a classify run (its classifier scores whole songs).
    """
    if pretrain:
        return predict_end_to_end(paths, pretrain, over_time=over_time, progress=progress)
    if over_time:
        raise PredictError("scores over time come from the end-to-end models: use --pretrain RUN, not --classify "
                           "(a classify run's classifier scores whole songs)")
    return predict_with_classifier(paths, classify, progress=progress)
