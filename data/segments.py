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


class Segmenter:
    """Cuts a waveform that arrives in blocks into the segments ``segment`` gives, as they complete.

    Memory is one segment and one block, whatever the length of the track: a song decoded block
    by block (``msagg.data.audio.stream``) goes through a model without ever being held whole.
    Feeding blocks ``b1, b2, ...`` then calling ``finish`` yields the rows of
    ``segment(concatenate([b1, b2, ...]), length, segments)`` at ``segment_starts(...)``.

    Args:
        length: Segment length, samples.
        segments: "drop" or "cover" (module docstring).

    Example:
        >>> cut = Segmenter(4, "cover")
        >>> [(start, seg.tolist()) for start, seg in cut.push(np.arange(6.0))]
        [(0, [0.0, 1.0, 2.0, 3.0])]
        >>> [(start, seg.tolist()) for start, seg in cut.finish()]
        [(2, [2.0, 3.0, 4.0, 5.0])]
    """

    def __init__(self, length: int, segments: str = "drop"):
        _check(0, length, segments)
        self.length = int(length)
        self.segments = segments
        self.num_samples = 0
        self._pending = np.zeros(0, dtype=np.float32)  # samples after the last whole segment (< length)
        self._last: np.ndarray | None = None  # the last whole segment (the "cover" segment reaches into it)

    def push(self, block: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """Takes the next samples; returns the segments they complete.

        Args:
            block: float (n,) samples following those pushed before.

        Returns:
            ``(start sample, float32 (length,))`` per completed segment, in order; the arrays may
            be views of ``block``, valid until the next call.
        """
        block = np.asarray(block, dtype=np.float32)
        if block.ndim != 1:
            raise ValueError(f"expected a 1-D block of samples, got shape {block.shape}")
        data = np.concatenate([self._pending, block]) if self._pending.size else block
        first = self.num_samples - self._pending.size
        self.num_samples += block.shape[0]
        whole = data.shape[0] // self.length
        out = [(first + i * self.length, data[i * self.length:(i + 1) * self.length]) for i in range(whole)]
        if whole:
            self._last = out[-1][1].copy()
        self._pending = data[whole * self.length:].copy()
        return out

    def finish(self) -> list[tuple[int, np.ndarray]]:
        """The segments the end of the track adds: the zero-padded one of a track shorter than a
        segment, or with "cover" the one that ends at the track's end; else none."""
        if self.num_samples < self.length:
            padded = np.zeros(self.length, dtype=np.float32)
            padded[: self._pending.shape[0]] = self._pending
            return [(0, padded)]
        if self.segments == "cover" and self._pending.size:
            tail = np.concatenate([self._last, self._pending])[-self.length:]
            return [(self.num_samples - self.length, tail)]
        return []
