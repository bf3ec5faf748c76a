"""stages/evaluation.py: segment predictions, the segment loss and the song-level metrics."""

import numpy as np
import pytest

from msagg.stages.training import evaluation


class _MeanModel:
    """Stands in for a Keras model: each row's prediction is (mean, first sample); counts calls."""

    def __init__(self):
        self.batch_shapes = []

    def predict_on_batch(self, x):
        self.batch_shapes.append(x.shape)
        return np.stack([x.mean(axis=1), x[:, 0]], axis=1)


class _Cache:
    def __init__(self, tracks):
        self.tracks = tracks

    def track(self, index):
        return self.tracks[index]


def test_predict_segments_keeps_track_order_and_one_batch_shape():
    # Track 0: 3 segments of 4 (valued 1, 2, 3; the remainder 9 dropped); track 1: shorter than a
    # segment, zero-padded; track 2: 2 segments.
    tracks = [np.array([1] * 4 + [2] * 4 + [3] * 4 + [9], np.float32), np.array([5, 5], np.float32),
              np.array([7] * 4 + [8] * 4, np.float32)]
    model = _MeanModel()
    out = evaluation.predict_segments(model, _Cache(tracks), [2, 0, 1], input_length=4, batch_size=4)
    assert [p.shape for p in out] == [(2, 2), (3, 2), (1, 2)]
    np.testing.assert_allclose(out[0][:, 1], [7, 8])
    np.testing.assert_allclose(out[1][:, 1], [1, 2, 3])
    np.testing.assert_allclose(out[2], [[2.5, 5]])
    assert model.batch_shapes == [(4, 4), (4, 4)]  # 6 segments: the last batch is padded to 4 rows
    np.testing.assert_allclose(evaluation.song_predictions(out)[:, 1], [7.5, 2, 5])


def test_song_metrics_known_values():
    labels = np.array([[1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 1]], dtype=np.uint8)
    preds = np.array([[0.9, 0.2, 0.5], [0.1, 0.8, 0.5], [0.7, 0.3, 0.5], [0.2, 0.1, 0.5]])
    out = evaluation.song_metrics("tags", labels, preds)
    # Label 0 is ranked perfectly (AUC 1); label 1: positives 0.8, 0.3 vs negatives 0.2, 0.1 (AUC 1);
    # label 2 has no negatives and is left out.
    assert out["roc_auc"] == 1.0 and out["pr_auc"] == 1.0 and out["num_labels_left_out"] == 1
    classes = np.eye(3, dtype=np.uint8)[[0, 1, 2, 2]]
    out = evaluation.song_metrics("classes", classes, np.eye(3)[[0, 1, 2, 0]])
    assert out["accuracy"] == 0.75
    # F1 per class: 2/3 (one false positive), 1, 2/3 (one miss).
    assert out["macro_f1"] == pytest.approx(7 / 9)
    # A diverged model (NaN predictions) gets no score instead of an error.
    assert evaluation.song_metrics("tags", labels, np.full((4, 3), np.nan))["roc_auc"] is None
    assert evaluation.song_metrics("classes", classes, np.full((4, 3), np.nan))["accuracy"] is None


def test_segment_loss_matches_keras():
    import keras

    rng = np.random.default_rng(0)
    labels = (rng.random((3, 4)) < 0.5).astype(np.uint8)
    preds = [rng.random((n, 4)).astype(np.float32) for n in (1, 2, 3)]
    y = np.concatenate([np.repeat(labels[i : i + 1], len(p), 0) for i, p in enumerate(preds)]).astype(np.float32)
    expected = float(np.mean(keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(y, np.concatenate(preds)))))
    assert evaluation.segment_loss("tags", labels, preds) == pytest.approx(expected, rel=1e-5)


def test_segment_loss_of_classes_is_the_categorical_cross_entropy():
    labels = np.eye(2, dtype=np.uint8)[[0, 1]]
    preds = [np.array([[0.8, 0.2], [0.6, 0.4]], np.float32), np.array([[0.5, 0.5]], np.float32)]
    expected = -(np.log(0.8) + np.log(0.6) + np.log(0.5)) / 3
    assert evaluation.segment_loss("classes", labels, preds) == pytest.approx(expected, rel=1e-6)

