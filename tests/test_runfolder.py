"""Run folders: config first, DONE last, no-op re-runs, refusal of another config."""

from __future__ import annotations

import dataclasses
import json

import pytest

from stages.runfolder import RunConflictError, RunFolder, config_hash, read_config


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
        read_config(out)
    # Interrupted (its lock dropped, as when the process dies): same config starts again (resume), outputs kept.
    (out / "partial.txt").write_text("x")
    rf.release()
    rf = RunFolder(out, "toy", Cfg())
    assert rf.start() is True
    assert (out / "partial.txt").exists()
    rf.finish({"n": 1})
    assert not rf.locked and sorted(p.name for p in out.iterdir()) == ["DONE", "config.json", "metadata.json",
                                                                        "partial.txt"]
    assert read_config(out)["seed"] == 0
    assert RunFolder(out, "toy", Cfg()).done
    assert RunFolder(out, "toy", Cfg()).start() is False  # no-op
    with pytest.raises(RunConflictError, match="another config"):
        RunFolder(out, "toy", Cfg(seed=1)).start()
    assert RunFolder(out, "toy", Cfg(seed=1)).start(overwrite=True) is True
    assert not (out / "DONE").exists() and not (out / "partial.txt").exists()


def test_config_hash_is_stable():
    assert config_hash(Cfg()) == config_hash({"scales": ["3^9"], "seed": 0})
    assert config_hash(Cfg()) != config_hash(Cfg(seed=2))
