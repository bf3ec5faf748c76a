"""The SampleCNN family: parameter counts, tap shapes, width multiplier, save/load, bad inputs."""

import keras
import numpy as np
import pytest

from models import sample_cnn
from models.sample_cnn import PAPER_SCALES, SCALES, TAPS

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
    dims = sample_cnn.tap_dims(scale, width)
    # After block i the sequence is m^(n-i) frames long: m for block n-1, 1 for block n.
    return {"-3": (None, spec.m, dims["-3"]), "-2": (None, 1, dims["-2"]), "-1": (None, 1, dims["-1"])}


@pytest.mark.parametrize("scale", PAPER_SCALES)
def test_parameter_counts_and_input_lengths_match_the_paper(scale):
    model = sample_cnn.build_sample_cnn(scale, 50, "tags")
    assert trainable_params(model) == PAPER_PARAMS[scale]
    assert model.input_shape == (None, INPUT_LENGTHS[scale])
    assert model.output_shape == (None, 50)
    assert model.get_layer("output").activation.__name__ == "sigmoid"
    assert sample_cnn.scale_of(model) == scale


@pytest.mark.parametrize("scale", PAPER_SCALES)
def test_tap_shapes_every_scale(scale):
    model = sample_cnn.build_sample_cnn(scale, 50, "tags")
    taps = sample_cnn.build_tap_extractor(model)
    assert set(taps.output) == set(TAPS)
    assert {k: tuple(v.shape) for k, v in taps.output.items()} == expected_tap_shapes(scale)


def test_tap_shapes_of_3x9_are_the_papers():
    model = sample_cnn.build_sample_cnn("3^9", 50, "tags")
    shapes = {k: tuple(v.shape) for k, v in sample_cnn.build_tap_extractor(model).output.items()}
    assert shapes == {"-3": (None, 3, 256), "-2": (None, 1, 512), "-1": (None, 1, 512)}
    assert sample_cnn.tap_layer_names("3^9") == {"-3": "block8_pool", "-2": "block9_pool", "-1": "relu1x1"}


@pytest.mark.parametrize("scale", PAPER_SCALES)
def test_tap_forward_pass_at_reduced_width(scale):
    width = 0.125
    model = sample_cnn.build_sample_cnn(scale, 10, "tags", width=width)
    taps = sample_cnn.build_tap_extractor(model)
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
    assert sample_cnn.tap_dims("3^9", 0.5) == {"-3": 128, "-2": 256, "-1": 256}
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
    assert loaded.name == model.name and sample_cnn.scale_of(loaded) == "3^8"
    a = sample_cnn.build_tap_extractor(model).predict_on_batch(x)
    b = sample_cnn.build_tap_extractor(loaded).predict_on_batch(x)
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
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    args = {"scale": "3^9", "num_labels": 50, "task": "tags", **kwargs}
    with pytest.raises(ValueError) as err:
        sample_cnn.build_sample_cnn(**args)
    assert message in str(err.value)


def test_parse_scale():
    assert sample_cnn.parse_scale("3x9") == "3^9"
    assert sample_cnn.parse_scale(" 2**13 ") == "2^13"
    with pytest.raises(ValueError, match="unknown scale '6\\^6'"):
        sample_cnn.parse_scale("6^6")


def test_spec_rejects_inconsistent_widths():
    with pytest.raises(ValueError, match="2 block widths for 3 blocks"):
        sample_cnn.SampleCNNSpec(3, 3, (128, 256), 256)


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
    assert sample_cnn.count_multiply_adds(scale) == _multiply_adds_from_layers(model)
    small = sample_cnn.build_sample_cnn(scale, 50, "tags", width=0.25)
    assert sample_cnn.count_multiply_adds(scale, 0.25) == _multiply_adds_from_layers(small)


def test_count_multiply_adds_golden():
    # 3^2, 27 samples: conv0 9*3*1*128, block1 9*3*128*128, block2 3*3*128*256, 1x1 256*256, dense 256*50.
    assert sample_cnn.count_multiply_adds("3^2") == 3456 + 442_368 + 294_912 + 65_536 + 12_800
    # Deeper scales cost more per segment at the same m; 3^9 is about 1.73 GMAC per segment.
    assert sample_cnn.count_multiply_adds("3^9") > 2.9 * sample_cnn.count_multiply_adds("3^8")
    assert 1.7e9 < sample_cnn.count_multiply_adds("3^9") < 1.75e9
