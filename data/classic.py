"""The reference song vectors every report compares learned features with: the classic MFCC baseline, and
the teacher's layers.

``mfcc_stats`` is the standard MIR pipeline (Logan 2000; Tzanetakis & Cook 2002; Piczak's ESC
baselines): 20 MFCCs of a mel spectrogram plus their first and second time derivatives, each
summarized over the whole song by its mean and standard deviation, so a song becomes one vector of
``MFCC_DIM`` = 20 x 3 x 2 = 120 numbers. librosa computes them (its defaults at 22050 Hz: 2048-point
frames, hop 512, 128 mel bands); at other sample rates the frame is scaled to the same duration
(about 93 ms, rounded to a power of two) so that a 16 kHz and a 22.05 kHz cache describe a sound alike.

The teacher's set, ``musicnn``, is musicnn's MTT tagger's own view of a song (``TEACHER_SETS``): the
back end's two pools of each 3-s patch (the mean and the max over time of the 753 mid-end channels,
the layer its penultimate dense layer reads), averaged over the song's patches: 1,506 numbers.
Measured against the alternatives (``tests/campaigns/musicnn_pooling.py``: 5-fold logistic regression
on ESC-10 and synth-genre), it scored 0.905 and 0.763, the penultimate layer's mean and max 0.865 and
0.737, that plus the taggram's mean 0.873 and 0.723, the taggram's mean alone 0.768 and 0.650. Only
its name and size live here; ``msagg.stages.teacher`` computes it, with Keras, from the weights of
the installed musicnn package.

No Keras here, and librosa is imported on first use (it takes a second or two).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

CLASSIC = ("mfcc", "musicnn")
"""Names of the reference feature sets a features file may hold (its ``/classic/<name>``), in the order
of canonical feature-set names: "mfcc" (computed here) and "musicnn" (``TEACHER_SETS``)."""
TEACHER_SETS = ("musicnn",)
"""The reference sets the teacher computes (``msagg.stages.teacher.song_features``), not this module."""
MUSICNN_DIM = 2 * 753
"""The musicnn set: the means over patches of the MTT tagger's ``mean_pool`` and ``max_pool`` (753 each:
561 front-end + 3 x 64 mid-end channels)."""
N_MFCC = 20
MFCC_DIM = N_MFCC * 3 * 2
"""[mean of MFCC, delta, delta2; std of MFCC, delta, delta2]."""
_DELTA_WIDTH = 9


def frame_length(sample_rate: int) -> int:
    """FFT size: 2048 at 22050 Hz, the same duration (a power of two) at other rates."""
    return int(2 ** round(math.log2(2048 * sample_rate / 22050)))


def mfcc_stats(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """The MFCC statistics of one song.

    Args:
        wave: float32 (num_samples,) mono audio; any length (a song shorter than one frame is
            zero-padded by librosa's centred framing).
        sample_rate: Hz.

    Returns:
        float32 (``MFCC_DIM``,): means then standard deviations over frames of the 20 MFCCs, their
        deltas and their second deltas (deltas are 0 for a song of fewer than 3 frames).
    """
    import librosa

    wave = np.asarray(wave, dtype=np.float32)
    n_fft = frame_length(sample_rate)
    if wave.size == 0:
        wave = np.zeros(n_fft, dtype=np.float32)
    with warnings.catch_warnings():
        # A clip shorter than a frame: librosa warns, then zero-pads as intended. At very low sample
        # rates some of the 128 mel bands hold no FFT bin: they stay empty, the same for every song.
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        warnings.filterwarnings("ignore", message="Empty filters detected", category=UserWarning)
        mfcc = librosa.feature.mfcc(y=wave, sr=sample_rate, n_mfcc=N_MFCC, n_fft=n_fft, hop_length=n_fft // 4,
                                    n_mels=128)
    frames = mfcc.shape[1]
    if frames >= 3:
        width = min(_DELTA_WIDTH, frames if frames % 2 else frames - 1)
        d1 = librosa.feature.delta(mfcc, width=width, order=1, mode="interp")
        d2 = librosa.feature.delta(mfcc, width=width, order=2, mode="interp")
    else:
        d1 = d2 = np.zeros_like(mfcc)
    stacked = np.concatenate([mfcc, d1, d2])  # (60, frames)
    return np.concatenate([stacked.mean(axis=1), stacked.std(axis=1)]).astype(np.float32)


def classic_features(name: str, waves, sample_rate: int) -> np.ndarray:
    """float32 (len(waves), dim) of the classic set ``name`` ("mfcc"; the teacher's sets are
    ``msagg.stages.teacher``'s)."""
    if name != "mfcc":
        where = " (the teacher computes it: msagg.stages.teacher.song_features)" if name in TEACHER_SETS else ""
        raise ValueError(f"unknown classic feature set {name!r}{where}; known: mfcc")
    return np.stack([mfcc_stats(w, sample_rate) for w in waves]) if len(waves) else np.zeros((0, MFCC_DIM),
                                                                                           np.float32)


def classic_dim(name: str) -> int:
    """Vector size of the reference set ``name`` (one of ``CLASSIC``)."""
    if name not in CLASSIC:
        raise ValueError(f"unknown classic feature set {name!r}; known: {', '.join(CLASSIC)}")
    return MFCC_DIM if name == "mfcc" else MUSICNN_DIM
