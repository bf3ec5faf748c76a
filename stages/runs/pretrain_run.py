"""A pretrain run folder: the one place that knows its layout, for the stages that read and write it.

Layout (written by ``msagg.stages.pretrain``)::

    <run>/config.json  metadata.json    stages.runs.folder; config holds cache, scales, width
                                        (and block, multi for the SampleCNN variants)
    <run>/summary.json
    <run>/<scale>/model.keras           the best model of that scale, a whole Keras model
    <run>/<scale>/metrics.json          scale, input_length (samples), sample_rate (Hz), task,
                                        label_names, width, num_params, test {metric: value}, ...
    <run>/<scale>/history.csv  curves.png  tensorboard/  checkpoint/ (only while training)
    <run>/<scale>/DONE                  written after metrics.json: the scale is finished
    <run>/DONE                          written last: every scale is finished

Readers open a finished run with ``PretrainRun(path)``; writers (the pretrain stage, and tests
that need a pretrain run) use ``save_model``, ``write_scale_metrics`` and ``mark_scale_done``
together with ``msagg.stages.runs.folder.RunFolder``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from msagg.stages import quiet
from msagg.data.atomic import atomic_write, write_json
from msagg.data.errors import MsaggError
from msagg.data.formats.features import scale_sort_key
from msagg.stages.runs.records import CONFIG_FILE, DONE_FILE  # noqa: F401 (the run's file names, importable here)
from msagg.stages.runs.upstream import Upstream, open_upstream

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
REQUIRED_METRICS = ("input_length", "sample_rate")
"""Keys every ``<scale>/metrics.json`` holds (readers refuse a file without them)."""
DEFAULT_BLOCK = "basic"


class PretrainRunError(MsaggError):
    """A pretrain run folder that is missing, unfinished, or lacks or has a broken file."""


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- writer side -------------------------------------------------------------------------------


def scale_dir(run_dir: str | os.PathLike, scale: str) -> Path:
    """``<run>/<scale>``: where one scale's files live."""
    return Path(run_dir) / scale


def save_model(path: str | os.PathLike, model: Any) -> Path:
    """Saves a whole Keras model to ``path`` (usually ``<run>/<scale>/model.keras``) atomically.

    Returns:
        ``path`` as a Path.
    """
    path = Path(path)
    with atomic_write(path) as tmp:
        model.save(tmp)
    return path


def load_model(path: str | os.PathLike):
    """Loads a whole ``.keras`` model written by ``save_model`` with ``safe_mode=True``.

    Raises:
        PretrainRunError: Naming the file, if it is missing or cannot be loaded.
    """
    quiet.import_backend()
    import keras

    path = Path(path)
    if not path.is_file():
        raise PretrainRunError(f"{path}: no such model file")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as err:  # Keras raises many kinds for a truncated or foreign file
        raise PretrainRunError(f"{path}: cannot load the model ({type(err).__name__}: {err})") from None


def write_scale_metrics(folder: str | os.PathLike, metrics: Mapping[str, Any]) -> Path:
    """Writes ``<folder>/metrics.json`` (folder = ``<run>/<scale>``) atomically.

    Args:
        folder: The scale's folder.
        metrics: At least ``input_length`` (samples) and ``sample_rate`` (Hz); the pretrain stage
            adds scale, task, label_names, width, num_params and the song-level ``test`` metrics.

    Returns:
        The file's path.

    Raises:
        ValueError: If a required key is missing (a programming error of the writer).
    """
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    if missing:
        raise ValueError(f"scale metrics lack {', '.join(missing)}")
    path = Path(folder) / METRICS_FILE
    write_json(path, dict(metrics))
    return path


def mark_scale_done(folder: str | os.PathLike, info: Mapping[str, Any] | None = None) -> Path:
    """Writes ``<folder>/DONE`` (after the scale's model and metrics.json)."""
    path = Path(folder) / DONE_FILE
    write_json(path, dict(info or {}))
    return path


# --- reader side -------------------------------------------------------------------------------


def pretrain_dir_of(features: str | os.PathLike) -> Path | None:
    """The pretrain run folder an extract run used (its config.json's ``pretrain``); None if unknown.

    Args:
        features: An extract run folder or its features.h5.
    """
    from msagg.data.runs import run_folder

    try:
        config = json.loads((run_folder(features) / CONFIG_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    pretrain = config.get("pretrain") if isinstance(config, dict) else None
    return Path(pretrain) if pretrain else None


class PretrainRun:
    """A finished pretrain run folder, read.

    Args:
        path: The run folder.

    Attributes:
        path: The folder.
        config: Its config.json (a dict).
        upstream: The run as ``msagg.stages.runs.upstream.open_upstream`` opened it (what a stage
            reading it records as its upstream).

    Raises:
        PretrainRunError: If the folder is missing, is not a run folder, holds another stage's
            run, or has not finished (no DONE marker), naming the folder.
    """

    def __init__(self, path: str | os.PathLike):
        self.upstream: Upstream = open_upstream(path, "pretrain", error=PretrainRunError)
        self.path = self.upstream.folder
        self.config: dict = dict(self.upstream.config)
        self._metrics: dict[str, dict] = {}
        self._hashes: dict[str, str] = {}
        self._dataset: str | None = None

    def __repr__(self) -> str:
        return f"PretrainRun({str(self.path)!r})"

    # --- what the run holds ----------------------------------------------------------------

    @property
    def scales(self) -> list[str]:
        """Scales with a trained model, ordered by (m, n)."""
        listed = [s for s in self.config.get("scales", []) if self.model_path(s).is_file()]
        if not listed:  # a folder copied without its config's scale list still has its models
            listed = [p.name for p in self.path.iterdir() if (p / MODEL_FILE).is_file()]
        return sorted(listed, key=scale_sort_key)

    def select(self, scales: Sequence[str] = ()) -> list[str]:
        """The wanted scales (empty: all trained ones), ordered by (m, n).

        Raises:
            PretrainRunError: If the run has no model, or lacks a wanted scale (naming what it has).
        """
        available = self.scales
        if not available:
            raise PretrainRunError(f"{self.path}: no trained models (expected <scale>/{MODEL_FILE})")
        missing = [s for s in scales if s not in available]
        if missing:
            raise PretrainRunError(f"{self.path}: no model for scale {', '.join(missing)}; "
                                   f"the run has {', '.join(available)}")
        return sorted(dict.fromkeys(scales or available), key=scale_sort_key)

    @property
    def block(self) -> str:
        """The SampleCNN block kind the run trained ("basic" for runs that do not say)."""
        return str(self.config.get("block") or DEFAULT_BLOCK)

    @property
    def multi(self) -> bool:
        """Whether the models have the in-network multi-level head (False when not recorded)."""
        return bool(self.config.get("multi", False))

    @property
    def width(self) -> float:
        """Multiplier on every layer's filters."""
        return float(self.config.get("width", 1.0))

    def model_path(self, scale: str) -> Path:
        """``<run>/<scale>/model.keras``."""
        return scale_dir(self.path, scale) / MODEL_FILE

    def metrics(self, scale: str) -> dict:
        """A scale's metrics.json (input_length, sample_rate, task, label_names, test, ...).

        Raises:
            PretrainRunError: Naming the file, if it is missing, not JSON, or lacks a required key.
        """
        if scale not in self._metrics:
            path = scale_dir(self.path, scale) / METRICS_FILE
            try:
                info = json.loads(path.read_text())
            except OSError:
                raise PretrainRunError(f"{path}: missing; the pretrain run looks incomplete") from None
            except json.JSONDecodeError as err:
                raise PretrainRunError(f"{path}: not valid JSON ({err})") from None
            missing = [k for k in REQUIRED_METRICS if k not in info]
            if missing:
                raise PretrainRunError(f"{path}: lacks {', '.join(missing)}")
            self._metrics[scale] = info
        return self._metrics[scale]

    def input_length(self, scale: str) -> int:
        """Samples per segment of a scale's model."""
        return int(self.metrics(scale)["input_length"])

    def model_hash(self, scale: str) -> str:
        """sha256 of the scale's model.keras (what features.h5 and saved classifiers record).

        Raises:
            PretrainRunError: If the file is missing, naming it.
        """
        if scale not in self._hashes:
            path = self.model_path(scale)
            if not path.is_file():
                raise PretrainRunError(f"{path}: no such model file")
            self._hashes[scale] = file_sha256(path)
        return self._hashes[scale]

    def load(self, scale: str):
        """Loads a scale's model (``load_model``) and checks its input length against metrics.json.

        Returns:
            The ``keras.Model`` mapping (batch, input_length) waveforms to probabilities.

        Raises:
            PretrainRunError: Naming the file, if it is missing or cannot be loaded, or if its
                input length differs from metrics.json.
        """
        path = self.model_path(scale)
        model = load_model(path)
        input_length = int(model.inputs[0].shape[1])
        if input_length != self.input_length(scale):
            raise PretrainRunError(f"{path}: input length {input_length} differs from {METRICS_FILE} "
                                   f"({self.input_length(scale)})")
        return model

    def tap_layers(self, scale: str) -> dict[str, str]:
        """Tap key -> name of the layer the tap reads, for the run's model variant."""
        from msagg.models import specs

        return dict(specs.tap_layer_names(scale, block=self.block, multi=self.multi))

    def tap_extractor(self, scale: str, model=None):
        """A model returning ``{"-3", "-2", "-1"}`` activations from one forward pass.

        Args:
            scale: The scale.
            model: The scale's model if already loaded (default: ``load(scale)``).

        Returns:
            A ``keras.Model`` mapping (batch, input_length) to the three taps.
        """
        from msagg.models import sample_cnn

        model = self.load(scale) if model is None else model
        return sample_cnn.build_tap_extractor(model, scale, block=self.block, multi=self.multi)

    # --- where its models came from ----------------------------------------------------------

    @property
    def dataset(self) -> str:
        """The dataset the models were trained on, read from the run's audio cache ("" if unknown)."""
        if self._dataset is None:
            self._dataset = self._read_dataset()
        return self._dataset

    def _read_dataset(self) -> str:
        from msagg.data.formats.cache import AudioCache
        from msagg.data.formats.cache_layout import cache_run_folder

        cache = self.config.get("cache")
        if not cache:
            return ""
        try:
            with AudioCache(cache) as c:
                return c.dataset
        except (ValueError, OSError):
            pass
        try:  # the cache file is gone but its prepare run's config may still say
            return str(json.loads((cache_run_folder(cache) / CONFIG_FILE).read_text()).get("dataset") or "")
        except (OSError, json.JSONDecodeError, AttributeError):
            return ""

    @property
    def sample_rate(self) -> int:
        """Hz the models were trained at (that of the first trained scale).

        Raises:
            PretrainRunError: If the run has no trained scale or its metrics.json is unusable.
        """
        return int(self.metrics(self.select()[0])["sample_rate"])

    def check_sample_rate(self, rate: int, what: str = "the audio", scales: Sequence[str] = ()) -> None:
        """Refuses audio at another rate than the models were trained at.

        Args:
            rate: The audio's rate, Hz.
            what: How to name the audio in the message (e.g. "the audio cache <path>").
            scales: The scales that will be used (default: all trained ones).

        Raises:
            PretrainRunError: Naming the models' rate, ``what`` and its rate, and the fix.
        """
        rates = {scale: int(self.metrics(scale)["sample_rate"]) for scale in self.select(scales)}
        wrong = {scale: r for scale, r in rates.items() if r != int(rate)}
        if wrong:
            listed = ", ".join(f"{scale} at {r} Hz" for scale, r in wrong.items())
            raise PretrainRunError(
                f"sample rate mismatch: models in {self.path} were trained at a different rate ({listed}) "
                f"than {what} ({int(rate)} Hz); prepare the dataset again with "
                f"--sample-rate {next(iter(wrong.values()))}"
            )
