"""Cross-validation over the stages: summary golden values and a tiny 2-fold run through the CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from msagg.data.adapters import DatasetError
from msagg.data.errors import ConfigError
from msagg.pipeline.cli import main
from msagg.pipeline.config import resolve
from msagg.pipeline.protocols import fold_options, fold_prepare_config, store_options, summarize, summary_markdown


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


def test_summarize_the_row_each_fold_chose_by_cross_validation():
    folds = {1: _fold(0.5, 0.7, 0.4), 2: _fold(0.7, 0.9, 0.6)}
    for fold, (name, clf, acc) in zip(folds.values(), (("3^8+3^9", "svm", 0.75), ("3^9@-1", "logreg", 0.65))):
        selected = {"classifier": clf, "test": {"accuracy": {"mean": acc}}}
        fold["feature_sets"][name]["selected"] = selected
        fold["chosen"] = {"feature_set": name, **selected}
    rows = summarize(folds)["rows"]
    assert rows["chosen"]["values"] == [0.75, 0.65] and rows["chosen"]["group"] == "chosen"
    assert rows["chosen"]["classifier"] == "3^8+3^9 svm, 3^9@-1 logreg"
    assert rows["3^8+3^9 (selected by CV)"]["values"] == [0.75]
    assert "| chosen by CV | 3^8+3^9 svm, 3^9@-1 logreg | 0.700 ± 0.071 |" in summary_markdown(summarize(folds), "toy",
                                                                                              "tiny", [])


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
    gain_only = ("gain: augment=true augment_polarity=0 augment_noise_snr_db=none augment_pitch_semitones=0 "
                 "augment_mixup_alpha=0")
    args = ["crossval", "--dataset", "folder", "--source", str(src), "--num-folds", "2", "--preset", "tiny",
            "--classifier", "logreg", "--workers", "1", "--compare", gain_only, "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "crossval.json").read_text())
    assert summary["folds"] == [1, 2] and summary["task"] == "classes"
    # The variant pretrains again from each fold's prepared audio, beside the base, into variants/gain.
    assert summary["variants"]["gain"]["folds"] == [1, 2]
    for fold in (1, 2):
        base_cfg = json.loads((out / f"fold{fold}" / "pretrain" / "config.json").read_text())
        gain_cfg = json.loads((out / f"fold{fold}" / "variants" / "gain" / "pretrain" / "config.json").read_text())
        assert base_cfg["augment"] is False and gain_cfg["augment"] is True and gain_cfg["augment_mixup_alpha"] == 0
        assert gain_cfg["cache"] == base_cfg["cache"] == str(out / f"fold{fold}" / "prepare")
        assert (out / f"fold{fold}" / "variants" / "gain" / "classify" / "DONE").is_file()
    table = (out / "crossval.md").read_text().split("## Variants compared")[1]
    assert "| Feature set | Classifier | base | gain |" in table and "augment=true" in table
    rows = [line for line in table.splitlines() if line.startswith("| 3^") or line.startswith("| mfcc")]
    assert rows and not any(line.startswith("| mfcc |") for line in rows)  # MFCC does not depend on pretraining
    key = next(k for k, r in summary["rows"].items() if r["group"] == "multi-scale")
    row = summary["rows"][key]
    expected = (f"| {row['feature_set']} | {row['classifier']} | {row['mean']:.3f} ± {row['std']:.3f} | "
                f"{summary['variants']['gain']['rows'][key]['mean']:.3f}")
    assert any(line.startswith(expected) for line in rows)
    # The audio is decoded once, into <out>/audio; every fold's cache links to it.
    assert json.loads((out / "audio" / "DONE").read_text())["num_decoded_this_run"] == 16
    for fold in (1, 2):
        assert (out / f"fold{fold}" / "classify" / "DONE").is_file()
        cfg = json.loads((out / f"fold{fold}" / "prepare" / "config.json").read_text())
        assert cfg["folds"] == 2 and cfg["fold"] == fold and cfg["audio_from"] == str(out / "audio")
        assert json.loads((out / f"fold{fold}" / "prepare" / "DONE").read_text())["num_decoded_this_run"] == 0
        with h5py.File(out / f"fold{fold}" / "prepare" / "cache" / "index.h5", "r") as f:
            assert f.attrs["linked"] and not list((out / f"fold{fold}" / "prepare" / "cache").glob("shard-*"))
            assert f["shards/file"].asstr()[0] == "../../../audio/cache/shard-00000.h5"
    assert "2-fold cross-validation" in (out / "crossval.md").read_text()
    # A finished protocol is a no-op the second time.
    before = [(out / d / "DONE").stat().st_mtime_ns for d in ("audio", "fold1/prepare", "fold1/pretrain")]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert [(out / d / "DONE").stat().st_mtime_ns for d in ("audio", "fold1/prepare", "fold1/pretrain")] == before
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
    assert "| mfcc | svm |" in text and "selected by CV (svm)" in text and "| chosen by CV |" in text


def test_fold_options_follow_the_dataset():
    # esc10's folds are in its file names (the adapter's pattern); a folder's are drawn (k-fold).
    assert fold_options({"dataset": "esc10", "source": "x"}, 5) == [
        {"dataset": "esc10", "source": "x", "fold": f} for f in range(1, 6)]
    assert fold_options({"dataset": "folder", "source": "x"}, 3)[2] == {
        "dataset": "folder", "source": "x", "folds": 3, "fold": 3}
    named = fold_options({"dataset": "folder", "source": "x", "fold_from_name": r"^(\d)-"}, 2)
    assert [o["fold"] for o in named] == [1, 2] and all("folds" not in o for o in named)


def test_folds_prepared_by_an_older_msagg_keep_their_own_caches(tmp_path):
    """A fold prepare folder holding the fold's options without audio_from (an older msagg's
    crossval decoded every fold) is kept, finished or not; any other fold links to the store."""
    from msagg.stages import prepare

    src = tmp_path / "src"
    for label in ("a", "b"):
        (src / label).mkdir(parents=True)
        for i in range(4):
            sf.write(src / label / f"{i}.wav", np.full(800, 0.1 * (i + 1)), 8000)
    options = fold_options({"dataset": "folder", "source": str(src), "sample_rate": 8000}, 2)
    old = tmp_path / "cv" / "fold1" / "prepare"
    prepare.run(resolve(prepare.Config, options=options[0]), old, workers=1, progress=False)
    store = tmp_path / "cv" / "audio"
    assert fold_prepare_config(old, options[0], store).audio_from is None
    (old / "DONE").unlink()  # interrupted: resumed the old way too
    assert fold_prepare_config(old, options[0], store).audio_from is None
    assert fold_prepare_config(old, options[1], store).audio_from == str(store)  # another fold's options
    assert fold_prepare_config(tmp_path / "cv" / "fold2" / "prepare", options[1], store).audio_from == str(store)
    assert fold_prepare_config(tmp_path / "new", options[1], None).audio_from is None
    assert store_options([{"dataset": "csv", "top_k": 5, "fold": 1}, {"fold": 2}]) == {"dataset": "csv", "fold": 1}


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
    for spec, message in (("gain augment=true", "expected NAME: KEY=VALUE"), ("gain:", "at least one KEY=VALUE"),
                          ("base: augment=true", "'base' is taken"), ("a: augment=maybe", "augment")):
        result = CliRunner().invoke(main, ["crossval", "--dataset", "folder", "--source", str(tmp_path),
                                           "--compare", spec, "--out", str(out)])
        assert result.exit_code == 1 and message in result.output and "--compare" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()
    result = CliRunner().invoke(main, ["crossval", "--dataset", "folder", "--source", str(tmp_path), "--compare",
                                       "a: augment=true", "--pretrained", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 1 and "cannot be used with --pretrained" in result.output and not out.exists()
