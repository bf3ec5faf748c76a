"""Extract stage: layout of its output, pooling order, resume after a kill, sample-rate check."""

import dataclasses
import json

import h5py
import numpy as np
import pytest

from msagg.data.formats.features import FeaturesFile
from msagg.data.segments import segment
from msagg.data.tracklist import TrackList
import pretrain_runs
from prepare_runs import make_prepare_run
from msagg.stages import extract
from msagg.stages.runs.pretrain_run import PretrainRun
from msagg.stages.engines import taps

SAMPLE_RATE = 1000  # the lowest rate prepare accepts; tiny models need no more
SCALES = ("3^2", "4^2")  # input lengths 27 and 64
LENGTHS = [10, 27, 100, 64, 300, 5, 150, 200, 64, 90, 130, 40]  # includes tracks shorter than a segment


def make_cache(folder, dataset="toy", sample_rate=SAMPLE_RATE):
    """A prepare run folder with a tiny tags cache (12 tracks of sines + noise, in shards of 5)."""
    rng = np.random.default_rng(0)
    n = len(LENGTHS)
    waves = [0.5 * np.sin(0.1 * (i + 1) * np.arange(L)) + 0.1 * rng.standard_normal(L) for i, L in enumerate(LENGTHS)]
    tracks = TrackList(
        name=dataset,
        task="tags",
        label_names=["low", "mid", "high"],
        track_ids=[f"t{i:02d}" for i in range(n)],
        sources=[f"synth:0:{i}:{n}" for i in range(n)],
        labels=(rng.random((n, 3)) < 0.5).astype(np.uint8),
        split=["train"] * 6 + ["valid"] * 2 + ["test"] * 4,
    )
    return make_prepare_run(folder, tracks, waves, sample_rate=sample_rate, tracks_per_shard=5)


def make_pretrain(folder, cache_dir, sample_rate=SAMPLE_RATE, scales=SCALES):
    """A finished pretrain run folder with untrained tiny models (they need no training here)."""
    return pretrain_runs.make_pretrain(folder, cache_dir, sample_rate=sample_rate, scales=scales,
                                       test_metrics={"roc_auc": 0.61, "pr_auc": 0.55, "num_labels_left_out": 0})


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    cache = make_cache(root / "prepare")
    pretrain = make_pretrain(root / "pretrain", cache)
    return root, cache, pretrain


@pytest.fixture(scope="module")
def finished(upstream):
    root, cache, pretrain = upstream
    out = root / "run-full"
    path = extract.run(extract.Config(pretrain=str(pretrain), cache=str(cache)), out, batch_size=4, progress=False)
    return out, path


def test_layout_and_attributes(upstream, finished):
    _, cache, pretrain = upstream
    out, path = finished
    assert path == out / "features.h5" and path.is_file()
    assert {"config.json", "metadata.json", "DONE"} <= {p.name for p in out.iterdir()}
    assert not (out / "skipped.csv").exists()
    with h5py.File(path, "r") as h5:
        assert h5.attrs["schema_version"] == 1 and bool(h5.attrs["complete"])
        assert h5.attrs["song_pool"] == "mean" and h5.attrs["task"] == "tags"
        assert h5.attrs["dataset"] == "toy" and h5.attrs["pretrain_dataset"] == "toy"
        assert h5.attrs["config_hash"] == json.loads((out / "DONE").read_text())["config_hash"]
        for scale in SCALES:
            attrs = h5["features"][scale].attrs
            assert attrs["input_length"] == {"3^2": 27, "4^2": 64}[scale]
            assert attrs["sample_rate"] == SAMPLE_RATE and attrs["num_params"] > 0
            assert attrs["model_hash"] == PretrainRun(pretrain).model_hash(scale)
            assert h5["num_segments"][scale].dtype == np.int32
            assert attrs["block"] == "basic" and not attrs["multi"]
            n = {"3^2": 2, "4^2": 2}[scale]
            assert json.loads(attrs["tap_layers"]) == {"-3": f"block{n - 1}_pool", "-2": f"block{n}_pool",
                                                       "-1": "relu1x1"}
    with FeaturesFile(path) as ff:
        assert ff.num_tracks == len(LENGTHS) and ff.scales == list(SCALES)
        assert [ff.get("3^2", t).shape[1] for t in ("-3", "-2", "-1")] == [6, 13, 13]  # width 0.05
        # The default cuts "cover": one more segment, ending at the track's end, where a remainder is left.
        assert ff.segments == "cover"
        for scale, n in (("3^2", 27), ("4^2", 64)):
            np.testing.assert_array_equal(ff.num_segments(scale),
                                          [max(1, L // n) + (L > n and L % n > 0) for L in LENGTHS])
        assert all(np.isfinite(ff.get(s, t)).all() for s in SCALES for t in ("-3", "-2", "-1"))
        assert ff.variant("4^2") == {"block": "basic", "multi": False,
                                     "tap_layers": {"-3": "block1_pool", "-2": "block2_pool", "-1": "relu1x1"}}
        # The MFCC baseline of the same audio, row by row.
        from msagg.data.formats.cache import AudioCache
        from msagg.data.classic import MFCC_DIM, mfcc_stats

        assert ff.classic == list(extract.default_classic())  # and musicnn where it is installed
        assert ff.get_classic("mfcc").shape == (len(LENGTHS), MFCC_DIM)
        with AudioCache(cache) as c:
            for i in (0, len(LENGTHS) - 1):
                np.testing.assert_array_equal(ff.get_classic("mfcc")[i], mfcc_stats(c.track(i), SAMPLE_RATE))


def test_rows_are_max_over_time_then_mean_over_segments(upstream, finished):
    _, cache, pretrain = upstream
    from msagg.data.formats.cache import AudioCache

    taps = PretrainRun(pretrain).tap_extractor("3^2")
    with AudioCache(cache) as c, FeaturesFile(finished[1]) as ff:
        for i in (0, 4):  # a padded one-segment track and a 12-segment track (11 + one ending at its end)
            out = taps.predict_on_batch(segment(c.track(i), 27, "cover"))
            for tap in ("-3", "-1"):
                expected = np.asarray(out[tap]).max(axis=1).mean(axis=0)
                np.testing.assert_allclose(ff.get("3^2", tap)[i], expected, rtol=1e-5, atol=1e-6)


def test_resume_after_kill_gives_identical_file(upstream, finished, monkeypatch):
    root, cache, pretrain = upstream
    out = root / "run-killed"
    config = extract.Config(pretrain=str(pretrain), cache=str(cache))
    with pytest.raises(extract.ExtractionStopped):
        extract.run(config, out, batch_size=4, progress=False, stop_after=5)
    assert not (out / "DONE").exists() and not (out / "features.h5").exists()
    with h5py.File(out / "features.h5.partial", "r") as h5:
        done = int(h5.attrs["num_done"])
    assert 5 <= done < len(LENGTHS)

    processed = []
    real = taps.features_of_waves
    monkeypatch.setattr(taps, "features_of_waves",
                        lambda waves, *a, **k: processed.append(len(waves)) or real(waves, *a, **k))
    path = extract.run(config, out, batch_size=4, progress=False)
    assert sum(processed) == len(LENGTHS) - done  # resumed, not restarted
    assert (out / "DONE").exists() and not (out / "features.h5.partial").exists()
    with h5py.File(path, "r") as a, h5py.File(finished[1], "r") as b:
        for scale in SCALES:
            for tap in ("-3", "-2", "-1"):
                assert a["features"][scale][tap][...].tobytes() == b["features"][scale][tap][...].tobytes()
            np.testing.assert_array_equal(a["num_segments"][scale][...], b["num_segments"][scale][...])
        for name in ("track_ids", "labels", "label_names", "split"):
            np.testing.assert_array_equal(a[name][...], b[name][...])


def test_rerun_is_a_noop(upstream, finished):
    _, cache, pretrain = upstream
    out, path = finished
    before = path.stat().st_mtime_ns
    again = extract.run(extract.Config(pretrain=str(pretrain), cache=str(cache)), out, batch_size=4, progress=False)
    assert again == path and path.stat().st_mtime_ns == before


def test_meanmax_doubles_dims_and_scale_subset(upstream):
    root, cache, pretrain = upstream
    path = extract.run(extract.Config(pretrain=str(pretrain), cache=str(cache), song_pool="meanmax", scales=("4^2",)),
                       root / "run-meanmax", batch_size=64, progress=False)
    with FeaturesFile(path) as ff:
        assert ff.scales == ["4^2"] and ff.song_pool == "meanmax"
        mean_max = ff.get("4^2", "-1")
        assert mean_max.shape[1] == 26
        assert (mean_max[:, 13:] >= mean_max[:, :13] - 1e-6).all()  # max >= mean


def test_drop_segments_keep_the_old_runs_hash_and_numbers(upstream, finished):
    """segments="drop" is extract as it was before the setting: the remainder is left out, and
    config.json has no "segments" key, so a run folder made then keeps its hash (and is done)."""
    from msagg.stages.runs.folder import config_dict, config_hash

    root, cache, pretrain = upstream
    config = extract.Config(pretrain=str(pretrain), cache=str(cache), segments="drop", scales=("3^2",))
    path = extract.run(config, root / "run-drop", batch_size=4, progress=False)
    stored = json.loads((root / "run-drop" / "config.json").read_text())
    assert "segments" not in stored and config_hash(stored) == config_hash(config)
    assert config_dict(extract.Config(pretrain="p", cache="c"))["segments"] == "cover"
    with FeaturesFile(path) as ff, FeaturesFile(finished[1]) as covered:
        assert ff.segments == "drop"
        np.testing.assert_array_equal(ff.num_segments("3^2"), [max(1, L // 27) for L in LENGTHS])
        # Tracks no longer than one segment are cut alike; the others differ by their last segment.
        same = [i for i, L in enumerate(LENGTHS) if L <= 27]
        np.testing.assert_array_equal(ff.get("3^2", "-1")[same], covered.get("3^2", "-1")[same])
        assert not np.allclose(ff.get("3^2", "-1")[4], covered.get("3^2", "-1")[4])
    with pytest.raises(ValueError, match="segments must be one of cover, drop"):
        extract.Config(pretrain="p", cache="c", segments="overlap")


def test_sample_rate_mismatch_refused(upstream, tmp_path):
    _, _, pretrain = upstream
    other = make_cache(tmp_path / "prepare-16k", dataset="toy16k", sample_rate=16000)
    with pytest.raises(ValueError, match=r"sample rate mismatch.*trained at.*3\^2 at 1000 Hz.*16000 Hz"):
        extract.run(extract.Config(pretrain=str(pretrain), cache=str(other)), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_bad_config_and_missing_scale():
    with pytest.raises(ValueError, match="song_pool"):
        extract.Config(pretrain="p", cache="c", song_pool="median")
    with pytest.raises(ValueError, match="unknown scale '7\\^7'"):
        extract.Config(pretrain="p", cache="c", scales=("7^7",))


def test_missing_scale_in_run_refused(upstream, tmp_path):
    _, cache, pretrain = upstream
    with pytest.raises(ValueError, match=r"no model for scale 3\^9"):
        extract.run(extract.Config(pretrain=str(pretrain), cache=str(cache), scales=("3^9",)), tmp_path / "y",
                    progress=False)


def test_song_features_match_extract(upstream, finished):
    _, cache, pretrain = upstream
    from msagg.data.formats.cache import AudioCache

    with AudioCache(cache) as c:
        waves = [c.track(i) for i in (2, 4, 5)]
    got = taps.song_features(waves, pretrain, ("3^2",), batch_size=4)
    with FeaturesFile(finished[1]) as ff:
        np.testing.assert_allclose(got["3^2"]["-2"], ff.get("3^2", "-2")[[2, 4, 5]], rtol=1e-5, atol=1e-6)


def test_chain_to_saved_classifier_and_prediction(upstream, finished, tmp_path):
    """extract -> classify (logistic regression) -> load_predictor -> song_features -> predict."""
    from msagg.data.formats.cache import AudioCache
    from msagg.stages import classify
    from msagg.stages.songs.predictor import load_predictor

    out, path = finished
    config = classify.Config(features=str(out), classifiers=("logreg",), include_single=False, tsne=False)
    run_dir = classify.run(config, tmp_path / "classify", progress=False)
    predictor = load_predictor(run_dir)  # checks the pretrain models' hashes
    assert predictor.feature_set == "3^2+4^2" and predictor.pretrain_dir == upstream[2].resolve()
    _, cache, _ = upstream
    with AudioCache(cache) as c:
        waves = [c.track(i) for i in (8, 9, 10, 11)]
    probs = predictor.predict(taps.song_features(waves, predictor.pretrain_dir, predictor.scales,
                                                    song_pool=predictor.song_pool, batch_size=4))
    with FeaturesFile(path) as ff:
        direct = predictor.predict({s: {t: ff.get(s, t)[8:12] for t in ff.taps(s)} for s in ff.scales})
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs, direct, atol=1e-4)


def test_fixed_batches_pad_the_last_batch_and_keep_the_numbers():
    """Every batch has one shape (the last zero-padded); a row's numbers are those of the model on it."""
    import keras

    from msagg.models import sample_cnn

    keras.utils.set_random_seed(0)
    model = sample_cnn.build_tap_extractor(sample_cnn.build_sample_cnn("3^2", 3, width=0.05), "3^2")
    segments = np.random.default_rng(0).standard_normal((10, 27)).astype(np.float32)
    shapes = []
    batches = list(taps.fixed_batches(lambda x: shapes.append(x.shape) or model.predict_on_batch(x), segments, 4))
    assert [k for k, _ in batches] == [4, 4, 2] and set(shapes) == {(4, 27)}
    expected = model.predict_on_batch(np.concatenate([segments[8:], np.zeros((2, 27), np.float32)]))
    for tap in ("-3", "-2", "-1"):
        assert np.asarray(batches[-1][1][tap]).tobytes() == np.asarray(expected[tap]).tobytes()

def test_long_input_models_take_fewer_segments_per_pass_to_bound_memory():
    """The paper's 3^9 at full width: 19683 frames x 128 channels of float32 per segment (its first
    convolutions), so a pass holds at most BATCH_MEMORY_MB of them; the tiny test models keep the batch."""
    from msagg.models import sample_cnn

    big = sample_cnn.build_sample_cnn("3^9", 50, "tags")
    assert taps.largest_activation_bytes(big) == 19683 * 128 * 4
    model = taps.TapModel(scale="3^9", input_length=59049, sample_rate=22050, extractor=None, channels={},
                          model_hash="", num_params=0, test_metrics={}, segment_bytes=19683 * 128 * 4)
    assert model.batch_for(64) == taps.BATCH_MEMORY_MB * 2**20 // (19683 * 128 * 4) == 16
    assert model.batch_for(4) == 4
    tiny = sample_cnn.build_sample_cnn("3^2", 5, "tags")
    assert dataclasses.replace(model, segment_bytes=taps.largest_activation_bytes(tiny)).batch_for(64) == 64
