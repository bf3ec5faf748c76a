"""stages/crops.py: the random-crop training input (determinism, padding, labels) and its step count."""

import ast
from pathlib import Path

import numpy as np
import pytest

from msagg.stages.training import crops
from test_pretrain import write_tiny_cache


@pytest.fixture(scope="module")
def tags_cache(tmp_path_factory) -> Path:
    return write_tiny_cache(tmp_path_factory.mktemp("prepare") / "toy-tags")


def test_crop_sequence_shapes_and_determinism(tags_cache):
    from msagg.data.formats.cache import AudioCache

    with AudioCache(tags_cache) as cache:
        train = cache.indices("train")
        seq = crops.CropSequence(cache, train, input_length=64, batch_size=5, steps=3, seed=1)
        assert len(seq) == 3
        x, y = seq[0]
        assert x.shape == (5, 64) and x.dtype == np.float32
        assert y.shape == (5, 3) and y.dtype == np.float32
        assert np.abs(x).max() <= 1.0 and np.abs(x).max() > 0
        again = crops.CropSequence(cache, train, input_length=64, batch_size=5, steps=3, seed=1)
        np.testing.assert_array_equal(again[0][0], x)
        np.testing.assert_array_equal(seq[0][0], x)  # reading twice gives the same batch
        assert not np.array_equal(seq[1][0], x)
        seq.on_epoch_end()
        assert seq.epoch == 1
        assert not np.array_equal(seq[0][0], x)
        again.epoch = 1
        np.testing.assert_array_equal(again[0][0], seq[0][0])
        with pytest.raises(IndexError):
            seq[3]
        # Every crop is a contiguous piece of its track, zero-padded past the end of a short one.
        long_seq = crops.CropSequence(cache, train, input_length=500, batch_size=4, steps=1, seed=0)
        x, _ = long_seq[0]
        assert np.all(x[:, 400:] == 0)  # no track is longer than 400 samples
        # Labels follow the picked tracks.
        one = crops.CropSequence(cache, train[:1], input_length=27, batch_size=3, steps=1)
        np.testing.assert_array_equal(one[0][1], np.repeat(cache.labels[train[:1]], 3, axis=0))
        full = cache.track(int(train[0]))
        crop = one[0][0][0]
        starts = [s for s in range(len(full) - 27 + 1) if np.array_equal(full[s : s + 27], crop)]
        assert starts


def test_crop_sequence_rejects_empty_track_list(tags_cache):
    from msagg.data.formats.cache import AudioCache

    with AudioCache(tags_cache) as cache, pytest.raises(ValueError, match="at least one track"):
        crops.CropSequence(cache, [], input_length=27, batch_size=2, steps=1)


def test_steps_per_pass_covers_every_segment_once():
    # 27-sample crops: 100 samples hold 3 segments, 26 (shorter than one) still 1, 54 exactly 2.
    assert crops.steps_per_pass([100, 26, 54], input_length=27, batch_size=4) == 2
    assert crops.steps_per_pass([100, 26, 54], input_length=27, batch_size=6) == 1
    assert crops.steps_per_pass([10], input_length=27, batch_size=23) == 1


def test_the_training_input_has_no_tensorflow():
    """The input path runs under every Keras backend, so it imports neither tf nor TensorFlow."""
    tree = ast.parse(Path(crops.__file__).read_text())
    modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    modules |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {m for m in modules if m.split(".")[0] in ("tensorflow", "tf")}, modules
    assert "tf" not in {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
