"""The fixture audio of the musicnn port's reference: short synthetic clips, the same on every machine.

``tests/campaigns/record_musicnn_reference.py`` ran the original musicnn on them and
``tests/test_musicnn.py`` runs the port on them; both write them with ``write_clips``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16000
OVERLAP_CLIP = "tones"
"""The clip also recorded with a 1-s patch overlap (``input_overlap=1``)."""
OVERLAP_SEC = 1


def _notes(seconds: float) -> np.ndarray:
    """An arpeggio of decaying harmonic tones (a plucked-string caricature), peak about 0.3."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    out = np.zeros_like(t)
    for i, midi in enumerate([48, 52, 55, 60, 64, 67, 72, 67, 64, 60, 55, 52, 48]):
        start = 0.5 * i
        local = t - start
        on = local >= 0
        f0 = 440.0 * 2 ** ((midi - 69) / 12)
        env = np.exp(-3.0 * local[on])
        out[on] += sum(np.sin(2 * np.pi * k * f0 * local[on]) / k for k in range(1, 6)) * env * 0.12
    return out


def _chirp_noise(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A log chirp from 80 Hz to 6 kHz under slow tremolo, over white noise."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    f0, f1 = 80.0, 6000.0
    phase = 2 * np.pi * f0 * seconds / np.log(f1 / f0) * ((f1 / f0) ** (t / seconds) - 1)
    return 0.1 * np.sin(phase) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)) + 0.03 * rng.standard_normal(t.size)


def _drums(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """120 bpm: a swept-sine kick on each beat, noise snare on 2 and 4, a hi-hat on every off-beat."""
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    beat = SAMPLE_RATE // 2
    k = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
    kick = np.sin(2 * np.pi * (50 * k + 60 * (1 - np.exp(-30 * k)) / 30)) * np.exp(-12 * k)
    snare = rng.standard_normal(k.size) * np.exp(-20 * k) * 0.5
    hat = np.diff(rng.standard_normal(k.size // 4 + 1)) * np.exp(-60 * k[: k.size // 4]) * 0.3
    for i, start in enumerate(range(0, n, beat)):
        for sound, at in ((kick, start), (snare if i % 2 else None, start), (hat, start + beat // 2)):
            if sound is not None and at < n:
                end = min(n, at + sound.size)
                out[at:end] += sound[: end - at]
    return 0.4 * out


def _loud(seconds: float) -> np.ndarray:
    """A loud steady chord (peak 0.8): its mel power overflows musicnn's float16 log step to inf."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return 0.8 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6)) / 3


def make_clips() -> dict[str, np.ndarray]:
    """Clip name -> int16 (num_samples,) audio at 16 kHz: 2 patches each, the loud clip 1."""
    rng = np.random.default_rng(2019)
    clips = {"tones": _notes(6.5), "chirp_noise": _chirp_noise(7.0, rng), "drums": _drums(6.5, rng),
             "loud": _loud(3.5)}
    return {name: np.round(np.clip(x, -1, 1) * 32767).astype(np.int16) for name, x in clips.items()}


def write_clips(folder: Path) -> dict[str, Path]:
    """Writes every clip as a 16-bit WAV at 16 kHz into ``folder``; returns clip name -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, audio in make_clips().items():
        paths[name] = folder / f"{name}.wav"
        sf.write(paths[name], audio, SAMPLE_RATE, subtype="PCM_16")
    return paths
