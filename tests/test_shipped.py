"""The family msagg ships, and the name "general": found by name, complete, usable with nothing trained."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from msagg.models import pretrained
from msagg.stages.runs.pretrain_run import PretrainRunError
from msagg.stages.runs.upstream import open_upstream

SR = 22050


def test_the_general_family_ships_complete_and_small(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing made here: "general" is the package's own
    folder = pretrained.shipped_folder("general")
    run = open_upstream("general", "pretrain", error=PretrainRunError)
    assert run.folder == folder
    summary = json.loads((folder / "summary.json").read_text())
    assert sorted(summary) == ["3^8", "4^6"]
    config = json.loads((folder / "config.json").read_text())
    assert config["teacher_features"] == 1.0 and config["width"] == 0.5
    for scale in summary:
        metrics = json.loads((folder / scale / "metrics.json").read_text())
        assert metrics["learned"] is True, f"{scale} did not learn"
        assert {"guitar", "piano", "rock", "electronic"} <= set(metrics["label_names"])
        assert (folder / scale / "model.keras").is_file()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 20e6
    corpus = (folder / "CORPUS.md").read_text()
    assert "make pretrain-general" in corpus and "CC BY-SA 3.0" in corpus and "musicnn" in corpus


def test_general_names_a_folder_then_make_pretrain_general_s_run_then_the_shipped_family(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert pretrained.resolve("general") == pretrained.shipped_folder("general")
    (tmp_path / "runs" / "general" / "pretrain").mkdir(parents=True)
    assert pretrained.resolve("general") == pretrained.GENERAL_RUN
    (tmp_path / "general").mkdir()  # a folder of that name wins
    assert pretrained.resolve("general") == Path("general")
    assert pretrained.resolve("runs/x") == Path("runs/x")
    with pytest.raises(KeyError, match="msagg ships general"):
        pretrained.shipped_folder("nothing")


def test_predict_with_the_shipped_family_tells_a_chord_from_noise(tmp_path, monkeypatch):
    from msagg.stages.predict import predict_files

    monkeypatch.chdir(tmp_path)
    t = np.arange(6 * SR) / SR
    rng = np.random.default_rng(0)
    chord = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3
    sounds = {"chord.wav": 0.3 * chord * (1 + 0.5 * np.sin(2 * np.pi * 2 * t)),
              "noise.wav": 0.3 * rng.standard_normal(t.size)}
    for name, wave in sounds.items():
        sf.write(tmp_path / name, wave.astype(np.float32), SR)
    chord_scores, noise_scores = (r["scores"] for r in predict_files([os.fspath(tmp_path / n) for n in sounds],
                                                                      pretrain="general"))
    assert len(chord_scores) == 92 and {"guitar", "piano", "drums", "techno"} <= set(chord_scores)
    assert all(0.0 <= v <= 1.0 for v in chord_scores.values())
    difference = max(abs(chord_scores[k] - noise_scores[k]) for k in chord_scores)
    assert difference > 0.05, f"the shipped models answer a chord and white noise alike ({difference:.3f})"
