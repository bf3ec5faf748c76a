"""Pretrain checkpoints: one atomic folder per epoch holding the model, the loop state and every random state.

A killed pretrain resumes from the newest complete checkpoint and continues exactly as the
uninterrupted run would have: same weights, history and best epoch (``tests/test_faults_resume.py``).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np

from msagg.data.atomic import atomic_write
from msagg.data.errors import MsaggError
from msagg.stages.runs import pretrain_run
from msagg.stages.training import log as training_log


class CheckpointError(MsaggError):
    """A checkpoint that cannot be resumed from; the message names it and what to do."""


CHECKPOINT_DIR = "checkpoint"
"""``<scale>/checkpoint/``, only while the scale trains: ``epoch-<NNNN>/`` (NNNN = epochs finished)
holding ``last.keras`` (the model and its optimizer), ``best.keras`` (model.keras as it was then;
absent before a finite validation loss), ``state.json`` (``_fresh_state``'s keys) and ``rng.json``.
A folder appears complete or not at all (it is written as ``.epoch-<NNNN>.tmp-<pid>`` and renamed);
the newest one is the checkpoint, older ones are removed after each commit."""
LAST_FILE, BEST_FILE, STATE_FILE, RNG_FILE = "last.keras", "best.keras", "state.json", "rng.json"
_EPOCH_DIR = re.compile(r"epoch-(\d+)")

hook: Callable[[str, int], None] | None = None
"""For tests only: called as ``hook(point, epoch)`` while ``write_checkpoint`` writes the
checkpoint of ``epoch`` (epochs finished), at the points "begin" (the epoch's model.keras, history.csv
and curves.png are written, nothing of the checkpoint yet), "model" (last.keras written, the other
files not), "files" (all written, not committed) and "committed" (renamed, older ones not removed)."""


def seed_states(model: keras.Model) -> list:
    """The model's random-generator states: the ``SeedGenerator`` variables of its layers (dropout's).

    ``model.save`` leaves them out (they are in ``model.variables`` but not in ``model.weights``), and
    a loaded model draws new ones, so they are checkpointed beside it. Listed in ``model.variables``
    order, which the architecture fixes (their paths hold process-wide counters, so are not keys).
    """
    saved = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in saved]


def rng_state(model: keras.Model) -> dict[str, Any]:
    """Every random state an epoch of training draws from, as JSON-ready lists.

    - ``python``: Python's global ``random``; Keras' ``PyDataset`` adapter shuffles the batch order
      of every epoch with it (``fit(shuffle=True)``).
    - ``numpy``: NumPy's global generator (nothing in msagg draws from it, but Keras may).
    - ``seed_generators``: the model's ``SeedGenerator`` states (``seed_states``), i.e. dropout.

    Crops are a pure function of (seed, epoch, batch index) (``CropSequence``) and the optimizer
    (SGD) draws nothing. Keras' global ``SeedGenerator`` (unseeded ``keras.random`` calls) is not
    used in training, and the TensorFlow global seed only reaches ops without a seed, of which
    Keras' TensorFlow backend has none in this model.
    """
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    return {
        "python": [py_version, list(py_internal), py_gauss],
        "numpy": [np_name, np.asarray(np_keys).tolist(), int(np_pos), int(np_has_gauss), float(np_gauss)],
        "seed_generators": [keras.ops.convert_to_numpy(v.value).tolist() for v in seed_states(model)],
    }


def set_rng_state(model: keras.Model, state: dict[str, Any]) -> None:
    """Restores what ``rng_state`` recorded; ``model`` must be the same architecture."""
    py_version, py_internal, py_gauss = state["python"]
    random.setstate((py_version, tuple(py_internal), py_gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np.asarray(np_keys, dtype=np.uint32), np_pos, np_has_gauss, np_gauss))
    variables = seed_states(model)
    if len(variables) != len(state["seed_generators"]):
        raise CheckpointError(f"the checkpoint holds {len(state['seed_generators'])} random-generator states, "
                            f"the model has {len(variables)}")
    for variable, value in zip(variables, state["seed_generators"]):
        variable.assign(np.asarray(value, dtype=variable.dtype))


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes a snapshot of ``source``: a hard link (no bytes copied), else a copy.

    A hard link is a snapshot here because model.keras is only ever replaced by a rename, never
    rewritten in place.
    """
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _point(point: str, epoch: int) -> None:
    if hook is not None:
        hook(point, epoch)


def write_checkpoint(root: Path, model: keras.Model, state: dict, rng: dict, best_path: Path) -> Path:
    """Writes the checkpoint after ``state["epoch"]`` epochs as one step; returns its folder.

    Every file goes into a temporary folder first, which one rename then commits: a kill at any
    point leaves either the previous checkpoint or this one, whole (``latest_checkpoint``).
    """
    epoch = int(state["epoch"])
    final = root / f"epoch-{epoch:04d}"
    tmp = root / f".epoch-{epoch:04d}.tmp-{os.getpid()}"
    _point("begin", epoch)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save(tmp / LAST_FILE)
    _point("model", epoch)
    if state["best_epoch"] is not None and best_path.is_file():
        link_or_copy(best_path, tmp / BEST_FILE)
    (tmp / RNG_FILE).write_text(json.dumps(rng) + "\n")
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n")
    _point("files", epoch)
    if final.exists():  # only if a committed checkpoint of this epoch was passed over
        shutil.rmtree(final)
    os.replace(tmp, final)
    _point("committed", epoch)
    for old in root.iterdir():  # older checkpoints, temporary folders of killed runs, the old layout
        if old == final:
            continue
        if old.is_dir():
            shutil.rmtree(old)
        else:
            old.unlink()
    return final


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint folder under ``root``, or None.

    Temporary folders of killed writers are not checkpoints. A ``root`` holding last.keras and
    state.json itself is the layout of msagg before checkpoints were atomic; it is used, without a
    random state (so that resume is not exact), when no newer checkpoint exists.
    """
    if not root.is_dir():
        return None
    epochs = []
    for path in root.iterdir():
        match = _EPOCH_DIR.fullmatch(path.name)
        if match and (path / STATE_FILE).is_file() and (path / LAST_FILE).is_file():
            epochs.append((int(match.group(1)), path))
    if epochs:
        return max(epochs)[1]
    if (root / STATE_FILE).is_file() and (root / LAST_FILE).is_file():
        return root
    return None


def restore_epoch_files(folder: Path, checkpoint: Path, state: dict, metric_name: str, title: str) -> None:
    """Makes model.keras, history.csv and curves.png those of the checkpoint.

    A run killed after an epoch wrote them but before its checkpoint was committed left them one
    epoch ahead; the resumed run redoes that epoch from the checkpoint.
    """
    best_path = folder / pretrain_run.MODEL_FILE
    if (checkpoint / BEST_FILE).is_file():
        with atomic_write(best_path) as tmp:
            link_or_copy(checkpoint / BEST_FILE, tmp)
    elif state["best_epoch"] is None:
        best_path.unlink(missing_ok=True)
    # else: a checkpoint of the old layout, which kept no best model; model.keras stays.
    training_log.write_history(folder / "history.csv", state["history"])
    if state["history"]:
        training_log.draw_curves(folder / "curves.png", state["history"], metric_name, title)
    else:
        (folder / "curves.png").unlink(missing_ok=True)


def check_learning_rate(model: keras.Model, state: dict, checkpoint: Path) -> None:
    """Refuses a checkpoint whose optimizer trains at another learning rate than the one recorded.

    Checkpoints of msagg before they were atomic could be so (the model saved after an lr-stage
    change, the state from before it), and history.csv would then record the wrong rate.
    """
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    if not math.isclose(lr, state["lr"], rel_tol=1e-6):
        raise CheckpointError(f"{checkpoint}: the saved optimizer's learning rate {lr:.6g} is not the recorded "
                            f"{state['lr']:.6g} (a checkpoint written in two steps and cut between them); "
                            f"delete {checkpoint} to train this scale afresh")
