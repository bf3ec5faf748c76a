"""Cross-validation over the stages: summary golden values and a tiny 2-fold run through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from data.adapters import DatasetError
from data.errors import ConfigError
from pipeline.cli import main
from pipeline.protocols import fold_options, summarize, summary_markdown


def _fold(acc_a, acc_b, e2e):
    return {
        "task": "classes",
        "feature_sets": {
            "3^9@-1": {"group": "multi-level", "classifiers": {"mlp": {"test": {"accuracy": {"mean": acc_a}}}}},
            "3^8+3^9": {"group": "multi-scale", "classifiers": {"mlp": {"test": {"accuracy": {"mean": acc_b}}}}},
        },
        "end_to_end": {"scales": {"3^9": {"accuracy": e2e}}},
    }


def test_summarize_golden_values():
    summary = summarize({1: _fold(0.5, 0.7, 0.4), 2: _fold(0.7, 0.9, 0.6)})
    rows = summary["rows"]
    assert summary["metric"] == "accuracy" and summary["folds"] == [1, 2]
    assert rows["3^9@-1 (mlp)"]["mean"] == pytest.approx(0.6)
    assert rows["3^9@-1 (mlp)"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert rows["3^8+3^9 (mlp)"]["values"] == [0.7, 0.9]
    assert rows["3^9 end-to-end"]["mean"] == pytest.approx(0.5)
    text = summary_markdown(summary, "toy", "tiny", [("Some method", 0.75)])
    lines = text.splitlines()
    first_row = next(line for line in lines if line.startswith("| 3^"))
    assert first_row.startswith("| 3^8+3^9 | mlp | 0.800 ± 0.141 |")  # best first
    assert "| Some method | 0.750 |" in text


def test_crossval_cli_two_folds(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "src"
    for label, freq in (("low", 200.0), ("high", 2000.0)):
        (src / label).mkdir(parents=True)
        for i in range(8):
            t = np.arange(16000) / 16000
            sf.write(src / label / f"{i}.wav", 0.3 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size),
                     16000)
    out = tmp_path / "cv"
    args = ["crossval", "--dataset", "folder", "--source", str(src), "--num-folds", "2", "--preset", "tiny",
            "--classifier", "logreg", "--workers", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "crossval.json").read_text())
    assert summary["folds"] == [1, 2] and summary["task"] == "classes"
    for fold in (1, 2):
        assert (out / f"fold{fold}" / "classify" / "DONE").is_file()
        cfg = json.loads((out / f"fold{fold}" / "prepare" / "config.json").read_text())
        assert cfg["folds"] == 2 and cfg["fold"] == fold
    assert "2-fold cross-validation" in (out / "crossval.md").read_text()
    # A finished protocol is a no-op the second time.
    before = (out / "fold1" / "pretrain" / "DONE").stat().st_mtime_ns
    assert CliRunner().invoke(main, args).exit_code == 0
    assert (out / "fold1" / "pretrain" / "DONE").stat().st_mtime_ns == before
    # Transfer: every fold extracts with one finished pretrain run and trains no model of its own.
    moved = tmp_path / "cv-transfer"
    args = ["crossval", "--dataset", "folder", "--source", str(src), "--num-folds", "2", "--classifier", "svm",
            "--pretrained", str(out / "fold1" / "pretrain"), "--song-pool", "meanstd", "--workers", "1",
            "--out", str(moved)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for fold in (1, 2):
        assert not (moved / f"fold{fold}" / "pretrain").exists()
        extract_cfg = json.loads((moved / f"fold{fold}" / "extract" / "config.json").read_text())
        assert extract_cfg["pretrain"] == str(out / "fold1" / "pretrain") and extract_cfg["song_pool"] == "meanstd"
    text = (moved / "crossval.md").read_text()
    assert f"models transferred from `{out / 'fold1' / 'pretrain'}`" in text and "Extract: song_pool meanstd." in text
    assert "| mfcc | svm |" in text and "chosen on valid (svm)" in text


def test_fold_options_follow_the_dataset():
    # esc10's folds are in its file names (the adapter's pattern); a folder's are drawn (k-fold).
    assert fold_options({"dataset": "esc10", "source": "x"}, 5) == [
        {"dataset": "esc10", "source": "x", "fold": f} for f in range(1, 6)]
    assert fold_options({"dataset": "folder", "source": "x"}, 3)[2] == {
        "dataset": "folder", "source": "x", "folds": 3, "fold": 3}
    named = fold_options({"dataset": "folder", "source": "x", "fold_from_name": r"^(\d)-"}, 2)
    assert [o["fold"] for o in named] == [1, 2] and all("folds" not in o for o in named)


def test_crossval_checks_every_fold_before_running(tmp_path):
    with pytest.raises(DatasetError, match="unknown dataset: 'nope'"):
        fold_options({"dataset": "nope"}, 5)
    with pytest.raises(ConfigError, match=r"folds must be an integer >= 2 .*got folds=1"):
        fold_options({"dataset": "folder", "source": "x"}, 1)
    out = tmp_path / "cv"
    result = CliRunner().invoke(main, ["crossval", "--dataset", "synth-tags", "--fold-from-name", r"^(\d)-",
                                       "--out", str(out)])
    assert result.exit_code == 1 and "synth-tags is generated, it has no file names" in result.output
    assert not out.exists()
