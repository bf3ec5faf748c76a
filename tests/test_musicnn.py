"""The musicnn teacher: the Keras port against the original package's recorded outputs, and its parts alone.

The reference (tests/data/musicnn_reference.npz) was recorded by running musicnn 0.1.0 itself
(tests/campaigns/record_musicnn_reference.py) on the clips of tests/musicnn_clips.py. The tests that
need musicnn's checkpoints skip where it is not installed (``make teacher`` installs it).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import musicnn_clips
from msagg.data import melspec
from msagg.data.audio import load
from msagg.models import musicnn
from msagg.stages import teacher as teacher_mod
from msagg.stages.teacher import INSTALL_COMMAND, TEACHERS, TeacherError, load_teacher, tag_names

REFERENCE = Path(__file__).resolve().parent / "data" / "musicnn_reference.npz"
HAS_MUSICNN = importlib.util.find_spec("musicnn") is not None
needs_musicnn = pytest.mark.skipif(not HAS_MUSICNN, reason=f"musicnn is not installed ({INSTALL_COMMAND})")
TOLERANCE = 1e-4
"""Largest difference of a tag probability, port vs original, per patch."""
CONSTANT_CLIPS = ("drums", "loud")
"""Clips every patch of which overflows musicnn's float16 log step."""


@pytest.fixture(scope="module")
def reference():
    with np.load(REFERENCE) as data:
        return dict(data)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Clip name -> float32 waveform, read back from the WAV files the original read."""
    paths = musicnn_clips.write_clips(tmp_path_factory.mktemp("musicnn_clips"))
    return {name: load(path, melspec.SAMPLE_RATE) for name, path in paths.items()}


@pytest.fixture(scope="module")
def exact_teachers():
    """Both taggers with musicnn's float16 front end (keras is loaded only when a test asks)."""
    return {name: load_teacher(name, float16_log=True) for name in TEACHERS}


def _comparable(teacher, wave, hop_sec=None) -> np.ndarray:
    """The patches whose taggram the backend can reproduce: all on TensorFlow, whose kernels turn an
    input holding inf into the original's constant taggram, as the original's did; elsewhere (JAX
    gives NaN) those without an overflowed band."""
    import keras

    finite = ~np.isinf(teacher.patches(wave, melspec.SAMPLE_RATE, hop_sec)).any(axis=(1, 2))
    return np.ones_like(finite) if keras.backend.backend() == "tensorflow" else finite


# --- the port reproduces the original ---------------------------------------------------------------

@needs_musicnn
@pytest.mark.parametrize("name", TEACHERS)
def test_port_reproduces_the_original_taggram(name, exact_teachers, clips, reference):
    for clip, wave in clips.items():
        expected = reference[f"{name}/{clip}/taggram"]
        got = exact_teachers[name].taggram(wave, melspec.SAMPLE_RATE)
        assert got.shape == expected.shape == (1 if clip == "loud" else 2, 50), clip
        rows = _comparable(exact_teachers[name], wave)
        np.testing.assert_allclose(got[rows], expected[rows], rtol=0, atol=TOLERANCE, err_msg=f"{name} {clip}")
        if rows.all():
            np.testing.assert_allclose(got.mean(axis=0), reference[f"{name}/{clip}/mean"], rtol=0, atol=TOLERANCE)


@needs_musicnn
@pytest.mark.parametrize("name", TEACHERS)
def test_port_reproduces_the_original_overlap_and_penultimate(name, exact_teachers, clips, reference):
    wave = clips[musicnn_clips.OVERLAP_CLIP]
    got = exact_teachers[name].taggram(wave, melspec.SAMPLE_RATE, hop_sec=musicnn_clips.OVERLAP_SEC)
    expected = reference[f"{name}/{musicnn_clips.OVERLAP_CLIP}/overlap/taggram"]
    assert got.shape == expected.shape == (4, 50)  # 407 frames, patches at 0, 61, 122, 183
    rows = _comparable(exact_teachers[name], wave, musicnn_clips.OVERLAP_SEC)
    np.testing.assert_allclose(got[rows], expected[rows], rtol=0, atol=TOLERANCE)
    features = exact_teachers[name].features(clips["chirp_noise"], melspec.SAMPLE_RATE)
    np.testing.assert_allclose(features["penultimate"][0], reference[f"{name}/chirp_noise/penultimate"],
                               rtol=1e-4, atol=1e-4)


def test_the_clips_are_those_recorded(reference):
    for name, audio in musicnn_clips.make_clips().items():
        stats = [audio.mean(dtype=np.float64), audio.std(dtype=np.float64)]
        np.testing.assert_allclose(stats, reference[f"{name}/audio_stats"], rtol=1e-6, atol=1e-3, err_msg=name)


def test_the_original_answers_one_taggram_wherever_float16_overflows(reference, clips):
    """What ``float16_log=False`` is for: in the recording, every patch holding an overflowed band
    got the very same probabilities, whatever the clip."""
    for clip in CONSTANT_CLIPS:
        assert np.isinf(melspec.patches(melspec.log_mel(clips[clip]))).any(axis=(1, 2)).all(), clip
    for name in TEACHERS:
        rows = np.concatenate([reference[f"{name}/{clip}/taggram"] for clip in CONSTANT_CLIPS])
        assert len(rows) == 3 and np.array_equal(rows, np.broadcast_to(rows[0], rows.shape)), name
        clean = reference[f"{name}/chirp_noise/taggram"]
        assert np.abs(clean - rows[0]).max() > 0.1


@needs_musicnn
@pytest.mark.parametrize("name", TEACHERS)
def test_the_float32_log_tags_loud_audio_and_keeps_the_rest(name, clips, reference, exact_teachers):
    fixed = teacher_mod.Teacher(name, exact_teachers[name].tags, exact_teachers[name].model, float16_log=False)
    np.testing.assert_allclose(fixed.taggram(clips["chirp_noise"], melspec.SAMPLE_RATE),
                               reference[f"{name}/chirp_noise/taggram"], rtol=0, atol=1e-3)
    rows = np.concatenate([fixed.taggram(clips[clip], melspec.SAMPLE_RATE) for clip in CONSTANT_CLIPS])
    assert np.isfinite(rows).all()
    assert np.abs(rows[0] - rows[-1]).max() > 0.05  # drums and a chord no longer tag alike


@needs_musicnn
def test_tag_names_come_from_the_package():
    mtt, msd = tag_names("MTT_musicnn"), tag_names("MSD_musicnn")
    assert len(mtt) == len(msd) == 50
    assert mtt[:3] == ("guitar", "classical", "slow") and msd[:3] == ("rock", "pop", "alternative")


# --- the parts, without musicnn ---------------------------------------------------------------------

def test_musicnn_frames_and_patches():
    assert melspec.PATCH_FRAMES == 187 and melspec.seconds_to_frames(1) == 61
    frames = np.arange(407 * 2, dtype=np.float32).reshape(407, 2)
    cut = melspec.patches(frames)
    assert cut.shape == (2, 187, 2) and cut[1, 0, 0] == frames[187, 0]  # the last 33 frames dropped
    assert melspec.patches(frames, hop_frames=61).shape == (4, 187, 2)
    assert melspec.patches(frames[:50]).shape == (0, 187, 2)
    short = melspec.patches(frames[:50], pad_short=True)
    assert short.shape == (1, 187, 2) and np.array_equal(short[0, 50:100], frames[:50])
    with pytest.raises(ValueError, match="num_frames, num_bands"):
        melspec.patches(frames[:, 0])


def test_log_mel_float16_overflow():
    t = np.arange(16000) / 16000
    quiet, loud = (a * np.sin(2 * np.pi * 220 * t).astype(np.float32) for a in (0.01, 0.8))
    assert melspec.log_mel(quiet).shape == (63, 96)
    np.testing.assert_allclose(melspec.log_mel(quiet, float16_log=False), melspec.log_mel(quiet), atol=4e-3)
    assert np.isinf(melspec.log_mel(loud)).any()
    high = melspec.log_mel(loud, float16_log=False)
    assert np.isfinite(high).all() and high.max() > np.log10(65504)
    resampled = melspec.log_mel(np.interp(np.arange(22050) / 22050, t, quiet).astype(np.float32), 22050)
    assert resampled.shape == (63, 96)


@pytest.fixture(scope="module")
def random_model():
    import keras

    keras.utils.set_random_seed(0)
    return musicnn.build_musicnn("MTT_musicnn")


def test_extractor_shapes_names_and_parameters(random_model):
    assert random_model.count_params() == 792079
    extractor = musicnn.build_musicnn_extractor(random_model)
    x = np.random.default_rng(0).normal(1.5, 1.0, (2, 187, 96)).astype(np.float32)
    out = extractor.predict_on_batch(x)
    shapes = {key: tuple(np.asarray(value).shape) for key, value in out.items()}
    assert shapes == {"timbral": (2, 187, 408), "temporal": (2, 187, 153), "cnn1": (2, 187, 64),
                      "cnn2": (2, 187, 64), "cnn3": (2, 187, 64), "mean_pool": (2, 753), "max_pool": (2, 753),
                      "penultimate": (2, 200), "taggram": (2, 50)}
    np.testing.assert_allclose(out["taggram"], random_model.predict_on_batch(x), atol=1e-6)
    # The mid end's dense connection: the front end's channels, then cnn1-3, in the pooled features.
    midend = np.concatenate([out[key] for key in ("timbral", "temporal", "cnn1", "cnn2", "cnn3")], axis=-1)
    np.testing.assert_allclose(out["max_pool"], midend.max(axis=1), atol=1e-5)
    np.testing.assert_allclose(out["mean_pool"], midend.mean(axis=1), atol=1e-5)
    assert random_model.predict_on_batch(x[:1, :100]).shape == (1, 50)  # any patch length


def test_save_and_load(random_model, tmp_path):
    import keras

    random_model.save(tmp_path / "musicnn.keras")
    loaded = keras.saving.load_model(tmp_path / "musicnn.keras", safe_mode=True)
    x = np.random.default_rng(2).normal(1.5, 1.0, (1, 187, 96)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict_on_batch(x), random_model.predict_on_batch(x), atol=1e-6)
    assert np.asarray(musicnn.build_musicnn_extractor(loaded).predict_on_batch(x)["penultimate"]).shape == (1, 200)


def test_tf1_weights_round_trip(random_model):
    """A model's weights written as musicnn's TF1 variables load into a fresh model: same outputs."""
    variables = {}
    names = {"conv2d": ("kernel", "bias"), "dense": ("kernel", "bias"),
             "batch_normalization": ("gamma", "beta", "moving_mean", "moving_variance")}
    scopes = musicnn.tf1_scopes()
    assert len(set(scopes.values())) == len(scopes) == 21 and scopes["logits"] == "dense_1"
    assert scopes["cnn1_conv"] == "conv2d_5" and scopes["penultimate"] == "batch_normalization_10"
    for layer_name, scope in scopes.items():
        kind = next(k for k in names if scope == k or scope.startswith(k + "_"))
        for var, weight in zip(names[kind], random_model.get_layer(layer_name).get_weights()):
            # TF1's mid-end kernels are 4-D: (7, channels, 1, filters).
            variables[f"{scope}/{var}"] = weight[:, :, None, :] if weight.ndim == 3 else weight
    assert variables["conv2d_5/kernel"].shape == (7, 561, 1, 64)
    fresh = musicnn.build_musicnn("MTT_musicnn")
    musicnn.load_tf1_weights(fresh, variables)
    x = np.random.default_rng(1).normal(1.5, 1.0, (1, 187, 96)).astype(np.float32)
    np.testing.assert_allclose(fresh.predict_on_batch(x), random_model.predict_on_batch(x), atol=1e-6)
    del variables["dense_1/bias"]
    with pytest.raises(ValueError, match="dense_1/bias"):
        musicnn.load_tf1_weights(fresh, variables)
    variables["dense_1/bias"] = np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="not a MTT_musicnn checkpoint"):
        musicnn.load_tf1_weights(fresh, variables)


def test_unknown_model_name():
    with pytest.raises(ValueError, match="known: MTT_musicnn, MSD_musicnn"):
        musicnn.get_musicnn_spec("MTT_vgg")


def test_missing_musicnn_names_the_install_command(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(TeacherError, match="pip install --no-deps 'musicnn==0.1.0'"):
        load_teacher("MTT_musicnn")


def test_a_package_without_the_checkpoint(tmp_path):
    (tmp_path / "configuration.py").write_text(f"MTT_LABELS = {[f't{i}' for i in range(50)]!r}\nMSD_LABELS = ['a']\n")
    assert tag_names("MTT_musicnn", tmp_path)[:2] == ("t0", "t1")
    with pytest.raises(TeacherError, match="MSD_LABELS holds 1 tags"):
        tag_names("MSD_musicnn", tmp_path)
    with pytest.raises(TeacherError, match="no MTT_musicnn checkpoint"):
        load_teacher("MTT_musicnn", package=tmp_path)
    (tmp_path / "MTT_musicnn").mkdir()
    with pytest.raises(TeacherError, match="no musicnn checkpoint there"):
        load_teacher("MTT_musicnn", package=tmp_path)
