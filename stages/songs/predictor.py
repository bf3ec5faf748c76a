"""Song-level classifiers saved for `msagg predict`: writing, loading, and training one on its own.

A classify run keeps its chosen classifiers in ``<classify run>/models/``: per feature set
``<name>.keras`` (the classifier; a logistic regression as one Dense layer, an SVM as its kernel
and decision function), ``<name>.npz`` (the standardization's mean and scale, the block weights of
a joined set folded into the scale; ``blocks``) and ``<name>.json`` (its description: feature set,
task, labels, song pooling, sample rate, model hashes, the pretrain run), plus ``index.json``
(``default``: the set predict applies; ``chosen``: the set of the row cross-validation chose;
``all_scales``; which were saved). No plotting here, and Keras is
imported only to load or train a model, so importing this module pulls in neither matplotlib nor
the backend (Keras 3 itself imports matplotlib when present, once a model is loaded).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from msagg.stages import quiet
from msagg.data.atomic import atomic_write, write_json
from msagg.data.errors import MsaggError
from msagg.data.formats.features import FeaturesFile
from msagg.stages.songs.featuresets import FeatureSet, assemble, block_dims, parse_feature_set, read_features
from msagg.stages.runs.pretrain_run import PretrainRun, pretrain_dir_of
from msagg.stages.runs.upstream import open_upstream
from msagg.stages.songs.classifiers import Trained, split_rows, train_classifier
from msagg.stages.songs.scaling import Standardizer
from msagg.stages.songs.mlp import MLP, predict_proba

logger = logging.getLogger(__name__)

MODELS_DIR = "models"
INDEX_FILE = "index.json"
DEFAULT_KEY = "default"
"""index.json's key for the saved feature set ``msagg predict --classify`` applies: the chosen row's
(``chosen``), or with classify's ``predictor_set="all"`` the all-scales set (``all_scales``)."""


class PredictorError(MsaggError):
    """A saved classifier that is missing, or whose pretrain run is gone or changed."""


def save_classifier(trained: Trained, standardizer: Standardizer, feature_set: FeatureSet, folder: str | os.PathLike,
                    info: Mapping[str, Any]) -> Path:
    """Writes ``<folder>/<name>.keras``, ``<name>.npz`` (mean, scale) and ``<name>.json``.

    Args:
        trained: The classifier (a logistic regression is saved as a one-layer Keras model).
        standardizer: Training-song statistics (with the block weights of a joined set).
        feature_set: Its input.
        folder: Usually ``<classify run>/models``.
        info: Extra description (``predictor_info``: task, label names, song pooling, ...).

    Returns:
        The ``.json`` description's path.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dim = int(standardizer.mean.shape[0])
    model = trained.to_keras(dim)
    path = folder / f"{feature_set.name}.keras"
    with atomic_write(path) as tmp:
        model.save(tmp)
    with atomic_write(folder / f"{feature_set.name}.npz") as t:
        with open(t, "wb") as f:
            np.savez(f, mean=standardizer.mean, scale=standardizer.scale,
                     blocks=np.asarray(standardizer.blocks, dtype=np.int64))
    description = {
        "feature_set": feature_set.name,
        "group": feature_set.group,
        "scales": list(feature_set.scales),
        "layers": list(feature_set.layers),
        "classic": list(feature_set.classic),
        "parts": [list(p) for p in feature_set.parts],
        "dim": dim,
        "blocks": list(standardizer.blocks),
        "classifier": trained.kind,
        "params": {k: v for k, v in trained.params.items() if k == "C"},
        "model": path.name,
        "standardizer": f"{feature_set.name}.npz",
        **dict(info),
    }
    write_json(folder / f"{feature_set.name}.json", description)
    return folder / f"{feature_set.name}.json"


def predictor_info(ff: FeaturesFile, features: str | os.PathLike, seed: int, models_dir: Path) -> dict[str, Any]:
    """What a saved classifier's description records about its features and their models."""
    pretrain_dir = pretrain_dir_of(features)
    # The relative path lets `msagg predict` find the models after the runs folder is moved whole.
    relative = os.path.relpath(pretrain_dir.resolve(), models_dir.resolve()) if pretrain_dir else None
    return {
        "task": ff.task,
        "label_names": list(ff.label_names),
        "song_pool": ff.song_pool,
        "precision": ff.precision,
        "segments": ff.segments,
        "sample_rate": int(ff.scale_attrs(ff.scales[0])["sample_rate"]),
        "input_lengths": {s: int(ff.scale_attrs(s)["input_length"]) for s in ff.scales},
        "model_hashes": {s: str(ff.scale_attrs(s)["model_hash"]) for s in ff.scales},
        "pretrain_dir": str(pretrain_dir.resolve()) if pretrain_dir else None,
        "pretrain_dir_relative": relative,
        "features": str(Path(features).resolve()),
        "features_config_hash": ff.config_hash,
        "dataset": ff.dataset,
        "seed": seed,
    }


def train_and_save(
    features: str | os.PathLike,
    feature_set: str | FeatureSet,
    folder: str | os.PathLike,
    config: MLP | None = None,
    classifier: str = "mlp",
    seed: int | None = None,
) -> Path:
    """Trains one classifier on one feature set of a features file and saves it for prediction.

    Args:
        features: An extract run folder (or its ``features.h5``).
        feature_set: A ``FeatureSet`` or a spec ("3^9@-1", "3^8+3^9", "all@-1", ...).
        folder: Where to write ``<name>.keras``, ``.npz`` and ``.json``.
        config: MLP hyper-parameters (default: the paper's, ``MLP()``).
        classifier: "mlp" or "logreg".
        seed: Seed of the classifier and of the held-out rows when there is no valid split
            (default: ``config.seed`` if it has one, else 0).

    Returns:
        The ``.json`` description's path (``Predictor`` reads it).

    Raises:
        FeaturesError, FeatureSetError, ClassifyError: For unusable features or a bad spec.
    """
    config = config or MLP()
    seed = int(getattr(config, "seed", 0)) if seed is None else seed
    with FeaturesFile(features) as ff:
        fs = feature_set if isinstance(feature_set, FeatureSet) else parse_feature_set(
            feature_set, ff.scales, source=str(ff.path), available_classic=ff.classic)
        missing = [s for s in fs.scales if s not in ff.scales]
        if missing:
            raise PredictorError(f"{ff.path}: scale {', '.join(missing)} is not in the file ({', '.join(ff.scales)})")
        feats = read_features(ff, fs.scales, fs.classic)
        x = assemble(feats, fs)
        usable = np.flatnonzero(np.isfinite(x).all(axis=1))
        rows, _ = split_rows(ff, usable, seed)
        std = Standardizer.fit(x[rows["train"]], block_dims(feats, fs))
        trained = train_classifier(classifier, ff.task, std(x[rows["train"]]), ff.labels[rows["train"]],
                                   std(x[rows["valid"]]), ff.labels[rows["valid"]], config, seed)
        return save_classifier(trained, std, fs, folder, predictor_info(ff, features, seed, Path(folder)))


class Predictor:
    """A saved song-level classifier and what it needs (see ``save_classifier``).

    Args:
        description_path: ``<name>.json`` in a classify run's ``models/``.

    Attributes:
        feature_set: Name of its feature set; ``fs`` the ``FeatureSet``.
        classifier: "mlp" or "logreg".
        task, label_names, song_pool, sample_rate: As the features were made.
        precision: What the models computed the features in ("float32" for descriptions that do not say).
        segments: How songs were cut ("drop" for descriptions that do not say).
        scales: Scales whose features it reads.
        pretrain_dir: The pretrain run whose models compute those features (None if unknown).
        description: The full ``.json`` description.

    Raises:
        PredictorError: If the description or its files are missing, naming the file.
    """

    def __init__(self, description_path: str | os.PathLike):
        path = Path(description_path)
        try:
            self.description = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            raise PredictorError(f"{path}: no readable saved classifier description") from None
        folder = path.parent
        d = self.description
        self.feature_set = d["feature_set"]
        self.fs = FeatureSet(d["feature_set"], d["group"], tuple(d["scales"]), tuple(d["layers"]),
                             tuple(d.get("classic", ())))
        self.classifier = d["classifier"]
        self.task = d["task"]
        self.label_names = list(d["label_names"])
        self.song_pool = d["song_pool"]
        self.precision = str(d.get("precision", "float32"))
        self.segments = str(d.get("segments", "drop"))
        self.sample_rate = int(d["sample_rate"])
        self.scales = list(d["scales"])
        self.pretrain_dir = Path(d["pretrain_dir"]) if d.get("pretrain_dir") else None
        if (self.pretrain_dir is None or not self.pretrain_dir.is_dir()) and d.get("pretrain_dir_relative"):
            self.pretrain_dir = (folder / d["pretrain_dir_relative"]).resolve()
        for name in (d["model"], d["standardizer"]):
            if not (folder / name).is_file():
                raise PredictorError(f"{folder / name}: missing; classify again to save the classifier")
        quiet.import_backend()
        import keras

        from msagg.models import classifier  # noqa: F401 (registers the SVM's layers for loading)

        self.model = keras.saving.load_model(folder / d["model"], safe_mode=True)
        with np.load(folder / d["standardizer"]) as npz:
            self.standardizer = Standardizer(npz["mean"], npz["scale"], npz["blocks"] if "blocks" in npz else ())

    @property
    def pretrain(self) -> PretrainRun:
        """The pretrain run whose models make this classifier's features.

        Raises:
            PredictorError: If it is gone; PretrainRunError if it is not a finished run.
        """
        if self.pretrain_dir is None or not self.pretrain_dir.is_dir():
            raise PredictorError(f"the pretrain run of this classifier is gone ({self.pretrain_dir})")
        return PretrainRun(self.pretrain_dir)

    def check_models(self) -> None:
        """Refuses a pretrain run whose models changed since the features were extracted.

        Raises:
            PredictorError: Naming the model file that is missing or changed.
        """
        run = self.pretrain
        for scale in self.scales:
            path = run.model_path(scale)
            if not path.is_file() or run.model_hash(scale) != self.description["model_hashes"][scale]:
                raise PredictorError(f"{path}: missing or changed since the features were extracted; "
                                     "extract and classify again")

    def predict(self, features: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
        """Probabilities from song features.

        Args:
            features: Scale -> tap -> float32 (n, dim), e.g. from ``msagg.stages.engines.taps.song_features``,
                and ``CLASSIC_KEY`` -> name -> float32 (n, dim) when the set joins a classic one.

        Returns:
            float32 (n, num_labels).
        """
        x = self.standardizer(assemble(features, self.fs))
        return predict_proba(self.model, x)


def load_predictor(classify_dir: str | os.PathLike, feature_set: str | None = None, check: bool = True) -> Predictor:
    """Loads the classifier a classify run saved for prediction.

    Args:
        classify_dir: A finished classify run folder.
        feature_set: Which saved feature set (None: the run's default, ``models/index.json``'s
            ``DEFAULT_KEY``, which its results.md names too).
        check: Verify that the pretrain run's models are those the features came from.

    Raises:
        PredictorError: For an unfinished run, an unknown feature set, or changed models.
    """
    classify_dir = open_upstream(classify_dir, "classify", error=PredictorError).folder
    index_path = classify_dir / MODELS_DIR / INDEX_FILE
    if not index_path.is_file():
        raise PredictorError(f"{classify_dir}: no saved classifiers ({MODELS_DIR}/{INDEX_FILE})")
    index = json.loads(index_path.read_text())
    name = feature_set or index.get(DEFAULT_KEY) or index["best"]  # "best": older index files
    if name not in index["saved"]:
        raise PredictorError(f"{classify_dir}: no saved classifier for feature set {name!r}; saved: "
                             f"{', '.join(index['saved'])}")
    predictor = Predictor(classify_dir / MODELS_DIR / f"{name}.json")
    if check:
        predictor.check_models()
    return predictor
