"""The synth-gm corpus's tracks: parameters and labels drawn from ``(seed, index)``, and source strings.

No audio here (``msagg.data.synth.gm`` renders, and documents the corpus); ``describe`` is cheap.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from msagg.data.errors import ConfigError
from msagg.data.synth.gm_tables import (
    DRUM_PATTERNS, ELECTRIC_PROGRAMS, FAMILIES, GENRE_SPECS, KITS, PARTS, POOLS, SYNTH_GM_GENRES, SYNTH_GM_TAGS,
    TAGGED_FAMILIES,
)
from msagg.data.synth.music import (
    DYNAMICS, ENERGETIC_BPM, FAST_BPM, LEVEL_RANGE_DB, LOUD_DB, QUIET_DB, REGISTERS, SLOW_BPM,
    _check_durations, _check_int, _PROGRESSIONS, split_corpus_source,
)  # fmt: skip
from msagg.data.synth.render import KEY_NAMES

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
    """The random stream ``stream`` of track ``index`` of corpus ``seed`` (1: its parameters; 2, 3: its score
    and timing, drawn by ``msagg.data.synth.gm``)."""
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
