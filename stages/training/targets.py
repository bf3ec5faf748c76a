"""What pretrain fits a crop to: the cache's own labels, or a teacher's tag probabilities (soft targets).

``DatasetTargets``: every crop of a track carries the track's labels (the paper's recipe).
``TeacherTargets``: the probabilities ``msagg teach`` stored per 3-s patch, in one vocabulary, either
*aligned* (a crop's target is the mean of the patches it overlaps, weighted by the overlap) or *song*
(every crop of a track carries the track's mean over its patches). Both answer the same three
questions, so the training input (``crops``) and validation (``fit``) do not care which is in force.

With ``features`` on, ``TeacherTargets`` also gives each training crop the teacher's own view of the
time it covers (``crop_targets``: the tags, then the stored per-patch features standardized per
dimension over the corpus, weighted alike in one pass), which pretrain fits with a second, linear
head (mean squared error): the student learns to see a patch as the teacher does, not only to name
its tags. ``num_features`` is 0 where no features are fitted.

numpy only: no backend here.
"""

from __future__ import annotations

import numpy as np

from msagg.data.formats.teacher_labels import TeacherLabels, TeacherLabelsError

TARGETS = ("aligned", "song")
"""How teacher probabilities become a crop's target (``TeacherTargets``)."""


class DatasetTargets:
    """The cache's labels: a crop, a segment and a song all carry their track's labels."""

    def __init__(self, cache):
        self.task = cache.task
        self.label_names = [str(n) for n in cache.label_names]
        self.soft = False
        self.num_features = 0
        self._labels = np.asarray(cache.labels).astype(np.float32).reshape(cache.num_tracks, -1)

    def crops(self, tracks: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """Targets of crops ``[starts, starts + length)`` of ``tracks`` (cache indices): float32 (batch, labels)."""
        return self._labels[np.asarray(tracks, dtype=np.int64)]

    def segments(self, track: int, num_segments: int, length: int) -> np.ndarray:
        """Targets of a track's consecutive segments (those ``evaluation.predict_segments`` scores)."""
        return np.repeat(self._labels[int(track)][None], num_segments, axis=0)

    def songs(self, tracks: np.ndarray) -> np.ndarray:
        """Song-level targets: float32 (num_tracks, labels)."""
        return self._labels[np.asarray(tracks, dtype=np.int64)]

    crop_targets = crops
    """What a training crop fits (``TeacherTargets.crop_targets``): here its labels."""


class TeacherTargets:
    """A teacher's tag probabilities as soft targets (a tags task: sigmoid outputs, binary cross-entropy).

    Args:
        labels: The labels file (``TeacherLabels``) of this cache.
        cache: The open ``AudioCache`` it labels.
        vocabulary: "MTT", "MSD" or "both" (``TeacherLabels.vocabulary``).
        targets: "aligned" or "song" (module docstring).
        features: Also give each training crop the teacher's features (``crop_targets``).

    Raises:
        TeacherLabelsError: If the file labels another cache, or lacks the vocabulary, or (with
            ``features``) holds no features.
    """

    def __init__(self, labels: TeacherLabels, cache, vocabulary: str, targets: str, features: bool = False):
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {', '.join(TARGETS)}, got {targets!r}")
        if labels.cache_config_hash != cache.config_hash or labels.track_ids != [str(t) for t in cache.track_ids]:
            raise TeacherLabelsError(f"{labels.path}: these teacher labels belong to another cache (prepare config "
                                     f"{labels.cache_config_hash}, this cache {cache.config_hash}); run msagg teach "
                                     "on this cache")
        self.task = "tags"
        self.soft = True
        self.aligned = targets == "aligned"
        self.label_names, matrix = labels.vocabulary(vocabulary)
        probs = labels.probs @ matrix
        fill = np.full(len(self.label_names), 0.5, np.float32)  # a track without a whole patch: no opinion
        self._tags = _by_track(probs, labels.offsets, fill)
        self._patch = labels.patch_seconds * cache.sample_rate
        self._hop = labels.hop_seconds * cache.sample_rate
        self.num_features = 0
        self._joined = self._tags  # what ``crop_targets`` weighs: the tags, then the features, side by side
        if features:
            if labels.features is None:
                raise TeacherLabelsError(f"{labels.path}: holds no teacher features; run msagg teach with "
                                         "--set features=true")
            feats = labels.features.astype(np.float32)
            mean, std = feats.mean(axis=0), feats.std(axis=0)
            feats = (feats - mean) / np.where(std > 1e-6, std, 1.0)  # a dimension the teacher never varies: 0
            self.num_features = int(feats.shape[1])
            self._joined = _by_track(np.concatenate([probs, feats], axis=1), labels.offsets,
                                     np.concatenate([fill, np.zeros(self.num_features, np.float32)]))

    def _span(self, by_track, track: int, start: float, length: int) -> np.ndarray:
        per_track, song = by_track
        patches = per_track[track]
        if not self.aligned or len(patches) == 0:
            return song[track]
        begins = np.arange(len(patches)) * self._hop
        overlap = np.clip(np.minimum(begins + self._patch, start + length) - np.maximum(begins, start), 0, None)
        if overlap.sum() <= 0:  # past the last whole patch (musicnn drops a track's tail): the nearest one
            nearest = int(np.argmin(np.abs(begins + self._patch / 2 - (start + length / 2))))
            return patches[nearest]
        return (overlap[:, None] * patches).sum(axis=0) / overlap.sum()

    def _spans(self, by_track, tracks: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        return np.stack([self._span(by_track, int(t), float(s), length) for t, s in zip(tracks, starts)]
                        ).astype(np.float32)

    def crops(self, tracks: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        return self._spans(self._tags, tracks, starts, length)

    def crop_targets(self, tracks: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """What a training crop fits: ``crops``, then (with ``features``) the teacher's standardized
        features of the same time, side by side, in one pass: float32 (batch, tags + num_features)."""
        return self._spans(self._joined, tracks, starts, length)

    def crop_features(self, tracks: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
        """The teacher's standardized features of crops, as ``crops`` weighs patches: float32 (batch, num_features)."""
        if not self.num_features:
            raise ValueError("these targets hold no teacher features")
        return self.crop_targets(tracks, starts, length)[:, len(self.label_names):]

    def segments(self, track: int, num_segments: int, length: int) -> np.ndarray:
        return self.crops(np.full(num_segments, track), np.arange(num_segments) * length, length)

    def songs(self, tracks: np.ndarray) -> np.ndarray:
        return self._tags[1][np.asarray(tracks, dtype=np.int64)]


def _by_track(rows: np.ndarray, offsets: np.ndarray, fill: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
    """Per-patch rows cut per track, and each track's mean row (``fill`` for a track without patches)."""
    per_track = [rows[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    song = np.stack([p.mean(axis=0) if len(p) else fill for p in per_track]).astype(np.float32)
    return per_track, song


def song_metric_labels(targets, song_targets: np.ndarray) -> np.ndarray:
    """The labels song-level ROC-AUC is scored against: the targets, soft ones split at each tag's median.

    With soft targets, the score says how well the model ranks the songs as the teacher does: a tag's
    songs above its median over the scored songs count as positives (a tag the teacher gives every
    song alike has no positives and is left out).
    """
    if not targets.soft:
        return song_targets
    return (song_targets > np.median(song_targets, axis=0, keepdims=True)).astype(np.uint8)
