"""Telling a user when pretraining learned nothing: a model whose best validation loss is not clearly
below its first epoch's is flagged (log, metrics.json, summary.json, DONE, classify's report), and a
cache with fewer than two classes in train is refused before anything trains."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

from msagg.data.formats.cache import AudioCache
from msagg.data.tracklist import TrackList
from msagg.pipeline.cli import main
from msagg.stages import classify, pretrain
from msagg.stages.training import MIN_VAL_LOSS_IMPROVEMENT, PretrainError, learning_check
from prepare_runs import make_prepare_run
from test_classify import FAST, write_features
from test_pretrain import tiny_config, write_tiny_cache


def rows(*losses):
    return [{"epoch": i + 1, "val_loss": v} for i, v in enumerate(losses)]


@pytest.mark.parametrize("losses, learned, improvement", [
    ((0.637, 0.640, 0.636, 0.635), False, 0.00314),  # the demo's 3^9: best 0.635 against 0.637 after epoch 1
    ((1.0, 0.99, 0.981), False, 0.019),
    ((1.0, 0.98), True, 0.02),  # exactly 2% counts as learning
    ((1.0, 0.9, 0.95), True, 0.1),
    ((1.2,), False, 0.0),  # one epoch shows nothing
    ((0.0, 0.0), False, 0.0),  # a loss of 0 from the start: one class
    ((None, 1.0, 0.5), True, 0.5),  # the first finite loss is the baseline
    ((), None, None),
    ((None, None), None, None),
])
def test_learning_check(losses, learned, improvement):
    check = learning_check(rows(*losses))
    assert check["learned"] is learned
    assert check["val_loss_improvement"] == (None if improvement is None else pytest.approx(improvement, abs=1e-5))
    assert MIN_VAL_LOSS_IMPROVEMENT == 0.02


@pytest.fixture(scope="module")
def classes_cache(tmp_path_factory):
    return write_tiny_cache(tmp_path_factory.mktemp("prepare") / "toy-classes", task="classes", num_tracks=48)


SCHEDULE = dict(scales=("3^2",), num_lr_stages=1, max_epochs_per_stage=5, steps_per_epoch=3, patience=5)


@pytest.mark.parametrize("learning_rate, learned", [(1e-9, False), (0.02, True)])
def test_a_model_that_cannot_learn_is_flagged_and_one_that_learns_is_not(classes_cache, tmp_path, caplog,
                                                                         learning_rate, learned):
    config = tiny_config(classes_cache, learning_rate=learning_rate, **SCHEDULE)
    with caplog.at_level(logging.WARNING):
        out = pretrain.run(config, tmp_path / "pretrain", progress=False, tensorboard=False)
    metrics = json.loads((out / "3^2" / "metrics.json").read_text())
    summary = json.loads((out / "summary.json").read_text())["3^2"]
    done = json.loads((out / "DONE").read_text())
    assert metrics["learned"] is learned and summary["learned"] is learned
    assert summary["val_loss_improvement"] == metrics["val_loss_improvement"]
    assert (metrics["val_loss_improvement"] >= MIN_VAL_LOSS_IMPROVEMENT) is learned
    assert done["not_learned"] == ([] if learned else ["3^2"])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "did not learn" in r.getMessage()]
    if learned:
        assert warned == []
    else:
        assert warned[0].startswith(f"3^2 did not learn: its best validation loss {metrics['best_val_loss']:.4f} "
                                    f"(epoch {metrics['best_epoch']}) is ")
        assert "less than the 2% that counts as learning" in warned[0]
        assert warned[1].endswith("3^2 did not learn (best validation loss less than 2% below the first epoch's); "
                                  "summary.json flags them")


def test_classify_report_notes_an_end_to_end_model_that_did_not_learn(tmp_path):
    features, _, _ = write_features(tmp_path, "classes", e2e={"accuracy": 0.34, "macro_f1": 0.2})
    path = tmp_path / "pretrain" / "3^2" / "metrics.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "learned": False, "val_loss_improvement": 0.003}))
    config = classify.Config(features=str(features), classifiers=("logreg",), include_single=False, tsne=False,
                             **FAST)
    out = classify.run(config, tmp_path / "classify", progress=False)
    results = (out / "results.md").read_text()
    assert "| 3^2 (did not learn) | output |" in results and "| 4^2 | output |" in results
    assert ("Did not learn in pretraining: 3^2 (best validation loss less than 2% below the first epoch's)"
            in results)
    assert json.loads((out / "metrics.json").read_text())["end_to_end"]["scales"]["3^2"]["learned"] is False


# --- fewer than two classes in train ------------------------------------------------------------


def _cache(folder, label_names, labels, split, task="classes"):
    n = len(split)
    tracks = TrackList(name="toy", task=task, label_names=list(label_names), track_ids=[f"t{i}" for i in range(n)],
                       sources=[f"toy:{i}" for i in range(n)], labels=np.asarray(labels, dtype=np.uint8), split=split)
    return make_prepare_run(folder, tracks, [0.1 * np.ones(200)] * n, sample_rate=22050)


def test_pretrain_refuses_a_cache_of_one_class(tmp_path):
    cache = _cache(tmp_path / "one", ["dog"], np.ones((8, 1)), ["train"] * 4 + ["valid"] * 2 + ["test"] * 2)
    with pytest.raises(PretrainError) as err:
        pretrain.run(tiny_config(cache), tmp_path / "pretrain", progress=False)
    assert str(err.value) == (f"{cache}: its train split holds tracks of 1 class (dog), of 1 in the cache; a "
                              "classifier needs at least 2 classes to learn anything (prepare a dataset with two "
                              "or more classes)")
    assert not (tmp_path / "pretrain" / "3^2").exists()
    result = CliRunner().invoke(main, ["pretrain", "--cache", str(cache), "--preset", "tiny", "--out",
                                       str(tmp_path / "cli")])
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and errors == [f"Error: {err.value}"], result.stderr


def test_pretrain_refuses_two_classes_when_train_holds_one(tmp_path):
    labels = np.eye(2)[[0, 0, 0, 0, 1, 1, 1, 1]]  # "cat" only in valid and test
    cache = _cache(tmp_path / "c", ["dog", "cat"], labels, ["train"] * 4 + ["valid", "test"] * 2)
    with pytest.raises(PretrainError, match=r"holds tracks of 1 class \(dog\), of 2 in the cache"):
        pretrain.run(tiny_config(cache), tmp_path / "pretrain", progress=False)


def test_tags_never_in_train_are_a_warning_naming_them(tmp_path, caplog):
    labels = [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 1, 1]]
    cache = _cache(tmp_path / "t", ["low", "mid", "high"], labels, ["train"] * 4 + ["valid", "test"], task="tags")
    with AudioCache(cache / "cache") as opened, caplog.at_level(logging.WARNING):
        pretrain.check_labels(str(cache), opened)
    assert caplog.messages == [f"{cache}: 1 of 3 tags never occur in the train split, so no model learns them: high"]
