"""bf16 (Keras' mixed_bfloat16): the builder's dtype, float32 outputs, changing a saved model's precision,
pretraining and extracting in bf16 with float32 features."""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pytest

from msagg.data.formats.features import FeaturesFile
from msagg.data.errors import ConfigError
from msagg.models import sample_cnn, specs
from msagg.stages import extract, pretrain
from msagg.stages.runs.pretrain_run import PretrainRun, load_model, save_model
from msagg.stages.runs.folder import config_hash
from test_extract import make_cache, make_pretrain
from test_pretrain import read_history, tiny_config, write_tiny_cache

BF16 = specs.PRECISIONS["bf16"]


def inner_policies(model) -> set[str]:
    return {layer.dtype_policy.name for layer in model.layers
            if layer.name != "output" and not isinstance(layer, keras.layers.InputLayer)}


@pytest.mark.parametrize("block, multi", [("basic", False), ("rese", True), ("se", False)])
def test_bf16_model_has_the_same_layers_and_float32_outputs(block, multi):
    keras.utils.set_random_seed(0)
    plain = sample_cnn.build_sample_cnn("3^2", 3, width=0.125, block=block, multi=multi)
    keras.utils.set_random_seed(0)
    half = sample_cnn.build_sample_cnn("3^2", 3, width=0.125, block=block, multi=multi, dtype=BF16)
    assert [layer.name for layer in half.layers] == [layer.name for layer in plain.layers]
    assert half.count_params() == plain.count_params()
    assert inner_policies(half) == {"mixed_bfloat16"} and inner_policies(plain) == {"float32"}
    assert half.get_layer("output").dtype_policy.name == "float32"
    assert all(w.dtype == "float32" for w in half.weights)  # mixed precision: the weights stay float32
    assert sample_cnn.model_dtype(half) == BF16 and sample_cnn.model_dtype(plain) == "float32"
    x = np.random.default_rng(0).standard_normal((4, 27)).astype(np.float32)
    got, expected = half.predict_on_batch(x), plain.predict_on_batch(x)
    assert got.dtype == np.float32  # the probabilities the loss reads
    np.testing.assert_allclose(got, expected, atol=0.02)  # bfloat16 keeps 8 bits of mantissa
    taps = sample_cnn.build_tap_extractor(half, "3^2", block=block, multi=multi).predict_on_batch(x)
    assert {str(np.asarray(t).dtype) for t in taps.values()} == {"bfloat16"}


def test_precision_names():
    assert specs.dtype_policy("float32") == "float32" and specs.dtype_policy("bf16") == "mixed_bfloat16"
    with pytest.raises(ValueError, match="precision must be one of float32, bf16, got 'fp16'"):
        specs.dtype_policy("fp16")


def test_a_saved_float32_model_runs_in_bf16_and_back(tmp_path):
    keras.utils.set_random_seed(1)
    model = sample_cnn.build_sample_cnn("4^2", 3, width=0.125, block="res")
    path = save_model(tmp_path / "model.keras", model)
    loaded = load_model(path)  # safe_mode=True
    assert sample_cnn.with_dtype(loaded, "float32") is loaded  # nothing to change
    half = sample_cnn.with_dtype(loaded, BF16)
    assert inner_policies(half) == {"mixed_bfloat16"} and half.get_layer("output").dtype_policy.name == "float32"
    for a, b in zip(half.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    np.testing.assert_allclose(half.predict_on_batch(x), model.predict_on_batch(x), atol=0.02)
    # Saved in bf16, loaded (the policy kept), and back to float32: exactly the float32 model again.
    reloaded = load_model(save_model(tmp_path / "half.keras", half))
    assert inner_policies(reloaded) == {"mixed_bfloat16"}
    back = sample_cnn.with_dtype(reloaded, "float32")
    np.testing.assert_array_equal(back.predict_on_batch(x), model.predict_on_batch(x))


def test_config_precision():
    assert pretrain.Config(cache="x").precision == extract.Config(pretrain="p", cache="c").precision == "float32"
    for make in (lambda **k: pretrain.Config(cache="x", **k), lambda **k: extract.Config(pretrain="p", cache="c", **k)):
        with pytest.raises(ConfigError, match="precision must be one of float32, bf16, got 'float16'"):
            make(precision="float16")
    assert config_hash(extract.Config(pretrain="p", cache="c", precision="bf16")) != config_hash(
        extract.Config(pretrain="p", cache="c"))


def test_pretrain_in_bf16(tmp_path):
    cache = write_tiny_cache(tmp_path / "toy-tags")
    out = pretrain.run(tiny_config(cache, scales=("3^2",), precision="bf16"), tmp_path / "pretrain", progress=False,
                       tensorboard=False)
    assert json.loads((out / "config.json").read_text())["precision"] == "bf16"
    metrics = json.loads((out / "3^2" / "metrics.json").read_text())
    assert metrics["precision"] == "bf16" and 0 <= metrics["test"]["roc_auc"] <= 1
    assert all(np.isfinite(float(r["loss"])) and np.isfinite(float(r["val_loss"]))
               for r in read_history(out / "3^2" / "history.csv"))
    model = PretrainRun(out).load("3^2")
    assert inner_policies(model) == {"mixed_bfloat16"}  # saved as trained
    assert model.predict_on_batch(np.zeros((2, 27), np.float32)).dtype == np.float32


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    root = tmp_path_factory.mktemp("bf16-extract")
    cache = make_cache(root / "prepare")
    return root, cache, make_pretrain(root / "pretrain", cache)


def test_extract_in_bf16_stores_float32_features_near_float32_ones(upstream):
    root, cache, pretrain_dir = upstream
    paths = {p: extract.run(extract.Config(pretrain=str(pretrain_dir), cache=str(cache), precision=p, classic=()),
                            root / p, batch_size=4, progress=False) for p in ("float32", "bf16")}
    assert "precision" not in json.loads((root / "float32" / "config.json").read_text())
    assert json.loads((root / "bf16" / "config.json").read_text())["precision"] == "bf16"
    with FeaturesFile(paths["float32"]) as full, FeaturesFile(paths["bf16"]) as half:
        assert (full.precision, half.precision) == ("float32", "bf16")
        for scale in full.scales:
            for tap in full.taps(scale):
                a, b = full.get(scale, tap), half.get(scale, tap)
                assert b.dtype == np.float32 and b.shape == a.shape
                # bfloat16 rounds each activation to 8 significant bits (relative error <= 2^-8 = 0.4%),
                # through a few layers; well above that would mean the wrong weights or layers.
                assert np.abs(b - a).max() <= 0.05 * np.abs(a).max() + 1e-3, (scale, tap)
                assert not np.array_equal(a, b)  # it did compute in bfloat16
        with h5py.File(paths["bf16"], "r") as h5:
            assert h5.attrs["precision"] == "bf16"


def test_features_files_without_precision_read_as_float32(upstream, tmp_path):
    root, cache, pretrain_dir = upstream
    path = extract.run(extract.Config(pretrain=str(pretrain_dir), cache=str(cache), classic=()), tmp_path / "x",
                       batch_size=4, progress=False)
    with h5py.File(path, "a") as h5:  # as written before the attribute existed
        del h5.attrs["precision"]
    with FeaturesFile(path) as ff:
        assert ff.precision == "float32" and ff.attrs["schema_version"] == 1


def test_extract_runs_a_bf16_trained_model_in_float32(upstream, tmp_path):
    _, cache, _ = upstream
    from msagg.stages.engines.taps import load_tap_models

    pretrain_dir = make_pretrain(tmp_path / "pretrain", cache)
    run = PretrainRun(pretrain_dir)
    # A pretrain run whose models were saved in bf16 (as `pretrain --precision bf16` saves them).
    for scale in run.scales:
        save_model(run.model_path(scale), sample_cnn.with_dtype(run.load(scale), BF16))
    models = load_tap_models(PretrainRun(pretrain_dir))
    assert {s: inner_policies(m.extractor) for s, m in models.items()} == {"3^2": {"float32"}, "4^2": {"float32"}}
    halves = load_tap_models(PretrainRun(pretrain_dir), precision="bf16")
    assert {s: inner_policies(m.extractor) for s, m in halves.items()} == {"3^2": {BF16}, "4^2": {BF16}}
