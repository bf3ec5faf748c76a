"""The teacher's layers as a reference row: extract stores the musicnn set where musicnn is installed,
classify reports it beside the learned and MFCC rows, and predict computes it from audio."""

import json

import numpy as np
import pytest
import soundfile as sf

import pretrain_runs
from msagg.data.classic import MUSICNN_DIM
from msagg.data.formats.cache import AudioCache
from msagg.data.formats.features import FeaturesFile
from msagg.data.tracklist import TrackList
from msagg.stages import classify, extract, teacher
from msagg.stages.predict import predict_files
from prepare_runs import make_prepare_run

SAMPLE_RATE = 16000
NEEDS_MUSICNN = pytest.mark.skipif(not teacher.installed(), reason="the musicnn package is not installed (make teacher)")


def test_without_musicnn_the_default_leaves_the_teacher_out_and_asking_for_it_is_refused():
    if teacher.installed():
        pytest.skip("the musicnn package is installed: the default includes its set (next tests)")
    assert extract.Config(pretrain="p", cache="c").classic == ("mfcc",)
    with pytest.raises(ValueError, match=r"classic musicnn needs .*not installed: pip install --no-deps 'musicnn=="):
        extract.Config(pretrain="p", cache="c", classic=("mfcc", "musicnn"))


@NEEDS_MUSICNN
def test_the_default_takes_the_teacher_where_it_is_installed():
    assert extract.Config(pretrain="p", cache="c").classic == ("mfcc", "musicnn")
    assert extract.Config(pretrain="p", cache="c", classic=("musicnn", "mfcc")).classic == ("mfcc", "musicnn")
    assert extract.Config(pretrain="p", cache="c", classic=()).classic == ()
    with pytest.raises(ValueError, match="auto alone"):
        extract.Config(pretrain="p", cache="c", classic=("auto", "mfcc"))


@NEEDS_MUSICNN
def test_the_musicnn_set_averages_the_taggers_back_end_pools_over_patches():
    rng = np.random.default_rng(0)
    waves = [(0.3 * np.sin(0.05 * np.arange(SAMPLE_RATE * 7)) + 0.01 * rng.standard_normal(SAMPLE_RATE * 7)
              ).astype(np.float32), np.zeros(100, np.float32)]
    out = teacher.song_features("musicnn", waves, SAMPLE_RATE)
    assert out.shape == (2, MUSICNN_DIM) and out.dtype == np.float32 and np.isfinite(out).all()
    outputs = teacher.load_teacher("MTT_musicnn").features(waves[0], SAMPLE_RATE)
    assert outputs["mean_pool"].shape == (2, 753)  # 7 s: two whole 3-s patches
    np.testing.assert_allclose(out[0], np.concatenate([outputs["mean_pool"].mean(0), outputs["max_pool"].mean(0)]),
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="unknown teacher feature set"):
        teacher.song_features("mfcc", waves, SAMPLE_RATE)


def _tones(folder, num_tracks=40):
    """A prepare run of noisy tones (1 s at 16 kHz): two classes, 200 Hz and 2 kHz, and their waves."""
    rng = np.random.default_rng(0)
    classes = np.arange(num_tracks) % 2
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    waves = [(0.3 * np.sin(2 * np.pi * (200.0 if c == 0 else 2000.0) * t * (1 + 0.05 * rng.random()))
              + 0.05 * rng.standard_normal(t.size)).astype(np.float32) for c in classes]
    tracks = TrackList(name="tones", task="classes", label_names=["low", "high"],
                       track_ids=[f"t{i:02d}" for i in range(num_tracks)], sources=[f"tone:{i}" for i in range(num_tracks)],
                       labels=np.eye(2, dtype=np.uint8)[classes],
                       split=(["train"] * 3 + ["valid", "test"]) * (num_tracks // 5))
    return make_prepare_run(folder, tracks, waves, sample_rate=SAMPLE_RATE), waves, classes


@NEEDS_MUSICNN
def test_learned_mfcc_and_musicnn_rows_on_one_split_and_predict_computes_the_teachers_set(tmp_path):
    cache, waves, classes = _tones(tmp_path / "prepare")
    runs = pretrain_runs.make_pretrain(tmp_path / "pretrain", cache, sample_rate=SAMPLE_RATE, task="classes",
                                       label_names=("low", "high"))
    extract.run(extract.Config(pretrain=str(runs), cache=str(cache)), tmp_path / "extract", batch_size=8,
                progress=False)
    with FeaturesFile(tmp_path / "extract") as ff:
        assert ff.classic == ["mfcc", "musicnn"]
        stored = ff.get_classic("musicnn")
    assert stored.shape == (40, MUSICNN_DIM)
    with AudioCache(cache) as c:
        np.testing.assert_allclose(stored[:2], teacher.song_features("musicnn", [c.track(0), c.track(1)], SAMPLE_RATE),
                                   rtol=1e-5, atol=1e-5)
    config = classify.Config(features=str(tmp_path / "extract"), classifiers=("logreg",), include_single=False,
                             feature_sets=("musicnn",), tsne=False)
    out = classify.run(config, tmp_path / "classify", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    sets = metrics["feature_sets"]
    assert list(sets) == ["musicnn", "3^2+4^2", "mfcc", "3^2+4^2+mfcc", "3^2+4^2+musicnn"]
    assert sets["musicnn"]["group"] == "classic" and sets["3^2+4^2+musicnn"]["group"] == "learned + classic"
    assert sets["3^2+4^2+musicnn"]["blocks"] == [sets["3^2+4^2"]["dim"], MUSICNN_DIM]
    assert sets["musicnn"]["classifiers"]["logreg"]["test"]["accuracy"]["mean"] == 1.0
    md = (out / "results.md").read_text()
    assert "## Learned features vs the reference sets (MFCC, musicnn)" in md and "| musicnn | 1506 |" in md
    assert "No musicnn reference row" not in md
    # Every set separates the tones; ties go to the first set: the teacher's, which predict then computes.
    assert metrics["chosen"]["feature_set"] == "musicnn"
    for i in (0, 1):
        sf.write(tmp_path / f"{i}.wav", waves[i], SAMPLE_RATE)
    scored = predict_files([str(tmp_path / "0.wav"), str(tmp_path / "1.wav")], classify=str(out))
    assert [r["feature_set"] for r in scored] == ["musicnn", "musicnn"]
    assert [max(r["scores"], key=r["scores"].get) for r in scored] == ["low", "high"]


def test_a_report_without_the_teachers_set_says_why(tmp_path):
    from test_classify import write_features

    features, _, _ = write_features(tmp_path, "classes", counts=(30, 10, 10))
    out = classify.run(classify.Config(features=str(features), classifiers=("logreg",), include_single=False,
                                       tsne=False), tmp_path / "classify", progress=False)
    md = (out / "results.md").read_text()
    assert "- No musicnn reference row: the features were extracted without the teacher's layers" in md


def test_the_teachers_set_is_named_and_sized_in_data_but_computed_by_the_teacher():
    from msagg.data.classic import CLASSIC, classic_dim, classic_features

    assert CLASSIC == ("mfcc", "musicnn") and classic_dim("musicnn") == MUSICNN_DIM == 1506
    with pytest.raises(ValueError, match="the teacher computes it"):
        classic_features("musicnn", [np.zeros(100, np.float32)], SAMPLE_RATE)


def test_classic_none_on_the_command_line_stores_no_reference_set(tmp_path):
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    cache, _, _ = _tones(tmp_path / "prepare")
    runs = pretrain_runs.make_pretrain(tmp_path / "pretrain", cache, sample_rate=SAMPLE_RATE, task="classes",
                                       label_names=("low", "high"))
    result = CliRunner().invoke(main, ["extract", "--pretrain", str(runs), "--cache", str(cache), "--classic", "none",
                                       "--out", str(tmp_path / "extract")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "extract" / "config.json").read_text())["classic"] == []
    with FeaturesFile(tmp_path / "extract") as ff:
        assert ff.classic == []
