"""Cutting a track into the segments a SampleCNN of one scale reads.

Two ways, the ``segments`` setting of extract (``SEGMENTINGS``):

- ``"drop"`` (every extract run made before the setting existed; the end-to-end evaluation of
  pretrain and ``msagg predict --pretrain``): non-overlapping segments from the start; the
  remainder after the last whole segment is dropped.
- ``"cover"`` (extract's default): the same segments plus, when a remainder is left, one last
  segment that ends at the track's end (overlapping the one before), so every sample of the
  track is read. A 5-s clip and a 2.7-s 3^9 segment: "drop" reads 2.7 s, "cover" all 5.

A track shorter than one segment gives one zero-padded segment either way.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

import numpy as np

SEGMENTINGS = ("cover", "drop")


def _check(num_samples: int, length: int, segments: str = "drop") -> None:
    if segments not in SEGMENTINGS:
        raise ValueError(f"segments must be one of {', '.join(SEGMENTINGS)}, got {segments!r}")
    if length <= 0:
        raise ValueError(f"segment length must be positive, got {length}")
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")


def num_segments(num_samples: int, length: int, segments: str = "drop") -> int:
    """How many segments of ``length`` samples a track of ``num_samples`` yields.

    Args:
        num_samples: Track length, samples.
        length: Segment length, samples (a model's input length).
        segments: "drop" or "cover" (module docstring).

    Returns:
        ``max(1, num_samples // length)``, plus one with "cover" when a track longer than one
        segment leaves a remainder.
    """
    _check(num_samples, length, segments)
    whole = max(1, num_samples // length)
    return whole + (segments == "cover" and num_samples > length and num_samples % length > 0)


def segment_starts(num_samples: int, length: int, segments: str = "drop") -> np.ndarray:
    """Start sample of each segment of a track.

    Returns:
        int64 (num_segments,): ``0, length, 2 * length, ...``, and with "cover" and a remainder
        ``num_samples - length`` last.
    """
    starts = np.arange(max(1, num_samples // length) if length > 0 else 0, dtype=np.int64) * length
    if num_segments(num_samples, length, segments) > len(starts):
        starts = np.append(starts, np.int64(num_samples - length))
    return starts


def segment(wave: np.ndarray, length: int, segments: str = "drop") -> np.ndarray:
    """Cuts a waveform into segments.

    Args:
        wave: (num_samples,) waveform.
        length: Segment length, samples.
        segments: "drop" (non-overlapping; the remainder after the last whole segment dropped)
            or "cover" (plus one last segment ending at the track's end).

    Returns:
        float32 (num_segments(num_samples, length, segments), length). A track shorter than
        ``length`` is zero-padded at the end to one segment.
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"expected a 1-D waveform, got shape {wave.shape}")
    count = num_segments(wave.shape[0], length, segments)
    if wave.shape[0] < length:
        out = np.zeros((1, length), dtype=np.float32)
        out[0, : wave.shape[0]] = wave
        return out
    whole = wave.shape[0] // length
    out = wave[: whole * length].reshape(whole, length)
    if count > whole:
        out = np.concatenate([out, wave[-length:][None]])
    return out


def track_groups(indices: Iterable[int], length_of: Callable[[int], int], input_lengths: Iterable[int],
                 batch_size: int, segments: str) -> Iterator[list[int]]:
    """Groups consecutive tracks until every model has at least ``batch_size`` segments of them.

    extract computes a group at a time (its forward passes hold the segments of the group's
    tracks), and its engines cut the work at group starts. The grouping depends only on the track
    lengths from the first index on, so a resumed run (which restarts at a group boundary) forms
    the same groups as an uninterrupted one. Memory is about ``batch_size`` segments of the largest
    model plus one track.

    Args:
        indices: Track indices, in order.
        length_of: A track's number of samples, by index.
        input_lengths: Samples per segment of each model (scale).
        batch_size: Segments per forward pass.
        segments: "drop" or "cover" (module docstring).

    Yields:
        Lists of consecutive indices; the last group may hold fewer segments.
    """
    input_lengths = [int(n) for n in input_lengths]
    group: list[int] = []
    totals = [0] * len(input_lengths)
    for i in indices:
        group.append(i)
        n = int(length_of(i))
        totals = [total + num_segments(n, length, segments) for total, length in zip(totals, input_lengths)]
        if min(totals) >= batch_size:
            yield group
            group, totals = [], [0] * len(input_lengths)
    if group:
        yield group
