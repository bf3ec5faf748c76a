"""Audio file I/O: decode any soundfile format to a mono float32 waveform at the model rate."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import soundfile as sf
import soxr

from msagg.data.errors import MsaggError
from msagg.data.names import escape_name

logger = logging.getLogger(__name__)

SAMPLE_BYTES = {"PCM_S8": 1, "PCM_U8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4,
                "FLOAT": 4, "DOUBLE": 8}
"""Bytes per sample of the uncompressed encodings whose frame count the header fixes exactly."""
TRUNCATION_TOLERANCE = 0.001
"""Fraction of the announced frames a file may lack before it counts as truncated. Some writers
put a data size a header's length too large (36 bytes); no cut-off copy is that close to whole."""
BLOCK_FRAMES = 1 << 16
"""Frames ``stream`` decodes at a time (1.5 s at 44.1 kHz)."""
DECODE_ERRORS = (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError)
"""What soundfile raises for a file it cannot open or decode."""


class AudioError(MsaggError):
    """An audio file that cannot be used; the message names the file and the reason.

    Attributes:
        path: The file, as given (as Python holds its name: it may hold surrogates).
        reason: Why it cannot be used, e.g. "empty file (0 bytes)".

    The message shows the path through ``msagg.data.names.escape_name``, so it can always be printed
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

    A truncated file (a WAV, AIFF or AU whose header announces more frames than the file holds,
    as a cut-off download or copy leaves) is refused with the reason "truncated: 245 of 220500
    frames (...)", not kept as the fragment there is: its labels describe the whole recording, a
    fragment of it trains and scores as if it were whole, and the fix (copy the file again) is
    the user's, so prepare lists it in ``skipped.csv`` and ``--strict`` stops on it. Compressed
    formats carry no exact count: a cut FLAC fails to decode, a cut Ogg or MP3 reads as shorter.

    Args:
        path: A file libsndfile can read (wav, flac, ogg, mp3, au, ...).
        sample_rate: The rate of the result, Hz.

    Returns:
        float32 (num_samples,) waveform at ``sample_rate``; the mean of the file's channels,
        resampled with soxr (quality "HQ") when the file has another rate.

    Raises:
        AudioError: If the file is missing, cannot be decoded (corrupt or unsupported), is
            truncated, holds no samples, or holds samples that are not finite.
        ValueError: If ``sample_rate`` is not a positive integer.
    """
    path = _readable(path, sample_rate)
    try:
        # soundfile encodes a str path strictly, which fails on a name that is not UTF-8.
        with sf.SoundFile(_native(path)) as f:
            file_rate = f.samplerate
            wave = f.read(dtype="float32", always_2d=True)  # (num_samples, num_channels)
            announced = _announced_frames(path, f.format, f.subtype, f.channels)
    except DECODE_ERRORS as err:
        raise _undecodable(path, err) from None
    _check_length(path, wave.shape[0], announced)
    if not np.isfinite(wave).all():
        raise AudioError(path, NON_FINITE)
    wave = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    if file_rate != sample_rate:
        wave = soxr.resample(wave, file_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)


def stream(path: str | os.PathLike, sample_rate: int, *, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Decodes an audio file block by block: ``load``'s waveform, never held whole.

    The blocks joined are ``load(path, sample_rate)`` (soxr resamples a stream as it resamples
    the whole), so a song of any length is read in memory that does not grow with it.

    Args:
        path: A file libsndfile can read (as ``load``).
        sample_rate: The rate of the blocks, Hz.
        block_frames: Frames of the file decoded at a time.

    Yields:
        float32 (n,) mono blocks at ``sample_rate``, in order, none empty.

    Raises:
        AudioError: For the files ``load`` refuses, each when it is found: a file that cannot be
            opened before the first block, non-finite samples at their block, a truncated file
            or one of 0 frames after the last.
        ValueError: If ``sample_rate`` is not a positive integer.
    """
    path = _readable(path, sample_rate)
    try:
        f = sf.SoundFile(_native(path))
    except DECODE_ERRORS as err:
        raise _undecodable(path, err) from None
    with f:
        announced = _announced_frames(path, f.format, f.subtype, f.channels)
        resampler = (soxr.ResampleStream(f.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
                     if f.samplerate != sample_rate else None)
        frames, last = 0, False
        while not last:
            try:
                block = f.read(block_frames, dtype="float32", always_2d=True)  # (n, num_channels)
            except DECODE_ERRORS as err:
                raise _undecodable(path, err) from None
            frames += block.shape[0]
            last = block.shape[0] < block_frames
            if not np.isfinite(block).all():
                raise AudioError(path, NON_FINITE)
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if resampler is not None and frames:
                mono = resampler.resample_chunk(np.ascontiguousarray(mono), last=last)
            if mono.shape[0]:
                yield np.ascontiguousarray(mono, dtype=np.float32)
    _check_length(path, frames, announced)


NON_FINITE = "holds non-finite samples (NaN or infinity)"


def _readable(path: str | os.PathLike, sample_rate: int) -> Path:
    """The path as a Path, once the rate is valid and the path names a file that is not empty."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")
    path = Path(os.fsdecode(path))
    if not path.exists():
        raise AudioError(path, "no such file")
    if not path.is_file():
        raise AudioError(path, "not a file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")
    return path


def _undecodable(path: Path, err: BaseException) -> AudioError:
    return AudioError(path, f"cannot decode: corrupt or unsupported audio ({_decode_detail(err)})")


def _check_length(path: Path, frames: int, announced: int | None) -> None:
    """Refuses a truncated file (fewer frames than its header announces) and one of 0 frames."""
    if announced is not None and frames < announced * (1 - TRUNCATION_TOLERANCE):
        raise AudioError(path, f"truncated: {frames} of {announced} frames (the file ends before "
                               "the audio its header announces; copy it again)")
    if frames == 0:
        raise AudioError(path, "no audio samples (0 frames)")


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


def duration(path: str | os.PathLike) -> float | None:
    """Seconds of audio a file's header announces, without decoding it; None if it cannot be read."""
    try:
        info = sf.info(_native(Path(os.fsdecode(path))))
    except (sf.SoundFileError, RuntimeError, OSError, ValueError, TypeError):
        return None
    return float(info.frames) / info.samplerate if info.samplerate > 0 and info.frames > 0 else None


def _native(path: Path) -> str | bytes:
    """The path as libsndfile takes it: bytes on POSIX (any name), str on Windows (UTF-16 names)."""
    return str(path) if os.name == "nt" else os.fsencode(path)


def _announced_frames(path: Path, file_format: str, subtype: str, channels: int) -> int | None:
    """Frames the header of an uncompressed WAV, AIFF or AU file announces.

    libsndfile counts the frames the file holds, not those its header announces, so the header is
    read here.

    Returns:
        The count, or None for other formats and encodings, and for headers that leave it open
        (a streaming writer's 0 or 0xFFFFFFFF) or cannot be parsed (libsndfile judged those).
    """
    if subtype not in SAMPLE_BYTES or file_format not in ("WAV", "WAVEX", "AIFF", "AU") or channels < 1:
        return None
    with open(path, "rb") as fh:
        return _parse_announced(fh, file_format, SAMPLE_BYTES[subtype] * channels)


def _parse_announced(fh: BinaryIO, file_format: str, frame_bytes: int) -> int | None:
    try:
        head = fh.read(12)
        if file_format in ("WAV", "WAVEX") and head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
            size = _chunk_size(fh, b"data", "<" if head[:4] == b"RIFF" else ">")
            return None if size in (None, 0, 0xFFFFFFFF) else size // frame_bytes
        if file_format == "AIFF" and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
            if _chunk_size(fh, b"COMM", ">") is None:
                return None
            _, frames = struct.unpack(">hI", fh.read(6))  # numChannels, numSampleFrames
            return frames or None
        if file_format == "AU" and head[:4] == b".snd":
            size = struct.unpack(">I", head[8:12])[0]  # magic, data offset, data size
            return None if size in (0, 0xFFFFFFFF) else size // frame_bytes
    except (OSError, struct.error):
        return None
    return None


def _chunk_size(fh: BinaryIO, chunk_id: bytes, order: str) -> int | None:
    """Walks the chunks after a 12-byte RIFF/FORM header to ``chunk_id``; its size, the file at its data."""
    while True:
        head = fh.read(8)
        if len(head) < 8:
            return None
        size = struct.unpack(order + "I", head[4:])[0]
        if head[:4] == chunk_id:
            return size
        fh.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to an even length


MISLEADING = ("does not exist", "not a regular file")
"""libsndfile's words for a file it cannot open, which it also says of an existing file whose
contents its MP3 decoder rejects (random bytes named ``x.mp3``)."""


def _decode_detail(err: BaseException) -> str:
    """Why libsndfile refused an existing file, in its words unless they would say the file is missing."""
    text = _first_line(err)
    if any(words in text.lower() for words in MISLEADING):
        return "libsndfile found no audio stream it can read in this file"
    return f"libsndfile: {text}"


def _first_line(err: BaseException) -> str:
    # libsndfile's own text, without soundfile's "Error opening '<path>'" prefix (the path is ours).
    text = str(getattr(err, "error_string", "") or err).strip() or type(err).__name__
    return text.splitlines()[0]
