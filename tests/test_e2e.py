"""The whole chain through the CLI on the tiny preset: prepare, pretrain, extract, classify, predict."""

from __future__ import annotations

import csv
import json

import h5py
import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from msagg.pipeline.cli import main


def _invoke(*args):
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    _invoke("prepare", "--dataset", "synth-tags", "--preset", "tiny", "--workers", "1", "--out", root / "prep-tags")
    _invoke("prepare", "--dataset", "synth-genre", "--preset", "tiny", "--workers", "1", "--out", root / "prep-genre")
    _invoke("pretrain", "--cache", root / "prep-tags", "--preset", "tiny", "--out", root / "pretrain")
    for name in ("tags", "genre"):
        _invoke("extract", "--pretrain", root / "pretrain", "--cache", root / f"prep-{name}", "--out", root / f"ext-{name}")
        _invoke("classify", "--features", root / f"ext-{name}", "--classifier", "logreg", "--feature-set", "all@-1",
                "--out", root / f"cls-{name}")
    return root


def test_every_run_folder_is_complete(chain):
    for folder in ("prep-tags", "prep-genre", "pretrain", "ext-tags", "ext-genre", "cls-tags", "cls-genre"):
        for name in ("config.json", "metadata.json", "DONE"):
            assert (chain / folder / name).is_file(), f"{folder}/{name}"
    for scale in ("3^2", "4^2"):
        for name in ("model.keras", "history.csv", "metrics.json", "DONE"):
            assert (chain / "pretrain" / scale / name).is_file()
    for name in ("results.md", "results.csv", "metrics.json", "plots/tsne.png"):
        assert (chain / "cls-genre" / name).is_file()


def test_features_follow_the_documented_layout(chain):
    with h5py.File(chain / "ext-genre" / "features.h5") as f:
        assert f.attrs["schema_version"] == 1
        assert f.attrs["dataset"] == "synth-genre" and f.attrs["pretrain_dataset"] == "synth-tags"
        n = f["track_ids"].shape[0]
        assert set(f["features"]) == {"3^2", "4^2"}
        for scale in f["features"]:
            assert set(f["features"][scale]) == {"-3", "-2", "-1"}
            for tap in f["features"][scale].values():
                assert tap.shape[0] == n and tap.dtype == np.float32


def test_tables_have_the_paper_rows(chain):
    genre = (chain / "cls-genre" / "results.md").read_text()
    assert "n/a (models trained on synth-tags)" in genre  # transfer: no end-to-end row
    for row in ("| 3^2 | -3 |", "| 3^2 | -1 |", "| 4^2 | last 3 |", "all 2 scales"):
        assert row in genre
    tags = (chain / "cls-tags" / "results.md").read_text()
    assert "ROC-AUC" in tags and "End-to-end" in tags
    with open(chain / "cls-tags" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r["feature_set"].startswith("3^2+4^2") or "+" in r["feature_set"] for r in rows)
    assert {"3^2+4^2@-1", "3^2+4^2", "3^2@-1", "4^2@last3"} <= {r["feature_set"] for r in rows}
    result = CliRunner().invoke(main, ["classify", "--features", str(chain / "ext-tags"), "--combo", "3^2@-1",
                                       "--out", str(chain / "cls-bad")])
    assert result.exit_code == 2 and "--combo takes scales only" in result.output


def test_rerun_is_a_noop(chain):
    before = (chain / "ext-genre" / "features.h5").stat().st_mtime_ns
    _invoke("extract", "--pretrain", chain / "pretrain", "--cache", chain / "prep-genre", "--out", chain / "ext-genre")
    assert (chain / "ext-genre" / "features.h5").stat().st_mtime_ns == before


def test_predict_wav_and_broken_file(chain, tmp_path):
    t = np.arange(22050 * 2) / 22050
    good = tmp_path / "song.wav"
    sf.write(good, 0.3 * np.sin(2 * np.pi * 440 * t), 22050)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF....WAVEfmt garbage")
    runner = CliRunner()
    for flag, run in (("--pretrain", "pretrain"), ("--classify", "cls-genre")):
        result = runner.invoke(main, ["predict", str(good), str(broken), flag, str(chain / run), "--json"])
        assert result.exit_code == 1  # one file failed, the other was still predicted
        out = json.loads(result.stdout)
        assert out[0]["path"] == str(good) and len(out[0]["scores"]) > 0
        assert all(0.0 <= v <= 1.0 for v in out[0]["scores"].values())
        assert "broken.wav" in out[1]["error"]
    result = runner.invoke(main, ["predict", str(good), "--classify", str(chain / "cls-genre"), "--top", "2"])
    assert result.exit_code == 0 and result.output.startswith(str(good))
    result = runner.invoke(main, ["predict", str(good)])
    assert result.exit_code == 2 and "exactly one of" in result.output


def test_predict_after_moving_the_runs_folder(chain, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(chain, moved)
    description = json.loads((moved / "cls-genre" / "models" / "index.json").read_text())
    assert description["saved"]
    t = np.arange(22050) / 22050
    song = tmp_path / "song.wav"
    sf.write(song, 0.3 * np.sin(2 * np.pi * 220 * t), 22050)
    # The original chain folder is still there, so hide it: predict must use the moved copy.
    hidden = chain.with_name(chain.name + "-hidden")
    chain.rename(hidden)
    try:
        result = CliRunner().invoke(main, ["predict", str(song), "--classify", str(moved / "cls-genre"), "--json"])
    finally:
        hidden.rename(chain)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["scores"]
