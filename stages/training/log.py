"""Per-epoch records of the pretrain stage: history.csv, TensorBoard scalars, the curves figure."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path

import keras

from msagg.data.atomic import write_text

logger = logging.getLogger(__name__)

HISTORY_FIELDS = ("epoch", "lr_stage", "lr", "loss", "val_loss", "val_song_metric", "seconds", "segments_per_sec")
"""Columns of ``<scale>/history.csv``, one row per epoch (epoch counts from 1, lr_stage from 0;
loss is the epoch's mean training loss, segments_per_sec the training throughput; val_song_metric
is ``msagg.stages.songs.metrics.PRIMARY[task]``: ROC-AUC for tags, accuracy for classes)."""


def write_history(path: Path, rows: list[dict]) -> None:
    """Writes ``rows`` (dicts with at least ``HISTORY_FIELDS``) as ``history.csv``, atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row[k] for k in HISTORY_FIELDS})
    write_text(path, buf.getvalue())


def draw_curves(path: Path, rows: list[dict], metric_name: str, title: str) -> None:
    """Redraws ``curves.png`` from the history rows with ``msagg.stages.songs.plots.training_curves``.

    A figure is something to watch, not a result: failing to draw it is logged, and training goes on.
    """
    from msagg.stages.songs import plots  # matplotlib only when a figure is drawn

    try:
        plots.training_curves(path, rows, title, metric_name)
    except Exception as err:  # noqa: BLE001 - a figure must not end a run of hours
        logger.warning("could not draw %s: %s", path, err)


class ScalarLog:
    """TensorBoard scalars through tf.summary, when TensorFlow is importable; otherwise nothing.

    The only ``tf.*`` of the pretrain stage: under another Keras backend TensorFlow is kept off the
    GPU and used for the event files only.

    Args:
        folder: Where the event files go (``<scale>/tensorboard``).
        enabled: False writes nothing.
    """

    def __init__(self, folder: Path, enabled: bool = True):
        self._writer = None
        if not enabled:
            return
        try:
            import tensorflow as tf
        except ImportError:
            logger.info("TensorFlow is not importable: no TensorBoard logs in %s", folder)
            return
        if keras.backend.backend() != "tensorflow":
            # Keep TensorFlow off the GPU that the JAX (or torch) backend is using.
            try:
                tf.config.set_visible_devices([], "GPU")
            except (RuntimeError, ValueError):
                pass
        # tf.summary.scalar needs the tensorboard package; the low-level write with the scalars
        # plugin's metadata writes the same events without it.
        from tensorflow.core.framework import summary_pb2

        self._metadata = summary_pb2.SummaryMetadata()
        self._metadata.plugin_data.plugin_name = "scalars"
        self._metadata.data_class = summary_pb2.DATA_CLASS_SCALAR
        self._tf = tf
        self._writer = tf.summary.create_file_writer(str(folder))

    def write(self, step: int, scalars: dict[str, float | None]) -> None:
        """Writes one value per tag at ``step`` (None and non-finite values are left out) and flushes."""
        if self._writer is None:
            return
        tf = self._tf
        with self._writer.as_default():
            for key, value in scalars.items():
                if value is not None and math.isfinite(value):
                    tf.summary.write(key, tf.constant(value, tf.float32), step=step, metadata=self._metadata)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
