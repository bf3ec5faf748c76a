"""Instruments of the synthetic corpus: one note of each pitched instrument, and the drum kit.

Each voice is ``voice(midi, note_sec, sample_rate, dynamics, rng) -> float64 (num_samples,)``: the
note rings a little past ``note_sec`` (its release); ``msagg.data.synth.render`` normalizes the peak
and mixes. Wavetable oscillators (one cycle of a sine series, looked up at the note's phase)
keep the partials below Nyquist at any sample rate.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import signal

INSTRUMENTS = ("piano", "strings", "plucked", "synth", "bass")
"""Pitched instruments a track may use (drums are given by ``drum_pattern``)."""

MELODIC = ("piano", "strings", "plucked", "synth")
"""Instruments that can play the lead melody or the chords (all but the bass)."""

_TABLE_SIZE = 4096


@functools.lru_cache(maxsize=512)
def _table(slope: float, num_harmonics: int, odd_boost: float = 1.0) -> np.ndarray:
    """One cycle (``_TABLE_SIZE`` samples) of a sine series with amplitudes ``k ** -slope``."""
    k = np.arange(1, num_harmonics + 1)
    amplitude = k**-slope * np.where(k % 2 == 1, odd_boost, 1.0)
    spectrum = np.zeros(_TABLE_SIZE // 2 + 1, complex)
    spectrum[1 : num_harmonics + 1] = -1j * amplitude * _TABLE_SIZE / 2
    table = np.fft.irfft(spectrum, _TABLE_SIZE)
    table /= np.abs(table).max()
    table.flags.writeable = False
    return table


def _num_harmonics(f0: float, sample_rate: int, most: int) -> int:
    return int(max(1, min(most, 0.45 * sample_rate // f0)))


def _lookup(table: np.ndarray, cycles: np.ndarray) -> np.ndarray:
    return table[(cycles * _TABLE_SIZE).astype(np.int64) & (_TABLE_SIZE - 1)]


def _midi_hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def _release(t: np.ndarray, note_sec: float, release_sec: float) -> np.ndarray:
    return np.exp(-np.maximum(t - note_sec, 0.0) / release_sec)


def _piano(midi, note_sec, sample_rate, dynamics, rng):
    f0 = _midi_hz(midi)
    n = int((note_sec + 0.3) * sample_rate)
    t = np.arange(n) / sample_rate
    cycles = f0 * t
    slope = {"soft": 1.9, "medium": 1.4, "hard": 1.0}[dynamics]
    bright = _lookup(_table(slope, _num_harmonics(f0, sample_rate, 16)), cycles)
    mellow = _lookup(_table(2.5, _num_harmonics(f0, sample_rate, 4)), cycles * 1.0007)
    decay = float(np.clip(2.2 * 2.0 ** (-(midi - 48) / 18), 0.35, 3.0))
    wave = bright * np.exp(-t / (0.2 * decay)) + mellow * np.exp(-t / decay)
    return wave * np.minimum(t / 0.003, 1.0) * _release(t, note_sec, 0.08)


def _strings(midi, note_sec, sample_rate, dynamics, rng):
    f0 = _midi_hz(midi)
    attack = {"soft": 0.4, "medium": 0.25, "hard": 0.12}[dynamics]
    n = int((note_sec + 0.3) * sample_rate)
    t = np.arange(n) / sample_rate
    rate, depth = 5.5, 0.006 * np.minimum(t / 0.4, 1.0)
    vibrato = depth * f0 / (2 * np.pi * rate) * np.sin(2 * np.pi * rate * t + rng.uniform(0, 2 * np.pi))
    table = _table(1.2, _num_harmonics(f0 * 1.003, sample_rate, 12))
    wave = _lookup(table, f0 * 1.003 * t + vibrato) + _lookup(table, f0 * 0.997 * t - 0.8 * vibrato + 0.3)
    envelope = 0.5 - 0.5 * np.cos(np.pi * np.minimum(t / attack, 1.0))
    return wave * envelope * _release(t, note_sec, 0.25)


def _plucked(midi, note_sec, sample_rate, dynamics, rng):
    """Karplus-Strong: a noise burst of one period circulating through a delay line and an average.

    ``y[n] = x[n] + rho * (a y[n-N] + b y[n-N-1] + c y[n-N-2])``: the two-point average
    ``(y[n-N] + y[n-N-1]) / 2`` combined with a linear interpolation that tunes the fractional
    part of the period. One ``lfilter`` call runs the whole recurrence in C.
    """
    f0 = _midi_hz(midi)
    n = int((note_sec + 0.2) * sample_rate)
    period = sample_rate / f0  # the loop delays by N + 0.5 + frac samples
    delay = max(int(period - 0.5), 2)
    frac = min(max(period - 0.5 - delay, 0.0), 1.0)
    burst = rng.uniform(-1, 1, delay)
    for _ in range({"soft": 3, "medium": 1, "hard": 0}[dynamics]):
        burst = 0.5 * (burst + np.roll(burst, 1))  # a softer pluck excites fewer high partials
    excitation = np.zeros(max(n, delay))
    excitation[:delay] = burst - burst.mean()
    rho = 10.0 ** (-3.0 / (1.6 * f0))  # the fundamental is down 60 dB after 1.6 s
    feedback = np.zeros(delay + 3)
    feedback[0] = 1.0
    feedback[delay:] = -rho * np.array([0.5 * (1 - frac), 0.5, 0.5 * frac])
    wave = signal.lfilter([1.0], feedback, excitation)[:n]
    t = np.arange(wave.size) / sample_rate
    return wave * _release(t, note_sec, 0.06)


def _synth(midi, note_sec, sample_rate, dynamics, rng):
    f0 = _midi_hz(midi)
    n = int((note_sec + 0.1) * sample_rate)
    t = np.arange(n) / sample_rate
    slope = {"soft": 2.0, "medium": 1.4, "hard": 1.0}[dynamics]
    table = _table(slope, _num_harmonics(f0 * 1.004, sample_rate, 30))
    wave = _lookup(table, f0 * 1.004 * t) + _lookup(table, f0 * 0.996 * t + 0.5)
    attack = {"soft": 0.04, "medium": 0.015, "hard": 0.005}[dynamics]
    envelope = np.minimum(t / attack, 1.0) * (0.7 + 0.3 * np.exp(-t / 0.2))
    return wave * envelope * _release(t, note_sec, 0.04)


def _bass(midi, note_sec, sample_rate, dynamics, rng):
    f0 = _midi_hz(midi)
    n = int((note_sec + 0.08) * sample_rate)
    t = np.arange(n) / sample_rate
    slope = {"soft": 2.2, "medium": 1.7, "hard": 1.2}[dynamics]
    wave = _lookup(_table(slope, _num_harmonics(f0, sample_rate, 8)), f0 * t)
    envelope = np.minimum(t / 0.005, 1.0) * (0.35 + 0.65 * np.exp(-t / 0.3))
    return wave * envelope * _release(t, note_sec, 0.03)


# Instrument name -> voice(midi, note_sec, sample_rate, dynamics, rng) -> float64 waveform of one note.
VOICES = {"piano": _piano, "strings": _strings, "plucked": _plucked, "synth": _synth, "bass": _bass}


def drum_sounds(sample_rate: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Kick (falling sine sweep + click), snare (noise + 190 Hz tone), hi-hat (differenced noise), peak 1."""

    def time(sec):
        return np.arange(int(sec * sample_rate)) / sample_rate

    t = time(0.35)
    sweep = 2 * np.pi * np.cumsum(48 + 90 * np.exp(-t / 0.035)) / sample_rate
    kick = np.sin(sweep) * np.exp(-t / 0.16) + 0.3 * rng.uniform(-1, 1, t.size) * np.exp(-t / 0.004)
    t = time(0.25)
    noise = rng.uniform(-1, 1, t.size)
    tone = np.sin(2 * np.pi * 190 * t) * np.exp(-t / 0.05)
    snare = (noise - 0.6 * np.roll(noise, 1)) * np.exp(-t / 0.07) + 0.6 * tone
    t = time(0.08)
    noise = rng.uniform(-1, 1, t.size)
    hat = (noise - np.roll(noise, 1)) * np.exp(-t / 0.02)
    return {name: wave / np.abs(wave).max() for name, wave in (("kick", kick), ("snare", snare), ("hat", hat))}

