"""Tests for data/synth_instruments.py: every voice is in tune, plucked notes decay, strings swell."""

import numpy as np
import pytest

from msagg.data.synth import instruments as synth_instruments

SR = 8000


def dominant_hz(wave, sample_rate, around_hz):
    """Frequency of the strongest spectral peak within +-20 % of ``around_hz``."""
    n = wave.size
    magnitude = np.abs(np.fft.rfft(wave * np.hanning(n), 8 * n))
    freqs = np.fft.rfftfreq(8 * n, 1 / sample_rate)
    near = (freqs > 0.8 * around_hz) & (freqs < 1.2 * around_hz)
    return freqs[near][np.argmax(magnitude[near])]


@pytest.mark.parametrize("sample_rate", [8000, 22050])
@pytest.mark.parametrize("instrument", ["piano", "strings", "plucked", "synth", "bass"])
def test_instrument_notes_are_in_tune(instrument, sample_rate):
    for midi in (45, 69, 84):
        if instrument == "bass" and midi > 60:
            continue
        wave = synth_instruments.VOICES[instrument](midi, 1.0, sample_rate, "medium", np.random.default_rng(0))
        target = 440.0 * 2 ** ((midi - 69) / 12)
        cents = 1200 * np.log2(dominant_hz(wave, sample_rate, target) / target)
        assert abs(cents) < 8, (instrument, midi, cents)


def test_plucked_notes_decay_and_strings_swell():
    rng = np.random.default_rng(0)
    plucked = synth_instruments.VOICES["plucked"](57, 1.0, SR, "medium", rng)
    strings = synth_instruments.VOICES["strings"](57, 1.0, SR, "soft", rng)

    def rms(wave, start_sec, stop_sec):
        return np.sqrt(np.mean(wave[int(start_sec * SR) : int(stop_sec * SR)] ** 2))

    assert rms(plucked, 0.6, 0.9) < 0.3 * rms(plucked, 0.0, 0.1)
    assert rms(strings, 0.0, 0.05) < 0.2 * rms(strings, 0.6, 0.9)


def test_melodic_instruments_are_the_pitched_ones_but_the_bass():
    assert set(synth_instruments.VOICES) == set(synth_instruments.INSTRUMENTS)
    assert synth_instruments.MELODIC == tuple(i for i in synth_instruments.INSTRUMENTS if i != "bass")
