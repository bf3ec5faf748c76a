"""Audio file I/O: decode any soundfile format to a mono float32 waveform at the model rate."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from data.errors import MsaggError
from data.tracklist import escape_name

logger = logging.getLogger(__name__)


class AudioError(MsaggError):
    """An audio file that cannot be used; the message names the file and the reason.

    Attributes:
        path: The file, as given (as Python holds its name: it may hold surrogates).
        reason: Why it cannot be used, e.g. "empty file (0 bytes)".

    The message shows the path through ``data.tracklist.escape_name``, so it can always be printed
    or written as UTF-8.
    """

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fsdecode(path)
        self.reason = reason
        super().__init__(f"{escape_name(self.path)}: {reason}")

    def __reduce__(self):
        # The default pickling passes only the message to __init__; errors cross process pools.
        return (type(self), (self.path, self.reason))


def load(path: str | os.PathLike, sample_rate: int) -> np.ndarray:
    """Decodes an audio file, mixes it to mono and resamples it.

    Any name the file system holds is read: non-UTF-8 bytes (``str`` from ``os.fsdecode`` or
    ``bytes``), newlines, leading dashes, spaces.

    Args:
        path: A file libsndfile can read (wav, flac, ogg, mp3, au, ...).
        sample_rate: The rate of the result, Hz.

    Returns:
        float32 (num_samples,) waveform at ``sample_rate``; the mean of the file's channels,
        resampled with soxr (quality "HQ") when the file has another rate.

    Raises:
        AudioError: If the file is missing, cannot be decoded (corrupt or unsupported), holds no
            samples, or holds samples that are not finite.
        ValueError: If ``sample_rate`` is not a positive integer.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    path = Path(os.fsdecode(path))
    if not path.exists():
        raise AudioError(path, "no such file")
    if not path.is_file():
        raise AudioError(path, "not a file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    try:
        # soundfile encodes a str path strictly, which fails on a name that is not UTF-8.
        with sf.SoundFile(_native(path)) as f:
            file_rate = f.samplerate
            wave = f.read(dtype="float32", always_2d=True)  # (num_samples, num_channels)
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError) as err:
        reason = f"cannot decode: corrupt or unsupported audio (libsndfile: {_first_line(err)})"
        raise AudioError(path, reason) from None
    if wave.shape[0] == 0:
        raise AudioError(path, "no audio samples (0 frames)")
    if not np.isfinite(wave).all():
        raise AudioError(path, "holds non-finite samples (NaN or infinity)")
    wave = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    if file_rate != sample_rate:
        wave = soxr.resample(wave, file_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def write(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> Path:
    """Writes a waveform to an audio file whose format follows the file name ending.

    Args:
        path: Destination; ``.wav``, ``.flac``, ``.ogg`` (Vorbis), ``.mp3``, ``.au``, ...
        wave: float (num_samples,) mono or (num_samples, num_channels), in [-1, 1].
        sample_rate: Hz.

    Returns:
        ``path`` as a Path.
    """
    path = Path(os.fsdecode(path))
    sf.write(_native(path), np.asarray(wave, dtype=np.float32), sample_rate)
    return path


def _native(path: Path) -> str | bytes:
    """The path as libsndfile takes it: bytes on POSIX (any name), str on Windows (UTF-16 names)."""
    return str(path) if os.name == "nt" else os.fsencode(path)



def _first_line(err: BaseException) -> str:
    # libsndfile's own text, without soundfile's "Error opening '<path>'" prefix (the path is ours).
    text = str(getattr(err, "error_string", "") or err).strip() or type(err).__name__
    return text.splitlines()[0]
