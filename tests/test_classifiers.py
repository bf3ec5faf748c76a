"""The song-level classifier registry: what it holds, the CLI and report derived from it, and a new
classifier as one entry."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from msagg.stages import classify
from msagg.stages.songs import classifiers
from msagg.stages.songs.classifiers import CLASSIFIERS, ClassifierType, Trained, train_classifier
from test_classify import write_features

MLP_REPORT = {"mlp": {"hidden_layers": 2, "hidden_units": 512, "dropout": 0.5, "learning_rate": 0.001,
                      "batch_size": 32, "epochs": 200, "patience": 10}}


def test_registry_holds_the_three_classifiers():
    assert list(CLASSIFIERS) == ["mlp", "logreg", "svm"]
    assert {k: e.title for k, e in CLASSIFIERS.items()} == {"mlp": "MLP", "logreg": "Logistic regression",
                                                           "svm": "RBF SVM"}
    assert classifiers.SAVABLE == ("mlp", "logreg", "svm")
    assert [k for k, e in CLASSIFIERS.items() if e.cross_validated] == ["logreg", "svm"]
    assert classifiers.C_GRIDS == {"logreg": (0.001, 0.01, 0.1, 1.0, 10.0), "svm": (0.1, 1.0, 10.0, 100.0)}
    assert [k for k, e in CLASSIFIERS.items() if e.seeded] == ["mlp"]
    with pytest.raises(ValueError, match="unknown classifier 'knn'; use one of mlp, logreg, svm"):
        train_classifier("knn", "classes", np.zeros((4, 2)), np.eye(2, dtype=np.uint8)[[0, 1, 0, 1]],
                         np.zeros((2, 2)), np.eye(2, dtype=np.uint8), classifiers.MLP(), 0)


def test_results_md_intros_are_the_papers_text():
    """The lines results.md opens each classifier's table with (golden: as the report always wrote them)."""
    assert CLASSIFIERS["mlp"].introduce(MLP_REPORT) == [
        "## MLP (2 hidden layers of 512, batch norm, dropout 0.5)", "",
        "Adam (learning rate 0.001), batch 32, early stopping on the validation loss (patience 10, at most 200 "
        "epochs), best weights kept.", ""]
    one = {"mlp": {**MLP_REPORT["mlp"], "hidden_layers": 1}}
    assert CLASSIFIERS["mlp"].introduce(one)[0] == "## MLP (1 hidden layer of 512, batch norm, dropout 0.5)"
    assert CLASSIFIERS["logreg"].introduce(MLP_REPORT) == [
        "## Logistic regression", "",
        "scikit-learn LogisticRegression (one-vs-rest for tags, multinomial for classes), C chosen on the "
        "validation split among 0.001, 0.01, 0.1, 1, 10.", ""]
    assert CLASSIFIERS["svm"].introduce(MLP_REPORT) == [
        "## RBF SVM", "",
        "scikit-learn SVC with an RBF kernel (gamma \"scale\"; one-vs-rest for tags), C chosen on the "
        "validation split among 0.1, 1, 10, 100.", ""]


def test_cli_classifier_options_derive_from_the_registry():
    from msagg.pipeline.cli import main

    for command in ("classify", "crossval"):
        text = CliRunner().invoke(main, [command, "--help"], terminal_width=400).output
        assert "[mlp|logreg|svm]" in text, command
    text = " ".join(CliRunner().invoke(main, ["classify", "--help"], terminal_width=400).output.split())
    for name, entry in CLASSIFIERS.items():
        assert f"{name} ({entry.description}" in text


def _fit_centroids(kind, task, x_train, y_train, x_valid, y_valid, config, seed):
    """Each class's mean training vector (a class absent from training: never chosen)."""
    present = y_train.any(axis=0)
    centroids = np.stack([x_train[y_train[:, j] == 1].mean(axis=0) if present[j] else np.full(x_train.shape[1], np.inf)
                          for j in range(y_train.shape[1])])
    return Trained(kind, task, y_train.shape[1], centroids)


def _centroid_scores(trained, x):
    """A softmax over minus the squared distances to the centroids: float32 (n, num_labels)."""
    z = -((np.asarray(x, np.float64)[:, None, :] - trained.model[None]) ** 2).sum(axis=-1)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


CENTROID = ClassifierType(
    title="Nearest centroid", description="nearest class mean", fit=_fit_centroids, predict=_centroid_scores,
    intro=lambda entry, report: [f"## {entry.title}", "", "Each song goes to the class of the nearest mean.", ""])


def test_a_registered_toy_classifier_runs_through_classify(monkeypatch, tmp_path):
    """A new classifier is one entry of CLASSIFIERS: the config, the fit/score loop, the metrics and
    results.md take it with no other change."""
    monkeypatch.setitem(CLASSIFIERS, "centroid", CENTROID)
    features, _, _ = write_features(tmp_path, "classes", counts=(60, 20, 40))
    config = classify.Config(features=str(features), classifiers=("centroid", "logreg"), include_single=False,
                             tsne=False)
    assert config.classifiers == ("centroid", "logreg")
    out = classify.run(config, tmp_path / "classify", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    result = metrics["feature_sets"]["3^2+4^2"]["classifiers"]["centroid"]
    # The classes are planted in the -1 taps (shifted by 5 in 3 of 6 dimensions): well separated.
    assert result["num_runs"] == 1 and result["test"]["accuracy"]["mean"] > 0.9
    assert result["params"] is None and result["epochs"] is None
    markdown = (out / "results.md").read_text()
    assert "## Nearest centroid\n\nEach song goes to the class of the nearest mean.\n" in markdown
    assert "## Logistic regression\n" in markdown
    assert metrics["chosen"]["classifier"] == "logreg"  # the centroid has no Keras form: logreg is chosen, saved
    with pytest.raises(ValueError, match="a centroid classifier has no Keras form; save one of mlp, logreg, svm"):
        train_classifier("centroid", "classes", np.eye(2, dtype=np.float32), np.eye(2, dtype=np.uint8),
                         np.eye(2, dtype=np.float32), np.eye(2, dtype=np.uint8), config, 0).to_keras(2)
