"""Pretrain stage: one SampleCNN per m^n scale, trained on random crops of an audio cache.

The config, its presets and the stage's steps are here (importing this module loads no backend, so
a bad config or a busy run folder is refused at once); the training loop is
``msagg.stages.training.fit``, which resumes a killed run to the same weights, history and best epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from msagg.data.atomic import remove_stale_temps, write_json
from msagg.data.formats.cache import AudioCache
from msagg.data.errors import ConfigError
from msagg.models import specs
from msagg.models.blocks import BLOCKS
from msagg.stages import quiet
from msagg.stages.checks import check_int, check_number
from msagg.stages.training import MIN_VAL_LOSS_IMPROVEMENT, PretrainError
from msagg.stages.training import augment as augment_lib
from msagg.stages.training import devices as devices_lib
from msagg.stages.runs.folder import OMIT_DEFAULT, OMIT_NONE, RunFolder, lock_scope
from msagg.stages.training.targets import TARGETS, DatasetTargets, TeacherTargets
from msagg.data.formats.teacher_labels import BOTH, FILE_NAME as TEACHER_LABELS_FILE, TeacherLabels
from msagg.stages.runs.upstream import open_upstream

__all__ = ["Config", "PRESETS", "BLOCKS", "PretrainError", "run"]

logger = logging.getLogger(__name__)

VOCABULARIES = ("MTT", "MSD", BOTH)
"""Values of ``Config.vocabulary`` (the teacher's tags to fit)."""
PRECISIONS = tuple(specs.PRECISIONS)
"""Values of ``Config.precision``: "float32", or "bf16" (Keras' mixed_bfloat16: float32 weights,
bfloat16 computation, float32 outputs)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """What the pretrain stage trains. Defaults are the authors' recipe.

    Attributes:
        cache: A prepare run folder (or its ``cache/`` folder, or an older run's ``cache.h5``).
        scales: Scale keys to train, e.g. ("3^8", "3^9"); "3x9" and "3**9" are normalized.
        width: Multiplier on every layer's filters (1.0 = the paper).
        block: Building block of the strided convolutions, one of ``BLOCKS``: "basic" (Lee et al.
            2017), "se" (squeeze-and-excitation), "res" (residual) or "rese" (residual with SE, the
            ReSE-2 block of Kim et al. 2018).
        multi: Kim et al.'s "multi" variant: the classifier head reads the last three blocks'
            pooled outputs concatenated, not only the last one.
        batch_size: Segments per training step: the global batch, split evenly over the devices
            (it must divide by their number), so one step sees the same batch whatever the device
            count, and the learning rate is unchanged.
        learning_rate: SGD learning rate of the first learning-rate stage.
        lr_decay: Factor on the learning rate from one stage to the next.
        num_lr_stages: Learning-rate stages (0.01 to 0.000016 with the defaults).
        patience: Epochs without a lower validation loss that end a stage.
        max_epochs_per_stage: Cap on the epochs of one stage (None: only patience ends it).
        steps_per_epoch: Training steps per epoch (None: one pass over the train split's
            segments at that scale, i.e. ceil(num_train_segments / batch_size)).
        val_max_tracks: Validate on at most this many valid tracks (a seeded subset; None: all).
        seed: Seed of weight initialization, dropout, crop sampling and augmentation.
        augment: Augment the training crops (never validation or test) with the transforms the
            ``augment_*`` keys set, each off at 0 (the paper did not augment: off by default).
        augment_gain_db: Random gain, uniform in +-augment_gain_db dB.
        augment_polarity: Probability of flipping a crop's sign.
        augment_noise_snr_db: (low, high): white noise at an SNR drawn in that range, dB (None: off).
        augment_noise_prob: Probability that a crop gets noise.
        augment_pitch_semitones: Pitch shift, uniform in +-augment_pitch_semitones semitones (at most
            12): a crop 2^(s/12) times the input length is resampled to it with soxr.
        augment_pitch_prob: Probability that a crop is pitch-shifted.
        augment_mixup_alpha: Mixup of crops within a batch, weight ~ Beta(alpha, alpha); labels are
            mixed with the same weight (soft targets).
        augment_mixup_prob: Probability that a crop is mixed with another.
        devices: Devices to train on: a count (1: one device, msagg as it always ran) or "all"
            (every accelerator, else every CPU device Keras lists). More than one trains data
            parallel through Keras' distribution API (``msagg.stages.training.devices``: JAX ``DataParallel``,
            TensorFlow ``MirroredStrategy``); results then differ from one device's by rounding
            on JAX, and on TensorFlow also by per-device batch-norm statistics and dropout masks.
            Left out of config.json and the hash at 1, so earlier run folders keep their hash.
        precision: "float32" (the paper) or "bf16": layers compute in bfloat16 with float32
            weights and float32 outputs (Keras' "mixed_bfloat16" policy); faster where the
            hardware has bfloat16 units. Left out of config.json and the hash at "float32".
        teacher_labels: A finished ``msagg teach`` run of this cache: the models fit the teacher's tag
            probabilities (soft targets, binary cross-entropy) instead of the cache's labels, which
            may then be absent (an ``unlabelled`` collection). None (default): the cache's labels.
        targets: With teacher labels, a crop's target: "aligned" (the teacher's answer for the time
            the crop covers: its 3-s patches weighted by their overlap) or "song" (the track's mean answer).
        vocabulary: With teacher labels, which tags: "MTT", "MSD" (one tagger's 50) or "both" (the
            union; a tag both predict is their mean).
        teacher_features: With teacher labels that hold the teacher's features (``msagg teach --set
            features=true``), the weight of fitting them too: a second, linear head beside the
            output layer regresses the teacher's standardized features of each crop (mean squared
            error, this weight; the tags' loss has weight 1). The head is dropped when a model is
            saved. 0 (default): tags only. Left out of config.json and the hash at 0.

    The ``augment_*`` values matter only when ``augment`` is true; ``augmentation()`` gives the
    ``msagg.stages.training.augment.Augment`` in force.
    """

    cache: str
    scales: tuple[str, ...] = specs.PAPER_SCALES
    width: float = 1.0
    block: str = "basic"
    multi: bool = False
    batch_size: int = 23
    learning_rate: float = 0.01
    lr_decay: float = 0.2
    num_lr_stages: int = 5
    patience: int = 3
    max_epochs_per_stage: int | None = None
    steps_per_epoch: int | None = None
    val_max_tracks: int | None = None
    seed: int = 0
    augment: bool = False
    augment_gain_db: float = 6.0
    augment_polarity: float = 0.5
    augment_noise_snr_db: tuple[float, float] | None = (10.0, 40.0)
    augment_noise_prob: float = 0.5
    augment_pitch_semitones: float = 2.0
    augment_pitch_prob: float = 0.5
    augment_mixup_alpha: float = 0.2
    augment_mixup_prob: float = 1.0
    devices: int | str = dataclasses.field(default=1, metadata={OMIT_DEFAULT: True})
    precision: str = dataclasses.field(default="float32", metadata={OMIT_DEFAULT: True})
    teacher_labels: str | None = dataclasses.field(default=None, metadata={OMIT_NONE: True})
    targets: str = dataclasses.field(default="aligned", metadata={OMIT_DEFAULT: True})
    vocabulary: str = dataclasses.field(default="both", metadata={OMIT_DEFAULT: True})
    teacher_features: float = dataclasses.field(default=0.0, metadata={OMIT_DEFAULT: True})

    def __post_init__(self):
        if isinstance(self.cache, os.PathLike):
            object.__setattr__(self, "cache", os.fspath(self.cache))
        if not isinstance(self.cache, str) or not self.cache:
            raise ConfigError(f"cache must be a prepare run folder, got {self.cache!r}")
        scales = (self.scales,) if isinstance(self.scales, str) else self.scales
        if not scales:
            raise ConfigError("scales must name at least one scale, got an empty list")
        try:
            normalized = tuple(specs.parse_scale(str(s)) for s in scales)
        except ValueError as err:
            raise ConfigError(f"scales: {err}") from None
        duplicates = sorted({s for s in normalized if normalized.count(s) > 1})
        if duplicates:
            raise ConfigError(f"scales lists {', '.join(duplicates)} more than once")
        object.__setattr__(self, "scales", normalized)
        check_number("width", self.width, low=0.0, low_open=True)
        if self.block not in BLOCKS:
            raise ConfigError(f"block must be one of {', '.join(BLOCKS)}, got {self.block!r}")
        if not isinstance(self.multi, bool):
            raise ConfigError(f"multi must be true or false, got {self.multi!r}")
        check_number("learning_rate", self.learning_rate, low=0.0, low_open=True)
        check_number("lr_decay", self.lr_decay, low=0.0, low_open=True, high=1.0)
        for name in ("batch_size", "num_lr_stages", "patience"):
            check_int(name, getattr(self, name), low=1)
        for name in ("max_epochs_per_stage", "steps_per_epoch", "val_max_tracks"):
            if getattr(self, name) is not None:
                check_int(name, getattr(self, name), low=1)
        check_int("seed", self.seed, low=0)
        if not isinstance(self.augment, bool):
            raise ConfigError(f"augment must be true or false, got {self.augment!r}")
        checked = augment_lib.from_fields(self)  # validates every augment_* key, switched on or not
        object.__setattr__(self, "augment_noise_snr_db", checked.noise_snr_db)  # a JSON list -> a tuple
        object.__setattr__(self, "devices", devices_lib.check_request(self.devices))
        if isinstance(self.devices, int):  # "all" is checked once the devices are known (run)
            devices_lib.check_batch(self.batch_size, self.devices)
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if isinstance(self.teacher_labels, os.PathLike):
            object.__setattr__(self, "teacher_labels", os.fspath(self.teacher_labels))
        if self.teacher_labels is not None and (not isinstance(self.teacher_labels, str) or not self.teacher_labels):
            raise ConfigError(f"teacher_labels must be a teach run folder, got {self.teacher_labels!r}")
        if self.targets not in TARGETS:
            raise ConfigError(f"targets must be one of {', '.join(TARGETS)}, got {self.targets!r}")
        if self.vocabulary not in VOCABULARIES:
            raise ConfigError(f"vocabulary must be one of {', '.join(VOCABULARIES)}, got {self.vocabulary!r}")
        check_number("teacher_features", self.teacher_features, low=0.0, low_open=False)
        if self.teacher_features and self.teacher_labels is None:
            raise ConfigError(f"teacher_features={self.teacher_features:g} needs teacher labels (--teacher-labels, a "
                              "msagg teach run made with --set features=true); --set teacher_features=0 trains "
                              "without them")

    def augmentation(self) -> augment_lib.Augment:
        """The augmentation of the training crops: the ``augment_*`` values, or none when ``augment`` is off."""
        return augment_lib.from_fields(self) if self.augment else augment_lib.Augment()


_DEMO = {
    "scales": ("3^8", "3^9", "4^6"),
    "width": 0.25,
    "learning_rate": 0.05,
    "num_lr_stages": 3,
    "patience": 3,
    "max_epochs_per_stage": 4,
    "steps_per_epoch": 40,
    "val_max_tracks": 60,
    # No augmentation: on ESC-10 (5 folds, this schedule) turning on all five transforms at their
    # defaults cost 9 points of accuracy on the all-scales features (0.792 -> 0.700, README), so
    # it stays off until a measured setting helps (--augment turns it on).
    "augment": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    # The authors' recipe for all eight scales at full width: days on a GPU.
    "paper": {"scales": specs.PAPER_SCALES, "width": 1.0, "augment": False},
    # Kim, Lee & Nam (2018), "Sample-level CNN architectures for music auto-tagging using raw
    # waveforms": the 3^9 model at full width with SE blocks (SE-multi) or residual SE blocks
    # (ReSE-2-multi, their best on MagnaTagATune), the head on the last three blocks, same recipe.
    "paper-se": {"scales": ("3^9",), "width": 1.0, "block": "se", "multi": True, "augment": False},
    "paper-rese": {"scales": ("3^9",), "width": 1.0, "block": "rese", "multi": True, "augment": False},
    # Three quarter-width scales (two at m=3, so the multi-scale 3^8+3^9 combination exists, and
    # one at m=4), three learning-rate stages of at most 4 epochs of 40 steps: about 4-5 minutes on
    # 2 CPU cores for 300 synth tracks. So short a schedule learns little at lr 0.01; 0.05 learned
    # the most of 0.01-0.2 on synth-tags (0.1 was as good for 3^8 and 4^6 but unstable for 3^9).
    "demo": _DEMO,
    # demo with ReSE-2-multi models (Kim et al. 2018) instead of the basic blocks.
    "demo-rese": {**_DEMO, "block": "rese", "multi": True},
    # `make pretrain-general` (the general family, ``msagg.models.pretrained``): two scales, 3^8 and 4^6, at
    # half width on about 20 hours of real music (Debian's game soundtracks, an `unlabelled` collection)
    # labelled by musicnn's MTT and MSD taggers (`msagg teach --set features=true`): soft, time-aligned
    # targets over both vocabularies, and the MTT tagger's own features with weight 1; lr 0.03, three lr
    # stages of at most 4 epochs of 270 steps, validation on 16 tracks: about 30 min on 2 CPU cores.
    "general": {**_DEMO, "scales": ("3^8", "4^6"), "width": 0.5, "learning_rate": 0.03, "max_epochs_per_stage": 4,
                "steps_per_epoch": 270, "val_max_tracks": 16, "augment": False, "teacher_features": 1.0},
    # `make pretrain-general-gm`: the same scales on the 2000-track rendered synth-gm-tags corpus with its own
    # tags, three lr stages of at most 8 epochs of 150 steps: about an hour on 2 CPU cores.
    "general-gm": {**_DEMO, "max_epochs_per_stage": 8, "steps_per_epoch": 150, "val_max_tracks": 100,
                   "augment": False},
    # Seconds: the tiny test scales, one short epoch per stage.
    "tiny": {
        "scales": ("3^2", "4^2"),
        "width": 0.125,
        "batch_size": 4,
        "num_lr_stages": 2,
        "patience": 1,
        "max_epochs_per_stage": 1,
        "steps_per_epoch": 3,
        "val_max_tracks": 6,
    },
}


@lock_scope
def run(
    config: Config,
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
    eval_batch_size: int = 32,
    tensorboard: bool = True,
    on_epoch_end: Callable[[str, dict], None] | None = None,
) -> Path:
    """Pretrains one SampleCNN per scale of ``config``.

    Args:
        config: The stage config.
        out_dir: The run folder (``summary.json``; per scale ``<scale>/`` with model.keras,
            history.csv, curves.png (redrawn after every epoch), metrics.json, tensorboard/).
        overwrite: Replace a folder that holds another config (or redo a finished one).
        progress: Keras progress bars per epoch.
        eval_batch_size: Segments per forward pass in validation and test.
        tensorboard: Write TensorBoard scalars (when TensorFlow is importable).
        on_epoch_end: Called as ``on_epoch_end(scale, history_row)`` after each epoch's
            checkpoint is committed (a hook for tests and tools; an exception stops the run, which
            then resumes from that checkpoint exactly as if it had not stopped).

    Returns:
        ``out_dir`` as a Path.

    Raises:
        DevicesError: Before anything is written, if ``config.devices`` asks for more devices than
            this machine has (naming those it has), or for several on a backend without data
            parallelism.
        ConfigError: If ``devices="all"`` finds a device count that does not divide ``batch_size``.
        RunConflictError: If ``out_dir`` holds another config and ``overwrite`` is False.
        RunFolderBusy: If another process is running a stage in ``out_dir``.
        CacheError: If the cache is missing or of an unknown schema.
        PretrainError: If the cache's train split holds fewer than two classes (classes task; before
            anything is written), the cache lacks train or valid tracks, or a scale's training diverged.
    """
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir, "pretrain", config).lock()
    if folder.done and not overwrite:
        logger.info("%s: pretrain already done with config %s; nothing to do", out_dir, folder.hash)
        return out_dir
    prepared = open_upstream(config.cache, "prepare")
    upstream = {"cache": prepared}
    teacher = None  # the teacher's targets, read (and checked against the cache) once, before anything is written
    with AudioCache(prepared.file) as cache:
        prepared.check_file(cache.path, cache.config_hash)
        if config.teacher_labels is None:
            check_labels(config.cache, cache)
        else:
            upstream["teacher_labels"] = open_upstream(config.teacher_labels, "teach")
            teacher = _teacher_targets(config, upstream["teacher_labels"], cache)
    quiet.import_backend()  # every check above runs without the backend; the devices and models need it
    from msagg.stages.training import fit

    devices = fit.resolve_devices(config)
    folder.runtime = {"devices": devices.describe()}
    if not folder.start(overwrite, upstream=upstream):
        return out_dir
    remove_stale_temps(out_dir)  # temps of atomic writes (model.keras, history.csv, ...) a killed run left
    with AudioCache(prepared.file) as cache:
        prepared.check_file(cache.path, cache.config_hash)
        logger.info("pretrain on %s: %d tracks, task %s, %d labels, %d Hz", config.cache, cache.num_tracks,
                    cache.task, len(cache.label_names), cache.sample_rate)
        targets = DatasetTargets(cache) if teacher is None else teacher
        if teacher is not None:
            logger.info("pretrain on teacher labels %s: %d %s tags, %s targets", config.teacher_labels,
                        len(targets.label_names), config.vocabulary, config.targets)
        summary = fit.train_scales(config, cache, out_dir, devices=devices, progress=progress,
                                   eval_batch_size=eval_batch_size, tensorboard=tensorboard, on_epoch_end=on_epoch_end,
                                   targets=targets)
    write_json(out_dir / "summary.json", summary)
    not_learned = [scale for scale, row in summary.items() if row.get("learned") is False]
    if not_learned:
        logger.warning("%s: %s did not learn (best validation loss less than %.0f%% below the first epoch's); "
                       "summary.json flags them", out_dir, ", ".join(not_learned), 100 * MIN_VAL_LOSS_IMPROVEMENT)
    folder.finish({"scales": list(config.scales), "devices": devices.count, "not_learned": not_learned})
    return out_dir


def _teacher_targets(config: Config, teach_run, cache: AudioCache) -> TeacherTargets:
    """The teacher labels of ``teach_run`` as targets (checked to label ``cache``)."""
    return TeacherTargets(TeacherLabels(teach_run.folder / TEACHER_LABELS_FILE), cache, config.vocabulary,
                          config.targets, features=config.teacher_features > 0)


def check_labels(cache_name: str, cache: AudioCache) -> None:
    """Refuses a cache whose train split leaves nothing to learn; warns of labels it never shows.

    A classes task needs tracks of at least two classes in train: with one, every output is that
    class, the loss is 0 from the first step and the model learns nothing. A label (tag or class)
    no train track carries cannot be learned either, but the others can: a warning naming them.

    Raises:
        PretrainError: One line naming the cache and how many classes its train split holds.
    """
    if not cache.label_names:
        raise PretrainError(f"{cache_name}: the cache holds no labels (an unlabelled collection); label it with a "
                            "teacher (msagg teach --cache ... --out TEACH) and pretrain with --teacher-labels TEACH")
    labels = np.asarray(cache.labels)[np.asarray(cache.indices("train"), dtype=np.int64)]
    present = labels.reshape(-1, len(cache.label_names)).any(axis=0)
    names = [str(n) for n in cache.label_names]
    if cache.task == "classes" and present.sum() < 2:
        count, held = int(present.sum()), ", ".join(n for n, p in zip(names, present) if p)
        raise PretrainError(f"{cache_name}: its train split holds tracks of {count} class{'' if count == 1 else 'es'}"
                            f"{f' ({held})' if held else ''}, of {len(names)} in the cache; a classifier needs at "
                            "least 2 classes to learn anything (prepare a dataset with two or more classes)")
    if not present.all():
        missing = [n for n, p in zip(names, present) if not p]
        what = "tags" if cache.task == "tags" else "classes"
        logger.warning("%s: %d of %d %s never occur in the train split, so no model learns them: %s", cache_name,
                       len(missing), len(names), what, ", ".join(missing))
