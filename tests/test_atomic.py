"""Atomic writes: temp name in the same folder with the same suffix, renamed on success only."""

from __future__ import annotations

import pytest

from data.atomic import atomic_write, stale_temps, write_json


def test_success_renames_and_keeps_suffix(tmp_path):
    target = tmp_path / "sub" / "model.keras"
    with atomic_write(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".keras" and tmp != target
        tmp.write_text("x")
        assert stale_temps(target) == [tmp]
    assert target.read_text() == "x" and stale_temps(target) == []


def test_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_write(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert stale_temps(target) == []
