"""The teacher: musicnn's MTT and MSD taggers (Pons & Serra 2019), their weights read from the installed musicnn wheel.

msagg re-implements the architecture (``msagg.models.musicnn``) and its log-mel front end
(``msagg.data.melspec``) and never imports musicnn: it finds the installed package with
``importlib.util.find_spec``, reads the TensorFlow 1 checkpoint files it ships (``MTT_musicnn/``,
``MSD_musicnn/``: the prefix is the folder itself) and its tag lists (``configuration.py``,
parsed, not run). The wheel pins numpy<1.17, so it is installed without its dependencies:
``INSTALL_COMMAND`` (``make teacher``).

A ``Teacher`` turns a waveform into musicnn's taggram (tag probabilities per 3-s patch) and
features. ``song_features`` makes the ``musicnn`` reference set (``msagg.data.classic.TEACHER_SETS``)
that extract stores beside the MFCC baseline when musicnn is installed. By default its front end takes the logarithm in float32 (``float16_log=False``): musicnn's
extractor takes it in float16, which overflows on loud bands and then gives every such patch the
same taggram (``msagg.data.melspec``); ``float16_log=True`` reproduces the extractor exactly.

musicnn is Jordi Pons' (Music Technology Group, Universitat Pompeu Fabra; ISC licence): msagg ships
none of its code, weights or tag lists, and reads them from the copy the user installed.

Keras and TensorFlow are imported on first use, inside the functions.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import logging
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from msagg.data import melspec
from msagg.data.classic import MUSICNN_DIM, TEACHER_SETS
from msagg.data.errors import MsaggError
from msagg.models.musicnn import get_musicnn_spec

logger = logging.getLogger(__name__)

TEACHERS = ("MTT_musicnn", "MSD_musicnn")
"""The taggers the musicnn 0.1.0 wheel ships (musicnn's model names)."""
MUSICNN_VERSION = "0.1.0"
INSTALL_COMMAND = f"pip install --no-deps 'musicnn=={MUSICNN_VERSION}'"
"""How a user gets the teacher's weights (``--no-deps``: the wheel pins numpy<1.17)."""
BATCH_SIZE = 8
"""Patches per forward pass: about 25 MB of activations each."""
_LABELS = {"MTT": "MTT_LABELS", "MSD": "MSD_LABELS"}
"""Vocabulary -> its tag list's name in musicnn's configuration.py."""
SONG_TEACHER = "MTT_musicnn"
"""The tagger whose layers make the ``musicnn`` reference set."""
SONG_KEYS = ("mean_pool", "max_pool")
"""The outputs (``msagg.models.musicnn.FEATURES``) averaged over a song's patches into the ``musicnn`` set."""


class TeacherError(MsaggError):
    """The teacher cannot be loaded: musicnn is not installed, or its files are not what msagg reads."""


def installed() -> bool:
    """Whether the musicnn package is installed (found without importing it)."""
    spec = importlib.util.find_spec("musicnn")
    return spec is not None and bool(spec.submodule_search_locations)


def musicnn_package() -> Path:
    """The installed musicnn package's folder, found without importing it.

    Raises:
        TeacherError: If musicnn is not installed; the message gives ``INSTALL_COMMAND``.
    """
    spec = importlib.util.find_spec("musicnn")
    if spec is None or not spec.submodule_search_locations:
        raise TeacherError(f"the teacher needs the musicnn package (its weights), which is not installed: "
                           f"{INSTALL_COMMAND}")
    return Path(next(iter(spec.submodule_search_locations)))


def tag_names(name: str = "MTT_musicnn", package: Path | None = None) -> tuple[str, ...]:
    """The tags a musicnn model predicts, in output order, read from the package's configuration.py.

    Args:
        name: A musicnn model name (``msagg.models.musicnn.MUSICNN_SPECS``).
        package: The musicnn package folder; None: the installed one.

    Raises:
        TeacherError: If musicnn is not installed or its configuration.py lacks the tag list.
        ValueError: For an unknown model name.
    """
    spec = get_musicnn_spec(name)
    package = musicnn_package() if package is None else package
    path = package / "configuration.py"
    wanted = _LABELS[spec.vocabulary]
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except (OSError, SyntaxError) as err:
        raise TeacherError(f"{path}: cannot read musicnn's tag lists ({err})") from err
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == wanted for t in node.targets):
            tags = tuple(ast.literal_eval(node.value))
            if len(tags) != spec.num_tags:
                raise TeacherError(f"{path}: {wanted} holds {len(tags)} tags, {name} predicts {spec.num_tags}")
            return tags
    raise TeacherError(f"{path}: no {wanted} (is this musicnn {MUSICNN_VERSION}?)")


def read_checkpoint(folder: Path) -> dict[str, np.ndarray]:
    """The model variables of one of musicnn's TensorFlow 1 checkpoints (optimiser slots left out).

    The checkpoint's prefix is the folder itself (files ``.index`` and ``.data-00000-of-00001``);
    its ``checkpoint`` file points to the author's disk, so it is not consulted.

    Args:
        folder: e.g. ``<musicnn package>/MTT_musicnn``.

    Returns:
        Variable name ("conv2d/kernel", "batch_normalization_3/moving_mean", ...) -> float32 array.

    Raises:
        TeacherError: If the folder holds no checkpoint or TensorFlow cannot read it.
    """
    if not (folder / ".index").is_file():
        raise TeacherError(f"{folder}: no musicnn checkpoint there (no .index file)")
    import tensorflow as tf

    try:
        reader = tf.compat.v1.train.NewCheckpointReader(f"{folder}/")
        names = reader.get_variable_to_shape_map()
        return {key: np.asarray(reader.get_tensor(key), dtype=np.float32) for key in sorted(names)
                if "Adam" not in key and key not in ("beta1_power", "beta2_power")}
    except (tf.errors.OpError, ValueError) as err:
        raise TeacherError(f"{folder}: cannot read the checkpoint ({err})") from err


class Teacher:
    """A musicnn tagger with its weights: waveform -> taggram and features.

    Attributes:
        name: The musicnn model name, e.g. "MTT_musicnn".
        tags: Its tag names, in output order.
        model: The Keras tagger (``msagg.models.musicnn.build_musicnn``), log-mel patches -> probabilities.
        float16_log: Whether the front end takes the logarithm in float16 as musicnn's extractor does.
        batch_size: Patches per forward pass.
    """

    def __init__(self, name: str, tags: tuple[str, ...], model, *, float16_log: bool = False,
                 batch_size: int = BATCH_SIZE):
        from msagg.models.musicnn import build_musicnn_extractor

        self.name = name
        self.tags = tags
        self.model = model
        self.float16_log = float16_log
        self.batch_size = batch_size
        self._extractor = build_musicnn_extractor(model)
        self._subsets = {}

    def patches(self, wave: np.ndarray, sample_rate: int, hop_sec: float | None = None) -> np.ndarray:
        """The log-mel patches the tagger reads: float32 (num_patches, 187, 96).

        Args:
            wave: float32 (num_samples,) mono audio in [-1, 1].
            sample_rate: Hz of ``wave`` (resampled to 16 kHz).
            hop_sec: Seconds between patch starts (musicnn's ``input_overlap``, counted as it
                counts it); None: 3-s patches end to end, musicnn's default. A recording shorter
                than one patch is repeated until it fills one (musicnn's extractor fails there).

        Raises:
            ValueError: For an empty or non-1-D waveform.
        """
        wave = np.asarray(wave, dtype=np.float32)
        if wave.ndim != 1 or wave.size == 0:
            raise ValueError(f"wave must be a non-empty (num_samples,) array, got shape {wave.shape}")
        frames = melspec.log_mel(wave, sample_rate, float16_log=self.float16_log)
        hop = None if hop_sec is None else melspec.seconds_to_frames(hop_sec)
        if self.float16_log and np.isinf(frames).any():
            logger.warning("%s: %d mel bins overflow musicnn's float16 log step; patches holding one get a "
                           "constant taggram (TensorFlow) or NaN (JAX); float16_log=False avoids it",
                           self.name, int(np.isinf(frames).sum()))
        return melspec.patches(frames, melspec.PATCH_FRAMES, hop, pad_short=True)

    def taggram(self, wave: np.ndarray, sample_rate: int, hop_sec: float | None = None) -> np.ndarray:
        """Tag probabilities per patch: float32 (num_patches, num_tags); arguments as ``patches``."""
        return self.tag_patches(self.patches(wave, sample_rate, hop_sec))

    def tag_patches(self, patches: np.ndarray) -> np.ndarray:
        """Tag probabilities of log-mel patches (``patches``' output): float32 (num_patches, num_tags)."""
        out = [np.asarray(self.model.predict_on_batch(patches[i:i + self.batch_size]))
               for i in range(0, len(patches), self.batch_size)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, len(self.tags)), np.float32)

    def features(self, wave: np.ndarray, sample_rate: int, hop_sec: float | None = None,
                 keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """musicnn's features and the taggram per patch (``msagg.models.musicnn.FEATURES``).

        Args:
            wave, sample_rate, hop_sec: As ``patches``.
            keys: Only these outputs (a model that returns no others: less to compute and copy);
                None: all.

        Returns:
            Key -> float32 array with the patches first: "timbral" (num_patches, 187, 408), ...,
            "penultimate" (num_patches, 200), "taggram" (num_patches, num_tags).
        """
        return self.patch_features(self.patches(wave, sample_rate, hop_sec), keys)

    def patch_features(self, patches: np.ndarray, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """``features`` of log-mel patches (``patches``' output), in one pass over them."""
        extractor = self._extractor
        if keys is not None:
            keys = tuple(keys)
            if keys not in self._subsets:
                import keras

                self._subsets[keys] = keras.Model(extractor.inputs, {k: extractor.output[k] for k in keys})
            extractor = self._subsets[keys]
        parts = [extractor.predict_on_batch(patches[i:i + self.batch_size])
                 for i in range(0, len(patches), self.batch_size)]
        return {key: np.concatenate([np.asarray(p[key]) for p in parts]).astype(np.float32) for key in parts[0]}


def load_teacher(name: str = "MTT_musicnn", *, float16_log: bool = False, batch_size: int = BATCH_SIZE,
                 package: Path | None = None) -> Teacher:
    """Builds a musicnn tagger and loads its weights from the installed musicnn wheel.

    Args:
        name: One of ``TEACHERS`` (or another key of ``MUSICNN_SPECS`` whose checkpoint the
            package holds).
        float16_log: Reproduce musicnn's extractor exactly, float16 overflow included (see the module docstring).
        batch_size: Patches per forward pass.
        package: The musicnn package folder; None: the installed one (``musicnn_package``).

    Raises:
        TeacherError: If musicnn is not installed (the message gives ``INSTALL_COMMAND``), or lacks the
            model's checkpoint or tag list, or holds a checkpoint of another architecture.
        ValueError: For an unknown model name.
    """
    get_musicnn_spec(name)
    package = musicnn_package() if package is None else Path(package)
    tags = tag_names(name, package)
    folder = package / name
    if not folder.is_dir():
        raise TeacherError(f"{package}: musicnn has no {name} checkpoint (the {MUSICNN_VERSION} wheel ships "
                           f"{', '.join(TEACHERS)})")
    variables = read_checkpoint(folder)
    from msagg.models.musicnn import build_musicnn, load_tf1_weights

    model = build_musicnn(name)
    try:
        load_tf1_weights(model, variables)
    except ValueError as err:
        raise TeacherError(f"{folder}: {err}") from err
    logger.info("teacher %s: %d parameters from %s", name, model.count_params(), folder)
    return Teacher(name, tags, model, float16_log=float16_log, batch_size=batch_size)


@functools.lru_cache(maxsize=None)
def shared_teacher(name: str = SONG_TEACHER) -> Teacher:
    """``load_teacher(name)``, loaded once per process (extract and predict call it per batch of songs)."""
    return load_teacher(name)


def song_features(name: str, waves: Sequence[np.ndarray], sample_rate: int) -> np.ndarray:
    """The teacher's reference set ``name`` ("musicnn") of each song.

    Args:
        name: One of ``msagg.data.classic.TEACHER_SETS``.
        waves: float32 (num_samples,) mono songs; a song shorter than one 3-s patch is repeated to
            fill one, an empty one is one sample of silence.
        sample_rate: Hz of ``waves``.

    Returns:
        float32 (len(waves), ``MUSICNN_DIM``): per song, the means over its patches of the MTT
        tagger's ``SONG_KEYS`` outputs, concatenated.

    Raises:
        TeacherError: If musicnn is not installed (naming ``INSTALL_COMMAND``) or its files are not
            what msagg reads.
        ValueError: For an unknown set.
    """
    if name not in TEACHER_SETS:
        raise ValueError(f"unknown teacher feature set {name!r}; known: {', '.join(TEACHER_SETS)}")
    out = np.zeros((len(waves), MUSICNN_DIM), np.float32)
    if not len(waves):
        return out
    teacher = shared_teacher(SONG_TEACHER)
    for row, wave in enumerate(waves):
        wave = np.asarray(wave, dtype=np.float32)
        with warnings.catch_warnings():  # a song shorter than one STFT frame: librosa pads it, as intended
            warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
            outputs = teacher.features(wave if wave.size else np.zeros(1, np.float32), sample_rate, keys=SONG_KEYS)
        out[row] = np.concatenate([outputs[key].mean(axis=0) for key in SONG_KEYS])
    return out
