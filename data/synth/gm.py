"""The synth-gm corpus: the synthetic corpus's composer played by General MIDI instruments of a SoundFont.

Each track is drawn from ``(seed, index)`` alone: a genre first, then from genre-conditional
distributions that overlap its tempo, drum pattern and kit, swing, key and mode, register,
dynamics and level, and its arrangement: one pool of GM programs per part (lead, chords, pad,
bass; the lead always plays, the others by chance), then one program from each pool, so many
programs of each family appear across a corpus. ``POOLS`` lists the pools, ``GENRE_PARTS`` what
each genre draws from (rock: overdriven or distorted guitar, electric bass, rock kit; classical:
strings, woodwinds, piano, no drums; jazz: saxophone or brass over piano or organ, acoustic bass,
jazz or brush kit, swing; electronic: synth lead and pad, synth bass, four-on-the-floor on an
electronic kit; ...). Tags follow from the parameters by ``TAG_DEFINITIONS``: the GM families
that play, drums, register, tempo, dynamics, swing, level, mode, and high-level mixtures.

``msagg.data.synth.render.compose`` writes the score (melody from motifs, chords as comping, arpeggios
or pads, bass line, kick/snare/hat pattern), with this corpus's own random stream; ``render_track``
plays it through a SoundFont with TinySoundFont (``msagg.data.synth.soundfont``): one MIDI channel per part,
channel 9 the drum kit, every note on and off at its sample, mono at the requested rate. Off-beat
eighths are delayed to the triplet position in swung tracks, onsets get a few ms of jitter (none
in electronic tracks), the kit adds a crash every eighth bar where it has one. The mix fades in
over 10 ms and out over 0.3 s, is set to the drawn RMS level and soft-limited below 1, as the
synth corpus's is. The same source, rate and SoundFont file always give the same samples.
TinySoundFont reads the samples at the output rate by linear interpolation, without an
anti-aliasing filter, so at low rates (8-16 kHz) the brightest timbres alias a little.

Sources: ``"synthgm:<seed>:<index>:<min_sec>:<max_sec>"`` renders with the default SoundFont
(pretty_midi's TimGM6mb.sf2), ``"synthgm:<seed>:<index>:<min_sec>:<max_sec>:<path>"`` with the
``.sf2`` at ``path`` (absolute; it may hold colons). Which file it was is recorded by prepare
(its sha256 in the config and the cache), not in the source.

Speed, measured on one core of a shared 2-core development machine, mean seconds per 20 s track
over 30 tracks (first load: parsing the file once per process)::

    SoundFont    22050 Hz               16000 Hz               first load
    TimGM6mb     0.081 s (247x real)    0.058 s (344x real)    0.02 s
    FluidR3_GM   0.094 s (213x real)    0.066 s (304x real)    1.2 s

    import statistics, time
    from msagg.data.synth import soundfont, gm as synth_gm
    tracks = synth_gm.describe(30, seed=0, min_sec=20.0, max_sec=20.0)
    for path in (None, "/usr/share/sounds/sf2/FluidR3_GM.sf2"):
        sf = soundfont.resolve(path)
        soundfont.load(sf)  # parsed once per process, not timed
        for rate in (22050, 16000):
            times = []
            for track in tracks:
                start = time.perf_counter()
                synth_gm.render_track(track, rate, sf)
                times.append(time.perf_counter() - start)
            print(path, rate, statistics.mean(times), 20 / statistics.mean(times))

``describe(1000)`` takes about 0.2 s.

Here: rendering (``render``, ``perform``, ``play``, ``render_track``). The tracks' parameters, labels
and sources (``describe``, ``source_string``, ``parse_source``, ``track_from_source``) are drawn in
``msagg.data.synth.gm_tracks`` and importable from here.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from msagg.data.errors import ConfigError
from msagg.data.names import escape_name
from msagg.data.synth import render as synth_render
from msagg.data.synth import soundfont as soundfonts
from msagg.data.synth.gm_tables import (  # the tables, importable from here as before
    SYNTH_GM_GENRES, FAMILIES, PARTS, CHANNELS, DRUM_CHANNEL, DRUM_PATTERNS, MAX_VOICES,
    Pool, POOLS, ELECTRIC_PROGRAMS, Kit, KITS, GenreSpec, GENRE_SPECS,
    GENRE_PARTS, TAGGED_FAMILIES, TAG_DEFINITIONS, SYNTH_GM_TAGS, TAG_LEVELS,
)  # noqa: F401
from msagg.data.synth.gm_tracks import (  # the tracks' parameters, importable from here as before
    SOURCE_PREFIX, SynthGMTrack, _rng, describe, parse_source, source_string, track_from_source,
)  # noqa: F401
from msagg.data.synth.soundfont import SoundFontError, SoundFontFile


# --------------------------------------------------------------------------------------------
# Rendering


def render(source: str, sample_rate: int = 22050) -> np.ndarray:
    """Renders one track of the synth-gm corpus through its SoundFont.

    Args:
        source: ``"synthgm:<seed>:<index>:<min_sec>:<max_sec>[:<soundfont path>]"``.
        sample_rate: Output sample rate (Hz, >= 2000).

    Returns:
        float32 (round(duration_sec * sample_rate),) mono waveform, finite, |x| < 1, RMS
        ``level_db`` dBFS (a little less where the limiter acts).

    Raises:
        SynthSourceError: For a malformed source string.
        ConfigError: For a sample rate below 2000 Hz.
        SoundFontError: For a SoundFont that is missing, unreadable or lacks a program the track
            plays, or when tinysoundfont is not installed.
    """
    track = track_from_source(source)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 2000:
        raise ConfigError(f"sample_rate must be an integer >= 2000 Hz, got {sample_rate!r}")
    return render_track(track, int(sample_rate), soundfonts.resolve(track.soundfont))


def _swing(beats: np.ndarray) -> np.ndarray:
    """Moves positions within each beat so that its second eighth starts at 2/3 (continuous, monotone)."""
    whole = np.floor(beats)
    frac = beats - whole
    return whole + np.where(frac < 0.5, frac * (4 / 3), 2 / 3 + (frac - 0.5) * (2 / 3))


@dataclasses.dataclass
class Performance:
    """What the synthesizer is told, sample by sample: channel settings and note events.

    Attributes:
        num_samples: Length of the rendering.
        programs: MIDI channel -> GM program (bank 0) of each part that plays.
        volumes: MIDI channel -> linear channel volume (the part's or the kit's mix gain).
        drum_program: GM drum kit (bank 128) on ``DRUM_CHANNEL``; -1 without drums.
        events: ``(sample, on, channel, key, velocity)`` sorted by sample, note-offs (``on`` 0)
            before note-ons (1) at the same sample; velocity in (0, 1] for note-ons, 0 for offs.
    """

    num_samples: int
    programs: dict[int, int]
    volumes: dict[int, float]
    drum_program: int
    events: list[tuple[int, int, int, int, float]]


def perform(track: SynthGMTrack, sample_rate: int) -> Performance:
    """The track's score (``synth_render.compose``) as MIDI events at ``sample_rate``, timing applied."""
    pool_roles = {part: POOLS[pool].roles for part, pool in zip(track.parts, track.pools) if part != "bass"}
    pool_roles["pad"] = ("pad",)  # the pad part holds chords whatever plays it
    score = synth_render.compose(track, rng=_rng(track.seed, track.index, 2), instruments=track.parts,
                                 roles={part: pool_roles[part] for part in track.parts if part in pool_roles},
                                 lead="lead")
    timing = _rng(track.seed, track.index, 3)
    num_samples = max(1, round(track.duration_sec * sample_rate))

    def seconds(beats) -> np.ndarray:
        beats = np.asarray(beats, dtype=np.float64)
        return np.interp(_swing(beats) if track.swing else beats, np.arange(score.beat_times.size), score.beat_times)

    jitter_sec = 0.0 if track.genre == "electronic" else 0.004
    events: list[tuple[int, int, int, int, float]] = []

    def add(channel: int, onsets: np.ndarray, ends: np.ndarray, keys: list[int], velocities: list[float]) -> None:
        shift = timing.normal(0, jitter_sec, onsets.size) if jitter_sec else np.zeros(onsets.size)
        starts = np.maximum(0, np.round((seconds(onsets) + shift) * sample_rate).astype(np.int64))
        stops = np.maximum(starts + 1, np.round((seconds(ends) + shift) * sample_rate).astype(np.int64))
        for start, stop, key, velocity in zip(starts.tolist(), stops.tolist(), keys, velocities):
            if start < num_samples:
                events.append((start, 1, channel, int(key), float(velocity)))
                events.append((stop, 0, channel, int(key), 0.0))

    for part in track.parts:
        if score.notes[part]:
            onsets, beats, keys, velocities = (np.array(column) for column in zip(*score.notes[part]))
            add(CHANNELS[part], onsets, onsets + beats, keys.tolist(), velocities.tolist())
    if track.drum_pattern != "none":
        kit = KITS[track.drum_kit]
        keys = {"kick": kit.kick, "snare": kit.snare,
                "hat": 46 if kit.electronic and track.drum_pattern == "four-on-the-floor" else kit.hat}
        hits = {name: list(played) for name, played in score.drums.items()}
        if kit.crash is not None:  # a crash on the first beat of every eighth bar
            hits["crash"] = [(bar * 4.0, 0.8) for bar in range(0, (score.beat_times.size - 1) // 4, 8)]
            keys["crash"] = kit.crash
        for name, played in hits.items():
            if played:
                onsets, velocities = (np.array(column, dtype=np.float64) for column in zip(*played))
                velocities = np.clip(velocities * 10.0 ** (score.gains_db.get(name, -3.0) / 20), 0.05, 1.0)
                add(DRUM_CHANNEL, onsets, onsets + 1.0, [keys[name]] * onsets.size, velocities.tolist())
    events.sort(key=lambda event: (event[0], event[1]))
    return Performance(
        num_samples=num_samples,
        programs={CHANNELS[part]: program for part, program in zip(track.parts, track.programs)},
        volumes={CHANNELS[part]: 10.0 ** (score.gains_db[part] / 20) for part in track.parts},
        drum_program=track.drum_program,
        events=events,
    )


def render_track(track: SynthGMTrack, sample_rate: int, soundfont: SoundFontFile) -> np.ndarray:
    """Plays ``track`` through ``soundfont``: float32 (round(duration_sec * sample_rate),), |x| < 1.

    Raises:
        SoundFontError: When the SoundFont lacks a program (bank 0) the track plays or has no drum
            kit, or renders silence.
    """
    performance = perform(track, sample_rate)
    mix = play(performance, soundfont, sample_rate, what=track.source).astype(np.float64)
    num_samples = performance.num_samples
    t = np.arange(num_samples) / sample_rate
    mix *= np.minimum(1.0, np.minimum(t / 0.01, (num_samples / sample_rate - t) / 0.3).clip(0))
    rms = math.sqrt(float(np.mean(mix**2)))
    if not rms > 1e-7:
        raise SoundFontError(f"{escape_name(soundfont.path)}: rendered silence for {escape_name(track.source)}")
    mix *= 10.0 ** (track.level_db / 20) / rms
    return synth_render.soft_limit(mix).astype(np.float32)


def play(performance: Performance, soundfont: SoundFontFile, sample_rate: int, what: str = "a track") -> np.ndarray:
    """Renders a performance with TinySoundFont: float32 (num_samples,), mono, not yet levelled.

    Args:
        performance: Channel settings and events (``perform``).
        soundfont: The SoundFont (loaded once per process, cloned per call: every call starts
            from silence with fresh channels).
        sample_rate: Hz.
        what: Names the track in errors.

    Raises:
        SoundFontError: When the SoundFont lacks a program (bank 0) or, with drums, any drum kit.
    """
    synth = soundfonts.load(soundfont)
    synth.set_output(soundfonts.renderer().OutputMode.Mono, sample_rate, 0.0)
    synth.set_max_voices(MAX_VOICES)
    for channel, program in performance.programs.items():
        if synth.get_preset_index(0, program) < 0:
            raise SoundFontError(f"{escape_name(soundfont.path)}: no preset for GM program {program} (bank 0), which "
                                 f"{escape_name(what)} plays; use a General MIDI SoundFont")
        synth.channel_set_bank(channel, 0)
        synth.channel_set_preset_number(channel, program, False)
        synth.channel_set_volume(channel, performance.volumes[channel])
    if performance.drum_program >= 0:
        # GM kits beyond the standard one (room, power, jazz, brush, electronic, TR-808) are optional.
        kit = performance.drum_program if synth.get_preset_index(128, performance.drum_program) >= 0 else 0
        if synth.get_preset_index(128, kit) < 0:
            raise SoundFontError(f"{escape_name(soundfont.path)}: no drum kit (bank 128), which {escape_name(what)} "
                                 "plays; use a General MIDI SoundFont")
        synth.channel_set_preset_number(DRUM_CHANNEL, kit, True)

    out = np.zeros(performance.num_samples, dtype=np.float32)
    raw = out.view(np.uint8)  # what the binding's render takes; 4 bytes per mono float32 sample
    position = 0
    for sample, on, channel, key, velocity in performance.events:
        if sample >= performance.num_samples:
            break
        if sample > position:
            synth.render(raw[4 * position : 4 * sample])
            position = sample
        if on:
            synth.channel_note_on(channel, key, velocity)
        else:
            synth.channel_note_off(channel, key)
    if position < performance.num_samples:
        synth.render(raw[4 * position :])
    return out
