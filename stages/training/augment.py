"""Waveform augmentation of pretraining crops: gain, polarity, noise, pitch shift and mixup, numpy only.

Only numpy and soxr here, no ``tf.*``: the training input feeds the TensorFlow and the JAX backends.
Every random draw comes from the ``np.random.Generator`` passed in, so a batch is a function of
that generator's seed (``msagg.stages.training.crops`` seeds one per (seed, epoch, batch index)).

The order within a batch: pitch shift (when the crop is read: ``read_length``, ``resample_to``),
then gain, polarity, noise and mixup (``augment_batch``).
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
import soxr

from msagg.data.errors import ConfigError

__all__ = ["Augment", "FIELDS", "augment_batch", "from_fields", "pitch_semitones", "read_length", "resample_to"]

MAX_PITCH_SEMITONES = 12.0
"""An octave: a larger shift reads crops over twice (or under half) the input length."""

RESAMPLE_QUALITY = "HQ"
"""soxr's quality for the pitch shift, its default (per 59049-sample crop on one CPU core: HQ 0.64 ms,
LQ 0.46 ms; QQ, cubic interpolation without an anti-aliasing filter, 0.26 ms)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Augment:
    """Which augmentations a training crop gets, and their ranges. The defaults change nothing.

    Attributes:
        gain_db: Each crop is scaled by a gain drawn uniformly in [-gain_db, +gain_db] dB (0: off).
        polarity: Probability of flipping a crop's sign (0: off).
        noise_snr_db: (low, high): white Gaussian noise is added at an SNR drawn uniformly in that
            range, in dB relative to the crop's own mean power (None: off). A silent crop stays silent.
        noise_prob: Probability that a crop gets noise (when ``noise_snr_db`` is set).
        pitch_semitones: Each crop is shifted by a number of semitones drawn uniformly in
            [-pitch_semitones, +pitch_semitones] (0: off, at most 12): a crop of
            ``round(input_length * 2 ** (s / 12))`` samples is read from the track and resampled to
            ``input_length`` with soxr, so it also plays 2 ** (s / 12) times faster.
        pitch_prob: Probability that a crop is pitch-shifted (when ``pitch_semitones`` > 0).
        mixup_alpha: Mixup (Zhang et al. 2018): a crop is replaced by lam * itself + (1 - lam) * another
            crop of the batch, lam ~ Beta(mixup_alpha, mixup_alpha), and its labels likewise (0: off).
        mixup_prob: Probability that a crop is mixed (when ``mixup_alpha`` > 0).

    Raises:
        ConfigError: For a value out of range; the message starts with the field's name.
    """

    gain_db: float = 0.0
    polarity: float = 0.0
    noise_snr_db: tuple[float, float] | None = None
    noise_prob: float = 1.0
    pitch_semitones: float = 0.0
    pitch_prob: float = 1.0
    mixup_alpha: float = 0.0
    mixup_prob: float = 1.0

    def __post_init__(self):
        _check_range("gain_db", self.gain_db, 0.0, None)
        _check_range("pitch_semitones", self.pitch_semitones, 0.0, MAX_PITCH_SEMITONES)
        _check_range("mixup_alpha", self.mixup_alpha, 0.0, None)
        for name in ("polarity", "noise_prob", "pitch_prob", "mixup_prob"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        snr = self.noise_snr_db
        if snr is not None:
            if isinstance(snr, (str, bytes)) or not isinstance(snr, (tuple, list)) or len(snr) != 2:
                raise ConfigError(f"noise_snr_db must be a (low, high) pair of dB values or None, got {snr!r}")
            for value in snr:
                if not _is_real(value):
                    raise ConfigError(f"noise_snr_db must hold two finite numbers, got {snr!r}")
            if snr[0] > snr[1]:
                raise ConfigError(f"noise_snr_db must be (low, high) with low <= high, got {snr!r}")
            object.__setattr__(self, "noise_snr_db", (float(snr[0]), float(snr[1])))

    @property
    def gain(self) -> bool:
        """Whether the gain is on."""
        return self.gain_db > 0

    @property
    def noise(self) -> bool:
        """Whether the noise is on."""
        return self.noise_snr_db is not None and self.noise_prob > 0

    @property
    def pitch(self) -> bool:
        """Whether the pitch shift is on."""
        return self.pitch_semitones > 0 and self.pitch_prob > 0

    @property
    def mixup(self) -> bool:
        """Whether the mixup is on."""
        return self.mixup_alpha > 0 and self.mixup_prob > 0

    @property
    def active(self) -> bool:
        """Whether any transform is on (False: crops pass unchanged and no random number is drawn)."""
        return self.gain or self.polarity > 0 or self.noise or self.pitch or self.mixup

    def describe(self) -> str:
        """One line naming the transforms that are on, e.g. "gain +-6 dB, polarity p=0.5"."""
        parts = []
        if self.gain:
            parts.append(f"gain +-{self.gain_db:g} dB")
        if self.polarity > 0:
            parts.append(f"polarity p={self.polarity:g}")
        if self.noise:
            low, high = self.noise_snr_db
            parts.append(f"noise {low:g}-{high:g} dB SNR p={self.noise_prob:g}")
        if self.pitch:
            parts.append(f"pitch +-{self.pitch_semitones:g} semitones p={self.pitch_prob:g}")
        if self.mixup:
            parts.append(f"mixup alpha={self.mixup_alpha:g} p={self.mixup_prob:g}")
        return ", ".join(parts) or "none"


FIELDS = tuple(f.name for f in dataclasses.fields(Augment))
"""Augment's field names (a stage config holds each as ``augment_<name>``)."""


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_range(name: str, value: Any, low: float, high: float | None) -> None:
    if not _is_real(value) or value < low or (high is not None and value > high):
        bound = f"in [{low:g}, {high:g}]" if high is not None else f">= {low:g}"
        raise ConfigError(f"{name} must be a number {bound}, got {value!r}")


def from_fields(source: Any, prefix: str = "augment_") -> Augment:
    """The Augment whose fields a config holds as ``<prefix><field>`` attributes.

    Raises:
        ConfigError: For a bad value, naming the config's key (e.g. "augment_gain_db must be ...").
    """
    try:
        return Augment(**{name: getattr(source, prefix + name) for name in FIELDS})
    except ConfigError as err:
        raise ConfigError(f"{prefix}{err}") from None


# --- pitch shift: applied where a crop is read ---------------------------------------------------


def pitch_semitones(augment: Augment, batch_size: int, rng: np.random.Generator) -> np.ndarray | None:
    """Per-crop pitch shifts of a batch, in semitones (0 for crops left alone); None when pitch is off.

    Returns:
        float64 (batch_size,) or None.
    """
    if not augment.pitch:
        return None
    shifted = rng.random(batch_size) < augment.pitch_prob
    semitones = rng.uniform(-augment.pitch_semitones, augment.pitch_semitones, size=batch_size)
    return np.where(shifted, semitones, 0.0)


def read_length(input_length: int, semitones: float) -> int:
    """Samples to read for a crop shifted by ``semitones`` that ends up ``input_length`` samples long."""
    return max(1, int(round(input_length * 2.0 ** (semitones / 12.0))))


def resample_to(crop: np.ndarray, length: int) -> np.ndarray:
    """Resamples a crop to exactly ``length`` samples (with soxr), which shifts its pitch.

    Args:
        crop: float32 (num_samples,) waveform.
        length: Output samples; every frequency is multiplied by ``num_samples / length``.

    Returns:
        float32 (length,).
    """
    crop = np.asarray(crop, dtype=np.float32)
    if crop.size == length:
        return crop
    out = soxr.resample(crop, crop.size, length, quality=RESAMPLE_QUALITY)
    if out.size != length:  # soxr rounds the output length; fix it to the sample
        out = out[:length] if out.size > length else np.pad(out, (0, length - out.size))
    return np.asarray(out, dtype=np.float32)


# --- the batch transforms ------------------------------------------------------------------------


def augment_batch(x: np.ndarray, y: np.ndarray, augment: Augment, rng: np.random.Generator, *,
                  copy: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Applies gain, polarity, noise and mixup (those that are on, in that order) to a batch.

    Mixup mixes labels with the same weight as the audio, for tags and classes alike: a crop that
    is lam of track 1 and 1 - lam of track 2 gets labels lam * y1 + (1 - lam) * y2 (soft targets;
    for classes they still sum to 1). For tags this, rather than the union max(y1, y2), keeps the
    loss honest: binary cross-entropy is linear in its target, so the mixed crop's loss is lam times
    track 1's plus 1 - lam times track 2's, whereas the union would claim a tag heard at a weight of
    0.05 as fully present.

    Args:
        x: float32 (batch, num_samples) crops.
        y: float32 (batch, num_labels) labels (multi-hot or one-hot).
        augment: What to apply.
        rng: The source of every random draw (none is drawn for a transform that is off).
        copy: Leave ``x`` and ``y`` as they are (False: work in place on them, which saves the
            copies; the training input passes its own fresh batch).

    Returns:
        (x, y): float32 arrays of the same shapes (the inputs themselves when nothing is on).
    """
    if not (augment.gain or augment.polarity > 0 or augment.noise or augment.mixup):
        return x, y
    # In place throughout: temporaries of a whole batch (5 MB at 3^9) cost more than the arithmetic.
    x = np.array(x, dtype=np.float32, copy=copy)
    y = np.array(y, dtype=np.float32, copy=copy)
    num, length = x.shape
    if augment.gain or augment.polarity > 0:
        factor = np.ones(num)
        if augment.gain:
            factor *= 10.0 ** (rng.uniform(-augment.gain_db, augment.gain_db, size=num) / 20.0)
        if augment.polarity > 0:
            factor[rng.random(num) < augment.polarity] *= -1.0
        x *= factor.astype(np.float32)[:, None]
    if augment.noise:
        rows = np.flatnonzero(rng.random(num) < augment.noise_prob)
        snr_db = rng.uniform(*augment.noise_snr_db, size=rows.size)
        noise = np.empty(length, dtype=np.float32)
        for row, snr in zip(rows, snr_db):
            power = float(np.dot(x[row], x[row])) / length
            rng.standard_normal(dtype=np.float32, out=noise)
            noise *= np.float32(math.sqrt(power / 10.0 ** (snr / 10.0)))
            x[row] += noise
    if augment.mixup:
        lam = rng.beta(augment.mixup_alpha, augment.mixup_alpha, size=num)
        lam = np.where(rng.random(num) < augment.mixup_prob, lam, 1.0).astype(np.float32)[:, None]
        partner = rng.permutation(num)
        x_partner, y_partner = x[partner], y[partner]
        x *= lam
        x_partner *= 1.0 - lam
        x += x_partner
        y *= lam
        y += (1.0 - lam) * y_partner
    return x, y
