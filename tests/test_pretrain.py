"""Pretrain stage: Config validation, presets, variants, end-to-end run on `tiny`, curves, skip and resume."""

import csv
import dataclasses
import json
import math
from pathlib import Path

import h5py
import matplotlib.pyplot as plt
import numpy as np
import pytest

from msagg.data.errors import ConfigError, MsaggError
from msagg.data.integrity import record_text_sha256
from msagg.data.tracklist import TrackList
from msagg.models import sample_cnn
from prepare_runs import make_prepare_run
from msagg.stages import pretrain
from msagg.stages.runs import pretrain_run
from msagg.stages.training import fit
from msagg.stages.runs.folder import RunConflictError


def write_tiny_cache(folder: Path, task: str = "tags", num_tracks: int = 24, seed: int = 0) -> Path:
    """A finished prepare run in ``folder`` (``tests/prepare_runs.py``) with a tiny toy cache (shards of 7 tracks).

    Tracks are 40-400 samples (some shorter than the 64-sample input of 4^2): a sine whose
    frequency and a noise level carry the labels, so the labels are learnable.
    """
    rng = np.random.default_rng(seed)
    lengths = rng.integers(40, 400, size=num_tracks)
    num_labels = 3
    if task == "tags":
        labels = (rng.random((num_tracks, num_labels)) < 0.5).astype(np.uint8)
        labels[0], labels[1] = 1, 0  # every label has positives and negatives
    else:
        labels = np.eye(num_labels, dtype=np.uint8)[np.arange(num_tracks) % num_labels]
    waves = []
    for n, lab in zip(lengths, labels):
        t = np.arange(n)
        freq = 0.05 + 0.15 * lab[0] + 0.05 * lab[-1]
        wave = 0.5 * np.sin(2 * np.pi * freq * t) + (0.3 if lab[1] else 0.02) * rng.standard_normal(n)
        waves.append(np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16))
    split = (["train"] * 2 + ["valid", "test"]) * (num_tracks // 4)
    tracks = TrackList(
        name=f"toy-{task}",
        task=task,
        label_names=[f"label{j}" for j in range(num_labels)],
        track_ids=[f"t{i:02d}" for i in range(num_tracks)],
        sources=[f"toy:{i}" for i in range(num_tracks)],
        labels=labels,
        split=split,
        split_info={"kind": "fixed"},
    )
    return make_prepare_run(folder, tracks, [w / 32767 for w in waves], sample_rate=22050, tracks_per_shard=7)


@pytest.fixture(scope="module")
def tags_cache(tmp_path_factory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("prepare") / "toy-tags")


def tiny_config(cache: Path, **changes) -> pretrain.Config:
    return pretrain.Config(cache=str(cache), **{**pretrain.PRESETS["tiny"], **changes})


def read_history(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --- Config ----------------------------------------------------------------------------------


def test_config_defaults_are_the_paper_recipe():
    config = pretrain.Config(cache="runs/x")
    assert config.scales == ("2^13", "2^14", "3^8", "3^9", "4^6", "4^7", "5^5", "5^6")
    assert (config.batch_size, config.learning_rate, config.lr_decay, config.num_lr_stages, config.patience) == (
        23, 0.01, 0.2, 5, 3)
    assert pretrain.Config(cache="runs/x", **pretrain.PRESETS["paper"]) == config


def test_config_normalizes_scales():
    assert pretrain.Config(cache="x", scales=["3x9", "3**8"]).scales == ("3^9", "3^8")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"scales": ("7^7",)}, "unknown scale '7^7'"),
        ({"scales": ()}, "at least one scale"),
        ({"scales": ("3^9", "3x9")}, "3^9 more than once"),
        ({"width": 0}, "width must be a number > 0.0, got 0"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1, got 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer >= 1, got 2.5"),
        ({"learning_rate": -0.1}, "learning_rate must be a number > 0.0, got -0.1"),
        ({"lr_decay": 1.5}, "lr_decay must be a number > 0.0 and <= 1.0, got 1.5"),
        ({"patience": 0}, "patience must be an integer >= 1, got 0"),
        ({"max_epochs_per_stage": 0}, "max_epochs_per_stage must be an integer >= 1, got 0"),
        ({"steps_per_epoch": -1}, "steps_per_epoch must be an integer >= 1, got -1"),
        ({"val_max_tracks": 0}, "val_max_tracks must be an integer >= 1, got 0"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"cache": ""}, "cache must be a prepare run folder"),
        ({"block": "dense"}, "block must be one of basic, se, res, rese, got 'dense'"),
        ({"block": "ReSE"}, "block must be one of basic, se, res, rese, got 'ReSE'"),
        ({"multi": "yes"}, "multi must be true or false, got 'yes'"),
        ({"multi": 1}, "multi must be true or false, got 1"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ConfigError) as err:
        pretrain.Config(**{"cache": "runs/x", **changes})
    assert message in str(err.value)


def test_presets_are_valid_configs():
    for name, preset in pretrain.PRESETS.items():
        # general fits a teacher's features: it needs teacher labels, and says so without them
        teacher = {"teacher_labels": "t"} if preset.get("teacher_features") else {}
        config = pretrain.Config(cache="x", **preset, **teacher)
        assert config.scales, name
    with pytest.raises(ConfigError, match="needs teacher labels"):
        pretrain.Config(cache="x", **pretrain.PRESETS["general"])
    assert len(pretrain.PRESETS["demo"]["scales"]) >= 2


def test_variant_presets():
    paper = pretrain.Config(cache="x", **pretrain.PRESETS["paper"])
    assert (paper.block, paper.multi) == ("basic", False)
    for name, block in (("paper-se", "se"), ("paper-rese", "rese")):
        config = pretrain.Config(cache="x", **pretrain.PRESETS[name])
        # Kim et al. (2018): the 3^9 model at full width, the authors' recipe, the -multi head.
        assert config == dataclasses.replace(paper, scales=("3^9",), block=block, multi=True), name
    demo = pretrain.Config(cache="x", **pretrain.PRESETS["demo"])
    rese = pretrain.Config(cache="x", **pretrain.PRESETS["demo-rese"])
    assert rese == dataclasses.replace(demo, block="rese", multi=True)
    assert set(pretrain.BLOCKS) == {"basic", "se", "res", "rese"}


def test_block_and_multi_reach_the_builder():
    for block, multi in (("basic", False), ("rese", True), ("se", False), ("basic", True)):
        config = pretrain.Config(cache="x", width=0.125, block=block, multi=multi)
        model = fit._build(config, "3^2", 7, "tags")
        expected = sample_cnn.build_sample_cnn("3^2", 7, "tags", width=0.125, block=block, multi=multi)
        assert [layer.name for layer in model.layers] == [layer.name for layer in expected.layers]
        assert model.count_params() == expected.count_params()
    # The basic model without multi has the 1x1 convolution head; every other variant the dense head.
    assert "conv1x1" in [layer.name for layer in fit._build(pretrain.Config(cache="x"), "3^2", 7, "tags").layers]
    assert "head_dense" in [layer.name for layer in fit._build(
        pretrain.Config(cache="x", block="res"), "3^2", 7, "tags").layers]


# --- End to end ------------------------------------------------------------------------------


def test_pretrain_tiny_end_to_end(tags_cache, tmp_path):
    config = tiny_config(tags_cache)
    out = pretrain.run(config, tmp_path / "pretrain", progress=False)
    assert (out / "DONE").is_file() and (out / "config.json").is_file() and (out / "metadata.json").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == {"3^2", "4^2"}
    epochs = config.num_lr_stages * config.max_epochs_per_stage
    for scale, input_length in (("3^2", 27), ("4^2", 64)):
        folder = out / scale
        for name in ("model.keras", "history.csv", "metrics.json", "DONE"):
            assert (folder / name).is_file(), name
        assert not (folder / "checkpoint").exists()
        rows = read_history(folder / "history.csv")
        assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
        assert [int(r["lr_stage"]) for r in rows] == [0, 1]
        assert float(rows[1]["lr"]) == pytest.approx(0.01 * 0.2)
        for row in rows:
            assert all(math.isfinite(float(row[k])) for k in ("loss", "val_loss", "val_song_metric"))
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["scale"] == scale and metrics["input_length"] == input_length
        assert metrics["task"] == "tags" and metrics["label_names"] == ["label0", "label1", "label2"]
        assert metrics["sample_rate"] == 22050 and metrics["width"] == config.width
        assert metrics["block"] == "basic" and metrics["multi"] is False
        png = (folder / "curves.png").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        image = plt.imread(folder / "curves.png")
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
        assert image.std() > 0.05  # drawn, not blank
        assert not list(folder.glob(".*.tmp-*"))  # written atomically, no temporary file left
        assert metrics["epochs"] == epochs and metrics["num_test_tracks"] == 6
        assert 0.0 <= metrics["test"]["roc_auc"] <= 1.0 and 0.0 <= metrics["test"]["pr_auc"] <= 1.0
        assert summary[scale]["test"] == metrics["test"]
        assert summary[scale]["num_params"] == metrics["num_params"] > 0
        try:
            import tensorflow  # noqa: F401 - TensorBoard logs are written only when it is importable
        except ImportError:
            pass
        else:
            assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
        model = pretrain_run.load_model(folder / "model.keras")
        assert model.input_shape == (None, input_length) and model.output_shape == (None, 3)
        assert float(rows[metrics["best_epoch"] - 1]["val_loss"]) == pytest.approx(metrics["best_val_loss"], rel=1e-5)
    # The same config again is a no-op; another config in the same folder is refused.
    stamp = (out / "3^2" / "model.keras").stat().st_mtime_ns
    assert pretrain.run(config, out, progress=False) == out
    assert (out / "3^2" / "model.keras").stat().st_mtime_ns == stamp
    with pytest.raises(RunConflictError, match="another config"):
        pretrain.run(tiny_config(tags_cache, seed=1), out, progress=False)


def test_pretrain_classes_task(tmp_path):
    cache = write_tiny_cache(tmp_path / "toy-classes", task="classes")
    out = pretrain.run(tiny_config(cache, scales=("3^2",)), tmp_path / "pretrain", progress=False, tensorboard=False)
    metrics = json.loads((out / "3^2" / "metrics.json").read_text())
    assert metrics["task"] == "classes" and metrics["song_metric"] == "accuracy"
    assert set(metrics["test"]) == {"accuracy", "macro_f1"}
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0
    model = pretrain_run.load_model(out / "3^2" / "model.keras")
    probs = model.predict_on_batch(np.zeros((2, 27), np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


class Interrupt(Exception):
    pass


def test_pretrain_resumes_after_interruption(tags_cache, tmp_path):
    config = tiny_config(tags_cache, scales=("3^2",), num_lr_stages=2, max_epochs_per_stage=2, patience=5)
    out = tmp_path / "pretrain"
    seen, curves = [], []

    def stop_after_three(scale, row):
        seen.append(row["epoch"])
        # The figure is redrawn after every epoch, so it can be watched during training.
        curves.append((out / scale / "curves.png").stat().st_mtime_ns)
        if row["epoch"] == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain.run(config, out, progress=False, tensorboard=False, on_epoch_end=stop_after_three)
    folder = out / "3^2"
    # One checkpoint folder, of the last epoch finished; older ones are removed.
    assert [p.name for p in (folder / "checkpoint").iterdir()] == ["epoch-0003"]
    checkpoint = folder / "checkpoint" / "epoch-0003"
    state = json.loads((checkpoint / "state.json").read_text())
    # Epoch 2 ended the first lr stage; the checkpoint already holds the second one.
    assert state["epoch"] == 3 and state["lr_stage"] == 1 and state["lr"] == pytest.approx(0.002)
    assert (checkpoint / "last.keras").is_file() and not (folder / "DONE").exists()
    # The best model so far, as model.keras was when the checkpoint was written.
    assert (checkpoint / "best.keras").read_bytes() == (folder / "model.keras").read_bytes()
    rng = json.loads((checkpoint / "rng.json").read_text())
    assert set(rng) == {"python", "numpy", "seed_generators"} and len(rng["seed_generators"]) == 1  # dropout
    assert not (out / "DONE").exists()
    first_rows = read_history(folder / "history.csv")
    assert [r["epoch"] for r in first_rows] == ["1", "2", "3"]
    assert len(curves) == 3 and curves == sorted(curves) and len(set(curves)) == 3

    from msagg.stages.runs.pretrain_run import load_model

    saved = load_model(checkpoint / "last.keras")
    # The optimizer state is kept: epoch 3 ran on the fresh optimizer of lr stage 2.
    assert int(saved.optimizer.iterations.numpy()) == config.steps_per_epoch
    assert float(saved.optimizer.learning_rate.numpy()) == pytest.approx(0.002)
    assert any(np.abs(v.numpy()).sum() > 0 for v in saved.optimizer.variables if "momentum" in v.path)

    resumed = []
    pretrain.run(config, out, progress=False, tensorboard=False, on_epoch_end=lambda s, r: resumed.append(r["epoch"]))
    assert resumed == [4]  # continued with the next epoch, not from scratch
    rows = read_history(folder / "history.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[:3] == first_rows
    assert [r["lr_stage"] for r in rows] == ["0", "0", "1", "1"]
    assert (folder / "curves.png").is_file()
    assert (folder / "DONE").is_file() and (out / "DONE").is_file() and not (folder / "checkpoint").exists()
    assert json.loads((folder / "metrics.json").read_text())["epochs"] == 4


def test_finished_scale_is_skipped_when_others_change(tags_cache, tmp_path):
    """A scale with DONE is not retrained when an unfinished run resumes."""
    config = tiny_config(tags_cache)
    out = tmp_path / "pretrain"

    def stop_in_second_scale(scale, row):
        if scale == "4^2":
            raise Interrupt

    with pytest.raises(Interrupt):
        pretrain.run(config, out, progress=False, tensorboard=False, on_epoch_end=stop_in_second_scale)
    assert (out / "3^2" / "DONE").is_file() and not (out / "4^2" / "DONE").exists()
    stamp = (out / "3^2" / "model.keras").stat().st_mtime_ns
    scales_trained = []
    pretrain.run(config, out, progress=False, tensorboard=False, on_epoch_end=lambda s, r: scales_trained.append(s))
    assert set(scales_trained) == {"4^2"}
    assert (out / "3^2" / "model.keras").stat().st_mtime_ns == stamp
    assert (out / "DONE").is_file()


def test_load_model_names_a_missing_file(tmp_path):
    with pytest.raises(MsaggError, match="model.keras: no such model file"):
        pretrain_run.load_model(tmp_path / "model.keras")


def test_a_cache_without_valid_tracks_is_refused_as_a_user_error(tmp_path):
    cache = write_tiny_cache(tmp_path / "no-valid")
    with h5py.File(cache / "cache" / "index.h5", "a") as f:
        split = [s.decode() if isinstance(s, bytes) else s for s in f["split"][()]]
        del f["split"]
        f.create_dataset("split", data=[("train" if s == "valid" else s) for s in split],
                         dtype=h5py.string_dtype("utf-8"))
        record_text_sha256(f)  # as a cache prepared with this split holds it
    with pytest.raises(MsaggError, match="needs train and valid tracks; the cache has 18 train and 0 valid"):
        pretrain.run(tiny_config(cache), tmp_path / "pretrain", progress=False, tensorboard=False)


def test_missing_cache_is_named(tmp_path):
    with pytest.raises(MsaggError, match=r"nowhere: no such prepare run folder"):
        pretrain.run(tiny_config(tmp_path / "nowhere"), tmp_path / "pretrain", progress=False)
    assert not (tmp_path / "pretrain" / "DONE").exists()


# --- CLI -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--preset", "tiny"], ("basic", False)),
        (["--preset", "demo-rese"], ("rese", True)),
        (["--preset", "demo-rese", "--no-multi"], ("rese", False)),
        (["--preset", "tiny", "--block", "se"], ("se", False)),
        (["--preset", "tiny", "--block", "rese", "--multi"], ("rese", True)),
        (["--preset", "paper-se", "--set", "block=res"], ("res", True)),
    ],
)
def test_cli_block_and_multi_options_override_the_preset(monkeypatch, tmp_path, args, expected):
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    configs = []
    monkeypatch.setattr(pretrain, "run", lambda config, out, **kwargs: configs.append(config) or out)
    result = CliRunner().invoke(main, ["pretrain", "--cache", str(tmp_path), "--out", str(tmp_path / "out"), *args])
    assert result.exit_code == 0, result.output
    assert (configs[0].block, configs[0].multi) == expected


def test_cli_refuses_an_unknown_block(tmp_path):
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    result = CliRunner().invoke(main, ["pretrain", "--cache", str(tmp_path), "--out", str(tmp_path / "o"),
                                       "--set", "block=dense"])
    assert result.exit_code != 0
    assert "block must be one of basic, se, res, rese, got 'dense'" in result.output
