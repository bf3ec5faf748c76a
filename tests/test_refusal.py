"""Saying no before any backend starts: a usage or config error and a busy run folder are refused by a
process that never imported TensorFlow, Keras, JAX or Ray (which is what makes refusal take seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_faults_lock import holding

BACKENDS = ("tensorflow", "keras", "jax", "ray")

# The CLI in a fresh interpreter; at exit, the backends it imported go to the real stdout as JSON.
CLI = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print('BACKENDS ' + json.dumps(sorted(m for m in {backends!r} if m in sys.modules)), "
    "file=sys.__stdout__, flush=True))\n"
    "sys.argv = ['msagg'] + {args!r}\n"
    "from msagg.pipeline.cli import main\n"
    "main(prog_name='msagg')\n"
)


def refuse(*args: str, cwd: Path) -> tuple[str, list[str]]:
    """Runs ``msagg ARGS`` in a fresh interpreter; returns (its one-line error, the backends it imported)."""
    code = CLI.format(backends=BACKENDS, args=[str(a) for a in args])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=cwd)
    # 1: msagg's own one-line errors; 2: click's usage errors (a missing option, no argument)
    assert res.returncode in (1, 2) and "Traceback" not in res.stderr, (res.returncode, res.stderr[-2000:])
    loaded = json.loads(res.stdout.split("BACKENDS ", 1)[1])
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.stderr
    return errors[0], loaded


@pytest.mark.parametrize("args, message", [
    (["pretrain", "--cache", "c", "--out", "o", "--set", "batch_size=abc"], "batch_size"),
    (["pretrain", "--cache", "c", "--out", "o", "--scales", "7^x"], "7^x"),
    (["extract", "--pretrain", "p", "--cache", "c", "--out", "o", "--set", "precision=fp8"], "precision"),
    (["classify", "--features", "f", "--out", "o", "--set", "repeats=-1"], "repeats"),
    (["extract", "--pretrain", "p", "--cache", "c", "--out", "o", "--config", "missing.toml"], "missing.toml"),
    (["predict", "song.wav"], "--pretrain"),
])
def test_a_bad_option_is_refused_before_any_backend(tmp_path, args, message):
    error, loaded = refuse(*args, cwd=tmp_path)
    assert message in error
    assert loaded == [], f"{error!r} came after importing {loaded}"


@pytest.mark.parametrize("stage", ["pretrain", "extract", "classify"])
def test_a_busy_run_folder_is_refused_before_any_backend(tmp_path, stage):
    out = tmp_path / "busy"
    args = {"pretrain": ["--cache", tmp_path / "c"], "extract": ["--pretrain", tmp_path / "p", "--cache", tmp_path / "c"],
            "classify": ["--features", tmp_path / "f"]}[stage]
    with holding(out):
        error, loaded = refuse(stage, *args, "--out", out, cwd=tmp_path)
    assert "busy" in error or "another msagg process" in error, error
    assert loaded == [], f"{error!r} came after importing {loaded}"
