"""Song-level classifiers on standardized feature vectors: the paper's MLP, a logistic regression
and an RBF support-vector machine, the last two with C chosen on the validation split.

Keras is imported where a model is built or run, not with the module, so that loading a saved
classifier's description (``msagg.stages.songs.predictor``, ``msagg predict``) stays light.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from msagg.data.errors import ConfigError, MsaggError
from msagg.stages.checks import check_int

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

CLASSIFIERS = ("mlp", "logreg", "svm")
SAVABLE = ("mlp", "logreg")
"""Classifiers ``msagg predict`` can use (they become a Keras model; the SVM does not)."""
C_GRIDS = {"logreg": (0.001, 0.01, 0.1, 1.0, 10.0), "svm": (0.1, 1.0, 10.0, 100.0)}
"""The values of C tried for each scikit-learn classifier; the one scoring best on the validation
split is kept (ties: the one nearest C = 1, the libraries' default)."""


class ClassifyError(MsaggError):
    """Features a classifier cannot be trained on (no train or test tracks, a single class)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class MLP:
    """The paper's song-level MLP hyper-parameters (the defaults of ``msagg.stages.classify.Config``).

    Attributes:
        hidden_layers: Hidden layers (the paper: 1 or 2).
        hidden_units: Units per hidden layer.
        dropout: Dropout after each hidden layer.
        learning_rate: Adam learning rate.
        batch_size: Mini-batch size (songs).
        epochs: Most epochs; early stopping on the validation loss usually ends sooner.
        patience: Epochs without a lower validation loss before stopping (best weights kept).
    """

    hidden_layers: int = 1
    hidden_units: int = 512
    dropout: float = 0.5
    learning_rate: float = 0.001
    batch_size: int = 32
    epochs: int = 200
    patience: int = 10

    def __post_init__(self):
        check_int("hidden_layers", self.hidden_layers, 0)
        for name in ("hidden_units", "batch_size", "epochs", "patience"):
            check_int(name, getattr(self, name), 1)
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must lie in [0, 1), got {self.dropout!r}")
        if not isinstance(self.learning_rate, (int, float)) or not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate!r}")


class Standardizer:
    """Feature standardization with train-split statistics (sklearn ``StandardScaler``).

    Args:
        mean: float32 (dim,).
        scale: float32 (dim,), 1 for constant features.
    """

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
    """A fitted song-level classifier: ``predict(x) -> (n, num_labels)`` probabilities.

    Attributes:
        kind: "mlp", "logreg" or "svm".
        task: "tags" or "classes".
        num_labels: Output size.
        model: A ``keras.Model`` (mlp) or a fitted scikit-learn estimator.
        epochs: Epochs run (mlp).
        params: Hyper-parameters chosen on the validation split (``{"C": ...}``), and the
            validation score of each value tried (``"valid_by_C"``).
        projection: For the logistic regression trained on fewer songs than dimensions: float32
            (dim, rank), an orthonormal basis of the training songs' span; the model sees
            ``x @ projection``. An L2-penalized linear model's weights lie in that span anyway
            (the representer theorem), so the fit is the same, on far fewer dimensions.
    """

    kind: str
    task: str
    num_labels: int
    model: Any
    epochs: int | None = None
    params: dict = dataclasses.field(default_factory=dict)
    projection: np.ndarray | None = None

    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 (n, num_labels) scores of float32 (n, dim) standardized features: probabilities,
        except for the SVM, whose decision values are squashed into (0, 1) (a logistic for tags
        and two classes, a softmax over classes), which keeps their ranking and arg-max."""
        if self.kind == "mlp":
            return predict_proba(self.model, x)
        if self.kind == "svm":
            return _svm_scores(self.model, self.task, self.num_labels, x)
        if self.projection is not None:
            x = np.asarray(x, dtype=np.float32) @ self.projection
        proba = self.model.predict_proba(x)
        if self.task == "tags":
            return np.asarray(proba, dtype=np.float32)
        out = np.zeros((x.shape[0], self.num_labels), dtype=np.float32)
        out[:, self.model.classes_] = proba
        return out

    def to_keras(self, input_dim: int) -> keras.Model:
        """The classifier as a Keras model (the logistic regression becomes one Dense layer)."""
        from msagg.models.classifier import build_classifier

        if self.kind == "mlp":
            return self.model
        if self.kind not in SAVABLE:
            raise ValueError(f"a {self.kind} classifier has no Keras form; save one of {', '.join(SAVABLE)}")
        model = build_classifier(input_dim, self.num_labels, self.task, hidden_layers=0, name="song_logreg")
        fit_dim = input_dim if self.projection is None else self.projection.shape[1]
        kernel = np.zeros((fit_dim, self.num_labels), dtype=np.float32)
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
        if self.projection is not None:  # back from the training span to the features
            kernel = (self.projection @ kernel).astype(np.float32)
        model.get_layer("output").set_weights([kernel, bias])
        return model


def _batches(num: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(num)
    batches = [order[lo : lo + batch_size] for lo in range(0, num, batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:  # batch norm needs more than one song
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches


def _fit_early_stopping(model: keras.Model, x_train, y_train, x_valid, y_valid, config: MLP, seed: int) -> int:
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
    config: MLP,
    seed: int,
) -> Trained:
    """Fits one song-level classifier on standardized features.

    Args:
        kind: "mlp" (Keras, Adam, early stopping on the validation loss, best weights restored),
            "logreg" (scikit-learn; one-vs-rest for tags, multinomial for classes) or "svm"
            (scikit-learn ``SVC``, RBF kernel, ``gamma="scale"``; one-vs-rest for tags); for
            these two, C is chosen among ``C_GRIDS[kind]`` by the validation score.
        task: "tags" or "classes".
        x_train, x_valid: float32 (n, dim).
        y_train, y_valid: uint8 (n, num_labels) multi-hot / one-hot.
        config: MLP hyper-parameters (an ``MLP`` or a ``msagg.stages.classify.Config``).
        seed: Seed of the initialization, dropout and shuffling.

    Returns:
        A ``Trained`` classifier.

    Raises:
        ClassifyError: If the train split of a classes task holds a single class.
        ValueError: For an unknown ``kind``.
    """
    num_labels = y_train.shape[1]
    if kind == "mlp":
        import keras

        from msagg.models.classifier import build_classifier

        keras.utils.set_random_seed(seed)
        model = build_classifier(x_train.shape[1], num_labels, task, config.hidden_layers, config.hidden_units,
                                 config.dropout)
        loss = "binary_crossentropy" if task == "tags" else "categorical_crossentropy"
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=loss)
        epochs = _fit_early_stopping(model, x_train, y_train.astype(np.float32), x_valid, y_valid.astype(np.float32),
                                     config, seed)
        return Trained("mlp", task, num_labels, model, epochs=epochs)
    if kind in C_GRIDS:
        y = y_train if task == "tags" else y_train.argmax(axis=1)
        if task == "classes" and np.unique(y).size < 2:
            raise ClassifyError("the train split holds a single class; a classifier cannot be trained")
        from msagg.stages.songs.metrics import PRIMARY, score

        projection = _span(x_train) if kind == "logreg" else None
        x_fit = x_train if projection is None else x_train @ projection
        best: tuple | None = None  # (valid score, -|log10 C|, C, model)
        by_c = {}
        for c in C_GRIDS[kind]:
            model = _fit_sklearn(kind, task, x_fit, y, c, seed)
            trained = Trained(kind, task, num_labels, model, projection=projection)
            value = score(task, y_valid, trained.predict(x_valid))[PRIMARY[task]]
            by_c[str(c)] = value
            key = (-math.inf if value is None else value, -abs(math.log10(c)))
            if best is None or key > best[:2]:
                best = (*key, c, model)
        _, _, c, model = best
        return Trained(kind, task, num_labels, model, params={"C": c, "valid_by_C": by_c}, projection=projection)
    raise ValueError(f"unknown classifier {kind!r}; use one of {', '.join(CLASSIFIERS)}")


def _span(x: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis (dim, rank) of the rows of ``x`` when there are fewer rows than
    columns, else None (nothing to gain)."""
    n, dim = x.shape
    if n >= dim:
        return None
    _, s, vt = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)
    rank = int((s > s[0] * max(n, dim) * np.finfo(np.float64).eps).sum()) if s.size and s[0] > 0 else 0
    return np.ascontiguousarray(vt[: max(rank, 1)].T, dtype=np.float32)


def _fit_sklearn(kind: str, task: str, x: np.ndarray, y: np.ndarray, c: float, seed: int):
    """A fitted logistic regression or RBF SVM (one-vs-rest over tags)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.svm import SVC

    if kind == "logreg":
        # newton-cg, tol 1e-3: the same objective as the default lbfgs, and on a few hundred songs
        # (measured on the demo's features: synth-tags, 19 one-vs-rest tags, five values of C) 7 to 25
        # times faster, with test ROC-AUCs within 0.002 of lbfgs's.
        base = LogisticRegression(C=c, solver="newton-cg", tol=1e-3, max_iter=1000, random_state=seed)
    else:
        base = SVC(C=c, kernel="rbf", gamma="scale", decision_function_shape="ovr", random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tags constant in training
        warnings.simplefilter("ignore", ConvergenceWarning)  # large C on separable data: the fit is still usable
        return OneVsRestClassifier(base).fit(x, y) if task == "tags" else base.fit(x, y)


def _svm_scores(model, task: str, num_labels: int, x: np.ndarray) -> np.ndarray:
    decision = np.asarray(model.decision_function(x), dtype=np.float64)
    if task == "tags":
        return (1.0 / (1.0 + np.exp(-decision.reshape(len(x), -1)))).astype(np.float32)
    classes = model.classes_
    out = np.zeros((x.shape[0], num_labels), dtype=np.float32)
    if len(classes) == 2:
        p = 1.0 / (1.0 + np.exp(-decision.reshape(-1)))
        out[:, classes[0]], out[:, classes[1]] = 1.0 - p, p
        return out
    z = decision - decision.max(axis=1, keepdims=True)
    e = np.exp(z)
    out[:, classes] = e / e.sum(axis=1, keepdims=True)
    return out


def split_rows(ff, usable: np.ndarray, seed: int) -> tuple[dict[str, np.ndarray], str]:
    """The rows of a features file each split trains, validates and tests on.

    Args:
        ff: A ``msagg.data.formats.features.FeaturesFile``.
        usable: int64 indices of the rows with finite features.
        seed: Seed of the held-out draw when the file has no valid split.

    Returns:
        ``({"train", "valid", "test"} -> sorted int64 rows, note)``; without a valid split a tenth
        of the train rows (at least one) is held out for validation, and the note says so.

    Raises:
        ClassifyError: If no usable train or test row is left, naming the file.
    """
    rows = {split: np.intersect1d(ff.indices(split), usable) for split in ("train", "valid", "test")}
    for split in ("train", "test"):
        if rows[split].size == 0:
            raise ClassifyError(f"{ff.path}: no usable {split} tracks; the classifier needs train and test tracks")
    note = "valid split"
    if rows["valid"].size == 0:
        rng = np.random.default_rng(seed)
        train = rng.permutation(rows["train"])
        k = max(1, len(train) // 10)
        if len(train) - k < 1:
            raise ClassifyError(f"{ff.path}: too few train tracks ({len(train)}) and no valid split")
        rows["valid"], rows["train"] = np.sort(train[:k]), np.sort(train[k:])
        note = f"no valid split: {k} train tracks held out (seed {seed})"
        logger.warning("%s: %s", ff.path, note)
    return rows, note
