"""prepare's Ray engine: the local engine's cache file for file, resumable by shard, surviving a killed worker.

A folder dataset of 40 tiny wav files and a corrupt one (21 shards of 2 tracks: ``MIN_SHARDS``
cuts a corpus this small); the Ray runs share one local cluster of 2 CPUs (``ray_cluster`` in
conftest.py), whose decoding workers start once.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from msagg.data import audio
from msagg.data.errors import ConfigError
from msagg.data.tracklist import absolute_source
from fresh_imports import modules_loaded_by
from h5_contents import contents
from ray_faults import assert_unreachable_address_fails_in_seconds
from msagg.pipeline.cli import main
from msagg.pipeline.config import resolve
from msagg.stages import prepare
from msagg.stages.engines import ray_decode
from msagg.stages.runs.folder import config_dict, config_hash

ROOT = Path(__file__).resolve().parent.parent
RATE = 8000
NUM_GOOD = 40
BROKEN = "b/broken.wav"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Two class folders of short tones (16 kHz, resampled to 8 kHz), and one file that is no audio."""
    root = tmp_path_factory.mktemp("ray-prepare") / "corpus"
    for i in range(NUM_GOOD):
        path = root / "ab"[i % 2] / f"tone {i:02d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        t = np.arange(int(16000 * (0.05 + 0.01 * (i % 7)))) / 16000
        audio.write(path, 0.3 * np.sin(2 * np.pi * (150 + 20 * i) * t), 16000)
    (root / BROKEN).write_bytes(b"RIFF\x10\x00\x00\x00WAVEnonsense" * 8)
    return root


def config(corpus: Path, **changes) -> prepare.Config:
    return prepare.Config(dataset="folder", source=str(corpus), sample_rate=RATE, **changes)


def cli_args(corpus: Path, out: Path, *more: str) -> list[str]:
    return ["prepare", "--dataset", "folder", "--source", str(corpus), "--sample-rate", str(RATE), "--out", str(out),
            *more]


@pytest.fixture(scope="module")
def local_run(corpus) -> Path:
    """The local engine's run folder, the reference every Ray run must reproduce."""
    out = corpus.parent / "local"
    prepare.run(config(corpus), out, workers=1, progress=False)
    return out


def cache_files(run_dir: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted((run_dir / "cache").iterdir())}


def assert_same_cache(run_dir: Path, reference: Path) -> None:
    """The same cache: the same files (no temporary left), every dataset and attribute, every byte."""
    got, expected = cache_files(run_dir), cache_files(reference)
    assert list(got) == list(expected)
    assert len([n for n in got if n.startswith("shard-")]) > 10
    for name, path in expected.items():
        if name.endswith(".h5"):
            assert contents(got[name]) == contents(path), name  # first, for a readable difference
        assert got[name].read_bytes() == path.read_bytes(), name
    for name in ("skipped.csv", "config.json"):
        assert (run_dir / name).read_bytes() == (reference / name).read_bytes(), name
    ours, theirs = (json.loads((d / "DONE").read_text()) for d in (run_dir, reference))
    assert ours["config_hash"] == theirs["config_hash"]
    assert (ours["num_tracks"], ours["num_skipped"]) == (theirs["num_tracks"], theirs["num_skipped"]) == (NUM_GOOD, 1)


# --- config: the engine is not part of what is made -------------------------------------------


def test_engine_and_address_leave_the_config_hash_alone():
    base = prepare.Config(dataset="folder", source="x")
    ray = prepare.Config(dataset="folder", source="x", engine="ray", address="head:6379")
    assert config_hash(ray) == config_hash(base)
    assert "engine" not in config_dict(ray) and "address" not in config_dict(ray)
    assert resolve(prepare.Config, options={"dataset": "folder", "source": "x"},
                   sets=("engine=ray", "address=head:6379")) == ray
    with pytest.raises(ConfigError, match="prepare: engine must be one of local, ray, got 'spark'"):
        prepare.Config(engine="spark")
    with pytest.raises(ConfigError, match="prepare: address 'head:6379': .* only with engine ray"):
        prepare.Config(address="head:6379")
    usage = CliRunner().invoke(main, ["prepare", "--help"]).output
    assert "--engine [local|ray]" in usage and "--address TEXT" in usage
    assert "--engine" not in CliRunner().invoke(main, ["crossval", "--help"]).output


def test_the_local_engine_loads_neither_ray_nor_keras():
    loaded = modules_loaded_by("msagg.stages.prepare", "msagg.stages.engines.ray_decode")
    assert not {"ray", "keras", "tensorflow"} & loaded


def test_file_sources_go_to_workers_as_absolute_paths():
    assert absolute_source("synth:0:1:10.0:30.0") == "synth:0:1:10.0:30.0"
    assert absolute_source("synthgm:0:1:10.0:30.0") == "synthgm:0:1:10.0:30.0"
    assert absolute_source("a/b.wav") == os.path.join(os.getcwd(), "a/b.wav")
    assert absolute_source("/x/b.wav") == "/x/b.wav"


# --- runs on Ray ------------------------------------------------------------------------------


def test_ray_engine_makes_the_local_engines_cache_though_a_worker_is_killed_mid_shard(ray_cluster, corpus, local_run):
    """The first task to decode a track SIGKILLs its own process, its shard's temporary file half written.

    Ray runs the task again in a new worker, which removes the dead one's temporary file; the cache
    is the local engine's, file for file.
    """
    out, flag = corpus.parent / "ray", corpus.parent / "die-once"
    flag.touch()
    path = prepare.run(config(corpus, engine="ray"), out, progress=False, engine_options={"die_once": flag})
    assert path == out / "cache"
    assert not flag.exists()  # a worker did die
    assert_same_cache(out, local_run)
    done = json.loads((out / "DONE").read_text())
    assert done["engine"] == "ray" and done["ray"] == {"num_tasks": 21, "retried_shards": 1, "nodes": 1}
    assert done["num_decoded_this_run"] == NUM_GOOD and done["workers"] == 2
    assert json.loads((local_run / "DONE").read_text())["engine"] == "local"


def test_a_killed_run_resumes_on_ray_from_its_finished_shards_through_the_cli_on_a_running_cluster(
        ray_cluster, corpus, local_run, monkeypatch):
    """A local run killed before its index, most of its shards then lost; `msagg prepare --engine ray
    --address` (another process, joining the running cluster) decodes only the missing shards."""
    out = corpus.parent / "resumed"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill after the last shard, before the index

    with monkeypatch.context() as m:
        m.setattr(prepare, "write_index", killed)
        with pytest.raises(KeyboardInterrupt):
            prepare.run(config(corpus), out, workers=1, progress=False)
    shards = sorted((out / "cache").glob("shard-*.h5"))
    for lost in shards[5:]:
        lost.unlink()
    # The temporary file of a task of the killed run on another node: its pid may be alive here.
    (out / "cache" / f".{shards[6].stem}.tmp-{os.getpid()}.h5").write_bytes(b"half a shard")
    kept = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards[:5]}

    address = ray_cluster.get_runtime_context().gcs_address
    res = subprocess.run([sys.executable, "-m", "msagg", *cli_args(corpus, out, "--engine", "ray", "--address",
                                                                       address)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in shards[:5]} == kept  # not decoded again
    done = json.loads((out / "DONE").read_text())
    assert done["ray"]["num_tasks"] == len(shards) - 5 and done["num_decoded_this_run"] < NUM_GOOD
    assert_same_cache(out, local_run)


def test_a_worker_dying_past_its_retries_is_one_line_and_the_same_command_resumes(ray_cluster, corpus, local_run):
    out, flag = corpus.parent / "no-retries", corpus.parent / "die-no-retry"
    flag.touch()
    message = r"^shard \d+: its Ray worker died on every attempt \(1\), or its node was lost \(.*run the same command"
    with pytest.raises(ray_decode.RayEngineError, match=message):
        prepare.run(config(corpus, engine="ray"), out, progress=False, engine_options={"die_once": flag, "max_retries": 0})
    assert not flag.exists() and not (out / "DONE").exists()
    prepare.run(config(corpus, engine="ray"), out, progress=False)
    assert_same_cache(out, local_run)


def test_strict_mode_stops_at_the_first_failure_with_one_line_and_keeps_finished_shards(ray_cluster, corpus):
    out = corpus.parent / "strict"
    result = CliRunner().invoke(main, cli_args(corpus, out, "--engine", "ray", "--strict"))
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: {corpus / BROKEN}: cannot decode: corrupt or unsupported audio"), last
    assert last.endswith("(strict mode; without it the file would be skipped)") and "Traceback" not in result.output
    assert not (out / "DONE").exists() and not (out / "cache" / "index.h5").exists()
    assert not [p.name for p in (out / "cache").iterdir() if p.name.startswith(".")]  # no temporary file left
    assert (out / "cache" / "plan.json").is_file()
    assert len(list((out / "cache").glob("shard-*.h5"))) < 21  # the broken file's shard is not written


# --- faults -----------------------------------------------------------------------------------


def test_unreachable_address_fails_in_seconds_and_writes_nothing(corpus, tmp_path):
    pytest.importorskip("ray")
    assert_unreachable_address_fails_in_seconds(
        cli_args(corpus, tmp_path / "x" / "prepare", "--engine", "ray", "--address", "127.0.0.1:1"), tmp_path / "x")


BLOCK_RAY = """
import sys
sys.modules["ray"] = None  # as if Ray were not installed: `import ray` raises ImportError
from msagg.pipeline.cli import main
corpus, out_local, out_ray = sys.argv[1:]
args = ["prepare", "--dataset", "folder", "--source", corpus, "--sample-rate", "8000", "--workers", "1", "--out"]
main(args + [out_local], standalone_mode=False)  # the local engine never imports Ray
main(args + [out_ray, "--engine", "ray"])
"""


def test_without_ray_the_local_engine_runs_and_the_ray_engine_is_one_line(corpus, local_run, tmp_path):
    res = subprocess.run([sys.executable, "-c", BLOCK_RAY, str(corpus), str(tmp_path / "local"), str(tmp_path / "ray")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (tmp_path / "local" / "DONE").is_file(), res.stderr[-3000:]
    assert_same_cache(tmp_path / "local", local_run)
    assert res.returncode == 1, res.stderr[-3000:]
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error") or "Traceback" in line]
    assert errors == ["Error: prepare --engine ray needs Ray, which is not installed here; install it with "
                      "pip install -e '.[ray]' (or pip install 'ray>=2.9')"]
    assert not (tmp_path / "ray").exists()


def test_a_node_that_does_not_see_the_run_folder_writes_nothing(ray_cluster, tmp_path):
    elsewhere = tmp_path / "not-shared" / "cache"
    plan = ray_decode.ShardPlan(num_tracks=1, tracks_per_shard=1, sample_rate=RATE, listing_sha256="0" * 64)
    code = ray_decode.code_fingerprint()
    with pytest.raises(prepare.PrepareError, match=r"does not see .*not-shared/cache/plan\.json: the run folder must"):
        ray_decode._decode_task(str(elsewhere), plan, 0, ["synth:0:0:1.0:2.0"], False, code, None)
    assert not (tmp_path / "not-shared").exists()
    with pytest.raises(ray_decode.RayEngineError, match="runs another msagg than the driver"):
        ray_decode._decode_task(str(elsewhere), plan, 0, ["synth:0:0:1.0:2.0"], False, "0" * 16, None)


def test_a_shard_the_driver_does_not_see_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_decode, "VISIBLE_WAIT_SEC", 0.0)
    (tmp_path / "shard-00000.h5").write_bytes(b"x" * 10)
    decoder = ray_decode.ShardDecoder(None)
    decoder._check_visible(str(tmp_path), [{"file": "shard-00000.h5", "bytes": 10}])
    with pytest.raises(ray_decode.RayEngineError, match=r"shard-00001\.h5: a Ray node wrote this shard, but this "
                                                         "process does not see it"):
        decoder._check_visible(str(tmp_path), [{"file": "shard-00001.h5", "bytes": 10}])
