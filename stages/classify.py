"""Classify stage: song-level classifiers on multi-level, multi-scale features; results tables."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import keras
import numpy as np
from tqdm.auto import tqdm

from data.atomic import write_json, write_text
from data.features import FeaturesFile, scale_sort_key
from data.runs import run_folder
from models import sample_cnn
from models.classifier import build_classifier
from stages import plots
from stages.checks import check_int
from stages.metrics import METRICS, PRIMARY, chance_levels, mean_std, score
from stages.runfolder import RunFolder, read_config

logger = logging.getLogger(__name__)

CLASSIFIERS = ("mlp", "logreg")
TAPS = sample_cnn.TAPS
LAST3 = "last3"
LAYER_CHOICES = TAPS + (LAST3,)
TABLE2_COMBOS = (("3^9",), ("3^8", "3^9"), ("2^13", "2^14", "3^8", "3^9"), sample_cnn.PAPER_SCALES)
"""The multi-scale sets of the paper's Table 2."""
METRIC_TITLES = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "accuracy": "Accuracy", "macro_f1": "Macro F1"}
PER_LABEL = {"tags": "roc_auc", "classes": "f1"}
CLASSIFIER_TITLES = {"mlp": "MLP", "logreg": "Logistic regression"}
MAX_TSNE_SONGS = 2000


def normalize_combo(text: str) -> str:
    """``"3x9 + 3^8"`` -> ``"3^8+3^9"``: known scales, ordered by (m, n), each once.

    Raises:
        ValueError: Naming an unknown scale or an empty combination.
    """
    parts = [p.strip() for p in str(text).split("+") if p.strip()]
    if not parts:
        raise ValueError(f"empty scale combination {text!r}; write it like 3^8+3^9")
    scales = sorted({sample_cnn.parse_scale(p) for p in parts}, key=scale_sort_key)
    return "+".join(scales)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What the classify stage trains and reports. Defaults are the paper's values.

    Attributes:
        features: An extract run folder (holding ``features.h5``).
        classifiers: "mlp" (the paper's song-level MLP) and/or "logreg" (a scikit-learn
            logistic-regression baseline).
        hidden_layers: Hidden layers of the MLP (the paper: 1 or 2).
        hidden_units: Units per hidden layer.
        dropout: Dropout after each hidden layer.
        learning_rate: Adam learning rate of the MLP.
        batch_size: MLP mini-batch size (songs).
        epochs: Most MLP epochs; early stopping on the validation loss usually ends sooner.
        patience: Epochs without a lower validation loss before stopping (best weights kept).
        repeats: MLP trainings with seeds ``seed .. seed + repeats - 1`` (mean and std reported).
        seed: First seed.
        combos: Multi-scale combinations of last-three-layer features, e.g. ("3^8+3^9",);
            empty: the paper's Table 2 combinations present in the file. All scales together are
            always included.
        include_single: Also evaluate every scale's -3, -2, -1 and last-three features (Table 1).
        tsne_label: Label colouring the t-SNE map (None: the class, or the commonest tag).
        tsne: Draw the t-SNE map.
    """

    features: str
    classifiers: tuple[str, ...] = CLASSIFIERS
    hidden_layers: int = 1
    hidden_units: int = 512
    dropout: float = 0.5
    learning_rate: float = 0.001
    batch_size: int = 32
    epochs: int = 200
    patience: int = 10
    repeats: int = 1
    seed: int = 0
    combos: tuple[str, ...] = ()
    include_single: bool = True
    tsne_label: str | None = None
    tsne: bool = True

    def __post_init__(self):
        if isinstance(self.features, os.PathLike):
            object.__setattr__(self, "features", os.fspath(self.features))
        if not isinstance(self.features, str) or not self.features:
            raise ValueError(f"features must be an extract run folder, got {self.features!r}")
        classifiers = (self.classifiers,) if isinstance(self.classifiers, str) else tuple(self.classifiers)
        bad = [c for c in classifiers if c not in CLASSIFIERS]
        if bad or not classifiers or len(set(classifiers)) != len(classifiers):
            raise ValueError(f"classifiers must be distinct names among {', '.join(CLASSIFIERS)}, got {classifiers!r}")
        object.__setattr__(self, "classifiers", classifiers)
        check_int("hidden_layers", self.hidden_layers, 0)
        for name in ("hidden_units", "batch_size", "epochs", "patience", "repeats"):
            check_int(name, getattr(self, name), 1)
        check_int("seed", self.seed, 0)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        combos = (self.combos,) if isinstance(self.combos, str) else tuple(self.combos)
        normalized = tuple(dict.fromkeys(normalize_combo(c) for c in combos))
        object.__setattr__(self, "combos", normalized)
        if self.tsne_label is not None and (not isinstance(self.tsne_label, str) or not self.tsne_label):
            raise ValueError(f"tsne_label must be a label name, got {self.tsne_label!r}")


# ---------------------------------------------------------------------------------------------
# Feature sets


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """Which taps of which scales are concatenated into one song vector.

    Attributes:
        name: "3^9@-1", "3^9@last3" (one scale) or "3^8+3^9" (last three layers of each scale).
        group: "multi-level" (one scale) or "multi-scale".
        scales: Scale keys, ordered by (m, n).
        layers: Tap keys taken from every scale, in concatenation order.
    """

    name: str
    group: str
    scales: tuple[str, ...]
    layers: tuple[str, ...]

    @property
    def parts(self) -> list[tuple[str, str]]:
        """(scale, tap) pairs in concatenation order."""
        return [(s, t) for s in self.scales for t in self.layers]

    @property
    def layers_label(self) -> str:
        if self.layers == TAPS:
            return "last 3" if len(self.scales) == 1 else "last 3 each"
        return ", ".join(self.layers)


def parse_feature_set(name: str) -> FeatureSet:
    """Rebuilds a ``FeatureSet`` from its name ("3^9@-1", "3^9@last3", "3^8+3^9").

    Raises:
        ValueError: For a malformed name or an unknown scale or layer.
    """
    scales_text, sep, layer = name.partition("@")
    if sep:
        scale = sample_cnn.parse_scale(scales_text)
        if layer not in LAYER_CHOICES:
            raise ValueError(f"feature set {name!r}: layer must be one of {', '.join(LAYER_CHOICES)}")
        return FeatureSet(f"{scale}@{layer}", "multi-level", (scale,), TAPS if layer == LAST3 else (layer,))
    combo = normalize_combo(scales_text)
    scales = tuple(combo.split("+"))
    if len(scales) == 1:
        return FeatureSet(f"{scales[0]}@{LAST3}", "multi-level", scales, TAPS)
    return FeatureSet(combo, "multi-scale", scales, TAPS)


def feature_sets(available: Sequence[str], combos: Sequence[str] = (), include_single: bool = True,
                 source: str = "the features file") -> list[FeatureSet]:
    """The feature sets to evaluate.

    Args:
        available: Scales in the features file.
        combos: Multi-scale combinations ("3^8+3^9"); empty: the paper's Table 2 sets present.
        include_single: Add each scale's -3, -2, -1 and last-three sets.
        source: How to name the file in errors.

    Returns:
        Multi-level sets (scale by scale), then multi-scale sets (each once; a one-scale combo is
        its scale's last-three set), the all-scales set last.

    Raises:
        ValueError: If a combo names a scale that is not in the file.
    """
    available = sorted(available, key=scale_sort_key)
    out: dict[str, FeatureSet] = {}
    if include_single:
        for scale in available:
            for layer in LAYER_CHOICES:
                fs = parse_feature_set(f"{scale}@{layer}")
                out[fs.name] = fs
    if combos:
        chosen = []
        for combo in combos:
            combo = normalize_combo(combo)
            missing = [s for s in combo.split("+") if s not in available]
            if missing:
                raise ValueError(f"combination {combo}: scale {', '.join(missing)} is not in {source} "
                                 f"(it holds {', '.join(available)})")
            chosen.append(combo)
    else:
        chosen = ["+".join(c) for c in TABLE2_COMBOS if all(s in available for s in c)]
    chosen.append("+".join(available))
    for combo in chosen:
        fs = parse_feature_set(combo)
        out.setdefault(fs.name, fs)
    return list(out.values())


def assemble(features: Mapping[str, Mapping[str, np.ndarray]], feature_set: FeatureSet) -> np.ndarray:
    """Concatenates a feature set's song vectors.

    Args:
        features: Scale -> tap -> (num_songs, dim) arrays (or a ``FeaturesFile``-backed mapping).
        feature_set: What to concatenate.

    Returns:
        float32 (num_songs, total_dim).
    """
    return np.concatenate([np.asarray(features[s][t], dtype=np.float32) for s, t in feature_set.parts], axis=1)


def read_features(ff: FeaturesFile, scales: Sequence[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Scale -> tap -> float32 (num_tracks, dim) for ``scales`` (default: all of the file)."""
    return {scale: {tap: ff.get(scale, tap) for tap in ff.taps(scale)} for scale in (scales or ff.scales)}


# ---------------------------------------------------------------------------------------------
# Classifiers


class Standardizer:
    """Feature standardization with train-split statistics (sklearn ``StandardScaler``)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)

    @classmethod
    def fit(cls, x_train: np.ndarray) -> "Standardizer":
        from sklearn.preprocessing import StandardScaler

        scaler = StandardScaler().fit(x_train)
        return cls(scaler.mean_, scaler.scale_)  # scale_ is 1 for constant features

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return ((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)


@dataclasses.dataclass
class Trained:
    """A fitted song-level classifier: ``predict(x) -> (n, num_labels)`` probabilities."""

    kind: str
    task: str
    num_labels: int
    model: Any
    epochs: int | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "mlp":
            return predict_proba(self.model, x)
        proba = self.model.predict_proba(x)
        if self.task == "tags":
            return np.asarray(proba, dtype=np.float32)
        out = np.zeros((x.shape[0], self.num_labels), dtype=np.float32)
        out[:, self.model.classes_] = proba
        return out

    def to_keras(self, input_dim: int) -> keras.Model:
        """The classifier as a Keras model (the logistic regression becomes one Dense layer)."""
        if self.kind == "mlp":
            return self.model
        model = build_classifier(input_dim, self.num_labels, self.task, hidden_layers=0, name="song_logreg")
        kernel = np.zeros((input_dim, self.num_labels), dtype=np.float32)
        bias = np.zeros(self.num_labels, dtype=np.float32)
        if self.task == "tags":
            for j, est in enumerate(self.model.estimators_):
                if hasattr(est, "coef_"):
                    kernel[:, j], bias[j] = est.coef_[0], est.intercept_[0]
                else:  # a tag constant in training: OneVsRest keeps a constant predictor
                    p = float(np.clip(np.ravel(est.y_)[0], 1e-7, 1 - 1e-7))
                    bias[j] = math.log(p / (1 - p))
        else:
            classes = self.model.classes_
            bias[:] = -1e4  # classes never seen in training get probability ~0
            if len(classes) == 2:  # binary: p(classes[1]) = sigmoid(z) = softmax([0, z])[1]
                bias[classes[0]] = 0.0
                kernel[:, classes[1]], bias[classes[1]] = self.model.coef_[0], self.model.intercept_[0]
            else:
                kernel[:, classes] = self.model.coef_.T
                bias[classes] = self.model.intercept_
        model.get_layer("output").set_weights([kernel, bias])
        return model


def _batches(num: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(num)
    batches = [order[lo : lo + batch_size] for lo in range(0, num, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:  # batch norm needs more than one song
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


def _fit_early_stopping(model: keras.Model, x_train, y_train, x_valid, y_valid, config: Config, seed: int) -> int:
    """Mini-batch training with early stopping on the validation loss; the best weights are kept.

    Same rule as ``keras.callbacks.EarlyStopping(monitor="val_loss", restore_best_weights=True)``,
    but with ``train_on_batch``: on song-level sets of a few hundred vectors, ``fit``'s per-epoch
    data pipeline costs about ten times the training itself.

    Returns:
        Epochs run.
    """
    rng = np.random.default_rng(seed)
    best, best_weights, wait, epoch = math.inf, model.get_weights(), 0, 0
    for epoch in range(1, config.epochs + 1):
        for idx in _batches(len(x_train), config.batch_size, rng):
            model.train_on_batch(x_train[idx], y_train[idx])
        val = _mean_loss(model, x_valid, y_valid)
        if val < best:
            best, best_weights, wait = val, model.get_weights(), 0
        else:
            wait += 1
            if wait >= config.patience:
                break
    model.set_weights(best_weights)
    return epoch


def _mean_loss(model: keras.Model, x: np.ndarray, y: np.ndarray, chunk: int = 1024) -> float:
    total = 0.0
    for lo in range(0, len(x), chunk):
        out = model.test_on_batch(x[lo : lo + chunk], y[lo : lo + chunk])
        total += float(np.ravel(out)[0]) * len(x[lo : lo + chunk])
    value = total / max(1, len(x))
    return value if math.isfinite(value) else math.inf


def predict_proba(model: keras.Model, x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Inference-mode outputs of a Keras model in chunks: float32 (n, num_labels)."""
    return np.concatenate([np.asarray(model(x[lo : lo + chunk], training=False), dtype=np.float32)
                           for lo in range(0, max(1, len(x)), chunk)])


def train_classifier(
    kind: str,
    task: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    config: Config,
    seed: int,
) -> Trained:
    """Fits one song-level classifier on standardized features.

    Args:
        kind: "mlp" (Keras, Adam, early stopping on the validation loss, best weights restored)
            or "logreg" (scikit-learn; one-vs-rest for tags, multinomial for classes; C = 1).
        task: "tags" or "classes".
        x_train, x_valid: float32 (n, dim).
        y_train, y_valid: uint8 (n, num_labels) multi-hot / one-hot.
        config: Hyper-parameters.
        seed: Seed of the initialization, dropout and shuffling.

    Returns:
        A ``Trained`` classifier.
    """
    num_labels = y_train.shape[1]
    if kind == "mlp":
        keras.utils.set_random_seed(seed)
        model = build_classifier(x_train.shape[1], num_labels, task, config.hidden_layers, config.hidden_units,
                                 config.dropout)
        loss = "binary_crossentropy" if task == "tags" else "categorical_crossentropy"
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss)
        epochs = _fit_early_stopping(model, x_train, y_train.astype(np.float32), x_valid, y_valid.astype(np.float32),
                                     config, seed)
        return Trained("mlp", task, num_labels, model, epochs=epochs)
    if kind == "logreg":
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier

        base = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # tags constant in training
            if task == "tags":
                model = OneVsRestClassifier(base).fit(x_train, y_train)
            else:
                y = y_train.argmax(axis=1)
                if np.unique(y).size < 2:
                    raise ValueError("the train split holds a single class; a classifier cannot be trained")
                model = base.fit(x_train, y)
        return Trained("logreg", task, num_labels, model)
    raise ValueError(f"unknown classifier {kind!r}; use one of {', '.join(CLASSIFIERS)}")


# ---------------------------------------------------------------------------------------------
# Metrics


# ---------------------------------------------------------------------------------------------
# Saving a classifier for `msagg predict`


def save_classifier(trained: Trained, standardizer: Standardizer, feature_set: FeatureSet, folder: str | os.PathLike,
                    info: Mapping[str, Any]) -> Path:
    """Writes ``<folder>/<name>.keras``, ``<name>.npz`` (mean, scale) and ``<name>.json``.

    Args:
        trained: The classifier (a logistic regression is saved as a one-layer Keras model).
        standardizer: Train-split statistics.
        feature_set: Its input.
        folder: Usually ``<classify run>/models``.
        info: Extra description (task, label names, song pooling, pretrain run, ...).

    Returns:
        The ``.json`` description's path.
    """
    from data.atomic import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dim = int(standardizer.mean.shape[0])
    model = trained.to_keras(dim)
    path = folder / f"{feature_set.name}.keras"
    with atomic_write(path) as tmp:
        model.save(tmp)
    with atomic_write(folder / f"{feature_set.name}.npz") as t:
        with open(t, "wb") as f:
            np.savez(f, mean=standardizer.mean, scale=standardizer.scale)
    description = {
        "feature_set": feature_set.name,
        "group": feature_set.group,
        "scales": list(feature_set.scales),
        "layers": list(feature_set.layers),
        "parts": [list(p) for p in feature_set.parts],
        "dim": dim,
        "classifier": trained.kind,
        "model": path.name,
        "standardizer": f"{feature_set.name}.npz",
        **dict(info),
    }
    write_json(folder / f"{feature_set.name}.json", description)
    return folder / f"{feature_set.name}.json"


def _split_rows(ff: FeaturesFile, usable: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], str]:
    rows = {split: np.intersect1d(ff.indices(split), usable) for split in ("train", "valid", "test")}
    for split in ("train", "test"):
        if rows[split].size == 0:
            raise ValueError(f"{ff.path}: no usable {split} tracks; the classifier needs train and test tracks")
    note = "valid split"
    if rows["valid"].size == 0:
        rng = np.random.default_rng(seed)
        train = rng.permutation(rows["train"])
        k = max(1, len(train) // 10)
        if len(train) - k < 1:
            raise ValueError(f"{ff.path}: too few train tracks ({len(train)}) and no valid split")
        rows["valid"], rows["train"] = np.sort(train[:k]), np.sort(train[k:])
        note = f"no valid split: {k} train tracks held out (seed {seed})"
        logger.warning("%s: %s", ff.path, note)
    return rows, note


def train_and_save(
    features: str | os.PathLike,
    feature_set: str | FeatureSet,
    folder: str | os.PathLike,
    config: Config | None = None,
    classifier: str = "mlp",
    seed: int | None = None,
) -> Path:
    """Trains one classifier on one feature set of a features file and saves it for prediction.

    Args:
        features: An extract run folder (or its ``features.h5``).
        feature_set: A ``FeatureSet`` or its name ("3^9@-1", "3^9@last3", "3^8+3^9").
        folder: Where to write ``<name>.keras``, ``.npz`` and ``.json``.
        config: Hyper-parameters (defaults: ``Config(features=...)``).
        classifier: "mlp" or "logreg".
        seed: Seed (default ``config.seed``).

    Returns:
        The ``.json`` description's path (``load_predictor`` reads it).
    """
    config = config or Config(features=str(features))
    fs = parse_feature_set(feature_set) if isinstance(feature_set, str) else feature_set
    seed = config.seed if seed is None else seed
    with FeaturesFile(features) as ff:
        missing = [s for s in fs.scales if s not in ff.scales]
        if missing:
            raise ValueError(f"{ff.path}: scale {', '.join(missing)} is not in the file ({', '.join(ff.scales)})")
        x = assemble(read_features(ff, fs.scales), fs)
        usable = np.flatnonzero(np.isfinite(x).all(axis=1))
        rows, _ = _split_rows(ff, usable, seed)
        std = Standardizer.fit(x[rows["train"]])
        trained = train_classifier(classifier, ff.task, std(x[rows["train"]]), ff.labels[rows["train"]],
                                   std(x[rows["valid"]]), ff.labels[rows["valid"]], config, seed)
        return save_classifier(trained, std, fs, folder, _predictor_info(ff, config, seed, Path(folder)))


def _predictor_info(ff: FeaturesFile, config: Config, seed: int, models_dir: Path) -> dict[str, Any]:
    pretrain_dir = _pretrain_dir(config.features)
    # The relative path lets `msagg predict` find the models after the runs folder is moved whole.
    relative = os.path.relpath(pretrain_dir.resolve(), models_dir.resolve()) if pretrain_dir else None
    return {
        "task": ff.task,
        "label_names": list(ff.label_names),
        "song_pool": ff.song_pool,
        "sample_rate": int(ff.scale_attrs(ff.scales[0])["sample_rate"]),
        "input_lengths": {s: int(ff.scale_attrs(s)["input_length"]) for s in ff.scales},
        "model_hashes": {s: str(ff.scale_attrs(s)["model_hash"]) for s in ff.scales},
        "pretrain_dir": str(pretrain_dir.resolve()) if pretrain_dir else None,
        "pretrain_dir_relative": relative,
        "features": str(Path(config.features).resolve()),
        "features_config_hash": ff.config_hash,
        "dataset": ff.dataset,
        "seed": seed,
    }


class Predictor:
    """A saved song-level classifier and what it needs (see ``save_classifier``).

    Attributes:
        feature_set: Name of its feature set.
        classifier: "mlp" or "logreg".
        task, label_names, song_pool, sample_rate: As the features were made.
        scales: Scales whose features it reads.
        pretrain_dir: The pretrain run whose models compute those features.
        description: The full ``.json`` description.
    """

    def __init__(self, description_path: str | os.PathLike):
        path = Path(description_path)
        try:
            self.description = json.loads(path.read_text())
        except OSError:
            raise ValueError(f"{path}: no saved classifier description") from None
        folder = path.parent
        d = self.description
        self.feature_set = d["feature_set"]
        self.fs = FeatureSet(d["feature_set"], d["group"], tuple(d["scales"]), tuple(d["layers"]))
        self.classifier = d["classifier"]
        self.task = d["task"]
        self.label_names = list(d["label_names"])
        self.song_pool = d["song_pool"]
        self.sample_rate = int(d["sample_rate"])
        self.scales = list(d["scales"])
        self.pretrain_dir = Path(d["pretrain_dir"]) if d.get("pretrain_dir") else None
        if (self.pretrain_dir is None or not self.pretrain_dir.is_dir()) and d.get("pretrain_dir_relative"):
            self.pretrain_dir = (folder / d["pretrain_dir_relative"]).resolve()
        self.model = keras.saving.load_model(folder / d["model"], safe_mode=True)
        with np.load(folder / d["standardizer"]) as npz:
            self.standardizer = Standardizer(npz["mean"], npz["scale"])

    def check_models(self) -> None:
        """Refuses a pretrain run whose models changed since the features were extracted."""
        from stages.extract import file_sha256

        if self.pretrain_dir is None or not self.pretrain_dir.is_dir():
            raise ValueError(f"the pretrain run of this classifier is gone ({self.pretrain_dir})")
        for scale in self.scales:
            path = self.pretrain_dir / scale / "model.keras"
            if not path.is_file() or file_sha256(path) != self.description["model_hashes"][scale]:
                raise ValueError(f"{path}: missing or changed since the features were extracted; "
                                 "extract and classify again")

    def predict(self, features: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
        """Probabilities from song features.

        Args:
            features: Scale -> tap -> float32 (n, dim), e.g. from ``stages.extract.song_features``.

        Returns:
            float32 (n, num_labels).
        """
        x = self.standardizer(assemble(features, self.fs))
        return predict_proba(self.model, x)


def load_predictor(classify_dir: str | os.PathLike, feature_set: str | None = None, check: bool = True) -> Predictor:
    """Loads the classifier a classify run saved for prediction.

    Args:
        classify_dir: A finished classify run folder.
        feature_set: Which saved feature set (default: the best, per ``models/index.json``).
        check: Verify that the pretrain run's models are those the features came from.

    Raises:
        ValueError: For an unfinished run, an unknown feature set, or changed models.
    """
    classify_dir = Path(classify_dir)
    read_config(classify_dir)
    index_path = classify_dir / "models" / "index.json"
    if not index_path.is_file():
        raise ValueError(f"{classify_dir}: no saved classifiers (models/index.json)")
    index = json.loads(index_path.read_text())
    name = feature_set or index["best"]
    if name not in index["saved"]:
        raise ValueError(f"{classify_dir}: no saved classifier for feature set {name!r}; saved: "
                         f"{', '.join(index['saved'])}")
    predictor = Predictor(classify_dir / "models" / f"{name}.json")
    if check:
        predictor.check_models()
    return predictor


# ---------------------------------------------------------------------------------------------
# Report


def _pretrain_dir(features_dir: str | os.PathLike) -> Path | None:
    try:
        pretrain = read_config(run_folder(features_dir)).get("pretrain")
    except (ValueError, json.JSONDecodeError):
        return None
    return Path(pretrain) if pretrain else None


def end_to_end_rows(ff: FeaturesFile, features_dir: str | os.PathLike) -> dict[str, Any]:
    """The end-to-end SampleCNNs' test metrics from the pretrain run, when comparable.

    Returns:
        ``{"available": bool, "note": str, "scales": {scale: {metric: value}}}``.
    """
    pretrain_dir = _pretrain_dir(features_dir)
    pretrain_dataset = ff.pretrain_dataset or "an unknown dataset"
    if not ff.pretrain_dataset or ff.pretrain_dataset != ff.dataset:
        return {"available": False, "note": f"n/a (models trained on {pretrain_dataset})", "scales": {}}
    if pretrain_dir is None:
        return {"available": False, "note": "n/a (pretrain run not found)", "scales": {}}
    rows = {}
    for scale in ff.scales:
        path = pretrain_dir / scale / "metrics.json"
        try:
            info = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        test = info.get("test") if isinstance(info.get("test"), dict) else info
        rows[scale] = {m: test.get(m) for m in METRICS[ff.task]}
    if not rows:
        return {"available": False, "note": f"n/a (no metrics.json in {pretrain_dir})", "scales": {}}
    return {"available": True, "note": f"from {pretrain_dir} (its own test split)", "scales": rows}


def _fmt(summary: Mapping[str, Any] | None, bold: bool = False) -> str:
    if not summary or summary.get("mean") is None:
        return "n/a"
    text = f"{summary['mean']:.3f}"
    if len([v for v in summary["values"] if v is not None]) > 1:
        text += f" ± {summary['std']:.3f}"
    return f"**{text}**" if bold else text


def results_markdown(report: Mapping[str, Any]) -> str:
    """The results tables in the shape of the paper's Tables 1 and 2, one table per classifier."""
    task = report["task"]
    metrics = METRICS[task]
    n = report["num_tracks"]
    held_out = "" if report["validation"] == "valid split" else f"; {report['validation']}"
    lines = [f"# {report['dataset']}: song-level {'tagging' if task == 'tags' else 'classification'} "
             "with multi-level and multi-scale SampleCNN features", ""]
    lines.append(f"- Dataset: **{report['dataset']}**, task: {task} ({len(report['label_names'])} "
                 f"{'tags' if task == 'tags' else 'classes'}); test tracks: **{n['test']}** "
                 f"(train {n['train']}, valid {n['valid']}{held_out})")
    lines.append(f"- Features: `{report['features']}` (song pooling: {report['song_pool']}); models pretrained on "
                 f"**{report['pretrain_dataset'] or 'unknown'}**")
    chance = report["chance"]
    if task == "tags":
        pr = "n/a" if chance["pr_auc"] is None else f"{chance['pr_auc']:.3f}"
        lines.append(f"- Chance: ROC-AUC 0.500; PR-AUC {pr} (mean frequency of the scored tags in test)")
        left = report["left_out"]
        lines.append(f"- Tags scored: {len(report['label_names']) - len(left)} of {len(report['label_names'])}"
                     + (f"; left out (no positive or no negative test track): {', '.join(left)}" if left else ""))
    else:
        lines.append(f"- Chance: accuracy {chance['accuracy_uniform']:.3f} (uniform guess over "
                     f"{len(report['label_names'])} classes), {chance['accuracy_majority']:.3f} (majority class)")
        if report["left_out"]:
            lines.append(f"- Classes absent from test (left out of macro F1): {', '.join(report['left_out'])}")
    if report["num_excluded"]:
        lines.append(f"- Tracks left out for non-finite features: {report['num_excluded']}")
    if report["repeats"] > 1:
        lines.append(f"- MLP: mean ± std (sample std) over {report['repeats']} seeds; logistic regression is "
                     "deterministic (one run)")
    best = report.get("best")
    if best:
        lines.append(f"- Best feature set on the validation {METRIC_TITLES[PRIMARY[task]]} ({best['classifier']}): "
                     f"**{best['feature_set']}**; saved with the all-scales set in `models/` for `msagg predict`")
    lines.append("")
    e2e = report["end_to_end"]
    for clf in report["classifiers"]:
        title = CLASSIFIER_TITLES[clf]
        if clf == "mlp":
            mlp = report["mlp"]
            layers = mlp["hidden_layers"]
            title += (f" ({layers} hidden layer{'' if layers == 1 else 's'} of {mlp['hidden_units']}, batch norm, "
                      f"dropout {mlp['dropout']})")
        lines += [f"## {title}", ""]
        if clf == "mlp":
            lines += [f"Adam (learning rate {mlp['learning_rate']}), batch {mlp['batch_size']}, early stopping on the "
                      f"validation loss (patience {mlp['patience']}, at most {mlp['epochs']} epochs), best weights "
                      "kept.",
                      ""]
        else:
            lines += ["scikit-learn LogisticRegression (C = 1; one-vs-rest for tags, multinomial for classes).", ""]
        header = ["Feature set", "Layers", "Dim"] + [METRIC_TITLES[m] for m in metrics]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|---|---:|" + "---:|" * len(metrics))
        results = {name: fs_rep for name, fs_rep in report["feature_sets"].items() if clf in fs_rep["classifiers"]}
        best_value = {m: max((r["classifiers"][clf]["test"][m]["mean"] for r in results.values()
                              if r["classifiers"][clf]["test"][m]["mean"] is not None), default=None)
                      for m in metrics}
        blank = " |" * (len(header) - 1)
        groups = (("multi-level", "Multi-level: one model's layers (cf. the paper's Table 1)"),
                  ("multi-scale", "Multi-scale: last 3 layers of several models (cf. Table 2)"))
        for group, group_title in groups:
            members = [r for r in results.values() if r["group"] == group]
            if not members:
                continue
            lines.append(f"| **{group_title}** |" + blank)
            for r in members:
                label = " + ".join(r["scales"])
                if group == "multi-scale" and len(r["scales"]) == report["num_scales"] and report["num_scales"] > 1:
                    label = f"all {report['num_scales']} scales ({label})"
                cells = [label, r["layers_label"], str(r["dim"])]
                for m in metrics:
                    s = r["classifiers"][clf]["test"][m]
                    cells.append(_fmt(s, bold=s["mean"] is not None and s["mean"] == best_value[m]))
                lines.append("| " + " | ".join(cells) + " |")
        lines.append("| **End-to-end SampleCNN (song = mean of its segments' outputs)** |" + blank)
        if e2e["available"]:
            for scale, vals in e2e["scales"].items():
                cells = [scale, "output", "—"] + ["n/a" if vals.get(m) is None else f"{vals[m]:.3f}" for m in metrics]
                lines.append("| " + " | ".join(cells) + " |")
        else:
            lines.append(f"| {e2e['note']} | | |" + " n/a |" * len(metrics))
        lines.append("")
    lines.append("Bold: best feature set per column. End-to-end rows "
                 f"{e2e['note'] if e2e['available'] else 'not comparable'}.")
    return "\n".join(lines) + "\n"


def _results_csv(report: Mapping[str, Any]) -> str:
    metrics = METRICS[report["task"]]
    fields = ["feature_set", "group", "scales", "layers", "classifier", "dim", "num_runs"]
    fields += [f"{m}_{k}" for m in metrics for k in ("mean", "std")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for name, r in report["feature_sets"].items():
        for clf, res in r["classifiers"].items():
            row = {"feature_set": name, "group": r["group"], "scales": "+".join(r["scales"]),
                   "layers": ",".join(r["layers"]), "classifier": clf, "dim": r["dim"], "num_runs": res["num_runs"]}
            for m in metrics:
                row[f"{m}_mean"] = res["test"][m]["mean"]
                row[f"{m}_std"] = res["test"][m]["std"]
            writer.writerow(row)
    for scale, vals in report["end_to_end"]["scales"].items():
        row = {"feature_set": f"{scale}@end-to-end", "group": "end-to-end", "scales": scale, "layers": "output",
               "classifier": "sample_cnn", "dim": "", "num_runs": 1}
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_std"] = vals.get(m), ""
        writer.writerow(row)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The stage


def _tsne_colours(task: str, label_names: Sequence[str], labels: np.ndarray, tsne_label: str | None):
    if task == "classes" and tsne_label is None:
        return labels.argmax(axis=1), list(label_names), "class"
    if tsne_label is None:
        j = int(labels.sum(axis=0).argmax())
    else:
        j = list(label_names).index(tsne_label)
    name = label_names[j]
    return labels[:, j].astype(int), [f"not {name}", name], name


def _plots(out_dir: Path, report: dict, ff: FeaturesFile, feats: Mapping[str, Mapping[str, np.ndarray]], rows: dict, config: Config,
           chosen_clf: str) -> list[str]:
    task = ff.task
    folder = out_dir / "plots"
    written = []
    reference = max(ff.scales, key=lambda s: int(ff.scale_attrs(s)["input_length"]))
    per_label_metric = PER_LABEL[task]
    best = report.get("best")
    single = f"{reference}@-1"
    series = {}
    for name in dict.fromkeys([best["feature_set"] if best else None, single]):
        rep = report["feature_sets"].get(name) if name else None
        if rep and chosen_clf in rep["classifiers"]:
            per = rep["classifiers"][chosen_clf]["per_label"][per_label_metric]
            series[f"{name} ({chosen_clf})"] = [per[label] for label in ff.label_names]
    if series:
        metric_title = "ROC-AUC" if task == "tags" else "F1"
        path = plots.per_label_bars(folder / f"per_label_{per_label_metric}.png", ff.label_names, series,
                                    metric_title, f"{ff.dataset}: per-{'tag' if task == 'tags' else 'class'} "
                                    f"test {metric_title}", chance=0.5 if task == "tags" else None)
        written.append(str(path.relative_to(out_dir)))
    test = rows["test"]
    if config.tsne and test.size >= 5:
        if test.size > MAX_TSNE_SONGS:
            test = np.sort(np.random.default_rng(config.seed).choice(test, MAX_TSNE_SONGS, replace=False))
        maps = {}
        for tap in ("-3", "-1"):
            x = np.asarray(feats[reference][tap], dtype=np.float32)
            std = Standardizer.fit(x[rows["train"]])
            maps[f"{reference} layer {tap}"] = plots.tsne_embed(std(x[test]), seed=config.seed)
        colour, names, what = _tsne_colours(task, ff.label_names, ff.labels[test], config.tsne_label)
        path = plots.tsne_maps(folder / "tsne.png", maps, colour, names,
                               f"{ff.dataset}: t-SNE of {test.size} test songs, coloured by {what}")
        written.append(str(path.relative_to(out_dir)))
    elif config.tsne:
        logger.info("too few test songs (%d) for a t-SNE map", test.size)
    return written


def run(config: Config, out_dir: str | os.PathLike, *, overwrite: bool = False, progress: bool = True) -> Path:
    """Trains and evaluates song-level classifiers on every feature set; writes the report.

    Args:
        config: The stage config.
        out_dir: The run folder: ``metrics.json``, ``results.csv``, ``results.md``,
            ``plots/*.png``, ``models/`` (classifiers saved for ``msagg predict``).
        overwrite: Replace a folder holding another config (or redo a finished one).
        progress: Show a progress bar over feature sets.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        RunConflictError: If ``out_dir`` holds another config and ``overwrite`` is False.
        FeaturesError: For a missing, unfinished or unknown-version features file.
        ValueError: For a combination naming a scale that is not in the file, an unknown
            ``tsne_label``, or a file without train or test tracks.
    """
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir, "classify", config, upstream={"features": config.features})
    if folder.done and not overwrite:
        logger.info("%s: classify already done with config %s; nothing to do", out_dir, folder.hash)
        return out_dir
    with FeaturesFile(config.features) as ff:
        task, names = ff.task, ff.label_names
        sets = feature_sets(ff.scales, config.combos, config.include_single, source=str(ff.path))
        if config.tsne_label is not None and config.tsne_label not in names:
            raise ValueError(f"tsne_label {config.tsne_label!r} is not a label of {ff.path}; "
                             f"labels: {', '.join(names)}")
        feats = read_features(ff)
        usable = np.ones(ff.num_tracks, dtype=bool)
        for scale in ff.scales:
            for tap in ff.taps(scale):
                usable &= np.isfinite(feats[scale][tap]).all(axis=1)
        num_excluded = int((~usable).sum())
        if num_excluded:
            logger.warning("%s: %d tracks with non-finite features left out", ff.path, num_excluded)
        rows, validation = _split_rows(ff, np.flatnonzero(usable), config.seed)
        if not folder.start(overwrite):
            return out_dir
        y = {split: ff.labels[idx] for split, idx in rows.items()}
        chance = chance_levels(task, y["train"], y["test"])
        report: dict[str, Any] = {
            "dataset": ff.dataset,
            "task": task,
            "pretrain_dataset": ff.pretrain_dataset,
            "features": str(config.features),
            "features_config_hash": ff.config_hash,
            "song_pool": ff.song_pool,
            "label_names": names,
            "num_scales": len(ff.scales),
            "num_tracks": {split: int(idx.size) for split, idx in rows.items()},
            "num_excluded": num_excluded,
            "validation": validation,
            "chance": chance,
            "left_out": score(task, y["test"], np.zeros(y["test"].shape), names)["left_out"],
            "classifiers": list(config.classifiers),
            "repeats": config.repeats,
            "mlp": {k: getattr(config, k) for k in ("hidden_layers", "hidden_units", "dropout", "learning_rate",
                                                    "batch_size", "epochs", "patience")},
            "feature_sets": {},
            "end_to_end": end_to_end_rows(ff, config.features),
        }
        # The classifier kept for prediction: the paper's MLP if trained, else the baseline.
        chosen = "mlp" if "mlp" in config.classifiers else "logreg"
        all_name = parse_feature_set("+".join(ff.scales)).name
        primary = PRIMARY[task]
        keep: dict[str, tuple] = {}  # "best" / "all" -> (valid score, fs, trained, standardizer)
        began = time.monotonic()
        bar = tqdm(sets, desc="classify", unit="set", disable=not progress, dynamic_ncols=True)
        for fs in bar:
            bar.set_postfix_str(fs.name)
            x = assemble(feats, fs)
            std = Standardizer.fit(x[rows["train"]])
            xs = {split: std(x[idx]) for split, idx in rows.items()}
            entry = {"group": fs.group, "scales": list(fs.scales), "layers": list(fs.layers),
                     "layers_label": fs.layers_label, "dim": int(x.shape[1]), "classifiers": {}}
            for clf in config.classifiers:
                seeds = [config.seed + r for r in range(config.repeats)] if clf == "mlp" else [config.seed]
                test_scores, valid_scores, epochs = [], [], []
                for seed in seeds:
                    trained = train_classifier(clf, task, xs["train"], y["train"], xs["valid"], y["valid"], config,
                                               seed)
                    test_scores.append(score(task, y["test"], trained.predict(xs["test"]), names))
                    valid_scores.append(score(task, y["valid"], trained.predict(xs["valid"]), names))
                    epochs.append(trained.epochs)
                    if clf == chosen and seed == config.seed:
                        v = valid_scores[-1][primary]
                        v = -math.inf if v is None else v
                        if "best" not in keep or v > keep["best"][0]:
                            keep["best"] = (v, fs, trained, std)
                        if fs.name == all_name:
                            keep["all"] = (v, fs, trained, std)
                per_label = {
                    key: {label: mean_std([s["per_label"][key][label] for s in test_scores])["mean"] for label in names}
                    for key in test_scores[0]["per_label"]
                }
                entry["classifiers"][clf] = {
                    "num_runs": len(seeds),
                    "seeds": seeds,
                    "test": {m: mean_std([s[m] for s in test_scores]) for m in METRICS[task]},
                    "valid": {m: mean_std([s[m] for s in valid_scores]) for m in METRICS[task]},
                    "per_label": per_label,
                    "epochs": epochs if clf == "mlp" else None,
                }
                logger.info("%-28s %-6s %s", fs.name, clf, ", ".join(
                    f"{METRIC_TITLES[m]} {_fmt(entry['classifiers'][clf]['test'][m])}" for m in METRICS[task]))
            report["feature_sets"][fs.name] = entry
        bar.close()
        saved = []
        if "best" in keep:
            report["best"] = {"feature_set": keep["best"][1].name, "classifier": chosen,
                              "selected_on": f"valid {primary} (seed {config.seed})",
                              f"valid_{primary}": None if keep["best"][0] == -math.inf else keep["best"][0]}
            info = _predictor_info(ff, config, config.seed, out_dir / "models")
            for key in ("best", "all"):
                if key in keep and keep[key][1].name not in saved:
                    _, fs, trained, std = keep[key]
                    save_classifier(trained, std, fs, out_dir / "models", info)
                    saved.append(fs.name)
            write_json(out_dir / "models" / "index.json",
                       {"best": keep["best"][1].name, "all_scales": all_name, "saved": saved, "classifier": chosen,
                        "selected_on": report["best"]["selected_on"]})
        report["saved_classifiers"] = saved
        report["plots"] = _plots(out_dir, report, ff, feats, rows, config, chosen)
        report["seconds"] = round(time.monotonic() - began, 1)
    write_json(out_dir / "metrics.json", report)
    write_text(out_dir / "results.csv", _results_csv(report))
    markdown = results_markdown(report)
    write_text(out_dir / "results.md", markdown)
    logger.info("wrote %s", out_dir / "results.md")
    folder.finish({"num_feature_sets": len(sets), "best": report.get("best"), "seconds": report["seconds"]})
    return out_dir
