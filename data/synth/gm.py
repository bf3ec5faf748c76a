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
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from msagg.data.synth import soundfont as soundfonts
from msagg.data.synth import render as synth_render
from msagg.data.errors import ConfigError
from msagg.data.synth.soundfont import SoundFontError, SoundFontFile
from msagg.data.synth.music import (
    DYNAMICS, ENERGETIC_BPM, FAST_BPM, LEVEL_RANGE_DB, LOUD_DB, QUIET_DB, REGISTERS, SLOW_BPM,
    _check_durations, _check_int, _PROGRESSIONS, split_corpus_source,
)  # fmt: skip
from msagg.data.synth.gm_tables import (  # the tables, importable from here as before
    SYNTH_GM_GENRES, FAMILIES, PARTS, CHANNELS, DRUM_CHANNEL, DRUM_PATTERNS, MAX_VOICES,
    Pool, POOLS, ELECTRIC_PROGRAMS, Kit, KITS, GenreSpec, GENRE_SPECS,
    GENRE_PARTS, TAGGED_FAMILIES, TAG_DEFINITIONS, SYNTH_GM_TAGS, TAG_LEVELS,
)  # noqa: F401
from msagg.data.synth.render import KEY_NAMES
from msagg.data.names import escape_name

SOURCE_PREFIX = "synthgm:"
_SOURCE_FORMAT = "synthgm:<seed>:<index>:<min_sec>:<max_sec>[:<soundfont path>]"
_STREAM = 0x67D1  # leads every draw's seed: no stream of this corpus is one of data.synth's

@dataclasses.dataclass(frozen=True)
class SynthGMTrack:
    """The generating parameters and labels of one synth-gm track (no audio).

    Attributes:
        index: Position of the track in its corpus.
        seed: Corpus seed.
        source: What ``render`` takes (see ``source_string``).
        duration_sec: Length of the rendered audio (seconds).
        genre: One of ``SYNTH_GM_GENRES``.
        tags: The track's tags, in ``SYNTH_GM_TAGS`` order.
        tempo_bpm: Nominal tempo (beats per minute); it drifts by at most 3 %.
        key: Tonic pitch class, one of ``KEY_NAMES``.
        mode: "major" or "minor".
        progression: Chord roots as 0-based scale degrees, one chord per bar, repeated.
        parts: The parts that play, in ``PARTS`` order ("lead" always).
        pools: The pool each part's program was drawn from (keys of ``POOLS``).
        programs: The GM program (0-127) of each part.
        drum_pattern: One of ``DRUM_PATTERNS``.
        drum_kit: A key of ``KITS``, or "none" without drums.
        drum_program: The kit's GM drum program (bank 128), -1 without drums.
        swing: Whether off-beat eighths are swung (only with drums).
        register: Register of melody and chords, "low", "mid" or "high".
        dynamics: "soft", "medium" or "hard": note velocities (timbre and balance; not the level).
        level_db: RMS level of the rendered mix (dBFS), drawn independently of everything else.
        soundfont: The ``.sf2`` path the source names; None for the default SoundFont.
    """

    index: int
    seed: int
    source: str
    duration_sec: float
    genre: str
    tags: tuple[str, ...]
    tempo_bpm: float
    key: str
    mode: str
    progression: tuple[int, ...]
    parts: tuple[str, ...]
    pools: tuple[str, ...]
    programs: tuple[int, ...]
    drum_pattern: str
    drum_kit: str
    drum_program: int
    swing: bool
    register: str
    dynamics: str
    level_db: float
    soundfont: str | None = None

    @property
    def families(self) -> tuple[str, ...]:
        """The GM families of the parts' programs, in ``FAMILIES`` order."""
        present = {FAMILIES[p // 8] for p in self.programs}
        return tuple(f for f in FAMILIES if f in present)


# --------------------------------------------------------------------------------------------
# Parameters and labels


def source_string(seed: int, index: int, min_sec: float = 10.0, max_sec: float = 30.0,
                  soundfont: str | None = None) -> str:
    """The source string that ``render`` turns into track ``index`` of corpus ``seed``.

    Args:
        seed: Corpus seed (>= 0).
        index: Track index (>= 0).
        min_sec: Shortest track duration of the corpus (seconds).
        max_sec: Longest track duration of the corpus (seconds).
        soundfont: Path of the ``.sf2`` to render with (None: the default SoundFont).

    Returns:
        ``"synthgm:<seed>:<index>:<min_sec>:<max_sec>"`` (``":<soundfont>"`` appended when given),
        durations written so they parse back exactly.

    Raises:
        ConfigError: For a negative seed or index, invalid durations or an empty soundfont path.
    """
    seed, index = _check_int("seed", seed), _check_int("index", index)
    min_sec, max_sec = _check_durations(min_sec, max_sec)
    if soundfont is not None and (not isinstance(soundfont, str) or not soundfont):
        raise ConfigError(f"soundfont must be a path or None, got {soundfont!r}")
    tail = "" if soundfont is None else f":{soundfont}"
    return f"{SOURCE_PREFIX}{seed}:{index}:{min_sec!r}:{max_sec!r}{tail}"


def parse_source(source: str) -> tuple[int, int, float, float, str | None]:
    """Splits a ``synthgm:`` source string.

    Returns:
        ``(seed, index, min_sec, max_sec, soundfont)``, soundfont None for the default.

    Raises:
        SynthSourceError: When ``source`` is not ``"synthgm:<seed>:<index>:<min_sec>:<max_sec>"``
            (optionally ``":<path>"``) with non-negative integers and 0 < min_sec <= max_sec.
    """
    return split_corpus_source(source, SOURCE_PREFIX.rstrip(":"), "synth-gm", _SOURCE_FORMAT, tail=True)


def track_from_source(source: str) -> SynthGMTrack:
    """The parameters and labels of the track a source string names (no audio rendered).

    Raises:
        SynthSourceError: For a malformed source string.
    """
    return _draw_track(*parse_source(source))


def describe(num_tracks: int, seed: int = 0, min_sec: float = 10.0, max_sec: float = 30.0,
             soundfont: str | None = None) -> list[SynthGMTrack]:
    """Parameters and labels of a corpus of ``num_tracks`` tracks, cheaply (no audio rendered).

    A track depends only on ``(seed, index, min_sec, max_sec)``, not on ``num_tracks``; the
    SoundFont changes the sound, never the parameters or the labels.

    Args:
        num_tracks: Number of tracks (>= 0).
        seed: Corpus seed (>= 0).
        min_sec: Shortest duration (seconds, > 0).
        max_sec: Longest duration (seconds, >= min_sec).
        soundfont: Written into the sources (None: the default SoundFont).

    Returns:
        One ``SynthGMTrack`` per index ``0 .. num_tracks - 1``.

    Raises:
        ConfigError: For a negative count or seed, or invalid durations.
    """
    num_tracks, seed = _check_int("num_tracks", num_tracks), _check_int("seed", seed)
    min_sec, max_sec = _check_durations(min_sec, max_sec)
    return [_draw_track(seed, index, min_sec, max_sec, soundfont) for index in range(num_tracks)]


def _tags_for(params: dict) -> tuple[str, ...]:
    """Applies ``TAG_DEFINITIONS`` to a track's parameters (the ``SynthGMTrack`` fields but labels)."""
    tempo, drums = params["tempo_bpm"], params["drum_pattern"] != "none"
    families = {FAMILIES[p // 8] for p in params["programs"]}
    holds = {
        "loud": params["level_db"] >= LOUD_DB,
        "quiet": params["level_db"] < QUIET_DB,
        "low-register": params["register"] == "low",
        "high-register": params["register"] == "high",
        "fast": tempo >= FAST_BPM,
        "slow": tempo < SLOW_BPM,
        "soft": params["dynamics"] == "soft",
        "hard": params["dynamics"] == "hard",
        "swing": params["swing"],
        **{family: family in families for family in TAGGED_FAMILIES},
        "drums": drums,
        "dance": tempo >= FAST_BPM and params["drum_pattern"] == "four-on-the-floor" and "bass" in params["parts"],
        "calm": tempo < SLOW_BPM and not drums and params["dynamics"] == "soft",
        "energetic": tempo >= ENERGETIC_BPM and drums and params["dynamics"] == "hard",
        "happy": params["mode"] == "major",
        "sad": params["mode"] == "minor",
        "unplugged": not (set(params["programs"]) & ELECTRIC_PROGRAMS)
                     and not (drums and KITS[params["drum_kit"]].electronic),
    }
    return tuple(tag for tag in SYNTH_GM_TAGS if holds[tag])


def _rng(seed: int, index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([_STREAM, seed, index, stream])


def _draw_track(seed: int, index: int, min_sec: float, max_sec: float, soundfont: str | None = None) -> SynthGMTrack:
    # Every draw happens unconditionally and in a fixed order, so the stream stays aligned.
    rng = _rng(seed, index, 1)
    genre = SYNTH_GM_GENRES[int(rng.integers(len(SYNTH_GM_GENRES)))]
    spec = GENRE_SPECS[genre]
    duration_sec = float(np.clip(round(float(rng.uniform(min_sec, max_sec)), 3), min_sec, max_sec))
    tempo_bpm = round(float(rng.uniform(*spec.tempo_bpm)), 1)
    drum_pattern = DRUM_PATTERNS[int(rng.choice(3, p=spec.drums))]
    kit_names = list(spec.kits)
    kit = kit_names[int(rng.choice(len(kit_names), p=list(spec.kits.values())))]
    kit_program = KITS[kit].programs[int(rng.integers(len(KITS[kit].programs)))]
    swung = bool(rng.random() < spec.swing)
    parts, pools, programs = [], [], []
    for part in PARTS:
        probability, weights = spec.parts[part]
        plays = rng.random() < probability
        names = list(weights)
        pool = names[int(rng.choice(len(names), p=np.array(list(weights.values())) / sum(weights.values())))]
        program = POOLS[pool].programs[int(rng.integers(len(POOLS[pool].programs)))]
        if plays:
            parts.append(part)
            pools.append(pool)
            programs.append(program)
    mode = "major" if rng.random() < spec.major else "minor"
    key = KEY_NAMES[int(rng.integers(12))]
    progressions = _PROGRESSIONS[mode]
    progression = progressions[int(rng.integers(len(progressions)))]
    register = REGISTERS[int(rng.choice(3, p=spec.register))]
    dynamics = DYNAMICS[int(rng.choice(3, p=spec.dynamics))]
    level_db = round(float(rng.uniform(*LEVEL_RANGE_DB)), 2)
    drums = drum_pattern != "none"
    params = dict(
        tempo_bpm=tempo_bpm, key=key, mode=mode, progression=tuple(progression), parts=tuple(parts),
        pools=tuple(pools), programs=tuple(programs), drum_pattern=drum_pattern, drum_kit=kit if drums else "none",
        drum_program=kit_program if drums else -1, swing=swung and drums, register=register, dynamics=dynamics,
        level_db=level_db,
    )
    return SynthGMTrack(
        index=index, seed=seed, source=source_string(seed, index, min_sec, max_sec, soundfont),
        duration_sec=duration_sec, genre=genre, tags=_tags_for(params), soundfont=soundfont, **params,
    )


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
