"""Cutting a track into the non-overlapping segments a SampleCNN of one scale reads."""

from __future__ import annotations

import numpy as np


def _check(num_samples: int, length: int) -> None:
    if length <= 0:
        raise ValueError(f"segment length must be positive, got {length}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")


def num_segments(num_samples: int, length: int) -> int:
    """How many segments of ``length`` samples a track of ``num_samples`` yields.

    Non-overlapping; the trailing remainder is dropped, except that a track shorter than one
    segment still gives one (zero-padded) segment.

    Args:
        num_samples: Track length, samples.
        length: Segment length, samples (a model's input length).

    Returns:
        ``max(1, num_samples // length)``.
    """
    _check(num_samples, length)
    return max(1, num_samples // length)


def segment_starts(num_samples: int, length: int) -> np.ndarray:
    """Start sample of each segment of a track.

    Returns:
        int64 (num_segments,): ``0, length, 2 * length, ...``.
    """
    return np.arange(num_segments(num_samples, length), dtype=np.int64) * length


def segment(wave: np.ndarray, length: int) -> np.ndarray:
    """Cuts a waveform into non-overlapping segments.

    Args:
        wave: (num_samples,) waveform.
        length: Segment length, samples.

    Returns:
        float32 (num_segments(num_samples, length), length). A track shorter than ``length`` is
        zero-padded at the end to one segment; otherwise the samples after the last whole segment
        are dropped.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {wave.shape}")
    count = num_segments(wave.shape[0], length)
    if wave.shape[0] < length:
        out = np.zeros((1, length), dtype=np.float32)
        out[0, : wave.shape[0]] = wave
        return out
    return wave[: count * length].reshape(count, length)
