"""The training input of pretrain: random segment crops read straight from an audio cache, augmented.

Only numpy, soxr and ``keras.utils.PyDataset`` here, no ``tf.*``: the same input path feeds the
TensorFlow and the JAX backends.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from msagg.data import segments as segments_lib
from msagg.stages.training import augment as augment_lib
from msagg.stages.training import targets as targets_lib

AUGMENT_STREAM = 0x617567
"""Appended to (seed, epoch, index) to seed a batch's augmentation draws: a stream apart from the
crop draws, so that with augmentation off the crops are those of msagg without it."""


class CropSequence(keras.utils.PyDataset):
    """Batches of random segment crops of a cache's tracks, read straight from the cache.

    Each batch draws ``batch_size`` tracks uniformly (with replacement) and one uniformly placed
    crop of ``input_length`` samples from each; a track shorter than a segment is zero-padded.
    Batch ``index`` of epoch ``epoch`` depends only on (seed, epoch, index), so an epoch is the same
    whether or not the run was interrupted before it. With ``augment`` on, the crops are augmented
    (``msagg.stages.training.augment``) with draws from a second generator seeded by (seed, epoch, index,
    ``AUGMENT_STREAM``); the track and crop draws stay those of the unaugmented batch (a pitch
    shift reads a longer or shorter crop at a start drawn the same way).

    Args:
        cache: An open ``msagg.data.formats.cache.AudioCache``.
        indices: Track indices to sample from (e.g. ``cache.indices("train")``).
        input_length: Samples per crop (the model's input length).
        batch_size: Crops per batch.
        steps: Batches per epoch.
        seed: Base seed.
        epoch: The epoch the next pass belongs to; ``on_epoch_end`` advances it.
        augment: Augmentation of the crops (None or ``Augment()``: none). Only training crops come
            from here; validation and test read plain segments (``msagg.stages.training.evaluation``).
        targets: What a crop is fitted to (``msagg.stages.training.targets``); None: the cache's labels.
        **kwargs: ``workers``, ``use_multiprocessing``, ``max_queue_size`` of ``PyDataset``.

    Each item is ``(x, y)``: x float32 (batch_size, input_length) waveforms, y float32
    (batch_size, num_labels) targets (soft with teacher targets or mixup); where the targets hold
    teacher features (``targets.num_features``), y is the pair (labels, features (batch_size,
    num_features)), mixed by mixup alike.
    """

    def __init__(self, cache, indices, input_length: int, batch_size: int, steps: int, seed: int = 0,
                 epoch: int = 0, augment: augment_lib.Augment | None = None, targets=None, **kwargs):
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
        self.augment = augment if augment is not None else augment_lib.Augment()
        self.lengths = np.asarray(cache.lengths, dtype=np.int64)[self.indices]
        self.targets = targets if targets is not None else targets_lib.DatasetTargets(cache)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        if not 0 <= index < self.steps:
            raise IndexError(f"batch {index} out of range (0..{self.steps - 1})")
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        picks = rng.integers(0, self.indices.size, size=self.batch_size)
        aug_rng = None
        if self.augment.active:
            aug_rng = np.random.default_rng([self.seed, self.epoch, int(index), AUGMENT_STREAM])
        semitones = augment_lib.pitch_semitones(self.augment, self.batch_size, aug_rng) if aug_rng is not None else None
        x = np.empty((self.batch_size, self.input_length), dtype=np.float32)
        starts = np.empty(self.batch_size, dtype=np.int64)
        lengths = np.empty(self.batch_size, dtype=np.int64)
        for row, pick in enumerate(picks):
            length = self.input_length
            if semitones is not None and semitones[row] != 0:
                length = augment_lib.read_length(self.input_length, semitones[row])
            room = max(int(self.lengths[pick]) - length, 0)
            start = int(rng.integers(0, room + 1))
            starts[row], lengths[row] = start, length
            crop = self.cache.crop(int(self.indices[pick]), start, length)
            x[row] = crop if length == self.input_length else augment_lib.resample_to(crop, self.input_length)
        if self.targets.soft and np.any(lengths != self.input_length):  # a pitch-shifted crop spans more or less time
            y = np.concatenate([self.targets.crop_targets(self.indices[picks[r:r + 1]], starts[r:r + 1],
                                                          int(lengths[r])) for r in range(self.batch_size)])
        else:
            y = self.targets.crop_targets(self.indices[picks], starts, self.input_length)
        if aug_rng is not None:  # mixup mixes a crop's labels and teacher features with one weight
            x, y = augment_lib.augment_batch(x, y, self.augment, aug_rng, copy=False)
        if self.targets.num_features:
            split = y.shape[1] - self.targets.num_features
            return x, (np.ascontiguousarray(y[:, :split]), np.ascontiguousarray(y[:, split:]))
        return x, y

    def on_epoch_end(self) -> None:
        self.epoch += 1


def steps_per_pass(lengths, input_length: int, batch_size: int) -> int:
    """Batches that hold as many crops as the tracks have non-overlapping segments (at least 1).

    Args:
        lengths: int (num_tracks,) track lengths, samples.
        input_length: Samples per crop.
        batch_size: Crops per batch.
    """
    total = sum(segments_lib.num_segments(int(n), input_length) for n in lengths)
    return max(1, math.ceil(total / batch_size))
