"""The block registry and the Keras-free table: listed without Keras, and a new block type is one entry."""

import keras
import numpy as np
import pytest
from click.testing import CliRunner

from fresh_imports import modules_loaded_by
from msagg.models import blocks, sample_cnn, specs
from msagg.models.blocks import BLOCKS, BlockType
from test_models import _multiply_adds_from_layers


def test_specs_and_blocks_import_without_keras():
    loaded = modules_loaded_by("msagg.models.specs", "msagg.models.blocks")
    assert not {m for m in ("keras", "tensorflow", "jax") if m in loaded}


def test_registry_lists_the_four_block_types_and_describes_them():
    assert list(BLOCKS) == ["basic", "se", "res", "rese"]
    assert blocks.describe_blocks() == ("basic (Lee et al. 2017), se (squeeze-and-excitation), res (residual) or "
                                        "rese (residual + SE, Kim et al. 2018's ReSE-2)")
    assert [name for name, entry in BLOCKS.items() if entry.lee_2017] == ["basic"]
    assert {name: blocks.block_output_name(name, 3) for name in BLOCKS} == {
        "basic": "block3_pool", "se": "block3_se_scale", "res": "block3_pool", "rese": "block3_pool"}
    # Golden per-block costs: 9 frames, m = 3, 16 -> 32 channels (a shortcut for res and rese).
    conv, second, shortcut, excite = 9 * 3 * 16 * 32, 9 * 3 * 32 * 32, 9 * 16 * 32, 2 * 32 * 32 * 16
    assert {name: blocks.block_multiply_adds(name, 9, 3, 16, 32) for name in BLOCKS} == {
        "basic": conv, "se": conv + excite, "res": conv + second + shortcut, "rese": conv + second + shortcut + excite}
    with pytest.raises(ValueError, match="block must be one of 'basic', 'se', 'res', 'rese', got 'dense'"):
        blocks.block_type("dense")


def test_cli_block_options_derive_from_the_registry():
    from msagg.pipeline.cli import main

    pretrain_help = CliRunner().invoke(main, ["pretrain", "--help"], terminal_width=400).output
    bench_help = CliRunner().invoke(main, ["bench", "--help"], terminal_width=400).output
    for name, entry in BLOCKS.items():
        for text in (pretrain_help, bench_help):
            assert f"{name} ({entry.description})" in " ".join(text.split())
    assert "[basic|se|res|rese]" in pretrain_help
    result = CliRunner().invoke(main, ["pretrain", "--block", "dense"])
    assert result.exit_code == 2 and "'dense' is not one of 'basic', 'se', 'res', 'rese'" in result.output


def _toy_block(x, filters, m, prefix, *, conv_init="he_uniform", dtype=None):
    """Conv1D(filters, m, same) -> tanh -> AveragePooling(m): a block no registered type builds."""
    from keras import layers

    x = layers.Conv1D(filters, m, padding="same", kernel_initializer=conv_init, name=f"{prefix}_conv",
                      dtype=dtype)(x)
    x = layers.Activation("tanh", name=f"{prefix}_tanh", dtype=dtype)(x)
    return layers.AveragePooling1D(m, name=f"{prefix}_avg", dtype=dtype)(x)  # (batch, t/m, filters)


TOY = BlockType(description="tanh and average pooling", build=_toy_block, output="avg", marks=("tanh",),
                multiply_adds=lambda steps, m, channels, filters: steps * m * channels * filters)


@pytest.mark.parametrize("multi", [False, True])
def test_a_registered_toy_block_builds_runs_and_taps(monkeypatch, multi):
    """A new block type is one entry of BLOCKS: the builder, the taps, the cost model, the checks
    and the pretrain config all take it with no other change."""
    monkeypatch.setitem(BLOCKS, "toy", TOY)
    from msagg.stages import pretrain

    assert pretrain.Config(cache="x", block="toy", multi=multi).block == "toy"
    assert specs.variant_name("toy", multi) == ("toy+multi" if multi else "toy")
    keras.utils.set_random_seed(0)
    model = sample_cnn.build_sample_cnn("3^2", 3, "tags", width=0.125, block="toy", multi=multi)
    assert model.name == "sample_cnn_3x2_toy" + ("_multi" if multi else "")
    assert {"block1_avg", "block2_tanh", "block2_avg", "head_relu"} <= {layer.name for layer in model.layers}
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((4, 27))).astype(np.float32)
    assert np.isfinite(float(np.asarray(model.train_on_batch(x, (rng.random((4, 3)) < 0.5).astype(np.float32)))))

    assert specs.tap_layer_names("3^2", block="toy", multi=multi) == {
        "-3": "block1_avg", "-2": "block2_avg", "-1": "head_relu"}
    taps = sample_cnn.build_tap_extractor(model, "3^2", block="toy", multi=multi).predict_on_batch(x)
    dims = specs.tap_dims("3^2", 0.125, block="toy", multi=multi)
    assert dims == {"-3": 16, "-2": 32, "-1": 64 if multi else 32}
    assert {k: v.shape for k, v in taps.items()} == {"-3": (4, 3, 16), "-2": (4, 1, 32), "-1": (4, 1, dims["-1"])}
    block1 = keras.Model(model.inputs, model.get_layer("block1_avg").output)
    np.testing.assert_allclose(taps["-3"], block1.predict_on_batch(x), rtol=1e-5, atol=1e-6)
    assert np.abs(taps["-3"]).max() <= 1.0  # tanh, then an average
    assert specs.count_multiply_adds("3^2", 0.125, 3, block="toy", multi=multi) == _multiply_adds_from_layers(model)

    # The marks tell the toy apart from the other types, both ways.
    with pytest.raises(ValueError, match="missing layers: block2_pool, block2_add; unexpected layers: block2_tanh"):
        sample_cnn.build_tap_extractor(model, "3^2", block="res", multi=multi)
    res = sample_cnn.build_sample_cnn("3^2", 3, "tags", width=0.125, block="res", multi=multi)
    with pytest.raises(ValueError, match="missing layers: block2_avg, block2_tanh; unexpected layers: block2_add"):
        sample_cnn.build_tap_extractor(res, "3^2", block="toy", multi=multi)
