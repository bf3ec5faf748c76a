"""extract's Ray engine: the local engine's features.h5 bit for bit, resumable by range, surviving a killed worker.

The Ray runs share one local cluster of 2 CPUs (``ray_cluster`` in conftest.py); each run starts
its own actors, which load TensorFlow and the models (seconds each), so there are few of them.
"""

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from msagg.data.formats.cache import AudioCache
from msagg.data.errors import ConfigError
from msagg.pipeline.config import resolve
from msagg.stages import extract
from msagg.stages.engines import ray_extract as ray_engine
from msagg.stages.engines import taps
from msagg.stages.runs.folder import config_dict, config_hash
from h5_contents import contents
from ray_faults import assert_unreachable_address_fails_in_seconds
from test_extract import LENGTHS, make_cache, make_pretrain

ROOT = Path(__file__).resolve().parent.parent
BATCH = 4  # segments per forward pass: several groups of tracks in 12 tracks
INPUT_LENGTHS = {"3^2": 27, "4^2": 64}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    cache = make_cache(root / "prepare")
    return root, cache, make_pretrain(root / "pretrain", cache)


@pytest.fixture(scope="module")
def local_run(upstream):
    """The local engine's run folder, the reference every Ray run must reproduce."""
    root, cache, pretrain = upstream
    extract.run(extract.Config(pretrain=str(pretrain), cache=str(cache)), root / "local", batch_size=BATCH,
                progress=False)
    return root / "local"


def config(upstream, **changes) -> extract.Config:
    _, cache, pretrain = upstream
    return extract.Config(pretrain=str(pretrain), cache=str(cache), **changes)


def assert_same_features(run_dir: Path, reference: Path) -> None:
    """The same features.h5 (every dataset and attribute: features.h5 holds no timing) and config.json."""
    got, expected = contents(run_dir / "features.h5"), contents(reference / "features.h5")
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert got[name] == expected[name], name
    assert (run_dir / "config.json").read_bytes() == (reference / "config.json").read_bytes()
    assert not (run_dir / "features.h5.partial").exists()


# --- config: the engine is not part of what is computed ---------------------------------------


def test_engine_and_address_leave_the_config_hash_alone():
    base = dict(pretrain="runs/demo/pretrain", cache="runs/demo/prepare/synth-tags", segments="drop", classic=("mfcc",))
    # The hash of this config before engine and address existed (msagg 3fc427a; and segments, "drop" then;
    # and the teacher's reference set, which the default adds where musicnn is installed).
    assert config_hash(extract.Config(**base)) == "2a851ac8fd1c"
    ray = extract.Config(**base, engine="ray", address="head:6379")
    assert config_hash(ray) == "2a851ac8fd1c"
    assert "engine" not in config_dict(ray) and "address" not in config_dict(ray)
    assert resolve(extract.Config, options=base, sets=("engine=ray", "address=head:6379")) == ray
    with pytest.raises(ConfigError, match="engine must be one of local, ray, got 'spark'"):
        extract.Config(**base, engine="spark")
    with pytest.raises(ConfigError, match="address 'head:6379': .* only with engine ray"):
        extract.Config(**base, address="head:6379")


# --- ranges -----------------------------------------------------------------------------------


def test_row_ranges_follow_the_shards_or_cut_every_max_tracks():
    plain = SimpleNamespace(num_tracks=10)
    assert ray_engine.row_ranges(plain, 4) == [(0, 4), (4, 8), (8, 10)]
    # The sharded cache's AudioCache.shards: ranges with first/end; a shard larger than max_tracks is cut.
    shard = lambda first, end: SimpleNamespace(shard=0, path=Path("x"), first=first, end=end)  # noqa: E731
    sharded = SimpleNamespace(num_tracks=10, shards=[shard(0, 3), shard(3, 9), shard(9, 10)])
    assert ray_engine.row_ranges(sharded, 4) == [(0, 3), (3, 7), (7, 9), (9, 10)]
    assert ray_engine.row_ranges(SimpleNamespace(num_tracks=5, shards=[(0, 2), (2, 5)]), 8) == [(0, 2), (2, 5)]
    # Shards that do not tile the rows are not trusted.
    assert ray_engine.row_ranges(SimpleNamespace(num_tracks=5, shards=[(0, 2), (3, 5)]), 4) == [(0, 4), (4, 5)]


def test_ranges_end_on_the_local_engines_group_boundaries_and_resume_from_start():
    cache = SimpleNamespace(num_tracks=len(LENGTHS), lengths=np.array(LENGTHS))
    models = {s: SimpleNamespace(input_length=n) for s, n in INPUT_LENGTHS.items()}
    groups = list(taps._chunks(range(len(LENGTHS)), lambda i: LENGTHS[i], models, BATCH))
    bounds = [g[0] for g in groups] + [len(LENGTHS)]
    assert ray_engine.group_starts(LENGTHS, INPUT_LENGTHS, BATCH) == bounds
    assert len(groups) > 4  # else the test shows nothing
    ranges = ray_engine.plan_ranges(cache, INPUT_LENGTHS, BATCH, max_tracks=3)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(LENGTHS)
    assert all(a < b and b in bounds for a, b in ranges)
    assert all(ranges[i][1] == ranges[i + 1][0] for i in range(len(ranges) - 1))
    assert len(ranges) >= 3
    # Resumed at a written boundary: the remaining ranges, from there.
    done = ranges[1][1]
    assert ray_engine.plan_ranges(cache, INPUT_LENGTHS, BATCH, max_tracks=3, start=done) == ranges[2:]
    assert ray_engine.plan_ranges(cache, INPUT_LENGTHS, BATCH, max_tracks=3, start=len(LENGTHS)) == []


def test_split_address():
    assert ray_engine.split_address("head:6379") == ("head", 6379)
    assert ray_engine.split_address("10.0.0.5") == ("10.0.0.5", 6379)
    assert ray_engine.split_address("ray://head") == ("head", 10001)
    assert ray_engine.split_address("ray://head:10002") == ("head", 10002)
    assert ray_engine.split_address("[::1]:6380") == ("::1", 6380)
    with pytest.raises(ray_engine.RayEngineError, match="port 'x' is not a number"):
        ray_engine.split_address("head:x")


# --- runs on Ray ------------------------------------------------------------------------------


def test_ray_engine_writes_the_local_engines_file_though_a_worker_is_killed(ray_cluster, upstream, local_run):
    """Two actors over ranges of about 3 tracks; one SIGKILLs its own process as it starts its first range.

    Ray restarts it (its models loaded again) and runs that range again; the other actor's results
    arrive out of order and wait. The driver makes the local engine's writes, group by group: the
    file is the local engine's, every dataset and attribute, and every byte.
    """
    root = upstream[0]
    out, flag = root / "ray", root / "die-once"
    flag.touch()
    extract.run(config(upstream, engine="ray"), out, batch_size=BATCH, progress=False,
                engine_options={"range_tracks": 3, "num_actors": 2, "die_once": flag})
    assert not flag.exists()  # a worker did die
    assert_same_features(out, local_run)
    assert (out / "features.h5").read_bytes() == (local_run / "features.h5").read_bytes()
    done = json.loads((out / "DONE").read_text())
    with AudioCache(upstream[1]) as cache:  # its shards cut the ranges too
        expected_ranges = len(ray_engine.plan_ranges(cache, INPUT_LENGTHS, BATCH, max_tracks=3))
    assert done["engine"] == "ray" and done["ray"] == {"num_actors": 2, "num_ranges": expected_ranges,
                                                       "restarted_actors": 1, "nodes": 1}
    assert done["config_hash"] == json.loads((local_run / "DONE").read_text())["config_hash"]


def test_a_stopped_ray_run_resumes_after_its_last_group_through_the_cli_on_a_running_cluster(
        ray_cluster, upstream, local_run):
    """Stopped after its first group of tracks was written (within its first range), as a kill would;
    `msagg extract --engine ray --address` on the running cluster resumes it from there."""
    root, cache, pretrain = upstream
    out = root / "ray-resumed"
    with pytest.raises(extract.ExtractionStopped):
        extract.run(config(upstream, engine="ray"), out, batch_size=BATCH, progress=False, stop_after=1,
                    engine_options={"range_tracks": 3, "num_actors": 1})
    groups = ray_engine.group_starts(LENGTHS, INPUT_LENGTHS, BATCH)
    with h5py.File(out / "features.h5.partial", "r") as h5:
        done = int(h5.attrs["num_done"])
    assert done == groups[1] < len(LENGTHS)  # the first group, whole, and nothing more

    # Another process joins the running cluster (so its code travels as the job's py_modules).
    address = ray_cluster.get_runtime_context().gcs_address
    res = subprocess.run([sys.executable, "-m", "msagg", "extract", "--pretrain", str(pretrain), "--cache",
                          str(cache), "--out", str(out), "--batch-size", str(BATCH), "--engine", "ray",
                          "--address", address], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "DONE").read_text())["ray"]
    with AudioCache(upstream[1]) as cache:
        remaining = ray_engine.plan_ranges(cache, INPUT_LENGTHS, BATCH, start=done)
    assert remaining[0][0] == done and summary["num_ranges"] == len(remaining)  # resumed, not restarted
    assert_same_features(out, local_run)


# --- faults -----------------------------------------------------------------------------------


def test_unreachable_address_fails_in_seconds_and_writes_nothing(upstream, tmp_path):
    pytest.importorskip("ray")
    _, cache, pretrain = upstream
    out = tmp_path / "x" / "extract"
    assert_unreachable_address_fails_in_seconds(["extract", "--pretrain", str(pretrain), "--cache", str(cache), "--out",
                                                 str(out), "--engine", "ray", "--address", "127.0.0.1:1"], tmp_path / "x")


BLOCK_RAY = """
import sys
sys.modules["ray"] = None  # as if Ray were not installed: `import ray` raises ImportError
from msagg.stages import extract
pretrain, cache, out_local, out_ray = sys.argv[1:]
extract.run(extract.Config(pretrain=pretrain, cache=cache), out_local, batch_size=4, progress=False)
from msagg.pipeline.cli import main
main(["extract", "--pretrain", pretrain, "--cache", cache, "--out", out_ray, "--engine", "ray"])
"""


def test_without_ray_the_local_engine_runs_and_the_ray_engine_is_one_line(upstream, local_run, tmp_path):
    _, cache, pretrain = upstream
    res = subprocess.run([sys.executable, "-c", BLOCK_RAY, str(pretrain), str(cache), str(tmp_path / "local"),
                          str(tmp_path / "ray")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (tmp_path / "local" / "DONE").is_file(), res.stderr[-3000:]  # the local engine never imports Ray
    assert_same_features(tmp_path / "local", local_run)
    assert res.returncode == 1, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if "Error" in line or "Traceback" in line]
    assert errors == ["Error: extract --engine ray needs Ray, which is not installed here; install it with "
                      "pip install -e '.[ray]' (or pip install 'ray>=2.9')"]
    assert not (tmp_path / "ray").exists()
