"""The SampleCNN family: parameter counts, tap shapes, width multiplier, save/load, bad inputs."""

import keras
import numpy as np
import pytest

from msagg.models import sample_cnn, specs
from msagg.models.blocks import BLOCKS
from msagg.models.specs import PAPER_SCALES, SCALES, TAPS

# Trainable parameters with 50 sigmoid outputs (issue 2, from the authors' models).
PAPER_PARAMS = {
    "2^13": 1_872_818,
    "2^14": 2_398_642,
    "3^8": 1_264_946,
    "3^9": 1_869_874,
    "4^6": 1_605_554,
    "4^7": 1_868_466,
    "5^5": 1_604_914,
    "5^6": 1_933_362,
}
INPUT_LENGTHS = {"2^13": 16384, "2^14": 32768, "3^8": 19683, "3^9": 59049, "4^6": 16384, "4^7": 65536,
                 "5^5": 15625, "5^6": 78125}


def trainable_params(model: keras.Model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def expected_tap_shapes(scale: str, width: float = 1.0) -> dict[str, tuple]:
    spec = SCALES[scale]
    dims = specs.tap_dims(scale, width)
    # After block i the sequence is m^(n-i) frames long: m for block n-1, 1 for block n.
    return {"-3": (None, spec.m, dims["-3"]), "-2": (None, 1, dims["-2"]), "-1": (None, 1, dims["-1"])}


@pytest.mark.parametrize("scale", PAPER_SCALES)
def test_parameter_counts_and_input_lengths_match_the_paper(scale):
    model = sample_cnn.build_sample_cnn(scale, 50, "tags")
    assert trainable_params(model) == PAPER_PARAMS[scale]
    assert model.input_shape == (None, INPUT_LENGTHS[scale])
    assert model.output_shape == (None, 50)
    assert model.get_layer("output").activation.__name__ == "sigmoid"
    assert model.name == f"sample_cnn_{scale.replace('^', 'x')}"


@pytest.mark.parametrize("scale", PAPER_SCALES)
def test_tap_shapes_every_scale(scale):
    model = sample_cnn.build_sample_cnn(scale, 50, "tags")
    taps = sample_cnn.build_tap_extractor(model, scale)
    assert set(taps.output) == set(TAPS)
    assert {k: tuple(v.shape) for k, v in taps.output.items()} == expected_tap_shapes(scale)


def test_tap_shapes_of_3x9_are_the_papers():
    model = sample_cnn.build_sample_cnn("3^9", 50, "tags")
    shapes = {k: tuple(v.shape) for k, v in sample_cnn.build_tap_extractor(model, "3^9").output.items()}
    assert shapes == {"-3": (None, 3, 256), "-2": (None, 1, 512), "-1": (None, 1, 512)}
    assert specs.tap_layer_names("3^9") == {"-3": "block8_pool", "-2": "block9_pool", "-1": "relu1x1"}


@pytest.mark.parametrize("scale", PAPER_SCALES)
def test_tap_forward_pass_at_reduced_width(scale):
    width = 0.125
    model = sample_cnn.build_sample_cnn(scale, 10, "tags", width=width)
    taps = sample_cnn.build_tap_extractor(model, scale)
    x = np.random.default_rng(0).standard_normal((2, SCALES[scale].input_length)).astype(np.float32) * 0.1
    out = taps.predict_on_batch(x)
    for tap, shape in expected_tap_shapes(scale, width).items():
        assert out[tap].shape == (2,) + shape[1:]
        assert np.isfinite(out[tap]).all()
    assert (out["-1"] >= 0).all()  # after ReLU
    # The -1 tap is what the head reads: flatten -> (inference) dropout -> dense.
    w, b = model.get_layer("output").get_weights()
    probs = 1 / (1 + np.exp(-(out["-1"][:, 0, :] @ w + b)))
    np.testing.assert_allclose(probs, model.predict_on_batch(x), rtol=1e-4, atol=1e-5)


def test_width_multiplier_scales_every_layer():
    full = sample_cnn.build_sample_cnn("3^9", 50, "tags")
    half = sample_cnn.build_sample_cnn("3^9", 50, "tags", width=0.5)
    assert specs.tap_dims("3^9", 0.5) == {"-3": 128, "-2": 256, "-1": 256}
    for name in ["conv0", "conv1x1"] + [f"block{i}_conv" for i in range(1, 10)]:
        assert half.get_layer(name).filters * 2 == full.get_layer(name).filters
    # Conv weights scale about with width^2.
    assert 0.2 < trainable_params(half) / trainable_params(full) < 0.3
    assert half.input_shape == full.input_shape
    tiny = sample_cnn.build_sample_cnn("3^9", 50, "tags", width=0.01)
    assert tiny.get_layer("conv0").filters == 4  # never fewer than 4 filters


def test_classes_task_uses_softmax():
    model = sample_cnn.build_sample_cnn("3^2", 5, "classes", width=0.25)
    assert model.get_layer("output").activation.__name__ == "softmax"
    probs = model.predict_on_batch(np.random.default_rng(0).standard_normal((3, 27)).astype(np.float32))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_layer_names_are_stable():
    model = sample_cnn.build_sample_cnn("4^6", 50, "tags")
    names = {layer.name for layer in model.layers}
    expected = {"conv0", "bn0", "relu0", "conv1x1", "bn1x1", "relu1x1", "dropout", "output"}
    for i in range(1, 7):
        expected |= {f"block{i}_conv", f"block{i}_bn", f"block{i}_relu", f"block{i}_pool"}
    assert expected <= names


def test_save_load_gives_the_same_output(tmp_path):
    keras.utils.set_random_seed(0)
    model = sample_cnn.build_sample_cnn("3^8", 7, "tags", width=0.125)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((4, 19683))).astype(np.float32)
    y = (rng.random((4, 7)) < 0.5).astype(np.float32)
    model.train_on_batch(x, y)  # moves the BatchNorm statistics away from their initial values
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5, atol=1e-6)
    assert loaded.name == model.name
    a = sample_cnn.build_tap_extractor(model, "3^8").predict_on_batch(x)
    b = sample_cnn.build_tap_extractor(loaded, "3^8").predict_on_batch(x)
    for tap in TAPS:
        np.testing.assert_allclose(a[tap], b[tap], rtol=1e-5, atol=1e-6)
    # Inference mode: dropout is off, so repeated calls agree.
    np.testing.assert_array_equal(loaded.predict_on_batch(x), loaded.predict_on_batch(x))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scale": "3^10"}, "unknown scale '3^10'; known: 2^13"),
        ({"scale": "nine"}, "unknown scale 'nine'"),
        ({"task": "regression"}, "task must be 'tags' or 'classes', got 'regression'"),
        ({"width": 0.0}, "width must be positive, got 0.0"),
        ({"num_labels": 0}, "num_labels must be at least 1, got 0"),
        ({"block": "resnet"}, "block must be one of 'basic', 'se', 'res', 'rese', got 'resnet'"),
        ({"multi": "yes"}, "multi must be a bool (True or False), got 'yes'"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    args = {"scale": "3^9", "num_labels": 50, "task": "tags", **kwargs}
    with pytest.raises(ValueError) as err:
        sample_cnn.build_sample_cnn(**args)
    assert message in str(err.value)


def test_parse_scale():
    assert specs.parse_scale("3x9") == "3^9"
    assert specs.parse_scale(" 2**13 ") == "2^13"
    with pytest.raises(ValueError, match="unknown scale '6\\^6'"):
        specs.parse_scale("6^6")


def test_spec_rejects_inconsistent_widths():
    with pytest.raises(ValueError, match="2 block widths for 3 blocks"):
        specs.SampleCNNSpec(3, 3, (128, 256), 256)


def _multiply_adds_from_layers(model: keras.Model) -> int:
    """Multiply-adds counted from the built layers' shapes (independent of count_multiply_adds)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv1D):
            steps, filters = layer.output.shape[1], layer.output.shape[2]
            total += steps * layer.kernel_size[0] * layer.input.shape[2] * filters
        elif isinstance(layer, keras.layers.Dense):
            total += layer.input.shape[-1] * layer.units
    return total


@pytest.mark.parametrize("scale", PAPER_SCALES)
def test_count_multiply_adds_matches_layer_shapes(scale):
    model = sample_cnn.build_sample_cnn(scale, 50, "tags")
    assert specs.count_multiply_adds(scale) == _multiply_adds_from_layers(model)
    small = sample_cnn.build_sample_cnn(scale, 50, "tags", width=0.25)
    assert specs.count_multiply_adds(scale, 0.25) == _multiply_adds_from_layers(small)


def test_count_multiply_adds_golden():
    # 3^2, 27 samples: conv0 9*3*1*128, block1 9*3*128*128, block2 3*3*128*256, 1x1 256*256, dense 256*50.
    assert specs.count_multiply_adds("3^2") == 3456 + 442_368 + 294_912 + 65_536 + 12_800
    # Deeper scales cost more per segment at the same m; 3^9 is about 1.73 GMAC per segment.
    assert specs.count_multiply_adds("3^9") > 2.9 * specs.count_multiply_adds("3^8")
    assert 1.7e9 < specs.count_multiply_adds("3^9") < 1.75e9


# The variants of Kim et al. 2018 (block types and the multi-level head).
VARIANTS = [(block, multi) for block in BLOCKS for multi in (False, True)
            if (block, multi) != ("basic", False)]
VARIANT_IDS = [specs.variant_name(b, m) for b, m in VARIANTS]

# Trainable parameters of the 3^9 variants with 50 tag outputs, as checked below against the
# arithmetic of expected_kim_params (recorded here so that a change shows in review).
KIM_PARAMS_3X9 = {
    "basic+multi": 2_683_442,
    "se": 23_929_138,
    "se+multi": 24_742_706,
    "res": 4_107_314,
    "res+multi": 4_920_882,
    "rese": 26_166_578,
    "rese+multi": 26_980_146,
}


def expected_kim_params(block: str, multi: bool, num_labels: int = 50) -> int:
    """Trainable parameters of a 3^9 variant, counted from MODEL_VARIANTS.md's description."""
    def conv(kernel, c_in, c_out):  # weights + biases
        return kernel * c_in * c_out + c_out

    def bn(c):  # gamma + beta; the moving mean and variance are not trainable
        return 2 * c

    def dense(c_in, c_out):
        return c_in * c_out + c_out

    def se(c):  # squeeze-excitation with amplifying ratio 16: c -> 16c -> c
        return dense(c, 16 * c) + dense(16 * c, c)

    widths = [128, 128, 256, 256, 256, 256, 256, 256, 512]
    total = conv(3, 1, 128) + bn(128)  # stem: Conv1D(128, 3, stride 3) -> BN
    c_in = 128
    for w in widths:
        if block in ("basic", "se"):
            total += conv(3, c_in, w) + bn(w)
        else:  # res, rese: two 3-tap convs with BN, and a 1x1 conv + BN shortcut where the width changes
            total += conv(3, c_in, w) + bn(w) + conv(3, w, w) + bn(w)
            if c_in != w:
                total += conv(1, c_in, w) + bn(w)
        if block in ("se", "rese"):
            total += se(w)
        c_in = w
    pooled = 256 + 256 + 512 if multi else 512  # global max pooling of the last (three) block(s)
    total += dense(pooled, pooled) + bn(pooled) + dense(pooled, num_labels)  # head
    return total


@pytest.mark.parametrize("block, multi", VARIANTS, ids=VARIANT_IDS)
def test_variant_parameter_counts_3x9(block, multi):
    model = sample_cnn.build_sample_cnn("3^9", 50, "tags", block=block, multi=multi)
    count = trainable_params(model)
    print(f"3^9 {specs.variant_name(block, multi)}: {count:,d} trainable parameters")
    assert count == expected_kim_params(block, multi)
    assert count == KIM_PARAMS_3X9[specs.variant_name(block, multi)]
    assert model.input_shape == (None, 59049) and model.output_shape == (None, 50)
    assert model.name == "sample_cnn_3x9_" + block + ("_multi" if multi else "")
    # Every block ends with MaxPool(3): block 9 ends at length 1.
    taps = sample_cnn.build_tap_extractor(model, "3^9", block=block, multi=multi)
    shapes = {k: tuple(v.shape) for k, v in taps.output.items()}
    assert shapes == {"-3": (None, 3, 256), "-2": (None, 1, 512), "-1": (None, 1, 1024 if multi else 512)}
    assert specs.count_multiply_adds("3^9", block=block, multi=multi) == _multiply_adds_from_layers(model)


def test_variant_initializers_and_layer_names():
    model = sample_cnn.build_sample_cnn("3^9", 50, "tags", block="rese", multi=True)
    names = {layer.name for layer in model.layers}
    assert {"conv0", "bn0", "relu0", "head_pool1", "head_pool2", "head_pool3", "head_concat", "head_dense",
            "head_bn", "head_relu", "dropout", "output"} <= names
    for i in range(1, 10):
        assert {f"block{i}_conv1", f"block{i}_bn1", f"block{i}_relu1", f"block{i}_dropout", f"block{i}_conv2",
                f"block{i}_bn2", f"block{i}_se_squeeze", f"block{i}_se_expand", f"block{i}_se_gate",
                f"block{i}_se_scale", f"block{i}_add", f"block{i}_relu", f"block{i}_pool"} <= names
    # Shortcut convolutions only where the width changes: blocks 3 (128 -> 256) and 9 (256 -> 512).
    assert sorted(n for n in names if n.endswith("_shortcut_conv")) == ["block3_shortcut_conv", "block9_shortcut_conv"]
    assert model.get_layer("block1_se_expand").units == 128 * 16
    assert model.get_layer("head_dense").units == 1024

    def init(layer):
        return type(model.get_layer(layer).kernel_initializer).__name__

    assert init("conv0") == init("block4_conv1") == init("block4_conv2") == "HeUniform"
    assert init("block3_shortcut_conv") == init("block4_se_expand") == init("head_dense") == "GlorotUniform"
    assert init("output") == "GlorotUniform"
    assert model.get_layer("block2_dropout").rate == 0.2 and model.get_layer("dropout").rate == 0.5
    assert specs.tap_layer_names("3^9", block="rese", multi=True) == {
        "-3": "block8_pool", "-2": "block9_pool", "-1": "head_relu"}
    assert specs.tap_layer_names("3^9", block="se") == {
        "-3": "block8_se_scale", "-2": "block9_se_scale", "-1": "head_relu"}


@pytest.mark.parametrize("block, multi", VARIANTS, ids=VARIANT_IDS)
def test_variant_trains_taps_and_round_trips(block, multi, tmp_path):
    width, num_labels = 0.125, 4
    keras.utils.set_random_seed(0)
    model = sample_cnn.build_sample_cnn("3^2", num_labels, "tags", width=width, block=block, multi=multi)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9, nesterov=True), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = (0.1 * rng.standard_normal((4, 27))).astype(np.float32)
    y = (rng.random((4, num_labels)) < 0.5).astype(np.float32)
    before = model.get_layer("head_dense").get_weights()[0].copy()
    loss = float(np.asarray(model.train_on_batch(x, y)))
    assert np.isfinite(loss)
    assert not np.array_equal(before, model.get_layer("head_dense").get_weights()[0])  # one SGD step happened

    taps = sample_cnn.build_tap_extractor(model, "3^2", block=block, multi=multi).predict_on_batch(x)
    dims = specs.tap_dims("3^2", width, block=block, multi=multi)
    # 3^2: block 1 leaves 3 frames, block 2 one; the dense tap comes as one frame.
    assert {k: v.shape for k, v in taps.items()} == {"-3": (4, 3, dims["-3"]), "-2": (4, 1, dims["-2"]),
                                                      "-1": (4, 1, dims["-1"])}
    # The multi head of a 2-block scale reads the stem, block 1 and block 2: 16 + 16 + 32 channels.
    assert dims == {"-3": 16, "-2": 32, "-1": 64 if multi else 32}
    assert (taps["-1"] >= 0).all()  # after ReLU
    # The -1 tap is what the head reads: (inference) dropout -> dense.
    w, b = model.get_layer("output").get_weights()
    probs = 1 / (1 + np.exp(-(taps["-1"][:, 0, :] @ w + b)))
    np.testing.assert_allclose(probs, model.predict_on_batch(x), rtol=1e-4, atol=1e-5)

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert loaded.name == model.name
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-5, atol=1e-6)
    again = sample_cnn.build_tap_extractor(loaded, "3^2", block=block, multi=multi).predict_on_batch(x)
    for tap in TAPS:
        np.testing.assert_allclose(again[tap], taps[tap], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("block, multi", [(b, m) for b in BLOCKS for m in (False, True)])
def test_variant_multiply_adds_match_layer_shapes_every_block(block, multi):
    model = sample_cnn.build_sample_cnn("4^2", 6, "tags", width=0.25, block=block, multi=multi)
    assert specs.count_multiply_adds("4^2", 0.25, 6, block=block, multi=multi) == _multiply_adds_from_layers(model)


def test_tap_extractor_refuses_a_model_of_another_variant():
    model = sample_cnn.build_sample_cnn("3^2", 3, "tags", width=0.125, block="rese")
    for kwargs in ({}, {"block": "se"}, {"block": "rese", "multi": True}):
        with pytest.raises(ValueError, match="model 'sample_cnn_3x2_rese' is not a 3\\^2 SampleCNN of variant"):
            sample_cnn.build_tap_extractor(model, "3^2", **kwargs)
    with pytest.raises(ValueError, match="is not a 4\\^2 SampleCNN"):
        sample_cnn.build_tap_extractor(model, "4^2", block="rese")
    with pytest.raises(ValueError, match="block must be one of"):
        sample_cnn.build_tap_extractor(model, "3^2", block="dense")


def test_variant_name():
    assert specs.variant_name("basic", False) == "basic"
    assert specs.variant_name("rese", True) == "rese+multi"
    with pytest.raises(ValueError, match="got 'ReSE'"):
        specs.variant_name("ReSE", False)
    with pytest.raises(ValueError, match="multi must be a bool"):
        specs.variant_name("se", 1)
