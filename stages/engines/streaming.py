"""A song of any length through SampleCNNs segment by segment: bounded batches, memory flat in its length.

The song arrives in blocks (a decoded file block by block, ``msagg.data.audio.stream``, or one array);
each model cuts it with its own ``msagg.data.segments.Segmenter`` and runs a forward pass whenever a
batch of segments is full, keeping only what each segment reduces to (the taps max-pooled over time,
or the output scores). Memory is one batch per model plus those per-segment rows, whatever the
length. ``msagg.stages.family`` (the Python API, ``msagg embed``, ``msagg predict --pretrain``)
computes through it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from msagg.data.formats import features as features_lib
from msagg.data.segments import Segmenter
from msagg.models import specs
from msagg.stages.engines.taps import BATCH_MEMORY_MB, largest_activation_bytes
from msagg.stages.runs import interrupt

Reduce = Callable[[Any, int], Mapping[str, np.ndarray]]
"""(model outputs of a batch, k) -> name -> rows for the batch's first k segments."""


def batch_rows(model, batch_size: int) -> int:
    """Segments per forward pass of ``model``: ``batch_size``, or fewer so that its largest
    activation stays under ``taps.BATCH_MEMORY_MB`` (as extract's ``TapModel.batch_for``)."""
    largest = largest_activation_bytes(model)
    return batch_size if largest <= 0 else max(1, min(batch_size, BATCH_MEMORY_MB * 2**20 // largest))


def pooled_taps(outputs: Mapping[str, Any], k: int) -> dict[str, np.ndarray]:
    """``Reduce`` of a tap extractor: tap -> float32 (k, channels), each tap max-pooled over time."""
    return {tap: features_lib.pool_time(np.asarray(outputs[tap])[:k]) for tap in specs.TAPS}


def scores(outputs: Any, k: int) -> dict[str, np.ndarray]:
    """``Reduce`` of an end-to-end model: ``{"scores": float32 (k, num_labels)}``."""
    return {"scores": np.asarray(outputs, dtype=np.float32)[:k]}


class ModelStream:
    """One model fed a song block by block.

    Full batches go through the model's compiled forward pass (``predict_on_batch``: one shape, traced
    once); the song's last, partial batch is called eagerly with just its rows, so a short song is
    not padded to a whole batch and the backend traces no new shape per song.

    Args:
        model: A ``keras.Model`` mapping float32 (rows, length) to its outputs.
        reduce: What to keep of each segment's outputs (``pooled_taps``, ``scores``).
        length: The model's input length, samples.
        segments: "cover" or "drop" (``msagg.data.segments``).
        batch_size: Segments per full forward pass.
    """

    def __init__(self, model: Any, reduce: Reduce, length: int, segments: str, batch_size: int):
        self.model, self.reduce = model, reduce
        self.as_list = isinstance(model.input, (list, tuple))  # called as it was built: x or [x]
        self.cut = Segmenter(length, segments)
        self.batch = np.zeros((max(1, int(batch_size)), int(length)), dtype=np.float32)
        self.k = 0
        self.starts: list[int] = []
        self.rows: dict[str, list[np.ndarray]] = {}

    def push(self, block: np.ndarray) -> None:
        """Takes the next samples of the song; runs the model on every batch they fill."""
        for start, seg in self.cut.push(block):
            self._add(start, seg)

    def finish(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Ends the song.

        Returns:
            (int64 (num_segments,) start samples, name -> the rows ``reduce`` kept, one per segment).
        """
        for start, seg in self.cut.finish():
            self._add(start, seg)
        if self.k:
            self._flush()
        return np.asarray(self.starts, dtype=np.int64), {name: np.concatenate(rows) for name, rows in self.rows.items()}

    def _add(self, start: int, seg: np.ndarray) -> None:
        self.batch[self.k] = seg
        self.k += 1
        self.starts.append(start)
        if self.k == len(self.batch):
            self._flush()

    def _flush(self) -> None:
        with interrupt.deferred():  # Ctrl-C between passes, not inside the backend's C++ code
            if self.k == len(self.batch):
                outputs = self.model.predict_on_batch(self.batch)
            else:
                rows = self.batch[: self.k]
                outputs = self.model([rows] if self.as_list else rows, training=False)
        for name, value in self.reduce(outputs, self.k).items():
            self.rows.setdefault(name, []).append(value)
        self.k = 0


def feed(blocks: Iterable[np.ndarray], streams: Iterable[ModelStream]) -> int:
    """Pushes every block to every model's stream; returns the song's number of samples."""
    streams = list(streams)
    total = 0
    for block in blocks:
        total += int(block.shape[0])
        for stream in streams:
            stream.push(block)
    return total
