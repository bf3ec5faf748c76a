"""stages/augment.py and its use in pretraining: each transform on known signals, determinism, config."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from msagg.data.errors import ConfigError
from msagg.data.tracklist import TrackList
from msagg.pipeline.config import resolve
from prepare_runs import make_prepare_run
from msagg.stages.training import augment, crops
from msagg.stages.runs import pretrain_run
from msagg.stages import pretrain
from msagg.stages.training.augment import Augment, augment_batch
from msagg.stages.runs.folder import config_dict
from test_pretrain import write_tiny_cache

SAMPLE_RATE = 22050
ALL_ON = Augment(gain_db=6, polarity=0.5, noise_snr_db=(10, 30), noise_prob=0.5, pitch_semitones=2, pitch_prob=0.5,
                 mixup_alpha=0.4, mixup_prob=0.8)


def sines(num_rows: int, length: int, seed: int = 0) -> np.ndarray:
    """float32 (num_rows, length): sines of random frequency, amplitude and phase."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / SAMPLE_RATE
    freq, amp = rng.uniform(100, 2000, (num_rows, 1)), rng.uniform(0.1, 0.5, (num_rows, 1))
    phase = rng.uniform(0, 6, (num_rows, 1))
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=-1))


def peak_hz(wave: np.ndarray) -> float:
    """The frequency of a sine's spectral peak (Hann window, parabolic interpolation), Hz."""
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size), n=4 * wave.size))
    k = int(np.argmax(spectrum))
    a, b, c = np.log(spectrum[k - 1 : k + 2])
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * SAMPLE_RATE / (4 * wave.size)


@pytest.fixture(scope="module")
def tags_cache(tmp_path_factory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("prepare") / "toy-tags")


@pytest.fixture(scope="module")
def sine_cache(tmp_path_factory) -> Path:
    """One 2-second 1 kHz sine (train) and two short tracks for the other splits."""
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    waves = [0.5 * np.sin(2 * np.pi * 1000.0 * t), np.zeros(100), np.zeros(100)]
    tracks = TrackList(name="sine", task="classes", label_names=["a", "b"], track_ids=["s", "v", "t"],
                       sources=["toy:s", "toy:v", "toy:t"], labels=np.eye(2, dtype=np.uint8)[[0, 1, 0]],
                       split=["train", "valid", "test"], split_info={"kind": "fixed"})
    return make_prepare_run(tmp_path_factory.mktemp("prepare") / "sine", tracks, waves, sample_rate=SAMPLE_RATE)


# --- the transforms --------------------------------------------------------------------------


def test_all_off_is_the_identity():
    x, y = sines(4, 100), np.eye(4, dtype=np.float32)
    assert not Augment().active and Augment().describe() == "none"
    out_x, out_y = augment_batch(x, y, Augment(), np.random.default_rng(0))
    assert out_x is x and out_y is y
    # A transform at 0 is off even when its probability is not.
    assert not Augment(noise_snr_db=None, noise_prob=1, pitch_semitones=0, pitch_prob=1, mixup_alpha=0).active


def test_gain_scales_each_crop_within_its_range():
    x, y = sines(400, 256), np.zeros((400, 2), np.float32)
    out, out_y = augment_batch(x, y, Augment(gain_db=6), np.random.default_rng(1))
    ratio_db = 20 * np.log10(rms(out) / rms(x))
    assert np.all(np.abs(ratio_db) <= 6 + 1e-4)
    assert ratio_db.min() < -5 and ratio_db.max() > 5 and abs(np.mean(ratio_db)) < 1  # uniform in +-6 dB
    np.testing.assert_allclose(out / out[:, :1], x / x[:, :1], rtol=1e-4)  # a gain: shape unchanged
    np.testing.assert_array_equal(out_y, y)
    assert x.dtype == out.dtype == np.float32


def test_polarity_flips_the_sign_of_a_fraction_of_crops():
    x, y = sines(400, 64), np.zeros((400, 2), np.float32)
    out, _ = augment_batch(x, y, Augment(polarity=0.5), np.random.default_rng(2))
    flipped = np.all(out == -x, axis=1)
    assert np.all(flipped | np.all(out == x, axis=1))
    assert 150 < flipped.sum() < 250
    out, _ = augment_batch(x, y, Augment(polarity=1.0), np.random.default_rng(2))
    np.testing.assert_array_equal(out, -x)


@pytest.mark.parametrize("snr_db", [0.0, 20.0, 35.0])
def test_noise_at_a_fixed_snr_is_measured_at_that_snr(snr_db):
    x, y = sines(8, 16384), np.zeros((8, 2), np.float32)
    out, _ = augment_batch(x, y, Augment(noise_snr_db=(snr_db, snr_db)), np.random.default_rng(3))
    noise = out.astype(np.float64) - x
    measured = 20 * np.log10(rms(x) / rms(noise))
    np.testing.assert_allclose(measured, snr_db, atol=0.25)  # the noise's power varies by ~1% (0.05 dB)
    # White: the noise is uncorrelated with the signal and flat (no sine peak).
    spectrum = np.abs(np.fft.rfft(noise[0])) ** 2
    assert spectrum.max() < 20 * spectrum.mean()


def test_noise_snr_range_probability_and_silence():
    x, y = sines(300, 4096), np.zeros((300, 2), np.float32)
    x[0] = 0  # a silent crop stays silent: noise is relative to the crop's own power
    out, _ = augment_batch(x, y, Augment(noise_snr_db=(10, 30), noise_prob=0.5), np.random.default_rng(4))
    noisy = np.any(out != x, axis=1)
    assert not noisy[0] and 110 < noisy.sum() < 190
    measured = 20 * np.log10(rms(x[noisy]) / rms(out[noisy].astype(np.float64) - x[noisy]))
    assert measured.min() > 9.5 and measured.max() < 30.5 and measured.max() - measured.min() > 15


@pytest.mark.parametrize("semitones", [-2.0, 1.0, 3.5])
def test_pitch_shift_of_a_sine_moves_its_frequency(semitones):
    length = 8192
    t = np.arange(2 * length) / SAMPLE_RATE
    track = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    read = augment.read_length(length, semitones)
    assert read == round(length * 2 ** (semitones / 12))
    shifted = augment.resample_to(track[:read], length)
    assert shifted.shape == (length,) and shifted.dtype == np.float32
    np.testing.assert_allclose(peak_hz(shifted), 1000.0 * 2 ** (semitones / 12), rtol=2e-3)
    np.testing.assert_allclose(rms(shifted[500:-500]), rms(track), rtol=0.02)  # no loss of level
    np.testing.assert_array_equal(augment.resample_to(track[:length], length), track[:length])


def test_pitch_shifted_crops_of_the_training_input(sine_cache):
    from msagg.data.formats.cache import AudioCache

    shift = Augment(pitch_semitones=2, pitch_prob=0.5)
    with AudioCache(sine_cache) as cache:
        seq = crops.CropSequence(cache, cache.indices("train"), 4096, batch_size=40, steps=1, seed=5, augment=shift)
        x, _ = seq[0]
    drawn = augment.pitch_semitones(shift, 40, np.random.default_rng([5, 0, 0, crops.AUGMENT_STREAM]))
    assert 10 < np.count_nonzero(drawn) < 30 and np.abs(drawn).max() <= 2 and np.abs(drawn).max() > 1
    measured = np.array([peak_hz(row) for row in x])
    np.testing.assert_allclose(measured, 1000.0 * 2 ** (drawn / 12), rtol=2e-3)


def mixup_batch(num: int, y: np.ndarray, config: Augment, seed: int = 5):
    """Mixes crops that are one-hot pulses, so each output row shows its weight and partner."""
    x = np.zeros((num, 32), np.float32)
    x[np.arange(num), np.arange(num)] = 1.0
    out_x, out_y = augment_batch(x, y, config, np.random.default_rng(seed))
    return out_x[:, :num], out_y


@pytest.mark.parametrize("task", ["tags", "classes"])
def test_mixup_mixes_labels_with_the_audio_weight(task):
    num = 24
    rng = np.random.default_rng(6)
    if task == "classes":
        y = np.eye(3, dtype=np.float32)[rng.integers(0, 3, num)]
    else:
        y = (rng.random((num, 5)) < 0.4).astype(np.float32)
    weights, out_y = mixup_batch(num, y, Augment(mixup_alpha=0.4))
    assert np.all(weights >= 0) and np.all(weights <= 1)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)  # a convex combination of two crops
    assert np.all(np.count_nonzero(weights, axis=1) <= 2)
    np.testing.assert_allclose(out_y, weights @ y, atol=1e-6)  # labels mixed with the same weights
    assert np.all(out_y >= 0) and np.all(out_y <= 1)
    if task == "classes":
        np.testing.assert_allclose(out_y.sum(axis=1), 1.0, rtol=1e-6)  # soft targets
    own = np.diag(weights)
    assert np.sum((own > 0.01) & (own < 0.99)) > num // 3  # most crops really mixed


def test_mixup_probability_leaves_other_crops_alone():
    num = 200
    y = np.eye(num, dtype=np.float32)
    x = np.zeros((num, num), np.float32)
    x[np.arange(num), np.arange(num)] = 1.0
    out_x, out_y = augment_batch(x, y, Augment(mixup_alpha=1.0, mixup_prob=0.25), np.random.default_rng(7))
    unchanged = np.all(out_x == x, axis=1)
    assert 130 < unchanged.sum() < 170
    np.testing.assert_array_equal(out_y[unchanged], y[unchanged])


def test_the_same_generator_seed_gives_the_same_batch():
    x, y = sines(16, 512), np.eye(16, dtype=np.float32)
    a = augment_batch(x, y, ALL_ON, np.random.default_rng(8))
    b = augment_batch(x, y, ALL_ON, np.random.default_rng(8))
    c = augment_batch(x, y, ALL_ON, np.random.default_rng(9))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    np.testing.assert_array_equal(x, sines(16, 512))  # the input is not modified


# --- the training input ----------------------------------------------------------------------


def unaugmented_batch(seq: crops.CropSequence, index: int) -> tuple[np.ndarray, np.ndarray]:
    """CropSequence.__getitem__ as it was before augmentation existed (msagg 99c7142)."""
    rng = np.random.default_rng([seq.seed, seq.epoch, int(index)])
    picks = rng.integers(0, seq.indices.size, size=seq.batch_size)
    x = np.empty((seq.batch_size, seq.input_length), dtype=np.float32)
    for row, pick in enumerate(picks):
        room = max(int(seq.lengths[pick]) - seq.input_length, 0)
        start = int(rng.integers(0, room + 1))
        x[row] = seq.cache.crop(int(seq.indices[pick]), start, seq.input_length)
    return x, np.asarray(seq.cache.labels)[seq.indices[picks]].astype(np.float32)


def test_crops_without_augmentation_are_those_of_before(tags_cache):
    from msagg.data.formats.cache import AudioCache

    with AudioCache(tags_cache) as cache:
        train = cache.indices("train")
        for input_length in (27, 64, 500):  # 500: longer than every track, zero-padded
            for augment_off in (None, Augment(), Augment(noise_snr_db=(5, 5), noise_prob=0.0)):
                seq = crops.CropSequence(cache, train, input_length, 5, 3, seed=7, augment=augment_off)
                for epoch in (0, 2):
                    seq.epoch = epoch
                    for index in range(3):
                        x, y = seq[index]
                        want_x, want_y = unaugmented_batch(seq, index)
                        np.testing.assert_array_equal(x, want_x)
                        np.testing.assert_array_equal(y, want_y)


def test_augmented_batches_depend_only_on_seed_epoch_and_index(tags_cache):
    from msagg.data.formats.cache import AudioCache

    with AudioCache(tags_cache) as cache:
        train = cache.indices("train")
        seq = crops.CropSequence(cache, train, 64, 6, 4, seed=3, augment=ALL_ON)
        later = [seq[i] for i in (3, 1)]
        other = crops.CropSequence(cache, train, 64, 6, 4, seed=3, augment=ALL_ON)
        for (x, y), index in zip(later, (3, 1)):  # read in another order, by another object
            np.testing.assert_array_equal(other[index][0], x)
            np.testing.assert_array_equal(other[index][1], y)
        plain = crops.CropSequence(cache, train, 64, 6, 4, seed=3)
        assert not np.array_equal(seq[0][0], plain[0][0])
        other.on_epoch_end()
        assert not np.array_equal(other[1][0], later[1][0])
        seq.epoch = 1
        np.testing.assert_array_equal(seq[1][0], other[1][0])
        # Gain alone leaves the tracks and crop starts as they were: each crop is the plain one, scaled.
        gained = crops.CropSequence(cache, train, 64, 6, 4, seed=3, augment=Augment(gain_db=6))
        x, y = gained[2]
        plain_x, plain_y = plain[2]
        np.testing.assert_array_equal(y, plain_y)
        gains = rms(x) / rms(plain_x)
        assert np.all(gains > 10 ** (-6 / 20) - 1e-6) and np.all(gains < 10 ** (6 / 20) + 1e-6)
        np.testing.assert_allclose(x, (gains[:, None] * plain_x).astype(np.float32), rtol=1e-5, atol=1e-7)


def test_the_augmentation_has_no_tensorflow():
    tree = ast.parse(Path(augment.__file__).read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert {m.removeprefix("msagg.").split(".")[0] for m in modules} <= {"__future__", "dataclasses", "math", "numbers", "typing", "numpy",
                                                  "soxr", "data"}, modules


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"gain_db": -1}, "gain_db must be a number >= 0, got -1"),
        ({"gain_db": float("nan")}, "gain_db must be a number >= 0, got nan"),
        ({"polarity": 1.5}, "polarity must be a number in [0, 1], got 1.5"),
        ({"noise_prob": True}, "noise_prob must be a number in [0, 1], got True"),
        ({"noise_snr_db": (30, 10)}, "noise_snr_db must be (low, high) with low <= high, got (30, 10)"),
        ({"noise_snr_db": (10,)}, "noise_snr_db must be a (low, high) pair of dB values or None, got (10,)"),
        ({"noise_snr_db": "10,30"}, "noise_snr_db must be a (low, high) pair of dB values or None, got '10,30'"),
        ({"noise_snr_db": (10, float("inf"))}, "noise_snr_db must hold two finite numbers, got (10, inf)"),
        ({"pitch_semitones": 13}, "pitch_semitones must be a number in [0, 12], got 13"),
        ({"pitch_prob": -0.1}, "pitch_prob must be a number in [0, 1], got -0.1"),
        ({"mixup_alpha": -0.2}, "mixup_alpha must be a number >= 0, got -0.2"),
        ({"mixup_prob": 2}, "mixup_prob must be a number in [0, 1], got 2"),
    ],
)
def test_bad_values_are_refused_naming_the_key(changes, message):
    with pytest.raises(ConfigError) as err:
        Augment(**changes)
    assert str(err.value) == message
    # In the stage config the same check names the stage's key.
    with pytest.raises(ConfigError) as err:
        pretrain.Config(cache="x", **{f"augment_{k}": v for k, v in changes.items()})
    assert str(err.value) == f"augment_{message}"


def test_pretrain_config_block_presets_and_overrides():
    assert not pretrain.Config(cache="x").augment  # the paper's recipe
    for name in ("paper", "paper-se", "paper-rese", "tiny", "demo", "demo-rese", "general", "general-gm"):
        teacher = {"teacher_labels": "t"} if name == "general" else {}  # it fits the teacher's features
        assert not pretrain.Config(cache="x", **pretrain.PRESETS[name], **teacher).augmentation().active, name
    on = pretrain.Config(cache="x", augment=True).augmentation()
    assert on.gain and on.polarity > 0 and on.noise and on.pitch and on.mixup
    assert pretrain.Config(cache="x", augment=False, augment_gain_db=3).augmentation() == Augment()
    with pytest.raises(ConfigError, match="augment must be true or false, got 'yes'"):
        pretrain.Config(cache="x", augment="yes")

    def demo(*sets):
        return resolve(pretrain.Config, presets=pretrain.PRESETS, preset="demo", options={"cache": "x"},
                       sets=("augment=true", *sets))

    assert not demo("augment=false").augmentation().active
    assert demo("augment_noise_snr_db=none").augmentation().noise is False
    assert demo("augment_noise_snr_db=5,15").augmentation().noise_snr_db == (5.0, 15.0)
    off = {"augment_gain_db=0": "gain", "augment_polarity=0": "polarity", "augment_noise_snr_db=none": "noise",
           "augment_pitch_semitones=0": "pitch", "augment_mixup_alpha=0": "mixup"}
    for item, name in off.items():
        left = demo(item).augmentation().describe()
        assert name not in left and left.count(",") == 3, (item, left)
    with pytest.raises(ConfigError, match="augment_pitch_semitones must be a number in"):
        demo("augment_pitch_semitones=24")


def test_config_json_records_the_block_and_reads_back(tmp_path):
    config = resolve(pretrain.Config, presets=pretrain.PRESETS, preset="demo", options={"cache": "x"},
                     sets=["augment=true", "augment_noise_snr_db=5,15"])
    recorded = config_dict(config)
    assert recorded["augment"] is True and recorded["augment_noise_snr_db"] == [5.0, 15.0]
    assert {f"augment_{name}" for name in augment.FIELDS} <= set(recorded)
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert resolve(pretrain.Config, config_file=tmp_path / "config.json") == config


def test_cli_switches_augmentation(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    configs = []
    monkeypatch.setattr(pretrain, "run", lambda config, out, **kwargs: configs.append(config) or out)
    base = ["pretrain", "--cache", str(tmp_path), "--out", str(tmp_path / "out")]
    cases = ((["--preset", "demo"], False), (["--preset", "demo", "--augment"], True),
             (["--preset", "tiny", "--augment"], True), (["--preset", "demo", "--augment", "--set", "augment=off"], False))
    for args, expected in cases:
        result = CliRunner().invoke(main, base + args)
        assert result.exit_code == 0, result.output
        assert configs[-1].augment is expected, args
    result = CliRunner().invoke(main, ["pretrain", "--help"])
    assert "--augment / --no-augment" in result.output and "augment_pitch_semitones" in result.output


# --- pretraining with augmentation -----------------------------------------------------------


def test_pretrain_with_augmentation_runs_and_resumes_exactly(tmp_path):
    """All transforms on, classes (soft targets through categorical cross-entropy), killed and resumed."""
    cache = write_tiny_cache(tmp_path / "toy-classes", task="classes")
    config = pretrain.Config(cache=str(cache), **{**pretrain.PRESETS["tiny"], "scales": ("3^2",), "patience": 5,
                                                  "augment": True, "augment_pitch_prob": 1.0,
                                                  "augment_noise_prob": 1.0})
    assert config.augmentation().describe().count(",") == 4
    whole = pretrain.run(config, tmp_path / "whole", progress=False, tensorboard=False)
    recorded = json.loads((whole / "config.json").read_text())
    assert recorded["augment"] is True and recorded["augment_pitch_prob"] == 1.0
    rows = (whole / "3^2" / "history.csv").read_text().splitlines()
    assert len(rows) == 3 and "nan" not in "".join(rows)

    class Interrupt(Exception):
        pass

    def stop(scale, row):
        raise Interrupt

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        pretrain.run(config, out, progress=False, tensorboard=False, on_epoch_end=stop)
    pretrain.run(config, out, progress=False, tensorboard=False)
    for want, got in zip(pretrain_run.load_model(whole / "3^2" / "model.keras").get_weights(),
                         pretrain_run.load_model(out / "3^2" / "model.keras").get_weights()):
        np.testing.assert_array_equal(got, want)
