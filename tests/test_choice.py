"""Joined feature sets weigh their blocks alike; the set and classifier are chosen by cross-validation
of the train and valid songs; the chosen classifier (an SVM too) is what predict applies."""

import json

import h5py
import numpy as np
import pytest

from msagg.data.formats.features import FeaturesFile
from msagg.stages import classify
from msagg.stages.songs import choice
from msagg.stages.songs.classifiers import train_classifier
from msagg.stages.songs.featuresets import block_dims, parse_feature_set, read_features
from msagg.stages.songs.predictor import load_predictor
from msagg.stages.songs.scaling import Standardizer
from test_classify import write_features

NOISE_DIMS = {"-3": 200, "-2": 200, "-1": 200}


def test_each_block_of_a_joined_set_holds_the_same_variance():
    rng = np.random.default_rng(0)
    x = np.concatenate([100.0 * rng.standard_normal((50, 300)), rng.standard_normal((50, 12)) + 3.0], axis=1)
    std = Standardizer.fit(x, (300, 12))
    z = std(x)
    assert z[:, :300].var(axis=0).sum() == pytest.approx(1.0, rel=1e-3)
    assert z[:, 300:].var(axis=0).sum() == pytest.approx(1.0, rel=1e-3)
    plain = Standardizer.fit(x)  # one block: plain standardization, as every set that joins nothing
    np.testing.assert_allclose(plain(x).var(axis=0), 1.0, rtol=1e-3)
    np.testing.assert_array_equal(Standardizer.fit(x, (312,))(x), plain(x))
    with pytest.raises(ValueError, match="do not sum"):
        Standardizer.fit(x, (300, 10))
    fs = parse_feature_set("3^2@-1+mfcc")
    feats = {"3^2": {"-1": x[:, :300]}, "classic": {"mfcc": x[:, 300:]}}
    assert block_dims(feats, fs) == (300, 12) and block_dims(feats, parse_feature_set("3^2@-1")) == (300,)


@pytest.fixture(scope="module")
def swamped(tmp_path_factory):
    """Classes carried by a small classic block only; the learned block is 1,200 dimensions of noise
    with a standard deviation of 100."""
    root = tmp_path_factory.mktemp("swamped")
    rng = np.random.default_rng(1)
    counts = (120, 40, 150)
    classic = rng.standard_normal((sum(counts), 12)).astype(np.float32)
    features, _, labels = write_features(root, "classes", counts=counts, planted=False, classic={"mfcc": classic},
                                         dims=NOISE_DIMS)
    with h5py.File(features / "features.h5", "r+") as h5:
        h5["classic/mfcc"][...] = classic + 2.5 * np.eye(3, 12, dtype=np.float32)[labels.argmax(axis=1)]
        for name in ("3^2", "4^2"):
            for tap in NOISE_DIMS:
                h5[f"features/{name}/{tap}"][...] = 100.0 * h5[f"features/{name}/{tap}"][...]
    config = classify.Config(features=str(features), classifiers=("logreg", "svm"), include_single=False,
                             tsne=False)
    return root, classify.run(config, root / "classify", progress=False), config


def test_a_joined_set_scores_no_worse_than_its_informative_block(swamped):
    _, out, _ = swamped
    sets = json.loads((out / "metrics.json").read_text())["feature_sets"]
    assert sets["3^2+4^2+mfcc"]["blocks"] == [1200, 12]
    for clf in ("logreg", "svm"):
        alone = sets["mfcc"]["classifiers"][clf]["test"]["accuracy"]["mean"]
        joined = sets["3^2+4^2+mfcc"]["classifiers"][clf]["test"]["accuracy"]["mean"]
        assert alone > 0.75 and sets["3^2+4^2"]["classifiers"][clf]["test"]["accuracy"]["mean"] < 0.5, clf
        assert joined >= alone - 0.05, (clf, joined, alone)
    joined, alone = (sets[name]["selected"]["test"]["accuracy"]["mean"] for name in ("3^2+4^2+mfcc", "mfcc"))
    assert joined >= alone - 0.05


def test_the_saved_chosen_classifier_applies_the_block_weights(swamped):
    root, out, _ = swamped
    metrics = json.loads((out / "metrics.json").read_text())
    chosen = metrics["chosen"]
    index = json.loads((out / "models" / "index.json").read_text())
    assert index["default"] == index["chosen"] == chosen["feature_set"] and index["rule"] == "chosen"
    assert chosen["classifier"] in ("logreg", "svm") and index["classifier"] == chosen["classifier"]
    predictor = load_predictor(out, check=False)
    with FeaturesFile(root / "extract") as ff:
        test = ff.indices("test")
        feats = read_features(ff)
        probs = predictor.predict({k: {t: a[test] for t, a in v.items()} for k, v in feats.items()})
        accuracy = (probs.argmax(axis=1) == ff.labels[test].argmax(axis=1)).mean()
        assert predictor.standardizer.blocks == block_dims(feats, predictor.fs)
    assert accuracy == pytest.approx(chosen["test"]["accuracy"]["mean"])
    md = (out / "results.md").read_text()
    assert "## Chosen by cross-validation" in md and f"**{chosen['feature_set']}** with" in md


def _misleading_valid_split(root):
    """Planted classes: 3^2's -1 tap strongly on the train and test songs but not the valid ones;
    4^2's -1 tap weakly on every song. A classifier trained on train and judged on the valid split
    favours 4^2@-1; the train and valid songs together favour the sets holding 3^2@-1."""
    features, _, labels = write_features(root, "classes", counts=(120, 30, 90), planted=False, seed=4)
    rng = np.random.default_rng(5)
    y = labels.argmax(axis=1)
    with FeaturesFile(features) as ff:
        valid = ff.indices("valid")
    with h5py.File(features / "features.h5", "r+") as h5:
        strong = 5.0 * np.eye(3, 6, dtype=np.float32)[y]
        strong[valid] = 5.0 * np.eye(3, 6, dtype=np.float32)[rng.integers(0, 3, valid.size)]
        h5["features/3^2/-1"][...] = h5["features/3^2/-1"][...] + strong
        h5["features/4^2/-1"][...] = h5["features/4^2/-1"][...] + 1.5 * np.eye(3, 6, dtype=np.float32)[y]
    return features


def test_the_choice_comes_from_cross_validation_of_train_and_valid(tmp_path):
    features = _misleading_valid_split(tmp_path)
    config = classify.Config(features=str(features), classifiers=("logreg", "svm"), include_single=False,
                             feature_sets=("3^2@-1", "4^2@-1"), tsne=False)
    outs = [classify.run(config, tmp_path / name, progress=False) for name in ("a", "b")]
    first, second = (json.loads((out / "metrics.json").read_text()) for out in outs)
    assert first["chosen"] == second["chosen"]  # deterministic
    sets = first["feature_sets"]
    on_valid = max(sets, key=lambda n: max(r["valid"]["accuracy"]["mean"] for r in sets[n]["classifiers"].values()))
    assert on_valid == "4^2@-1"  # what the validation split alone would choose
    chosen = first["chosen"]
    cv = {name: r["selected"]["cv_accuracy"] for name, r in sets.items()}
    assert chosen["feature_set"] == max(cv, key=cv.get) and chosen["feature_set"] in ("3^2@-1", "3^2+4^2")
    assert chosen["test"]["accuracy"]["mean"] > 0.9 > sets[on_valid]["selected"]["test"]["accuracy"]["mean"]
    assert first["choice"] == {"classifiers": ["logreg", "svm"], "folds": 5, "songs": 150, "seed": 0,
                               "metric": "accuracy"}


def test_folds_are_seeded_stratified_and_cover_each_song_once():
    labels = np.eye(3, dtype=np.uint8)[np.repeat([0, 1, 2], [30, 20, 10])]
    folds = choice.cv_folds(labels, "classes", 5, seed=0)
    held = np.concatenate([h for _, h in folds])
    assert len(folds) == 5 and np.array_equal(np.sort(held), np.arange(60))
    for fit, h in folds:
        assert np.intersect1d(fit, h).size == 0 and labels[h].sum(axis=0).tolist() == [6, 4, 2]
    again = choice.cv_folds(labels, "classes", 5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, choice.cv_folds(labels, "classes", 5, seed=1)))
    assert choice.cv_folds(labels[[0, 30, 50]], "classes", 5) == []  # one song per class: nothing to hold out
    assert len(choice.cv_folds(np.ones((7, 2), np.uint8), "tags", 5)) == 5
    assert choice.candidates(("mlp", "logreg", "svm")) == ["logreg", "svm"] and choice.candidates(("mlp",)) == []


@pytest.mark.parametrize("task", ["tags", "binary", "classes"])
def test_svm_as_keras_gives_sklearn_scores_after_saving(task, tmp_path):
    import keras

    from msagg.models import classifier  # noqa: F401 (its layers are registered for loading)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 7)).astype(np.float32)
    if task == "tags":
        y = (x[:, :3] > 0).astype(np.uint8)
        y[:, 2] = 0  # a tag never present in training
    elif task == "binary":
        y = np.eye(4, dtype=np.uint8)[(x[:, 0] > 0).astype(int) * 2]  # classes 0 and 2 only
    else:
        y = np.eye(5, dtype=np.uint8)[np.digitize(x[:, 0] + 0.5 * x[:, 1], [-0.7, 0.0, 0.7])]  # class 4 absent
    kind = "tags" if task == "tags" else "classes"
    trained = train_classifier("svm", kind, x[:60], y[:60], x[60:], y[60:], classify.Config(features="x"), seed=0)
    trained.to_keras(7).save(tmp_path / "svm.keras")
    model = keras.saving.load_model(tmp_path / "svm.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(model(x, training=False)), trained.predict(x), atol=1e-5)


def test_predictor_set_valid_is_refused_naming_chosen():
    assert classify.Config(features="x").predictor_set == "chosen"
    with pytest.raises(ValueError, match='use "chosen"'):
        classify.Config(features="x", predictor_set="valid")
    with pytest.raises(ValueError, match="cv_folds"):
        classify.Config(features="x", cv_folds=1)


def test_a_block_that_only_adds_noise_is_weighted_down_by_cross_validation():
    rng = np.random.default_rng(3)
    n, classes = 160, 4
    y_idx = np.repeat(np.arange(classes), n // classes)
    labels = np.eye(classes, dtype=np.uint8)[y_idx]
    informative = rng.normal(size=(n, 8)) + 1.5 * np.eye(classes, 8)[y_idx]
    noise = rng.normal(size=(n, 8))  # as many dimensions, nothing to learn
    x = np.concatenate([informative, noise], axis=1).astype(np.float32)
    folds = choice.cv_folds(labels, "classes", 5, seed=0)
    config = classify.Config(features="unused")
    weights = choice.choose_weights(x, labels, "classes", (8, 8), ["logreg"], folds, config, seed=0)
    assert weights is not None and weights[0] == 1.0 and weights[1] < 1.0
    joined = choice.best_of(choice.cross_validate(x, labels, "classes", (8, 8), ["logreg"], folds, config, 0,
                                                  weights))[2]
    alone = choice.best_of(choice.cross_validate(x[:, :8], labels, "classes", (), ["logreg"], folds, config, 0))[2]
    assert joined >= alone
    zeroed = Standardizer.fit(x, (8, 8), (1.0, 0.0))(x)
    assert np.all(zeroed[:, 8:] == 0) and np.all(np.isfinite(zeroed))
    assert choice.choose_weights(x[:, :8], labels, "classes", (8,), ["logreg"], folds, config, 0) is None
