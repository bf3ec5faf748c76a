"""The name "general": the family `make pretrain-general` makes, found from the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from msagg.models import pretrained
from msagg.stages.runs.pretrain_run import PretrainRunError
from msagg.stages.runs.upstream import open_upstream


def test_general_names_the_family_make_pretrain_general_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pretrained.resolve("general") == Path("general")
    with pytest.raises(PretrainRunError, match="make pretrain-general"):
        open_upstream("general", "pretrain", error=PretrainRunError)
    (tmp_path / "runs" / "general" / "pretrain").mkdir(parents=True)
    assert pretrained.resolve("general") == pretrained.GENERAL_RUN
    (tmp_path / "general").mkdir()  # a folder of that name wins
    assert pretrained.resolve("general") == Path("general")
    assert pretrained.resolve("runs/x") == Path("runs/x")
