"""The MFCC baseline's song vector (data/classic.py)."""

import numpy as np
import pytest

from msagg.data.classic import MFCC_DIM, classic_dim, classic_features, frame_length, mfcc_stats


def _tone(freq, sr, seconds=1.0, noise=0.0, seed=0):
    t = np.arange(int(sr * seconds)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(t.size)).astype(np.float32)


def test_shape_order_and_determinism():
    sr = 16000
    v = mfcc_stats(_tone(440.0, sr), sr)
    assert v.shape == (MFCC_DIM,) and v.dtype == np.float32 and np.isfinite(v).all()
    np.testing.assert_array_equal(v, mfcc_stats(_tone(440.0, sr), sr))
    # Layout: [means of MFCC, delta, delta2; stds of the same], the MFCCs as librosa computes them.
    import librosa

    mfcc = librosa.feature.mfcc(y=_tone(440.0, sr), sr=sr, n_mfcc=20, n_fft=frame_length(sr),
                                hop_length=frame_length(sr) // 4, n_mels=128)
    np.testing.assert_allclose(v[:20], mfcc.mean(axis=1), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(v[60:80], mfcc.std(axis=1), rtol=1e-5, atol=1e-4)
    assert classic_dim("mfcc") == MFCC_DIM and frame_length(22050) == 2048 and frame_length(8000) == 1024


def test_tones_differ_and_rates_agree():
    low, high = mfcc_stats(_tone(200.0, 22050), 22050), mfcc_stats(_tone(3000.0, 22050), 22050)
    same_at_16k = mfcc_stats(_tone(200.0, 16000), 16000)
    # The same sound at another sample rate lies nearer than another sound at the same rate.
    assert np.linalg.norm(low[:20] - same_at_16k[:20]) < np.linalg.norm(low[:20] - high[:20])


@pytest.mark.parametrize("samples", [0, 1, 300, 2048])
def test_very_short_songs_give_finite_vectors(samples):
    v = mfcc_stats(np.full(samples, 0.1, dtype=np.float32), 22050)
    assert v.shape == (MFCC_DIM,) and np.isfinite(v).all()


def test_classic_features_stacks_songs_and_refuses_unknown_sets():
    waves = [_tone(300.0, 8000, 0.5), _tone(900.0, 8000, 0.7)]
    out = classic_features("mfcc", waves, 8000)
    assert out.shape == (2, MFCC_DIM)
    np.testing.assert_array_equal(out[1], mfcc_stats(waves[1], 8000))
    assert classic_features("mfcc", [], 8000).shape == (0, MFCC_DIM)
    with pytest.raises(ValueError, match="unknown classic feature set"):
        classic_features("chroma", waves, 8000)
