"""Pretrain killed at chosen points and resumed: the same weights, history and best epoch as a run never killed.

Kills are of two kinds: a real SIGKILL of a subprocess (mid-epoch, and between the checkpoint's
model and state files at an lr-stage boundary, where msagg's checkpoints used to be cut in two), and
exceptions raised in-process at the other steps of an epoch's end, one after another in one run.
Each resumed run must end bit-identical to the uninterrupted one (model.keras weights, history.csv
without its timing columns, metrics.json less its timings, best epoch included): training on CPU
is deterministic, so any difference is state the checkpoint lost.

curves.png is not compared and not drawn here (matplotlib would double the module's time);
tests/test_pretrain.py checks it.
"""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from msagg.stages.training import checkpoint, crops, log as training_log
from msagg.stages.runs import pretrain_run
from msagg.stages import pretrain
from test_pretrain import write_tiny_cache

REPO = Path(__file__).resolve().parents[1]
TIMING = ("seconds", "segments_per_sec")
SCALE = "3^2"
# Three epochs, one per lr stage (lr 0.01, 0.002, 0.0004): every epoch ends a stage, so the
# checkpoint of epoch 2 holds the lr of stage 3 and that of epoch 1 the lr of stage 2.
CHANGES = {"scales": (SCALE,), "num_lr_stages": 3, "max_epochs_per_stage": 1, "patience": 5}
LRS = [0.01, 0.002, 0.0004]

# Runs the stage and SIGKILLs itself at one point: ["checkpoint", point, epoch] (see
# checkpoint.hook) or ["batch", epoch, index]: when the CropSequence reads that batch.
# Training epoch e (counted from 1) reads crop epoch e: fit() ends a pass before it trains; under
# TensorFlow it first reads batches 0 and 1 of crop epoch e - 1 for its input signature.
DRIVER = r"""
import json, os, signal, sys
from msagg.stages.training import checkpoint, crops, log as training_log
from msagg.stages import pretrain

training_log.draw_curves = lambda *args, **kwargs: None
config, out, kill = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if kill[0] == "checkpoint":
    checkpoint.hook = lambda point, epoch: die() if [point, epoch] == kill[1:] else None
else:
    get = crops.CropSequence.__getitem__

    def getitem(self, index):
        if [self.epoch, index] == kill[1:]:
            die()
        return get(self, index)

    crops.CropSequence.__getitem__ = getitem
pretrain.run(pretrain.Config(**config), out, progress=False, tensorboard=False)
"""


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module", autouse=True)
def no_curves():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_log, "draw_curves", lambda *args, **kwargs: None)
        yield


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> pretrain.Config:
    cache = write_tiny_cache(tmp_path_factory.mktemp("prepare") / "toy-tags")
    return pretrain.Config(cache=str(cache), **{**pretrain.PRESETS["tiny"], **CHANGES})


def outcome(out: Path) -> dict:
    """What a finished run must reproduce: weights, history (less timing), metrics (less timing)."""
    folder = out / SCALE
    assert (out / "DONE").is_file() and not (folder / checkpoint.CHECKPOINT_DIR).exists()
    rows = [{k: v for k, v in row.items() if k not in TIMING} for row in history_rows(out)]
    metrics = {k: v for k, v in json.loads((folder / "metrics.json").read_text()).items() if k not in TIMING}
    return {"weights": pretrain_run.load_model(folder / "model.keras").get_weights(), "history": rows, "metrics": metrics}


@pytest.fixture(scope="module")
def uninterrupted(config, tmp_path_factory) -> dict:
    result = outcome(pretrain.run(config, tmp_path_factory.mktemp("uninterrupted"), progress=False, tensorboard=False))
    history = result["history"]
    assert [r["lr_stage"] for r in history] == ["0", "1", "2"]
    assert [float(r["lr"]) for r in history] == LRS
    # Every epoch is a new best, so every epoch's end replaces model.keras (the epoch-2 model is
    # the one the lr-stage change to stage 3 reloads).
    val_losses = [float(r["val_loss"]) for r in history]
    assert val_losses == sorted(val_losses, reverse=True) and result["metrics"]["best_epoch"] == 3
    return result


def assert_same(resumed: dict, expected: dict) -> None:
    assert resumed["history"] == expected["history"]
    assert resumed["metrics"] == expected["metrics"]
    assert resumed["metrics"]["best_epoch"] == expected["metrics"]["best_epoch"]
    assert len(resumed["weights"]) == len(expected["weights"])
    for got, want in zip(resumed["weights"], expected["weights"]):
        np.testing.assert_array_equal(got, want)  # bit-identical, no tolerance


def resume(config: pretrain.Config, out: Path) -> dict:
    return outcome(pretrain.run(config, out, progress=False, tensorboard=False))


def history_rows(out: Path) -> list[dict]:
    with (out / SCALE / "history.csv").open() as f:
        return list(csv.DictReader(f))


def committed(out: Path) -> list[str]:
    """The checkpoint folders a killed run left, committed and temporary."""
    root = out / SCALE / checkpoint.CHECKPOINT_DIR
    return sorted(p.name.split(".tmp-")[0] for p in root.iterdir()) if root.is_dir() else []


def kill_in_subprocess(config: pretrain.Config, out: Path, kill: list) -> None:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))  # this checkout's stages
    env = {**os.environ, "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(dataclasses.asdict(config)), str(out),
                           json.dumps(kill)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


# --- real kills ------------------------------------------------------------------------------


def test_sigkilled_mid_epoch_then_between_model_and_state_at_an_lr_boundary(config, uninterrupted, tmp_path):
    """Two real kills of one run, then a resume.

    The second is where the old checkpoint was cut in two, last.keras of the new lr stage and
    state.json of the old: the old code then trained epoch 3 from epoch 2's model at the lr of
    stage 3, and recorded it as epoch 2 at the lr of stage 2.
    """
    out = tmp_path / "pretrain"
    kill_in_subprocess(config, out, ["batch", 2, 2])  # while training epoch 2 (see DRIVER)
    assert (committed(out), len(history_rows(out))) == (["epoch-0001"], 1)
    kill_in_subprocess(config, out, ["checkpoint", "model", 2])
    # Epoch 2's model (with stage 3's lr) is written, but only into an uncommitted folder; history.csv
    # is one epoch ahead of the checkpoint.
    assert (committed(out), len(history_rows(out))) == ([".epoch-0002", "epoch-0001"], 2)
    resumed = resume(config, out)
    assert [float(r["lr"]) for r in resumed["history"]] == LRS
    assert_same(resumed, uninterrupted)


# --- in-process interruptions at every step of an epoch's end --------------------------------


def check_restored_from_the_checkpoint(config, out, monkeypatch):
    """A resumed run first makes model.keras and history.csv those of its checkpoint."""
    epoch_one = out / SCALE / checkpoint.CHECKPOINT_DIR / "epoch-0001"
    model = out / SCALE / "model.keras"
    # Epoch 2's (uncommitted) best model, and its history row.
    assert model.stat().st_ino != (epoch_one / checkpoint.BEST_FILE).stat().st_ino
    assert len(history_rows(out)) == 2

    def stop(self, index):
        raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(crops.CropSequence, "__getitem__", stop)
        with pytest.raises(Exception):  # Keras may wrap an error of its input pipeline
            pretrain.run(config, out, progress=False, tensorboard=False)
    assert model.read_bytes() == (epoch_one / checkpoint.BEST_FILE).read_bytes()
    assert len(history_rows(out)) == 1


def test_interrupted_at_every_step_of_an_epoch_end(config, uninterrupted, tmp_path, monkeypatch):
    """One run stopped at each point of the checkpoint writer, and resumed each time."""
    out = tmp_path / "pretrain"
    steps = [
        # (point, epoch): what it leaves (checkpoint folders, history rows); "restart": resumed and
        # stopped at its first batch, after restoring the files of the checkpoint
        (("model", 1), ([".epoch-0001"], 1)),  # the first epoch: nothing committed, start afresh
        (("begin", 1), ([], 1)),  # model.keras, history.csv of epoch 1 written, no checkpoint
        (("files", 2), ([".epoch-0002", "epoch-0001"], 2)),
        ("restart", None),
        (("committed", 2), (["epoch-0001", "epoch-0002"], 2)),  # older one not yet removed
        # The last epoch, before DONE; older checkpoints go only after a commit.
        (("committed", 3), (["epoch-0001", "epoch-0002", "epoch-0003"], 3)),
    ]
    for stop, left in steps:
        if stop == "restart":
            check_restored_from_the_checkpoint(config, out, monkeypatch)
            continue

        def hook(point, epoch, stop=stop):
            if (point, epoch) == stop:
                raise Interrupted(stop)

        monkeypatch.setattr(checkpoint, "hook", hook)
        with pytest.raises(Interrupted):
            pretrain.run(config, out, progress=False, tensorboard=False)
        assert (committed(out), len(history_rows(out))) == left, stop
    monkeypatch.setattr(checkpoint, "hook", None)
    assert_same(resume(config, out), uninterrupted)


def test_old_checkpoints_resume_unless_cut_at_an_lr_boundary(config, tmp_path, monkeypatch):
    """Two-file checkpoints of the old layout: one cut in two at an lr boundary (its model of the new
    lr stage, its state of the old) is refused; a whole one resumes, without its random state."""
    out = tmp_path / "pretrain"

    def hook(point, epoch):
        if (point, epoch) == ("committed", 2):
            raise Interrupted

    monkeypatch.setattr(checkpoint, "hook", hook)
    with pytest.raises(Interrupted):
        pretrain.run(config, out, progress=False, tensorboard=False)
    monkeypatch.setattr(checkpoint, "hook", None)
    root = out / SCALE / checkpoint.CHECKPOINT_DIR
    states = [(root / f"epoch-000{n}" / checkpoint.STATE_FILE).read_text() for n in (1, 2)]
    (root / "epoch-0002" / checkpoint.LAST_FILE).rename(root / checkpoint.LAST_FILE)
    for name in ("epoch-0001", "epoch-0002"):
        shutil.rmtree(root / name)
    (root / checkpoint.STATE_FILE).write_text(states[0])
    with pytest.raises(checkpoint.CheckpointError, match=r"learning rate 0\.0004 is not the recorded 0\.002"):
        pretrain.run(config, out, progress=False, tensorboard=False)
    (root / checkpoint.STATE_FILE).write_text(states[1])
    resumed = []
    pretrain.run(config, out, progress=False, tensorboard=False, on_epoch_end=lambda s, r: resumed.append(r["epoch"]))
    assert resumed == [3] and len(history_rows(out)) == 3 and (out / "DONE").is_file()
