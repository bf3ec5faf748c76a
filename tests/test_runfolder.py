"""Run folders: config first, DONE last, no-op re-runs, refusal of another config."""

from __future__ import annotations

import dataclasses
import json

import pytest

from msagg.stages.runs.folder import RunConflictError, RunFolder
from msagg.stages.runs.records import OMIT_DEFAULT, OMIT_NONE, config_dict, config_hash
from msagg.stages.runs.upstream import open_upstream


@dataclasses.dataclass(frozen=True, kw_only=True)
class Cfg:
    seed: int = 0
    scales: tuple[str, ...] = ("3^9",)


def test_lifecycle(tmp_path):
    out = tmp_path / "run"
    rf = RunFolder(out, "toy", Cfg(), upstream={"up": tmp_path})
    assert rf.start() is True
    assert json.loads((out / "config.json").read_text()) == {"seed": 0, "scales": ["3^9"]}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["stage"] == "toy" and meta["config_hash"] == config_hash(Cfg())
    assert "numpy" in meta["packages"]
    with pytest.raises(ValueError, match="has not finished"):
        open_upstream(out, "toy")
    # Interrupted (its lock dropped, as when the process dies): same config starts again (resume), outputs kept.
    (out / "partial.txt").write_text("x")
    rf.release()
    rf = RunFolder(out, "toy", Cfg())
    assert rf.start() is True
    assert (out / "partial.txt").exists()
    rf.finish({"n": 1})
    assert not rf.locked and sorted(p.name for p in out.iterdir()) == ["DONE", "config.json", "metadata.json",
                                                                        "partial.txt"]
    assert open_upstream(out, "toy").config["seed"] == 0
    assert RunFolder(out, "toy", Cfg()).done
    assert RunFolder(out, "toy", Cfg()).start() is False  # no-op
    with pytest.raises(RunConflictError, match="another config"):
        RunFolder(out, "toy", Cfg(seed=1)).start()
    assert RunFolder(out, "toy", Cfg(seed=1)).start(overwrite=True) is True
    assert not (out / "DONE").exists() and not (out / "partial.txt").exists()


def test_config_hash_is_stable():
    assert config_hash(Cfg()) == config_hash({"scales": ["3^9"], "seed": 0})
    assert config_hash(Cfg()) != config_hash(Cfg(seed=2))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Later(Cfg):
    """Cfg with fields added later: left out of config.json and the hash at their defaults."""

    source: str | None = dataclasses.field(default=None, metadata={OMIT_NONE: True})
    devices: int | str = dataclasses.field(default=1, metadata={OMIT_DEFAULT: True})
    scales_added: tuple[str, ...] = dataclasses.field(default=("3^9",), metadata={OMIT_DEFAULT: True})


def test_fields_added_later_keep_the_hash_of_older_runs(tmp_path):
    assert config_dict(Later()) == config_dict(Cfg()) and config_hash(Later()) == config_hash(Cfg())
    # Another value is recorded and hashed (a tuple default compares as its JSON list).
    assert config_dict(Later(devices=2)) == {**config_dict(Cfg()), "devices": 2}
    assert config_dict(Later(devices="all"))["devices"] == "all"
    assert config_hash(Later(devices=2)) != config_hash(Cfg())
    assert config_dict(Later(scales_added=("3^8",)))["scales_added"] == ["3^8"]
    # A folder an older msagg made with Cfg is this run, done (a no-op), not a conflict.
    out = tmp_path / "run"
    old = RunFolder(out, "toy", Cfg())
    assert old.start() is True
    old.finish()
    assert RunFolder(out, "toy", Later()).done and RunFolder(out, "toy", Later()).start() is False
    with pytest.raises(RunConflictError, match="another config"):
        RunFolder(out, "toy", Later(devices=2)).start()


def test_runtime_is_recorded_in_metadata_and_not_hashed(tmp_path):
    runtime = {"devices": {"requested": "all", "count": 2, "names": ["gpu:0", "gpu:1"]}}
    rf = RunFolder(tmp_path / "run", "toy", Cfg(), runtime=runtime)
    assert rf.hash == config_hash(Cfg())
    assert rf.start() is True
    assert json.loads((tmp_path / "run" / "metadata.json").read_text())["runtime"] == runtime
    assert "runtime" not in json.loads((tmp_path / "run" / "config.json").read_text())
