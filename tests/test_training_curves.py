"""stages/plots.training_curves and stages/training_log: the per-epoch records of pretrain."""

import csv
import logging

import matplotlib.pyplot as plt
import numpy as np
import pytest

from msagg.stages.songs import plots
from msagg.stages.training import log as training_log

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def history(num_epochs, stage_length=2):
    """Rows as pretrain writes them: lr stages of ``stage_length`` epochs, lr divided by 5 per stage."""
    rows = []
    for i in range(num_epochs):
        stage = i // stage_length
        rows.append({"epoch": i + 1, "lr_stage": stage, "lr": 0.01 * 0.2**stage, "loss": 1.0 / (i + 1),
                     "val_loss": 1.2 / (i + 1) + 0.05 * (i == 2), "val_song_metric": 0.5 + 0.05 * i,
                     "seconds": 1.5, "segments_per_sec": 100.0})
    return rows


def assert_png(path):
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    image = plt.imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
    assert image.std() > 0.05  # something is drawn
    return image


def test_one_epoch_history_gives_a_figure(tmp_path):
    path = plots.training_curves(tmp_path / "curves.png", history(1), "3^9 on toy", "roc_auc")
    assert path == tmp_path / "curves.png"
    assert_png(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png"]  # no temporary file left


def test_lr_stages_and_missing_values(tmp_path):
    rows = history(7)
    rows[3]["val_loss"] = None  # a non-finite validation loss is recorded as None
    rows[4]["val_song_metric"] = None  # no metric (e.g. no scorable tag)
    rows[5]["loss"] = float("nan")
    assert_png(plots.training_curves(tmp_path / "a.png", rows, "diverging", "accuracy"))
    # No finite value at all (a run that diverged from the start) still draws axes.
    empty = [dict(r, loss=None, val_loss=None, val_song_metric=None) for r in rows]
    assert_png(plots.training_curves(tmp_path / "b.png", empty, "nothing finite", "accuracy"))


def test_rows_read_back_from_history_csv(tmp_path):
    rows = history(5)
    training_log.write_history(tmp_path / "history.csv", rows)
    with (tmp_path / "history.csv").open() as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == list(training_log.HISTORY_FIELDS)
    assert [float(r["val_loss"]) for r in read] == pytest.approx([r["val_loss"] for r in rows])
    assert_png(plots.training_curves(tmp_path / "curves.png", read, "from csv", "roc_auc"))


def test_curves_show_what_the_history_says(tmp_path):
    """Same history twice gives the same image; a different one a different image."""
    a = assert_png(plots.training_curves(tmp_path / "a.png", history(6), "t", "roc_auc"))
    b = assert_png(plots.training_curves(tmp_path / "b.png", history(6), "t", "roc_auc"))
    c = assert_png(plots.training_curves(tmp_path / "c.png", history(6, stage_length=3), "t", "roc_auc"))
    assert np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_a_figure_that_cannot_be_drawn_is_logged_not_raised(tmp_path, caplog):
    target = tmp_path / "curves.png"
    target.mkdir()  # a folder where the figure should go: the rename onto it fails
    with caplog.at_level(logging.WARNING, logger="msagg.stages.training.log"):
        training_log.draw_curves(target, history(2), "roc_auc", "t")
    assert target.is_dir() and not list(tmp_path.glob(".*.tmp-*"))
    assert "could not draw" in caplog.text and "curves.png" in caplog.text
