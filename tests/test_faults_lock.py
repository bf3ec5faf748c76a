"""Fault injection: run folders used by two processes at once, and the smaller faults a user meets.

Each test plants one fault for real (a process holding a run folder, a killed holder, a corrupt
config file, an unwritable output folder, ...) and checks what the user sees: one line naming the
file or folder and the reason, and nothing in the run folder changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from msagg.data.formats.cache_writer import write_cache
from msagg.data.errors import ConfigError, MsaggError
from msagg.data.formats.features import FeaturesFile
from msagg.data.tracklist import TrackList
from msagg.pipeline.cli import main
from msagg.pipeline.config import resolve
from msagg.stages import prepare
from msagg.stages.runs.folder import RunConflictError, RunFolder
from msagg.stages.runs.lock import LOCK_NAME, FolderLock, RunFolderBusy
from msagg.stages.runs.records import config_dict
from msagg.stages.runs.upstream import open_upstream

ROOT = Path(__file__).resolve().parent.parent

HOLDER = (
    "import sys, time\n"
    "from msagg.stages.runs.folder import FolderLock\n"
    "FolderLock(sys.argv[1]).acquire()\n"
    "print('locked', flush=True)\n"
    "time.sleep(600)\n"
)
"""A process that takes a run folder's lock through the public API and keeps it until killed."""


@contextlib.contextmanager
def holding(folder: Path):
    """Runs a HOLDER process on ``folder``; yields it once it holds the lock; SIGKILLs it at the end."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "locked", proc.stderr.read()
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        proc.stderr.close()


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: (mtime_ns, sha256 of a file's bytes or "dir")."""
    out = {}
    for path in sorted(folder.rglob("*")):
        kind = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
        out[str(path.relative_to(folder))] = (path.stat().st_mtime_ns, kind)
    return out


def tiny_prepare_config(**changes) -> prepare.Config:
    return prepare.Config(**{"num_tracks": 8, "min_sec": 1.0, "max_sec": 1.5, "sample_rate": 4000, **changes})


def one_line_error(result) -> str:
    """The CLI's output, checked to be a single ``Error: ...`` line with no traceback."""
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


# --- 1. Exclusive run folders --------------------------------------------------------------------


def _stage_call(stage: str, tmp_path: Path):
    """(config, run, keyword arguments) of a stage whose upstream folders do not even exist: the lock comes first."""
    if stage == "prepare":
        return tiny_prepare_config(), prepare.run, {"workers": 1}
    if stage == "pretrain":
        from msagg.stages import pretrain

        cfg = pretrain.Config(cache=str(tmp_path / "no-cache"), **pretrain.PRESETS["tiny"])
        return cfg, pretrain.run, {"tensorboard": False}
    if stage == "extract":
        from msagg.stages import extract

        return extract.Config(pretrain=str(tmp_path / "no-pretrain"), cache=str(tmp_path / "no-cache")), extract.run, {}
    from msagg.stages import classify

    return classify.Config(features=str(tmp_path / "no-features")), classify.run, {}


@pytest.mark.parametrize("stage", ["prepare", "pretrain", "extract", "classify"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_busy_run_folder_is_refused_and_left_untouched(tmp_path, stage, overwrite):
    """Fault: another process is running a stage in the same output folder (it holds the lock)."""
    config, run, kwargs = _stage_call(stage, tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    # What a run of this very config leaves while it works: its config, metadata and partial outputs.
    (out / "config.json").write_text(json.dumps(config_dict(config)))
    (out / "metadata.json").write_text("{}")
    (out / "features.h5.partial").write_bytes(b"rows written so far")
    (out / "cache").mkdir()
    (out / "cache" / "shard-00000.h5").write_bytes(b"a decoded shard")
    with holding(out) as holder:
        before = snapshot(out)
        with pytest.raises(RunFolderBusy) as err:
            run(config, out, overwrite=overwrite, progress=False, **kwargs)
        assert str(err.value).startswith(f"{out} is in use by process {holder.pid}")
        assert err.value.pid == holder.pid and err.value.path == out
        assert snapshot(out) == before  # nothing written, truncated or removed, not even the lock file


def test_a_killed_holder_frees_the_folder_and_the_stage_runs(tmp_path):
    """Fault: the process that held the run folder was killed (SIGKILL), leaving its lock file behind."""
    out = tmp_path / "run"
    with holding(out) as holder:
        pass  # holding() SIGKILLs it on exit
    assert holder.returncode == -signal.SIGKILL
    assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)  # stale, but it locks nothing
    path = prepare.run(tiny_prepare_config(), out, workers=1, progress=False)
    assert path == out / "cache"
    assert sorted(p.name for p in out.iterdir()) == ["DONE", "cache", "config.json", "metadata.json",
                                                       "skipped.csv"]


def test_the_lock_is_released_when_a_stage_fails_so_this_process_can_run_again(tmp_path):
    """Fault: a stage raises halfway (a bad upstream folder; a strict prepare meeting no tracks)."""
    from msagg.stages import extract

    out = tmp_path / "ext"
    with pytest.raises(MsaggError, match="no-cache"):
        extract.run(extract.Config(pretrain=str(tmp_path / "no-pretrain"), cache=str(tmp_path / "no-cache")),
                    out, progress=False)
    assert not out.exists()  # the folder the lock made is gone again: a failed check leaves nothing
    src = tmp_path / "src" / "noise"
    src.mkdir(parents=True)
    (src / "broken.wav").write_bytes(b"RIFF not really a wave file")
    out = tmp_path / "prep"
    with pytest.raises(prepare.PrepareError, match="none of the 1 tracks could be decoded"):
        prepare.run(prepare.Config(dataset="folder", source=str(src.parent), sample_rate=4000), out, workers=1,
                    progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["cache", "config.json", "metadata.json", "skipped.csv"]
    with FolderLock(out) as lock:  # free again, in this very process
        assert lock.held and (out / LOCK_NAME).is_file()
    assert not (out / LOCK_NAME).exists()


def test_locks_exclude_each_other_while_files_come_and_go(tmp_path):
    """Fault: processes racing for one folder while each release removes the lock file (the unlink race)."""
    worker = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from msagg.stages.runs.folder import FolderLock, RunFolderBusy\n"
        "folder = Path(sys.argv[1]); counter = folder.parent / 'counter'\n"
        "done = 0\n"
        "while done < 25:\n"
        "    lock = FolderLock(folder)\n"
        "    try:\n"
        "        lock.acquire()\n"
        "    except RunFolderBusy:\n"
        "        time.sleep(0.0005); continue\n"
        "    n = int(counter.read_text()); time.sleep(0.001); counter.write_text(str(n + 1))\n"
        "    lock.release(); done += 1\n"
    )
    folder = tmp_path / "run"
    (tmp_path / "counter").write_text("0")
    procs = [subprocess.Popen([sys.executable, "-c", worker, str(folder)], cwd=ROOT) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert (tmp_path / "counter").read_text() == "75"  # no two holders ever overlapped
    # each release removed the lock file (and a release whose acquire made the folder removes it, empty)
    assert not folder.exists() or list(folder.iterdir()) == []


def _tiny_cache(folder: Path, num_tracks: int = 16, sample_rate: int = 800) -> Path:
    """A prepare run folder holding a tiny tags cache of sines and noise."""
    rng = np.random.default_rng(0)
    lengths = [64 + 37 * i for i in range(num_tracks)]
    waves = [0.5 * np.sin(0.1 * (i + 1) * np.arange(n)) + 0.1 * rng.standard_normal(n)
             for i, n in enumerate(lengths)]
    tracks = TrackList(name="toy", task="tags", label_names=["low", "mid", "high"],
                       track_ids=[f"t{i:02d}" for i in range(num_tracks)],
                       sources=[f"synth:0:{i}:{num_tracks}" for i in range(num_tracks)],
                       labels=(rng.random((num_tracks, 3)) < 0.5).astype(np.uint8),
                       split=(["train", "train", "valid", "test"] * num_tracks)[:num_tracks])
    folder.mkdir(parents=True)
    write_cache(folder / "cache", tracks, waves, sample_rate=sample_rate, tracks_per_shard=5)
    (folder / "config.json").write_text(json.dumps({"dataset": "toy"}))
    (folder / "DONE").write_text("{}")
    return folder


def _wait_for_lock(folder: Path, pid: int, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if (folder / LOCK_NAME).read_text().strip() == str(pid):
                return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.002)
    raise AssertionError(f"{folder}: process {pid} never took the lock")


def test_two_extracts_on_one_folder(tmp_path):
    """Fault (the issue's reproduction): a second `msagg extract` on the out folder of a running one."""
    import pretrain_runs

    cache = _tiny_cache(tmp_path / "prepare")
    pretrain = pretrain_runs.make_pretrain(tmp_path / "pretrain", cache, sample_rate=800)
    out = tmp_path / "extract"
    args = ["extract", "--pretrain", str(pretrain), "--cache", str(cache), "--out", str(out), "--batch-size", "4"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    # The second process imports the backend while the first does, then waits for a line on stdin
    # and runs the same command line through the CLI's entry point.
    second_script = ("import sys\nfrom msagg.stages import quiet\nquiet.import_backend()\nfrom msagg.pipeline.cli import main\n"
                     "sys.stdin.readline()\nmain(sys.argv[1:], prog_name='msagg')\n")
    first = subprocess.Popen([sys.executable, "-m", "msagg", *args], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    second = subprocess.Popen([sys.executable, "-c", second_script, *args], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_lock(out, first.pid, first)
        os.kill(first.pid, signal.SIGSTOP)  # frozen while it holds the folder, mid-run
        assert (out / LOCK_NAME).read_text().strip() == str(first.pid), "the first run finished too soon"
        before = snapshot(out)
        started = time.monotonic()
        _, err = second.communicate("go\n", timeout=120)
        seconds = time.monotonic() - started
        assert second.returncode == 1, err
        assert err.strip().splitlines()[-1] == (f"Error: {out} is in use by process {first.pid}; wait for it to "
                                                "end or choose another output folder")
        assert "Traceback" not in err
        assert seconds < 30  # at once: nothing is read before the lock (test_refusal: nor any backend loaded)
        assert snapshot(out) == before
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(first.pid, signal.SIGCONT)
        if second.poll() is None:
            second.kill()
            second.communicate()
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    with FeaturesFile(out) as ff:
        assert ff.num_tracks == 16 and set(ff.scales) == {"3^2", "4^2"}
    with h5py.File(out / "features.h5") as f:
        assert bool(f.attrs["complete"]) and int(f.attrs["num_done"]) == 16
        assert np.isfinite(f["features/3^2/-1"][:]).all()
    assert sorted(p.name for p in out.iterdir()) == ["DONE", "config.json", "features.h5", "metadata.json"]


# --- 2. Config faults ----------------------------------------------------------------------------


@pytest.mark.parametrize("command,message", [
    (["pretrain"], "pretrain needs cache (--cache or --set cache=...)"),
    (["extract"], "extract needs pretrain (--pretrain or --set pretrain=...) and cache (--cache or --set cache=...)"),
    (["extract", "--cache", "c"], "extract needs pretrain (--pretrain or --set pretrain=...)"),
    (["classify"], "classify needs features (--features or --set features=...)"),
])
def test_a_missing_required_key_names_its_option(tmp_path, command, message):
    """Fault: a stage run without a required config key (e.g. `msagg pretrain` without --cache)."""
    out = tmp_path / "run"
    result = CliRunner().invoke(main, [*command, "--out", str(out)])
    assert result.exit_code == 1
    assert one_line_error(result) == f"Error: {message}"
    assert "__init__" not in result.output and not out.exists()


def test_a_missing_key_without_an_option_points_to_set_and_config():
    """Fault: library code resolving a stage config without one of its required keys."""
    from msagg.stages import extract

    with pytest.raises(ConfigError, match=r"^extract needs cache \(--set cache=\.\.\. or --config FILE\)$"):
        resolve(extract.Config, options={"pretrain": "p"})


@pytest.mark.parametrize("name,content,reason", [
    ("broken.json", b'{"cache": ', "not valid JSON"),
    ("latin1.json", b'{"cache": "caf\xe9"}', "not a text config file"),
    ("list.json", b'["cache"]', "expected a mapping of config keys"),
    ("broken.toml", b"cache = ", "not valid TOML"),
])
def test_a_bad_config_file_is_named(tmp_path, name, content, reason):
    """Fault: --config FILE that is not JSON/TOML, not UTF-8, or not a mapping."""
    bad = tmp_path / name
    bad.write_bytes(content)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["prepare", "--config", str(bad), "--out", str(out)])
    assert result.exit_code == 1
    assert one_line_error(result).startswith(f"Error: {bad}: {reason}")
    assert not out.exists()


def test_a_run_folder_whose_config_json_is_not_json(tmp_path):
    """Fault: a run folder's config.json damaged (not JSON), in the output folder and in an upstream one."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text('{"dataset": "synth-')
    (out / "cache.h5").write_bytes(b"someone's cache")
    before = snapshot(out)
    args = ["prepare", "--num-tracks", "8", "--min-sec", "1", "--max-sec", "1.5", "--sample-rate", "4000",
            "--workers", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    line = one_line_error(result)
    assert line.startswith(f"Error: {out / 'config.json'}: not valid JSON") and "--overwrite" in line
    assert snapshot(out) == before
    # Finished folders read as upstream or by predict name the file too.
    (out / "DONE").write_text("{}")
    with pytest.raises(MsaggError, match=rf"^{out / 'config.json'}: not valid JSON"):
        open_upstream(out, "prepare")
    with pytest.raises(MsaggError, match=rf"^{out / 'config.json'}: not valid JSON"):
        RunFolder(tmp_path / "next", "pretrain", tiny_prepare_config(), upstream={"cache": out}).start()
    assert not (tmp_path / "next").exists()
    # --overwrite replaces the damaged run.
    result = CliRunner().invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert open_upstream(out, "prepare").config["num_tracks"] == 8


def test_predict_refuses_top_below_one():
    """Fault: `msagg predict --top -1` (and 0), which printed nothing per file."""
    for value in ("-1", "0"):
        result = CliRunner().invoke(main, ["predict", "song.wav", "--pretrain", "runs/x", "--top", value])
        assert result.exit_code == 2
        assert f"Invalid value for '--top': {value} is not in the range x>=1" in result.output


# --- 3. OSErrors as one line ---------------------------------------------------------------------


STAGE_ARGS = {
    "prepare": ["prepare", "--num-tracks", "8", "--workers", "1"],
    "pretrain": ["pretrain", "--cache", "no-cache", "--preset", "tiny"],
    "extract": ["extract", "--pretrain", "no-pretrain", "--cache", "no-cache"],
    "classify": ["classify", "--features", "no-features"],
}


@pytest.mark.parametrize("stage", list(STAGE_ARGS))
def test_out_below_a_regular_file_is_one_line(tmp_path, stage):
    """Fault: --out pointing below a regular file (no folder can be made there)."""
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "run"
    result = CliRunner().invoke(main, [*STAGE_ARGS[stage], "--out", str(out)])
    assert result.exit_code == 1
    assert one_line_error(result) == f"Error: {out}: Not a directory"
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs Linux sysfs")
def test_out_where_even_root_cannot_write_is_one_line():
    """Fault: --out in a folder nobody may create anything in (sysfs: refused even to root)."""
    out = Path("/sys/msagg-test-run")
    result = CliRunner().invoke(main, [*STAGE_ARGS["prepare"], "--out", str(out)])
    assert result.exit_code == 1
    assert one_line_error(result) == f"Error: {out}: Operation not permitted"


@contextlib.contextmanager
def read_only(folder: Path):
    """Makes ``folder`` unwritable for this process (for root: the immutable attribute), then undoes it."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)],
                                                        capture_output=True).returncode != 0:
        pytest.skip("root needs chattr +i (an ext4-like filesystem) for a folder it cannot write")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_read_only_run_folder(tmp_path):
    """Fault: the output folder is read-only (as on a read-only disk or a foreign-owned folder)."""
    out = tmp_path / "run"
    args = [*STAGE_ARGS["prepare"], "--min-sec", "1", "--max-sec", "1.5", "--sample-rate", "4000", "--out", str(out)]
    runner = CliRunner()
    out.mkdir()
    with read_only(out):
        result = runner.invoke(main, args)
    assert result.exit_code == 1
    assert one_line_error(result) in (f"Error: {out / LOCK_NAME}: Permission denied",
                                      f"Error: {out / LOCK_NAME}: Operation not permitted")
    assert list(out.iterdir()) == []
    # A finished run needs no lock to be found done: re-running it on read-only storage is still a no-op.
    assert runner.invoke(main, args).exit_code == 0
    before = snapshot(out)
    with read_only(out):
        result = runner.invoke(main, args)
        assert result.exit_code == 0, result.output
        assert snapshot(out) == before
        result = runner.invoke(main, [*args, "--overwrite"])
    assert result.exit_code == 1
    assert one_line_error(result).startswith(f"Error: {out}/")


def test_bench_with_an_unusable_out_fails_before_measuring(tmp_path):
    """Fault: `msagg bench --out` below a regular file, which failed only after the whole benchmark."""
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "bench.json"
    started = time.monotonic()
    result = CliRunner().invoke(main, ["bench", "--scales", "3^2", "--quick", "--out", str(out)])
    assert result.exit_code == 1
    assert one_line_error(result) == f"Error: {tmp_path / 'afile'}: Not a directory"
    assert time.monotonic() - started < 20


def test_run_folder_busy_is_a_user_error_that_pickles():
    """Fault: the busy error crossing a process boundary (it carries the folder and the pid)."""
    import pickle

    err = pickle.loads(pickle.dumps(RunFolderBusy(Path("runs/x"), 42)))
    assert isinstance(err, MsaggError) and err.pid == 42
    assert str(err).startswith("runs/x is in use by process 42")
    assert isinstance(RunConflictError("x"), MsaggError)
