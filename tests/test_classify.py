"""Classify stage: planted structure is found, noise scores at chance, reports and saved models."""

import csv
import json

import h5py
import numpy as np
import pytest

import pretrain_runs
from msagg.data.formats.features_writer import FeaturesWriter, ScaleInfo
from msagg.models.classifier import build_classifier
from msagg.stages import classify, extract
from msagg.stages.songs.featuresets import feature_sets, parse_feature_set
from msagg.stages.songs.metrics import score
from msagg.stages.songs.predictor import load_predictor
from msagg.stages.runs.folder import RunFolder
from msagg.stages.songs.classifiers import C_GRIDS, train_classifier

DIMS = {"-3": 4, "-2": 5, "-1": 6}
SCALES = ("3^2", "4^2")
FAST = dict(hidden_units=32, epochs=60, patience=5, batch_size=16)


def write_features(root, task, *, counts=(90, 30, 30), planted=True, dataset="toy", pretrain_dataset="toy", seed=0,
                   e2e=None, classic=None, dims=DIMS):
    """A finished extract run folder whose features.h5 is written directly (its pretrain run holds
    metrics.json files but no models).

    Planted structure: for classes, the -1 tap of every scale is a Gaussian shifted by the class;
    for tags, each tag is a linear threshold of the -1 tap of 3^2. The -3 and -2 taps are noise.
    ``dims``: tap -> dimension of every scale's features.
    """
    rng = np.random.default_rng(seed)
    n = sum(counts)
    split = np.repeat(["train", "valid", "test"], counts).tolist()
    names = ["a", "b", "c"] if task == "classes" else ["t0", "t1", "t2", "t3"]
    feats = {s: {t: rng.standard_normal((n, d)).astype(np.float32) for t, d in dims.items()} for s in SCALES}
    if task == "classes":
        y = rng.integers(0, 3, n)
        labels = np.eye(3, dtype=np.uint8)[y]
        if planted:
            for s in SCALES:
                feats[s]["-1"][:, :3] += 5.0 * np.eye(3, dtype=np.float32)[y]
    else:
        w = rng.standard_normal((dims["-1"], 4))
        labels = (feats["3^2"]["-1"] @ w > 0).astype(np.uint8)
        if not planted:
            feats["3^2"]["-1"] = rng.standard_normal((n, dims["-1"])).astype(np.float32)
    pretrain = pretrain_runs.make_pretrain(root / "pretrain", root / "prepare", scales=SCALES, task=task,
                                           label_names=names, models=False, test_metrics=e2e)
    out = root / "extract"
    config = extract.Config(pretrain=str(pretrain), cache=str(root / "prepare"))
    run = RunFolder(out, "extract", config)
    run.start()
    info = {s: ScaleInfo(input_length=27 if s == "3^2" else 64, sample_rate=800, model_hash=s * 8, num_params=1,
                         dims=dims) for s in SCALES}
    with FeaturesWriter(out / "features.h5", track_ids=[f"t{i}" for i in range(n)], labels=labels, label_names=names,
                        split=split, task=task, dataset=dataset, pretrain_dataset=pretrain_dataset, song_pool="mean",
                        config_hash=run.hash, scales=info,
                        classic={k: v.shape[1] for k, v in (classic or {}).items()}) as w:
        w.write(feats, {s: np.ones(n, np.int32) for s in SCALES}, classic)
        w.finalize()
    run.finish()
    return out, feats, labels


@pytest.fixture(scope="module")
def classes_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("classes")
    features, feats, labels = write_features(root, "classes", e2e={"accuracy": 0.71, "macro_f1": 0.70})
    config = classify.Config(features=str(features), **FAST)
    out = classify.run(config, root / "classify", progress=False)
    return root, out, config, feats


def test_planted_classes_found_and_noise_at_chance(classes_run):
    _, out, _, _ = classes_run
    metrics = json.loads((out / "metrics.json").read_text())
    sets = metrics["feature_sets"]
    assert list(sets) == ["3^2@-3", "3^2@-2", "3^2@-1", "3^2@last3", "4^2@-3", "4^2@-2", "4^2@-1", "4^2@last3",
                          "3^2+4^2"]
    for name in ("3^2@-1", "4^2@-1", "3^2@last3", "3^2+4^2"):
        for clf in ("mlp", "logreg", "svm"):
            assert sets[name]["classifiers"][clf]["test"]["accuracy"]["mean"] > 0.9, (name, clf)
    for name in ("3^2@-3", "4^2@-2"):  # pure noise
        for clf in ("mlp", "logreg", "svm"):
            assert sets[name]["classifiers"][clf]["test"]["accuracy"]["mean"] < 0.6, (name, clf)
    assert sets["3^2+4^2"]["dim"] == 30 and sets["3^2@last3"]["dim"] == 15
    assert metrics["num_tracks"] == {"train": 90, "valid": 30, "test": 30}
    assert metrics["chance"]["accuracy_uniform"] == pytest.approx(1 / 3)
    assert set(sets["3^2@-1"]["classifiers"]["mlp"]["per_label"]["f1"]) == {"a", "b", "c"}
    assert metrics["chosen"]["feature_set"] in ("3^2@-1", "4^2@-1", "3^2@last3", "4^2@last3", "3^2+4^2")


def test_reports_have_expected_rows(classes_run):
    _, out, _, _ = classes_run
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 * 3 + 1 + 2  # feature sets x classifiers, the chosen row, one end-to-end row per scale
    assert [r["group"] for r in rows].count("chosen") == 1
    assert {"feature_set", "scales", "layers", "classifier", "dim", "accuracy_mean", "accuracy_std",
            "macro_f1_mean", "macro_f1_std"} <= set(rows[0])
    assert [r["classifier"] for r in rows[-2:]] == ["sample_cnn", "sample_cnn"]
    md = (out / "results.md").read_text()
    assert "test tracks: **30**" in md and "Chance: accuracy 0.333" in md and "models pretrained on **toy**" in md
    assert md.count("| Feature set | Layers | Dim | Accuracy | Macro F1 |") == 3  # MLP, logistic regression, SVM
    assert "| 3^2 | -1 | 6 |" in md and "| 3^2 | last 3 | 15 |" in md
    assert "| all 2 scales (3^2 + 4^2) | last 3 each | 30 |" in md
    assert "| 4^2 | output | — | 0.710 | 0.700 |" in md  # end-to-end row from the pretrain run
    assert {p.name for p in (out / "plots").iterdir()} == {"per_label_f1.png", "per_label_layers.png", "tsne.png"}
    assert all((out / "plots" / p).stat().st_size > 1000
               for p in ("per_label_f1.png", "per_label_layers.png", "tsne.png"))


def _layer_table(md):
    """The per-label layers section of results.md: header cells and {label: cells}."""
    section = md.split("## Which layer suits which label")[1]
    table = [line for line in section.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in table[0].strip("|").split("|")]
    rows = {}
    for line in table[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not cells[0].startswith(("*", "---")):
            rows[cells[0]] = cells[1:]
    return header, rows


def test_per_label_layers_table_csv_and_heatmap(classes_run):
    _, out, _, _ = classes_run
    metrics = json.loads((out / "metrics.json").read_text())
    layers = metrics["per_label_layers"]
    single = ["3^2@-3", "3^2@-2", "3^2@-1", "4^2@-3", "4^2@-2", "4^2@-1"]
    assert layers["columns"] == single and layers["metric"] == "f1" and layers["classifier"] == "mlp"
    assert list(layers["group_summary"]) == ["all"]  # "toy": no label groups
    with open(out / "per_label_layers.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * len(single) and set(rows[0]) == {"label", "level", "scale", "tap", "score"}
    for row in rows:
        expected = metrics["feature_sets"][f"{row['scale']}@{row['tap']}"]["classifiers"]["mlp"]["per_label"]["f1"]
        assert float(row["score"]) == expected[row["label"]]
    md = (out / "results.md").read_text()
    assert md.index("## Which layer suits which label") > md.index("Bold: best feature set per column")
    header, table = _layer_table(md)
    assert header == ["Label", "3^2 -3", "3^2 -2", "3^2 -1", "4^2 -3", "4^2 -2", "4^2 -1"]
    assert list(table) == ["a", "b", "c"]
    for label, cells in table.items():
        values = [float(c.strip("*")) for c in cells]
        bold = [c.startswith("**") for c in cells]
        assert any(bold) and all(v == max(values) for v, b in zip(values, bold) if b), (label, cells)
        assert max(values) > 0.9 and (bold[2] or bold[5])  # a planted -1 tap wins
    assert "tap winning most often **-1**" in md
    assert (out / "plots" / "per_label_layers.png").stat().st_size > 1000


def test_per_label_layers_grouped_by_level(tmp_path):
    from msagg.stages.songs import plots, report

    def fs(scale, tap, f1):
        return {"scales": [scale], "layers": [tap], "classifiers": {"mlp": {"per_label": {"f1": f1}}}}

    rep = {"label_names": ["x", "y", "z"], "feature_sets": {
        "3^2@-3": fs("3^2", "-3", {"x": 0.9, "y": 0.2, "z": None}),
        "3^2@-1": fs("3^2", "-1", {"x": 0.5, "y": 0.8, "z": 0.7}),
        "3^2@last3": {"scales": ["3^2"], "layers": ["-3", "-2", "-1"], "classifiers": {"mlp": {}}}}}
    section = report.per_label_layers(rep, "mlp", "f1", {"y": "acoustic", "x": "high-level", "z": "high-level"})
    assert section["columns"] == ["3^2@-3", "3^2@-1"]
    assert list(section["group_summary"]) == ["acoustic", "high-level"]
    high = section["group_summary"]["high-level"]
    assert high["mean"] == {"3^2@-3": 0.9, "3^2@-1": 0.6} and high["tap_wins"] == {"-3": 1, "-1": 1}
    md = "\n".join(report.per_label_layers_markdown(section))
    assert "| **acoustic** |" in md and "| x | **0.900** | 0.500 |" in md and "| z | n/a | **0.700** |" in md
    assert report.per_label_layers_csv(section).splitlines()[1:3] == ["y,acoustic,3^2,-3,0.2", "y,acoustic,3^2,-1,0.8"]
    path = plots.per_label_heatmap(tmp_path / "h.png", ["y", "x", "z"], ["acoustic", "high-level", "high-level"],
                                   ["3^2 -3", "3^2 -1"], np.array([[0.2, 0.8], [0.9, 0.5], [np.nan, 0.7]]), "F1",
                                   "t", center=0.5)
    assert path.stat().st_size > 1000


def test_rerun_is_noop(classes_run):
    _, out, config, _ = classes_run
    before = (out / "metrics.json").stat().st_mtime_ns
    assert classify.run(config, out, progress=False) == out
    assert (out / "metrics.json").stat().st_mtime_ns == before


def test_saved_classifier_predicts_like_training(classes_run):
    _, out, _, feats = classes_run
    index = json.loads((out / "models" / "index.json").read_text())
    assert index["all_scales"] == "3^2+4^2" and "3^2+4^2" in index["saved"] and index["default"] in index["saved"]
    assert index["default"] == index["chosen"]
    for name in index["saved"]:
        assert {f"{name}.keras", f"{name}.npz", f"{name}.json"} <= {p.name for p in (out / "models").iterdir()}
    predictor = load_predictor(out, "3^2+4^2", check=False)
    assert predictor.scales == ["3^2", "4^2"] and predictor.song_pool == "mean" and predictor.sample_rate == 800
    test = slice(120, 150)
    probs = predictor.predict({s: {t: a[test] for t, a in taps.items()} for s, taps in feats.items()})
    assert probs.shape == (30, 3)
    metrics = json.loads((out / "metrics.json").read_text())
    expected = metrics["feature_sets"]["3^2+4^2"]["selected"]["test"]["accuracy"]["mean"]  # refitted on train + valid
    assert json.loads((out / "models" / "3^2+4^2.json").read_text())["label_names"] == ["a", "b", "c"]
    from msagg.data.formats.features import FeaturesFile

    with FeaturesFile(out.parent / "extract") as ff:
        accuracy = (probs.argmax(1) == ff.labels[test].argmax(1)).mean()
    assert accuracy == pytest.approx(expected)
    with pytest.raises(ValueError, match="pretrain|changed"):
        load_predictor(out, "3^2+4^2")  # the fake pretrain run holds no model files


def test_planted_tags_with_repeats_and_transfer_note(tmp_path):
    features, _, _ = write_features(tmp_path, "tags", counts=(300, 60, 60), pretrain_dataset="other-set")
    config = classify.Config(features=str(features), classifiers=("mlp",), include_single=False, repeats=2,
                             tsne=False, **FAST)
    out = classify.run(config, tmp_path / "classify", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["feature_sets"]) == ["3^2+4^2"]
    result = metrics["feature_sets"]["3^2+4^2"]["classifiers"]["mlp"]
    assert result["num_runs"] == 2 and result["seeds"] == [0, 1]
    assert result["test"]["roc_auc"]["mean"] > 0.9 and len(result["test"]["roc_auc"]["values"]) == 2
    assert set(result["per_label"]["roc_auc"]) == {"t0", "t1", "t2", "t3"}
    md = (out / "results.md").read_text()
    assert "| Feature set | Layers | Dim | ROC-AUC | PR-AUC |" in md and " ± " in md
    assert "n/a (models trained on other-set)" in md and "Chance: ROC-AUC 0.500" in md
    assert {p.name for p in (out / "plots").iterdir()} == {"per_label_roc_auc.png"}


def test_random_features_score_near_chance(tmp_path):
    features, _, _ = write_features(tmp_path, "tags", counts=(200, 40, 300), planted=False, seed=3)
    config = classify.Config(features=str(features), classifiers=("logreg",), feature_sets=("3^2",),
                             include_single=False, tsne=False)
    out = classify.run(config, tmp_path / "classify", progress=False)
    sets = json.loads((out / "metrics.json").read_text())["feature_sets"]
    assert list(sets) == ["3^2@last3", "3^2+4^2"]
    for name in sets:
        assert abs(sets[name]["classifiers"]["logreg"]["test"]["roc_auc"]["mean"] - 0.5) < 0.08


def test_invalid_combo_names_the_scale(classes_run, tmp_path):
    root, _, _, _ = classes_run
    config = classify.Config(features=str(root / "extract"), feature_sets=("3^2+3^9",))
    with pytest.raises(ValueError, match=r"scale 3\^9 is not in .*features\.h5"):
        classify.run(config, tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="unknown scale '7\\^7'"):
        classify.Config(features="x", feature_sets=("3^9+7^7",))
    with pytest.raises(ValueError, match="tsne_label 'zzz'"):
        classify.run(classify.Config(features=str(root / "extract"), tsne_label="zzz"), tmp_path / "d", progress=False)


def test_feature_set_names_and_defaults():
    paper = ("2^13", "2^14", "3^8", "3^9", "4^6", "4^7", "5^5", "5^6")
    names = [fs.name for fs in feature_sets(paper, include_single=False)]
    assert names == ["3^9@last3", "3^8+3^9", "2^13+2^14+3^8+3^9", "+".join(paper)]
    names = [fs.name for fs in feature_sets(("3^9", "3^8"), specs=("3x9+3^8",))]
    assert names[:4] == ["3^8@-3", "3^8@-2", "3^8@-1", "3^8@last3"] and names[-1] == "3^8+3^9" and len(names) == 9
    fs = parse_feature_set("3^9@last3")
    assert fs.parts == [("3^9", "-3"), ("3^9", "-2"), ("3^9", "-1")] and fs.group == "multi-level"
    assert classify.Config(features="x", feature_sets=("3^9 + 3^8",)).feature_sets == ("3^8+3^9",)
    with pytest.raises(ValueError, match="classifiers"):
        classify.Config(features="x", classifiers=("knn",))


def test_score_golden_values():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.uint8)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.3], [0.1, 0.4]])
    s = score("tags", labels, probs, ["x", "y"])
    assert s["per_label"]["roc_auc"] == {"x": 1.0, "y": 0.75}
    assert s["roc_auc"] == pytest.approx(0.875) and s["left_out"] == []
    s = score("tags", np.array([[1, 0], [1, 1]], np.uint8), probs[:2], ["x", "y"])
    assert s["left_out"] == ["x"] and s["per_label"]["roc_auc"]["x"] is None
    onehot = np.eye(3, dtype=np.uint8)[[0, 0, 1, 1]]
    s = score("classes", onehot, np.eye(3)[[0, 1, 1, 1]], ["a", "b", "c"])
    assert s["accuracy"] == 0.75 and s["left_out"] == ["c"]
    assert s["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2) and s["per_label"]["f1"]["c"] is None


@pytest.mark.parametrize("task", ["tags", "classes"])
def test_logreg_as_keras_gives_sklearn_probabilities(task):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 5)).astype(np.float32)
    if task == "tags":
        y = (x[:, :3] > 0).astype(np.uint8)
        y[:, 2] = 0  # a tag never present in training
    else:
        y = np.eye(4, dtype=np.uint8)[(x[:, 0] > 0).astype(int) * 2]  # classes 0 and 2 only (binary case)
    trained = train_classifier("logreg", task, x, y, x, y, classify.Config(features="x"), seed=0)
    model = trained.to_keras(5)
    np.testing.assert_allclose(model.predict(x, verbose=0), trained.predict(x), atol=1e-5)


def test_build_classifier_layers():
    model = build_classifier(10, 3, "classes", hidden_layers=2, hidden_units=8)
    assert [layer.name for layer in model.layers[1:]] == [
        "hidden1_dense", "hidden1_bn", "hidden1_relu", "hidden1_dropout",
        "hidden2_dense", "hidden2_bn", "hidden2_relu", "hidden2_dropout", "output"]
    assert model.output_shape == (None, 3) and model.get_layer("output").activation.__name__ == "softmax"
    assert build_classifier(10, 2, "tags").get_layer("output").activation.__name__ == "sigmoid"
    with pytest.raises(ValueError, match="task"):
        build_classifier(10, 2, "regression")


def test_no_valid_split_holds_out_train_tracks(tmp_path):
    features, _, _ = write_features(tmp_path, "classes", counts=(60, 0, 30))
    config = classify.Config(features=str(features), classifiers=("logreg",), include_single=False,
                             tsne_label="b")
    out = classify.run(config, tmp_path / "classify", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_tracks"] == {"train": 54, "valid": 6, "test": 30}
    assert "6 train tracks held out" in (out / "results.md").read_text()
    assert (out / "plots" / "tsne.png").is_file()


def test_general_feature_sets_in_reports(tmp_path):
    """Multi-scale sets at one layer and per-scale layer subsets: named, trained and tabled."""
    features, _, _ = write_features(tmp_path, "classes", counts=(60, 20, 20))
    config = classify.Config(features=str(features), classifiers=("logreg",), include_single=False, tsne=False,
                             feature_sets=("4^2+3^2@-1", "3^2@-1,-2", "all@-3"))
    assert config.feature_sets == ("3^2+4^2@-1", "3^2@-2,-1", "all@-3")
    out = classify.run(config, tmp_path / "classify", progress=False)
    sets = json.loads((out / "metrics.json").read_text())["feature_sets"]
    assert list(sets) == ["3^2+4^2@-1", "3^2@-2,-1", "3^2+4^2@-3", "3^2+4^2"]
    assert sets["3^2+4^2@-1"]["group"] == "multi-scale" and sets["3^2+4^2@-1"]["dim"] == 12
    assert sets["3^2@-2,-1"]["group"] == "multi-level" and sets["3^2@-2,-1"]["dim"] == 11
    assert sets["3^2+4^2@-1"]["classifiers"]["logreg"]["test"]["accuracy"]["mean"] > 0.9  # the planted tap
    md = (out / "results.md").read_text()
    assert "| 3^2 | -2, -1 | 11 |" in md and "| all 2 scales (3^2 + 4^2) | -1 | 12 |" in md
    assert "Multi-scale: layers of several models (cf. Table 2)" in md


def test_feature_sets_from_set_option_and_cli_combo_rules():
    from msagg.pipeline.config import resolve

    config = resolve(classify.Config, options={"features": "x"}, sets=["feature_sets=3^9@-2,-1,3^8+3^9,all@-1"])
    assert config.feature_sets == ("3^9@-2,-1", "3^8+3^9", "all@-1")
    with pytest.raises(ValueError, match="unknown layer '-5'"):
        classify.Config(features="x", feature_sets=("3^9@-5",))


def test_train_and_save_one_feature_set(classes_run, tmp_path):
    from msagg.stages.songs.predictor import Predictor, train_and_save

    root, _, _, feats = classes_run
    path = train_and_save(root / "extract", "all@-1", tmp_path / "models", classifier="logreg")
    assert path.name == "3^2+4^2@-1.json"
    predictor = Predictor(path)
    assert predictor.feature_set == "3^2+4^2@-1" and predictor.fs.parts == [("3^2", "-1"), ("4^2", "-1")]
    probs = predictor.predict({s: {t: a[120:] for t, a in taps.items()} for s, taps in feats.items()})
    from msagg.data.formats.features import FeaturesFile

    with FeaturesFile(root / "extract") as ff:
        assert (probs.argmax(1) == ff.labels[120:].argmax(1)).mean() > 0.9


def test_classic_baseline_rows_and_classifiers_tuned_on_validation(tmp_path):
    """MFCC-like classic features give the baseline rows, alone and joined to all scales; logreg
    and the SVM record the C each chose on validation, and every set names the classifier its
    validation split chose."""
    rng = np.random.default_rng(1)
    n = 150
    classic = rng.standard_normal((n, 12)).astype(np.float32)
    features, _, labels = write_features(tmp_path, "classes", planted=False, classic={"mfcc": classic})
    y = labels.argmax(axis=1)
    with h5py.File(features / "features.h5", "r+") as h5:  # plant the classes in the classic set only
        h5["classic/mfcc"][...] = classic + 4.0 * np.eye(3, 12, dtype=np.float32)[y]
    out = classify.run(classify.Config(features=str(features), include_single=False, tsne=False, **FAST),
                       tmp_path / "classify", progress=False)
    metrics = json.loads((out / "metrics.json").read_text())
    sets = metrics["feature_sets"]
    assert list(sets)[-2:] == ["mfcc", "3^2+4^2+mfcc"]
    assert sets["mfcc"]["group"] == "classic" and sets["3^2+4^2+mfcc"]["group"] == "learned + classic"
    assert sets["mfcc"]["dim"] == 12 and sets["3^2+4^2+mfcc"]["dim"] == sets["3^2+4^2"]["dim"] + 12
    for clf in ("mlp", "logreg", "svm"):
        assert sets["mfcc"]["classifiers"][clf]["test"]["accuracy"]["mean"] > 0.9, clf
        assert sets["3^2+4^2"]["classifiers"][clf]["test"]["accuracy"]["mean"] < 0.6, clf
    for clf, grid in (("logreg", C_GRIDS["logreg"]), ("svm", C_GRIDS["svm"])):
        params = sets["mfcc"]["classifiers"][clf]["params"]
        assert params["C"] in grid and set(params["valid_by_C"]) == {str(c) for c in grid}
        assert params["valid_by_C"][str(params["C"])] == max(params["valid_by_C"].values())
    for entry in sets.values():
        selected = entry["selected"]
        cv = {(c, k): s["mean"] for c, by_c in selected["cv"].items() for k, s in by_c.items()}
        assert selected["cv_accuracy"] == max(cv.values()) == cv[selected["classifier"], str(selected["params"]["C"])]
    markdown = (out / "results.md").read_text()
    assert "## Learned features vs the MFCC baseline" in markdown
    assert "| all 2 scales + MFCC | 42 |" in markdown and "**Classic baseline: hand-crafted features**" in markdown
    index = json.loads((out / "models" / "index.json").read_text())
    assert index["default"] == index["chosen"] == metrics["chosen"]["feature_set"] and index["rule"] == "chosen"


def test_logreg_in_the_training_span_matches_the_full_fit():
    """Fewer songs than dimensions: the logistic regression fits in the span of the training songs
    (exact for an L2 penalty); its predictions and its Keras form match a fit on all dimensions."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 200)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(int) + (x[:, 3] > 0.8)
    onehot = np.eye(3, dtype=np.uint8)[y]
    trained = train_classifier("logreg", "classes", x[:40], onehot[:40], x[40:], onehot[40:],
                               classify.Config(features="x"), seed=0)
    assert trained.projection is not None and trained.projection.shape == (200, 40)
    # Both fits to a tight tolerance reach the same optimum, through the projection and without it.
    reduced = LogisticRegression(C=trained.params["C"], tol=1e-10, max_iter=20000).fit(x[:40] @ trained.projection,
                                                                                      y[:40])
    full = LogisticRegression(C=trained.params["C"], tol=1e-10, max_iter=20000).fit(x[:40], y[:40])
    np.testing.assert_allclose(reduced.predict_proba(x[40:] @ trained.projection), full.predict_proba(x[40:]),
                               atol=1e-3)  # the projection is float32
    # The classifier kept (fitted to classify's looser tolerance) agrees with the optimum.
    assert (trained.predict(x[40:]).argmax(axis=1) == full.predict(x[40:])).mean() >= 0.9
    keras_model = trained.to_keras(200)
    np.testing.assert_allclose(np.asarray(keras_model(x[40:], training=False)), trained.predict(x[40:]), atol=1e-4)
