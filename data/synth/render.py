"""Rendering of the synthetic corpus: a track's parameters become a score, the score becomes audio.

``compose`` draws what is played when (in beats, independent of the sample rate) from
``[seed, index, 1]``; ``render_track`` plays it with ``msagg.data.synth.instruments`` and mixes,
filters and levels it with draws from ``[seed, index, 2]`` (sample-rate dependent) and
``[seed, index, 3]`` (timing). ``msagg.data.synth.music.render`` is the public entry point.

``msagg.data.synth.gm`` composes with the same ``compose``, naming its own parts, their accompaniment
roles, the lead and the random stream, and plays the ``Score`` through a SoundFont.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import signal

from msagg.data.synth.instruments import VOICES, drum_sounds

if TYPE_CHECKING:  # only for annotations: data.synth imports this module
    from msagg.data.synth.music import SynthTrack

KEY_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
"""Pitch-class names; a track's key is one of them."""

_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
_CHORD_BASE = {"low": 48, "mid": 57, "high": 69}  # MIDI note at the bottom of the chord voicings
_BASS_BASE = 36


@dataclasses.dataclass
class Score:
    """What a track plays when, in beats (``beat_times`` maps beats to seconds)."""

    beat_times: np.ndarray  # (num_beats,) seconds
    notes: dict[str, list[tuple[float, float, int, float]]]  # instrument -> (onset_beat, beats, midi, velocity)
    drums: dict[str, list[tuple[float, float]]]  # "kick" | "snare" | "hat" -> (onset_beat, velocity)
    gains_db: dict[str, float]  # instrument or drum -> mix gain


_MELODY_RHYTHMS = (
    ((0, 1), (1, 1), (2, 1), (3, 1)),
    ((0, 1.5), (1.5, 0.5), (2, 1), (3, 1)),
    ((0, 0.5), (0.5, 0.5), (1, 1), (2, 2)),
    ((0, 2), (2, 1), (3, 0.5), (3.5, 0.5)),
    ((0, 0.5), (0.5, 0.5), (1, 0.5), (1.5, 0.5), (2, 1), (3, 1)),
    ((0, 1), (1, 0.5), (1.5, 0.5), (2, 1.5), (3.5, 0.5)),
    ((0, 3), (3, 1)),
    ((0, 2), (2, 2)),
)
_COMP_RHYTHMS = ((0, 1, 2, 3), (0, 1.5, 2, 3), (0, 2), (0, 0.5, 1.5, 2.5, 3), (0, 2.5), (0, 1, 2.5, 3))
_ROLES = {"piano": ("comp", "arp", "pad"), "strings": ("pad",), "plucked": ("arp", "comp"), "synth": ("arp", "pad")}


def compose(
    track: SynthTrack,
    *,
    rng: np.random.Generator | None = None,
    instruments: tuple[str, ...] | None = None,
    roles: dict[str, tuple[str, ...]] | None = None,
    lead: str | None = None,
) -> Score:
    """What the track plays when: beat grid, notes per instrument, drum hits and mix gains.

    Args:
        track: Read for ``seed, index`` (the default stream), ``duration_sec, tempo_bpm, key, mode,
            progression, register, dynamics, drum_pattern`` and (unless given) ``instruments``.
        rng: The composition's draws (default ``[seed, index, 1]``, the synth corpus's stream).
        instruments: The parts that play (default ``track.instruments``); one named "bass" plays
            the bass line, the others in ``roles`` melody or accompaniment.
        roles: Part -> the accompaniment roles it may take ("comp", "arp", "pad"); default the
            synth instruments' roles. Parts absent from it play no melody and no chords.
        lead: The part that plays the melody (default: drawn among the melodic parts).

    Returns:
        The score; ``notes`` has one entry per part, ``gains_db`` one per part and drum.
    """
    rng = np.random.default_rng([track.seed, track.index, 1]) if rng is None else rng
    instruments = track.instruments if instruments is None else tuple(instruments)
    roles = _ROLES if roles is None else roles
    scale = _SCALES[track.mode]
    tonic = KEY_NAMES.index(track.key)

    def pitch(degree: int, base: int) -> int:
        octave, step = divmod(degree, 7)
        return base + (tonic - base) % 12 + 12 * octave + scale[step]

    # Beat grid with a slow tempo drift of up to 3 %.
    drift, period_bars, phase = rng.uniform(0, 0.03), rng.uniform(6, 20), rng.uniform(0, 2 * np.pi)
    num_bars = int(track.duration_sec * track.tempo_bpm / 60 / 4 * 1.05) + 2
    bars = np.arange(num_bars)
    beat_sec = 60.0 / (track.tempo_bpm * (1 + drift * np.sin(2 * np.pi * bars / period_bars + phase)))
    start_sec = rng.uniform(0.02, 0.2)
    beat_times = start_sec + np.concatenate([[0.0], np.cumsum(np.repeat(beat_sec, 4))])

    chord_base = _CHORD_BASE[track.register]
    chords = [track.progression[bar % len(track.progression)] for bar in range(num_bars)]

    def voicing(root: int) -> list[int]:
        classes = [pitch(root + k, 0) % 12 for k in (0, 2, 4)]
        return sorted(chord_base + (c - chord_base) % 12 for c in classes)

    velocity = {"soft": 0.55, "medium": 0.75, "hard": 0.95}[track.dynamics]

    def vel(accent: bool = False) -> float:
        return float(np.clip(velocity * (1.12 if accent else 1.0) * rng.uniform(0.85, 1.1), 0.1, 1.0))

    melodic = [name for name in instruments if name in roles]
    order = [melodic[i] for i in rng.permutation(len(melodic))]  # drawn even with a given lead: one stream
    if lead is None:
        lead, accompanists = order[0], order[1:] or order[:1]
    else:
        accompanists = [name for name in order if name != lead] or [lead]
    notes: dict[str, list] = {name: [] for name in instruments}

    # Melody: a few one-bar motifs (rhythm + melodic steps) in a repeating form, strong beats
    # snapped to the current chord.
    slow = track.tempo_bpm < 95
    motifs = []
    for _ in range(3):
        choices = [0, 2, 3, 6, 7] if slow else list(range(len(_MELODY_RHYTHMS)))
        rhythm = _MELODY_RHYTHMS[int(rng.choice(choices))]
        steps = rng.choice([-2, -1, 0, 1, 2], size=len(rhythm), p=[0.15, 0.3, 0.1, 0.3, 0.15])
        motifs.append((rhythm, steps))
    form = (0, 1, 0, 2)
    melody_base = chord_base + 12
    degree = int(rng.choice([0, 2, 4]))
    for bar in range(num_bars):
        rhythm, steps = motifs[form[bar % len(form)]]
        chord_tones = [chords[bar] + k for k in (0, 2, 4)]
        for (onset, beats), step in zip(rhythm, steps):
            degree = int(np.clip(degree + step, -2, 9))
            if onset in (0, 2):
                candidates = np.add.outer(chord_tones, (-7, 0, 7)).ravel()
                degree = int(np.clip(candidates[np.argmin(np.abs(candidates - degree))], -3, 10))
            notes[lead].append((bar * 4 + onset, beats, pitch(degree, melody_base), vel(onset == 0)))

    # Accompaniment.
    for name in accompanists:
        role = roles[name][int(rng.integers(len(roles[name])))]
        comp = _COMP_RHYTHMS[int(rng.integers(len(_COMP_RHYTHMS)))]
        arp = (0, 1, 2, 3, 2, 1, 0, 1) if rng.random() < 0.5 else (0, 1, 2, 1, 3, 1, 2, 1)
        for bar in range(num_bars):
            chord = voicing(chords[bar])
            if role == "pad":
                notes[name] += [(bar * 4, 4.0, m, vel()) for m in chord]
            elif role == "comp":
                ends = list(comp[1:]) + [4]
                for onset, end in zip(comp, ends):
                    notes[name] += [(bar * 4 + onset, 0.9 * (end - onset), m, vel(onset == 0)) for m in chord]
            else:
                tones = chord + [chord[0] + 12]
                notes[name] += [(bar * 4 + 0.5 * i, 0.5, tones[a], vel(i == 0)) for i, a in enumerate(arp)]

    # Bass line: chord roots (and sometimes fifths), rhythm following the drums.
    if "bass" in notes:
        pattern = {
            "four-on-the-floor": ((0.5, 0.45), (1.5, 0.45), (2.5, 0.45), (3.5, 0.45)),
            "backbeat": ((0, 1.4), (1.5, 0.5), (2, 1), (3, 1)),
            "none": ((0, 2), (2, 2)),
        }[track.drum_pattern]
        for bar in range(num_bars):
            root = pitch(chords[bar], _BASS_BASE)
            fifth = pitch(chords[bar] + 4, _BASS_BASE)
            for i, (onset, beats) in enumerate(pattern):
                midi = fifth if (i == len(pattern) - 1 and rng.random() < 0.3) else root
                notes["bass"].append((bar * 4 + onset, beats, midi, vel(onset == 0)))

    drums: dict[str, list] = {"kick": [], "snare": [], "hat": []}
    if track.drum_pattern != "none":
        four = track.drum_pattern == "four-on-the-floor"
        for bar in range(num_bars):
            kicks = [0, 1, 2, 3] if four else [0, 2] + ([2.5] if rng.random() < 0.5 else [])
            drums["kick"] += [(bar * 4 + k, vel(k == 0)) for k in kicks]
            snares = [1, 3] + ([3.5] if bar % 4 == 3 and rng.random() < 0.6 else [])
            drums["snare"] += [(bar * 4 + s, vel()) for s in snares]
            hats = [0.5, 1.5, 2.5, 3.5] if four else [0.5 * i for i in range(8)]
            drums["hat"] += [(bar * 4 + h, vel(h % 1 == 0)) for h in hats]

    gains_db = {name: (0.0 if name == lead else rng.uniform(-7, -2)) for name in instruments}
    gains_db.update(kick=rng.uniform(-2, 1), snare=rng.uniform(-6, -2), hat=rng.uniform(-16, -4))
    if "bass" in gains_db:
        gains_db["bass"] = rng.uniform(-4, 0)
    return Score(beat_times=beat_times, notes=notes, drums=drums, gains_db=gains_db)



def render_track(track: SynthTrack, sample_rate: int) -> np.ndarray:
    """Plays, mixes, filters and levels ``track``: float32 (round(duration_sec * sample_rate),), |x| < 1."""
    score = compose(track)
    rng = np.random.default_rng([track.seed, track.index, 2])  # sample-rate dependent draws
    timing_rng = np.random.default_rng([track.seed, track.index, 3])
    num_samples = max(1, round(track.duration_sec * sample_rate))
    mix = np.zeros(num_samples + sample_rate)  # room for notes that ring past the end

    def seconds(beats) -> np.ndarray:
        return np.interp(beats, np.arange(score.beat_times.size), score.beat_times)

    beat_sec = 60.0 / track.tempo_bpm
    jitter_sec = 0.0 if track.genre == "electronic-dance" else 0.004
    for name, notes in score.notes.items():
        if not notes:
            continue
        onsets, beats, midis, vels = (np.array(column) for column in zip(*notes))
        starts = np.round((seconds(onsets) + timing_rng.normal(0, jitter_sec, onsets.size)) * sample_rate).astype(int)
        gain = 10.0 ** (score.gains_db[name] / 20)
        cache: dict[tuple[int, float], np.ndarray] = {}
        for start, length, midi, velocity in zip(starts, beats, midis, vels):
            if start >= num_samples:
                continue
            key = (int(midi), float(length))
            if key not in cache:  # one waveform per pitch and length, reused for every repeat
                wave = VOICES[name](int(midi), float(length) * beat_sec, sample_rate, track.dynamics, rng)
                cache[key] = wave / max(np.abs(wave).max(), 1e-9)
            wave = cache[key][: mix.size - max(start, 0)]
            mix[max(start, 0) : max(start, 0) + wave.size] += gain * velocity * wave
    sounds = drum_sounds(sample_rate, rng) if track.drum_pattern != "none" else {}
    for name, hits in score.drums.items():
        gain = 10.0 ** (score.gains_db[name] / 20)
        for onset, velocity in hits:
            start = int(round(float(seconds(onset)) * sample_rate))
            if start < num_samples:
                wave = sounds[name][: mix.size - start]
                mix[start : start + wave.size] += gain * velocity * wave
    mix = mix[:num_samples]

    # Brightness: a 4th-order low-pass whose cutoff sweeps slowly between cutoff / 1.3 and cutoff * 1.3.
    t = np.arange(num_samples) / sample_rate
    nyquist = sample_rate / 2

    def lowpass(cutoff_hz: float) -> np.ndarray:
        sos = signal.butter(4, min(cutoff_hz, 0.45 * sample_rate) / nyquist, output="sos")
        return signal.sosfilt(sos, mix)

    sweep = 0.5 + 0.5 * np.sin(2 * np.pi * t / rng.uniform(5, 15) + rng.uniform(0, 2 * np.pi))
    mix = (1 - sweep) * lowpass(track.cutoff_hz / 1.3) + sweep * lowpass(track.cutoff_hz * 1.3)

    rms = math.sqrt(float(np.mean(mix**2))) or 1.0
    mix += rng.normal(0, rms * 10 ** (track.noise_db / 20), num_samples)
    # Loudness swells by up to +-2.5 dB within the track; the whole is then set to the drawn level.
    swell_db = rng.uniform(0, 2.5) * np.sin(2 * np.pi * t / rng.uniform(6, 20) + rng.uniform(0, 2 * np.pi))
    mix *= 10.0 ** (swell_db / 20)
    fade = np.minimum(1.0, np.minimum(t / 0.01, (num_samples / sample_rate - t) / 0.3).clip(0))
    mix *= fade
    mix *= 10.0 ** (track.level_db / 20) / (math.sqrt(float(np.mean(mix**2))) or 1.0)
    return soft_limit(mix).astype(np.float32)


def soft_limit(x: np.ndarray, threshold: float = 0.8, ceiling: float = 0.99) -> np.ndarray:
    """Leaves |x| <= threshold alone and bends larger values smoothly towards ``ceiling``."""
    magnitude = np.abs(x)
    over = magnitude > threshold
    if over.any():
        knee = ceiling - threshold
        x = x.copy()
        x[over] = np.sign(x[over]) * (threshold + knee * np.tanh((magnitude[over] - threshold) / knee))
    return x
