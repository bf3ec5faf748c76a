"""Song-level classifiers on standardized feature vectors, and their registry, ``CLASSIFIERS``: the
paper's MLP, a logistic regression and an RBF support-vector machine (C chosen on validation, or
given: ``c_values``). Each has a Keras form, so ``msagg predict`` can apply any of them.

A new classifier is one more ``ClassifierType`` entry here; the classify stage, its report and
the CLI look it up.

Keras is imported where a model is built or run, not with the module, so that loading a saved
classifier's description (``msagg.stages.songs.predictor``, ``msagg predict``) stays light.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import warnings
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np

from msagg.data.errors import MsaggError
from msagg.stages.songs.mlp import MLP, predict_proba, train_mlp

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)


class ClassifyError(MsaggError):
    """Features a classifier cannot be trained on (no train or test tracks, a single class)."""


@dataclasses.dataclass(frozen=True)
class ClassifierType:
    """One kind of song-level classifier.

    Attributes:
        title: Its name in results.md's headings and columns, e.g. "Logistic regression".
        description: What the CLI's help says of it, e.g. "logistic regression".
        fit: ``fit(kind, *arguments of train_classifier after kind) -> Trained``.
        predict: ``predict(trained, x) -> float32 (n, num_labels)`` scores in [0, 1] of float32
            (n, dim) standardized features.
        intro: ``intro(entry, report) -> lines``: the heading and paragraph that open its table
            in results.md (``report``: the classify stage's metrics.json content).
        c_grid: The values of C tried; the one best on the validation split is kept (ties: the
            one nearest C = 1, the libraries' default). Empty: no C to choose.
        to_keras: ``to_keras(trained, input_dim) -> keras.Model`` for ``msagg predict``; None:
            it cannot be saved.
        seeded: Whether its fit depends on the seed (repeats train it with several seeds).
        cross_validated: Whether classify's choice of set and classifier
            (``msagg.stages.songs.choice``) cross-validates it: its fits are cheap. The MLP is not
            (k more Keras trainings per feature set).
    """

    title: str
    description: str
    fit: Callable[..., "Trained"]
    predict: Callable[["Trained", np.ndarray], np.ndarray]
    intro: Callable[["ClassifierType", Mapping[str, Any]], list[str]]
    c_grid: tuple[float, ...] = ()
    to_keras: Callable[["Trained", int], Any] | None = None
    seeded: bool = False
    cross_validated: bool = True

    def introduce(self, report: Mapping[str, Any]) -> list[str]:
        """The lines that open its table in results.md (``intro``'s)."""
        return self.intro(self, report)

    @property
    def savable(self) -> bool:
        """Whether ``msagg predict`` can use it: it has a Keras form."""
        return self.to_keras is not None


@dataclasses.dataclass
class Trained:
    """A fitted song-level classifier: ``predict(x) -> (n, num_labels)`` probabilities.

    Attributes:
        kind: A key of ``CLASSIFIERS``: "mlp", "logreg", "svm" ...
        task: "tags" or "classes".
        num_labels: Output size.
        model: A ``keras.Model`` (mlp) or a fitted scikit-learn estimator.
        epochs: Epochs run (mlp).
        params: Hyper-parameters chosen on the validation split (``{"C": ...}``), and the
            validation score of each value tried (``"valid_by_C"``; None without validation songs).
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
        return classifier_type(self.kind).predict(self, x)

    def to_keras(self, input_dim: int) -> keras.Model:
        """The classifier as a Keras model (the logistic regression becomes one Dense layer).

        Raises:
            ValueError: For a kind that has no Keras form, naming those that do.
        """
        entry = classifier_type(self.kind)
        if not entry.savable:
            savable = ", ".join(name for name, other in CLASSIFIERS.items() if other.savable)
            raise ValueError(f"a {self.kind} classifier has no Keras form; save one of {savable}")
        return entry.to_keras(self, input_dim)


def train_classifier(
    kind: str,
    task: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    config: MLP,
    seed: int,
    *,
    c_values: Sequence[float] | None = None,
) -> Trained:
    """Fits one song-level classifier on standardized features.

    Args:
        kind: A key of ``CLASSIFIERS``, whose entry fits it: "mlp" (Keras, Adam, early stopping
            on the validation loss, best weights restored), "logreg" (scikit-learn; one-vs-rest
            for tags, multinomial for classes) or "svm" (scikit-learn ``SVC``, RBF kernel,
            ``gamma="scale"``; one-vs-rest for tags); for these two, C is chosen among the
            entry's ``c_grid`` by the validation score.
        task: "tags" or "classes".
        x_train, x_valid: float32 (n, dim); ``x_valid`` may be None for a kind that chooses
            nothing on it (one value in ``c_values``).
        y_train, y_valid: uint8 (n, num_labels) multi-hot / one-hot.
        config: MLP hyper-parameters (an ``MLP`` or a ``msagg.stages.classify.Config``).
        seed: Seed of the initialization, dropout and shuffling.
        c_values: The values of C to try instead of the kind's ``c_grid`` (kinds without one
            ignore it), e.g. the one a cross-validation chose.

    Returns:
        A ``Trained`` classifier.

    Raises:
        ClassifyError: If the train split of a classes task holds a single class.
        ValueError: For an unknown ``kind``.
    """
    entry = classifier_type(kind)
    if c_values is not None and entry.c_grid:
        return entry.fit(kind, task, x_train, y_train, x_valid, y_valid, config, seed, c_grid=tuple(c_values))
    return entry.fit(kind, task, x_train, y_train, x_valid, y_valid, config, seed)


# --- The paper's MLP (msagg.stages.songs.mlp) ---------------------------------------------------

def _fit_mlp(kind: str, task: str, x_train, y_train, x_valid, y_valid, config: MLP, seed: int) -> Trained:
    model, epochs = train_mlp(task, x_train, y_train, x_valid, y_valid, config, seed)
    return Trained(kind, task, y_train.shape[1], model, epochs=epochs)


def _mlp_intro(entry: ClassifierType, report: Mapping[str, Any]) -> list[str]:
    mlp = report["mlp"]
    layers = mlp["hidden_layers"]
    title = (f"{entry.title} ({layers} hidden layer{'' if layers == 1 else 's'} of {mlp['hidden_units']}, batch "
             f"norm, dropout {mlp['dropout']})")
    return [f"## {title}", "",
            f"Adam (learning rate {mlp['learning_rate']}), batch {mlp['batch_size']}, early stopping on the "
            f"validation loss (patience {mlp['patience']}, at most {mlp['epochs']} epochs), best weights kept.", ""]


# --- scikit-learn classifiers with C chosen on the validation split ----------------------------

def _fit_on_c_grid(kind: str, task: str, x_train, y_train, x_valid, y_valid, config: MLP, seed: int, *,
                   estimator: Callable[[float, int], Any], project: bool = False,
                   c_grid: Sequence[float] = ()) -> Trained:
    """Fits ``estimator(C, seed)`` for each C of ``c_grid`` (default: the kind's grid; in the span of
    the training songs if ``project``, see ``Trained.projection``) and keeps the one best on
    validation (ties: the C nearest 1; without validation songs, the C nearest 1)."""
    y = y_train if task == "tags" else y_train.argmax(axis=1)
    if task == "classes" and np.unique(y).size < 2:
        raise ClassifyError("the train split holds a single class; a classifier cannot be trained")
    from msagg.stages.songs.metrics import PRIMARY, score

    num_labels = y_train.shape[1]
    projection = _span(x_train) if project else None
    x_fit = x_train if projection is None else x_train @ projection
    best: tuple | None = None  # (valid score, -|log10 C|, C, model)
    by_c = {}
    for c in c_grid or classifier_type(kind).c_grid:
        model = _fit_sklearn(estimator(c, seed), task, x_fit, y)
        trained = Trained(kind, task, num_labels, model, projection=projection)
        value = None if x_valid is None else score(task, y_valid, trained.predict(x_valid))[PRIMARY[task]]
        by_c[str(c)] = value
        key = (-math.inf if value is None else value, -abs(math.log10(c)))
        if best is None or key > best[:2]:
            best = (*key, c, model)
    _, _, c, model = best
    return Trained(kind, task, num_labels, model, params={"C": c, "valid_by_C": by_c}, projection=projection)


def _span(x: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis (dim, rank) of the rows of ``x`` when there are fewer rows than
    columns, else None (nothing to gain)."""
    n, dim = x.shape
    if n >= dim:
        return None
    _, s, vt = np.linalg.svd(np.asarray(x, dtype=np.float64), full_matrices=False)
    rank = int((s > s[0] * max(n, dim) * np.finfo(np.float64).eps).sum()) if s.size and s[0] > 0 else 0
    return np.ascontiguousarray(vt[: max(rank, 1)].T, dtype=np.float32)


def _fit_sklearn(base, task: str, x: np.ndarray, y: np.ndarray):
    """``base`` fitted (one-vs-rest over tags)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.multiclass import OneVsRestClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tags constant in training
        warnings.simplefilter("ignore", ConvergenceWarning)  # large C on separable data: the fit is still usable
        return OneVsRestClassifier(base).fit(x, y) if task == "tags" else base.fit(x, y)


def _tuned_intro(method: str) -> Callable[[ClassifierType, Mapping[str, Any]], list[str]]:
    """The results.md intro of a classifier whose C is chosen on validation: ``method``, then its grid."""
    def intro(entry: ClassifierType, report: Mapping[str, Any]) -> list[str]:
        grid = ", ".join(f"{c:g}" for c in entry.c_grid)
        return [f"## {entry.title}", "", f"{method}, C chosen on the validation split among {grid}.", ""]
    return intro


def _logreg_estimator(c: float, seed: int):
    from sklearn.linear_model import LogisticRegression

    # newton-cg, tol 1e-3: the same objective as the default lbfgs, and on a few hundred songs
    # (measured on the demo's features: synth-tags, 19 one-vs-rest tags, five values of C) 7 to 25
    # times faster, with test ROC-AUCs within 0.002 of lbfgs's.
    return LogisticRegression(C=c, solver="newton-cg", tol=1e-3, max_iter=1000, random_state=seed)


def _logreg_scores(trained: Trained, x: np.ndarray) -> np.ndarray:
    if trained.projection is not None:
        x = np.asarray(x, dtype=np.float32) @ trained.projection
    proba = trained.model.predict_proba(x)
    if trained.task == "tags":
        return np.asarray(proba, dtype=np.float32)
    out = np.zeros((x.shape[0], trained.num_labels), dtype=np.float32)
    out[:, trained.model.classes_] = proba
    return out


def _logreg_keras(trained: Trained, input_dim: int) -> keras.Model:
    """One Dense layer with the logistic regression's weights (back in the features' space)."""
    from msagg.models.classifier import build_classifier

    model = build_classifier(input_dim, trained.num_labels, trained.task, hidden_layers=0, name="song_logreg")
    fit_dim = input_dim if trained.projection is None else trained.projection.shape[1]
    kernel = np.zeros((fit_dim, trained.num_labels), dtype=np.float32)
    bias = np.zeros(trained.num_labels, dtype=np.float32)
    if trained.task == "tags":
        for j, est in enumerate(trained.model.estimators_):
            if hasattr(est, "coef_"):
                kernel[:, j], bias[j] = est.coef_[0], est.intercept_[0]
            else:  # a tag constant in training: OneVsRest keeps a constant predictor
                p = float(np.clip(np.ravel(est.y_)[0], 1e-7, 1 - 1e-7))
                bias[j] = math.log(p / (1 - p))
    else:
        classes = trained.model.classes_
        bias[:] = -1e4  # classes never seen in training get probability ~0
        if len(classes) == 2:  # binary: p(classes[1]) = sigmoid(z) = softmax([0, z])[1]
            bias[classes[0]] = 0.0
            kernel[:, classes[1]], bias[classes[1]] = trained.model.coef_[0], trained.model.intercept_[0]
        else:
            kernel[:, classes] = trained.model.coef_.T
            bias[classes] = trained.model.intercept_
    if trained.projection is not None:  # back from the training span to the features
        kernel = (trained.projection @ kernel).astype(np.float32)
    model.get_layer("output").set_weights([kernel, bias])
    return model


def _svm_estimator(c: float, seed: int):
    from sklearn.svm import SVC

    return SVC(C=c, kernel="rbf", gamma="scale", decision_function_shape="ovr", random_state=seed)


def _svm_keras(trained: Trained, input_dim: int) -> keras.Model:
    """The SVM's scores as a Keras model (``msagg.models.classifier.build_rbf_svm``): the support
    vectors of every binary or one-vs-one decision (the training songs they are, each once), the
    dual coefficients and intercepts (libsvm's layout, ``sklearn.svm.SVC.dual_coef_``), then the
    scores placed among the labels as ``_svm_scores`` places them."""
    from msagg.models.classifier import build_rbf_svm

    svms = list(trained.model.estimators_) if trained.task == "tags" else [trained.model]
    fitted = [e for e in svms if hasattr(e, "support_")]  # a tag constant in training: a constant predictor
    rows = sorted({int(i) for e in fitted for i in e.support_})  # training songs that are support vectors
    where = {i: k for k, i in enumerate(rows)}
    vectors = np.zeros((max(1, len(rows)), input_dim), np.float32)
    for e in fitted:
        vectors[[where[int(i)] for i in e.support_]] = e.support_vectors_
    gamma = float(fitted[0]._gamma) if fitted else 1.0  # every decision is fitted to the same songs
    n = trained.num_labels
    out_kernel, out_bias, num_classes = np.eye(n, dtype=np.float32), np.zeros(n, np.float32), 0
    if trained.task == "tags":
        weights, bias = np.zeros((len(vectors), n), np.float32), np.zeros(n, np.float32)
        for j, e in enumerate(svms):
            if hasattr(e, "support_"):
                weights[[where[int(i)] for i in e.support_], j] = e.dual_coef_[0]
                bias[j] = e.intercept_[0]
            else:
                bias[j] = float(np.ravel(e.y_)[0])  # OneVsRest's constant "decision" is the tag's value
    else:
        svm, classes = trained.model, trained.model.classes_
        index = [where[int(i)] for i in svm.support_]
        out_bias[:] = -1e4  # classes never seen in training get probability ~0
        out_bias[classes] = 0.0
        if len(classes) == 2:  # p(classes[1]) = sigmoid(z) = softmax([0, z])[1]
            weights, bias = np.zeros((len(vectors), 1), np.float32), svm.intercept_[:1].astype(np.float32)
            weights[index, 0] = svm.dual_coef_[0]
            out_kernel = np.zeros((1, n), np.float32)
            out_kernel[0, classes[1]] = 1.0
        else:  # one-vs-one: pair (i, j) weighs class i's vectors by row j - 1 of dual_coef_, class j's by row i
            num_classes = len(classes)
            starts = np.concatenate([[0], np.cumsum(svm.n_support_)])
            pairs = [(i, j) for i in range(num_classes) for j in range(i + 1, num_classes)]
            weights, bias = np.zeros((len(vectors), len(pairs)), np.float32), svm.intercept_.astype(np.float32)
            for k, (i, j) in enumerate(pairs):
                for cls, row in ((i, j - 1), (j, i)):
                    span = slice(starts[cls], starts[cls + 1])
                    weights[np.asarray(index)[span], k] = svm.dual_coef_[row, span]
            out_kernel = np.zeros((num_classes, n), np.float32)
            out_kernel[np.arange(num_classes), classes] = 1.0
    model = build_rbf_svm(input_dim, len(vectors), gamma, weights.shape[1], n, trained.task, num_classes)
    model.get_layer("kernel").set_weights([vectors])
    model.get_layer("decision").set_weights([weights, bias])
    model.get_layer("output").set_weights([out_kernel, out_bias])
    return model


def _svm_scores(trained: Trained, x: np.ndarray) -> np.ndarray:
    decision = np.asarray(trained.model.decision_function(x), dtype=np.float64)
    if trained.task == "tags":
        return (1.0 / (1.0 + np.exp(-decision.reshape(len(x), -1)))).astype(np.float32)
    classes = trained.model.classes_
    out = np.zeros((x.shape[0], trained.num_labels), dtype=np.float32)
    if len(classes) == 2:
        p = 1.0 / (1.0 + np.exp(-decision.reshape(-1)))
        out[:, classes[0]], out[:, classes[1]] = 1.0 - p, p
        return out
    z = decision - decision.max(axis=1, keepdims=True)
    e = np.exp(z)
    out[:, classes] = e / e.sum(axis=1, keepdims=True)
    return out


# --- The registry ------------------------------------------------------------------------------

class _Registry(dict):
    """Name -> entry. Hashable by identity, so that a frozen config may take the live registry as a
    field's default (``msagg.stages.classify.Config.classifiers``: its ``__post_init__`` keeps the names)."""

    __hash__ = object.__hash__


CLASSIFIERS: dict[str, ClassifierType] = _Registry(
    mlp=ClassifierType(
        title="MLP", description="the paper's Keras MLP", fit=_fit_mlp,
        predict=lambda trained, x: predict_proba(trained.model, x), intro=_mlp_intro,
        to_keras=lambda trained, input_dim: trained.model, seeded=True, cross_validated=False),
    logreg=ClassifierType(
        title="Logistic regression", description="logistic regression",
        fit=functools.partial(_fit_on_c_grid, estimator=_logreg_estimator, project=True), predict=_logreg_scores,
        intro=_tuned_intro("scikit-learn LogisticRegression (one-vs-rest for tags, multinomial for classes)"),
        c_grid=(0.001, 0.01, 0.1, 1.0, 10.0), to_keras=_logreg_keras),
    svm=ClassifierType(
        title="RBF SVM", description="an RBF SVM",
        fit=functools.partial(_fit_on_c_grid, estimator=_svm_estimator), predict=_svm_scores,
        intro=_tuned_intro('scikit-learn SVC with an RBF kernel (gamma "scale"; one-vs-rest for tags)'),
        c_grid=(0.1, 1.0, 10.0, 100.0), to_keras=_svm_keras),
)
"""Song-level classifiers by name, in the order they are trained and reported."""

SAVABLE = tuple(name for name, entry in CLASSIFIERS.items() if entry.savable)
"""Classifiers ``msagg predict`` can use (they have a Keras form)."""
C_GRIDS = {name: entry.c_grid for name, entry in CLASSIFIERS.items() if entry.c_grid}
"""The values of C tried for each scikit-learn classifier (``ClassifierType.c_grid``)."""


def classifier_type(kind: str) -> ClassifierType:
    """The registry entry of ``kind``; raises ValueError naming the known classifiers."""
    try:
        return CLASSIFIERS[kind]
    except (KeyError, TypeError):
        raise ValueError(f"unknown classifier {kind!r}; use one of {', '.join(CLASSIFIERS)}") from None


def describe_classifiers() -> str:
    """The classifiers with their descriptions, for help texts: "mlp (the paper's Keras MLP), ..."."""
    return ", ".join(f"{name} ({entry.description}{'; C chosen on the validation split' if entry.c_grid else ''})"
                     for name, entry in CLASSIFIERS.items())


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
