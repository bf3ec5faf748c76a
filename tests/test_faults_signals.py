"""Fault injection: SIGINT (Ctrl-C) and SIGTERM sent to a running `msagg` command's process group.

Each test starts the real CLI (`python -m msagg ...`) in a new process group on tiny data in tmp_path,
sends the signal to the whole group at a chosen point of the run (as a terminal's Ctrl-C does), and
checks what the user gets: the process ends within ``BOUND_SEC``, with exit status 130 (SIGINT) or
143 (SIGTERM) and one line saying how to resume; no process it started survives it; and the same
command run again finishes the run (``DONE``), to the same result where that is cheap to compare.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from msagg.pipeline.cli import main
from msagg.stages import prepare
from msagg.stages.runs.lock import LOCK_NAME

ROOT = Path(__file__).resolve().parent.parent
BOUND_SEC = 10.0
"""How long an interrupted command may take to end (it takes about a second; the hard stop is at 4 s)."""
NUM_FILES = 300
ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


# --- helpers ---------------------------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, int, str]]:
    """Every process: pid -> (parent pid, process group, state)."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            out[int(entry.name)] = (int(fields[1]), int(fields[2]), fields[0])
    return out


def _descendants(pid: int) -> set[int]:
    procs = _processes()
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, _, _) in procs.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _survivors(pids: set[int], group: int) -> list[int]:
    """Those of ``pids``, or of process group ``group``, still running (zombies count as ended)."""
    return sorted(pid for pid, (_, pgid, state) in _processes().items()
                  if (pid in pids or pgid == group) and state != "Z")


class Command:
    """`python -m msagg ARGS` in a new process group, its output (stdout and stderr) gathered."""

    def __init__(self, args: list):
        self.args = [str(a) for a in args]
        self.proc = subprocess.Popen([sys.executable, "-m", "msagg", *self.args], cwd=ROOT, env=ENV,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        self.chunks: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while chunk := self.proc.stdout.read1(65536):
            self.chunks.append(chunk)

    @property
    def output(self) -> str:
        return b"".join(self.chunks).decode("utf-8", "replace")

    def wait_for(self, ready, what: str, timeout: float = 120.0) -> None:
        """Waits until ``ready()``; fails if the command ends first."""
        deadline = time.monotonic() + timeout
        while not ready():
            assert self.proc.poll() is None, f"ended (status {self.proc.returncode}) before {what}:\n{self.output}"
            assert time.monotonic() < deadline, f"no {what} in {timeout} s:\n{self.output}"
            time.sleep(0.005)

    def interrupt(self, signum: int) -> float:
        """Sends ``signum`` to the process group; returns the seconds until the command ended.

        Checks the exit status, the last line, and that no process of the command survived it.
        """
        pids = _descendants(self.proc.pid)
        os.killpg(self.proc.pid, signum)
        sent = time.monotonic()
        try:
            self.proc.wait(timeout=BOUND_SEC + 20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        seconds = time.monotonic() - sent
        self.reader.join(timeout=10)
        deadline = time.monotonic() + 3.0  # the kernel reaps the ended processes' children
        while (left := _survivors(pids, self.proc.pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        out_dir = self.args[self.args.index("--out") + 1]
        name = signal.Signals(signum).name
        assert seconds < BOUND_SEC, f"{name}: took {seconds:.1f} s to end:\n{self.output}"
        assert self.proc.returncode == 128 + signum, self.output
        assert not left, f"{name}: processes left running: {left}"
        lines = [line for line in self.output.splitlines() if line.strip()]
        assert lines[-1] == (f"Interrupted by {name}: run the same command again to resume ({out_dir} keeps what "
                             "was finished)"), self.output
        assert "Traceback" not in self.output and "Aborted" not in self.output, self.output
        return seconds


def _rerun(args: list) -> None:
    """The same command again (in this process): it must finish the run."""
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    assert (out / "DONE").is_file()
    assert not (out / LOCK_NAME).exists()


def _shards(out: Path) -> dict[str, str]:
    cache = out / "cache"
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(cache.glob("shard-*.h5"))}


# --- prepare ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    """A few hundred small wav files in two class folders, and the cache an uninterrupted prepare makes."""
    root = tmp_path_factory.mktemp("signals")
    source = root / "audio"
    rng = np.random.default_rng(0)
    t = np.arange(1000) / 4000
    for i in range(NUM_FILES):
        folder = source / "ab"[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        wave = 0.3 * np.sin(2 * np.pi * (300 + 7 * i) * t) + 0.01 * rng.standard_normal(t.size)
        sf.write(folder / f"t{i:04d}.wav", wave.astype(np.float32), 4000)
    reference = root / "reference"
    prepare.run(prepare.Config(dataset="folder", source=str(source), sample_rate=4000), reference, workers=2,
                progress=False)
    return source, _shards(reference)


def _file_in(folder: Path, pattern: str):
    return lambda: any(folder.glob(pattern))


# Where the signal comes: the folder just started (listing), the workers starting, a shard being
# written, tracks done (the progress bar moving, shards finished); SIGTERM with shards being written.
PREPARE_POINTS = [
    ("listing", signal.SIGINT),
    ("workers starting", signal.SIGINT),
    ("shard being written", signal.SIGINT),
    ("progress", signal.SIGINT),
    ("shard being written", signal.SIGTERM),
]


@pytest.mark.parametrize("point,signum", PREPARE_POINTS, ids=[f"{p}-{s.name}" for p, s in PREPARE_POINTS])
def test_an_interrupted_prepare_ends_with_its_workers_and_resumes(tmp_path, folder_dataset, point, signum):
    """Fault (the probe's): Ctrl-C (SIGINT to the process group) or SIGTERM during `msagg prepare` of a
    few hundred files with two decoding processes, at several points of the run."""
    source, reference = folder_dataset
    out = tmp_path / "prep"
    args = ["prepare", "--dataset", "folder", "--source", source, "--sample-rate", "4000", "--workers", "2",
            "--out", out]
    command = Command(args)
    ready = {
        "listing": lambda: (out / "metadata.json").is_file(),
        "workers starting": lambda: "decoding 300 tracks" in command.output,
        "shard being written": _file_in(out / "cache", ".shard-*"),
        "progress": lambda: re.search(r"prepare audio: .*\b([1-9]\d*)/300", command.output) is not None,
    }[point]
    command.wait_for(ready, point)
    command.interrupt(signum)
    # A loaded machine may deliver the signal only after the stage finished ("audio cache:" printed).
    assert not (out / "DONE").exists() or "audio cache:" in command.output, command.output
    _rerun(args)
    assert _shards(out) == reference
    assert not list((out / "cache").glob(".shard-*"))  # what the ended workers left is gone


# --- pretrain, extract, classify -------------------------------------------------------------------


@pytest.fixture(scope="module")
def upstream_runs(tmp_path_factory):
    """A tiny prepare run, a pretrain run of untrained models on it, and an extract run (features written directly)."""
    import pretrain_runs
    from test_classify import write_features

    root = tmp_path_factory.mktemp("stages")
    cache = root / "prep"
    prepare.run(prepare.Config(**{**prepare.PRESETS["tiny"], "sample_rate": 4000}), cache, workers=1, progress=False)
    models = pretrain_runs.make_pretrain(root / "models", cache, sample_rate=4000)
    features, _, _ = write_features(root / "features", "classes", counts=(30, 10, 10))
    return {"cache": cache, "pretrain": models, "features": features}


STAGES = [
    ("pretrain", signal.SIGINT),
    ("extract", signal.SIGTERM),
    ("classify", signal.SIGINT),
]


@pytest.mark.parametrize("stage,signum", STAGES, ids=[f"{s}-{n.name}" for s, n in STAGES])
def test_an_interrupted_stage_ends_and_resumes(tmp_path, upstream_runs, stage, signum):
    """Fault: SIGINT or SIGTERM to the process group of `msagg pretrain|extract|classify` mid-run."""
    out = tmp_path / stage
    args, ready = {
        "pretrain": (["pretrain", "--cache", upstream_runs["cache"], "--preset", "tiny", "--scales", "3^2"],
                     lambda: "augmentation of the training crops" in command.output),  # fit begins
        "extract": (["extract", "--pretrain", upstream_runs["pretrain"], "--cache", upstream_runs["cache"],
                     "--batch-size", "16"],
                    lambda: (out / "features.h5.partial").is_file() and "extract:" in command.output),
        "classify": (["classify", "--features", upstream_runs["features"], "--classifier", "logreg", "--set",
                      "tsne=false"],
                     lambda: "classify:" in command.output),
    }[stage]
    args = [*args, "--out", out]
    command = Command(args)
    command.wait_for(ready, f"{stage} under way")
    command.interrupt(signum)
    assert not (out / "DONE").exists()
    _rerun(args)


# --- the hard stop -----------------------------------------------------------------------------------

STUCK = """
import subprocess, sys, time
from msagg.stages.runs import interrupt

child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                          "signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
with interrupt.handled("run the same command again to resume"):
    told = False
    while True:
        try:
            if not told:
                print("ready", child.pid, flush=True)
                told = True
            time.sleep(600)
        except BaseException:  # swallowed, as a finalizer or a careless library would
            pass
"""
"""A command that swallows the interruption and started a process that ignores both signals."""


@pytest.mark.parametrize("second", [False, True], ids=["one signal", "two signals"])
def test_a_command_that_does_not_end_is_ended_with_what_it_started(second):
    """Fault: the interruption is swallowed (the probe's run that ignored Ctrl-C, or hung): the process
    ends all the same, GRACE_SEC after the signal or at once on a second one, its child with it."""
    from msagg.stages.runs.interrupt import GRACE_SEC

    proc = subprocess.Popen([sys.executable, "-u", "-c", STUCK], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready, child = proc.stdout.readline().split()
        assert ready == "ready"
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        if second:
            time.sleep(0.3)
            assert proc.poll() is None, proc.communicate()
            os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=GRACE_SEC + BOUND_SEC)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    seconds = time.monotonic() - sent
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "Interrupted by SIGINT: run the same command again to resume"
    assert seconds < (GRACE_SEC - 1.0 if second else GRACE_SEC + 2.0) and (second or seconds >= GRACE_SEC - 0.1)
    deadline = time.monotonic() + 3.0
    while _survivors({int(child)}, proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _survivors({int(child)}, proc.pid)


def test_a_signal_in_a_weak_reference_callback_is_delivered_later():
    """A SIGINT that lands while a WeakKeyDictionary drops a dead key would be raised where Python
    ignores exceptions (printing a traceback): it is held back and delivered again instead."""
    import weakref

    from msagg.stages.runs import interrupt

    class Key:
        pass

    table = weakref.WeakKeyDictionary()
    key = Key()
    table[key] = 1
    frames = []

    def spy(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.endswith("weakref.py") and frame.f_code.co_name == "remove":
            frames.append(frame)
        return None

    sys.setprofile(spy)
    try:
        del key
    finally:
        sys.setprofile(None)
    assert frames, "the WeakKeyDictionary callback did not run"
    assert all(interrupt._unsafe(f) for f in frames)
    assert not interrupt._unsafe(sys._getframe())
