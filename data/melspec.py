"""musicnn's log-mel front end (Pons & Serra 2019), computed as its extractor computes it, and its 3-s patches.

musicnn's ``extractor.batch_data`` loads audio at 16 kHz, takes librosa's power mel spectrogram
(512-point FFT, hop 256, 96 Slaney mel bands), casts it to float16 and compresses it with
``log10(10000 x + 1)`` *in float16*, then cuts the frames into patches of 187 (3 s) with a hop of
187 (no overlap), dropping the frames after the last whole patch. ``log_mel`` repeats every step,
including the float16 arithmetic, so the port sees bit for bit the input the original network sees.

The float16 step has a consequence the original never shows: a mel band whose power exceeds 6.55
(65504 / 10000; a low partial of amplitude above about 0.13, -17 dBFS, is enough) overflows to
``inf``, and the released taggers then answer one and the same taggram for every patch holding such
a band, whatever it sounds like (tests/test_musicnn.py shows it). The checkpoints' input
normalisation statistics are finite, so the taggers never saw an ``inf`` in training.
``float16_log=False`` keeps the float16 rounding of the mel power but takes the logarithm in
float32: no overflow, and within float16's rounding of musicnn's values where nothing overflows.

No Keras here; librosa is imported on first use.
"""

from __future__ import annotations

import warnings

import numpy as np

SAMPLE_RATE = 16000
"""Hz, musicnn's rate."""
N_FFT = 512
HOP_LENGTH = 256
N_MELS = 96
PATCH_SEC = 3.0
"""The length the taggers were trained on."""
LOG_SCALE = 10000.0


def seconds_to_frames(seconds: float) -> int:
    """Frames whose centres fall in ``seconds`` from the start, as ``librosa.time_to_frames`` counts them.

    musicnn sizes a patch as ``seconds_to_frames(length) + 1`` (3 s: 187 frames) and its overlap
    option as ``seconds_to_frames(overlap)`` (1 s: 61 frames).
    """
    samples = int(seconds * SAMPLE_RATE)
    return (samples - N_FFT // 2) // HOP_LENGTH


PATCH_FRAMES = seconds_to_frames(PATCH_SEC) + 1
"""187: frames in one 3-s patch."""


def log_mel(wave: np.ndarray, sample_rate: int = SAMPLE_RATE, *, float16_log: bool = True) -> np.ndarray:
    """musicnn's input representation of a whole recording.

    Args:
        wave: float32 (num_samples,) mono audio in [-1, 1] (as ``msagg.data.audio.load`` or
            ``librosa.load`` give it).
        sample_rate: Hz of ``wave``; another rate than 16 kHz is resampled with soxr's HQ
            quality, as ``librosa.load(..., sr=16000)`` does.
        float16_log: Take the logarithm in float16, exactly as musicnn's extractor does (``inf``
            where the scaled power overflows, see the module docstring); False: in float32.

    Returns:
        float32 (num_frames, 96): ``log10(10000 mel + 1)`` of the float16-rounded mel power, one
        row per frame (centred frames: num_frames = 1 + num_samples // 256 at 16 kHz).

    Raises:
        ValueError: If ``wave`` is not one-dimensional or ``sample_rate`` is not positive.
    """
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"wave must be one-dimensional (num_samples,), got shape {wave.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    if sample_rate != SAMPLE_RATE:
        import soxr

        wave = np.ascontiguousarray(soxr.resample(wave, sample_rate, SAMPLE_RATE, quality="HQ"), dtype=np.float32)
    # pad_mode named: librosa 0.10 changed its default from "reflect" to "constant" (the extractor
    # names none, so today it pads with zeros; the 2019 release padded by reflection: first and last frame).
    mel = librosa.feature.melspectrogram(y=wave, sr=SAMPLE_RATE, hop_length=HOP_LENGTH, n_fft=N_FFT,
                                         n_mels=N_MELS, pad_mode="constant").T
    mel = mel.astype(np.float16)
    if not float16_log:
        return np.log10(np.float32(LOG_SCALE) * mel.astype(np.float32) + np.float32(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # float16 overflow: inf, as in the original
        return np.log10(np.float16(LOG_SCALE) * mel + np.float16(1)).astype(np.float32)


def patches(frames: np.ndarray, num_frames: int = PATCH_FRAMES, hop_frames: int | None = None, *,
            pad_short: bool = False) -> np.ndarray:
    """Cuts a log-mel spectrogram into patches, as musicnn's extractor batches it.

    Patches start at frames 0, hop, 2 hop, ... while a whole patch fits; the frames after the last
    whole patch are dropped.

    Args:
        frames: (num_frames_total, num_bands) spectrogram, e.g. from ``log_mel``.
        num_frames: Frames per patch (187 = 3 s).
        hop_frames: Frames between patch starts; None: ``num_frames`` (no overlap, musicnn's default).
        pad_short: For a spectrogram shorter than one patch, repeat it until it fills one (what
            musicnn's training did with short clips); False: return no patch (musicnn's extractor fails).

    Returns:
        (num_patches, num_frames, num_bands), the dtype of ``frames``.

    Raises:
        ValueError: If ``frames`` is not two-dimensional or a length is not positive.
    """
    frames = np.asarray(frames)
    hop_frames = num_frames if hop_frames is None else hop_frames
    if frames.ndim != 2:
        raise ValueError(f"frames must be (num_frames, num_bands), got shape {frames.shape}")
    if num_frames < 1 or hop_frames < 1:
        raise ValueError(f"num_frames and hop_frames must be positive, got {num_frames} and {hop_frames}")
    total = frames.shape[0]
    if total < num_frames:
        if not pad_short or total == 0:
            return np.zeros((0, num_frames, frames.shape[1]), dtype=frames.dtype)
        frames = np.tile(frames, (-(-num_frames // total), 1))
        total = frames.shape[0]
    starts = range(0, total - num_frames + 1, hop_frames)
    return np.stack([frames[s:s + num_frames] for s in starts])
