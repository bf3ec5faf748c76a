"""The General MIDI tables of the synth-gm corpus: families, program pools, kits, genres, tags.

Pure data (no audio, no randomness): ``msagg.data.synth.gm`` draws tracks from these tables and renders
them. ``POOLS`` lists the pools of GM programs that can play a part, ``KITS`` the drum kits,
``GENRE_SPECS`` each genre's tempo, drums, kits and the pools its parts draw from (``GENRE_PARTS``
is the same without the draws' other parameters), and ``TAG_DEFINITIONS`` what each tag means in
terms of the generating parameters.
"""

from __future__ import annotations

import dataclasses

from msagg.data.synth.music import ENERGETIC_BPM, FAST_BPM, LOUD_DB, QUIET_DB, SLOW_BPM

SYNTH_GM_GENRES = ("rock", "pop", "jazz", "classical", "electronic", "folk", "ambient")
"""Genre names, the classes of ``synth-gm-genre``."""

FAMILIES = (
    "piano", "chromatic-percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass", "reed", "pipe",
    "synth-lead", "synth-pad", "synth-effects", "ethnic", "percussive", "sound-effects",
)  # fmt: skip
"""The 16 General MIDI instrument families; program p belongs to ``FAMILIES[p // 8]``."""

PARTS = ("lead", "chords", "pad", "bass")
"""The pitched parts a track may have, each on its own MIDI channel (``CHANNELS``); drums on 9."""
CHANNELS = {"lead": 0, "chords": 1, "pad": 2, "bass": 3}
DRUM_CHANNEL = 9
DRUM_PATTERNS = ("four-on-the-floor", "backbeat", "none")
MAX_VOICES = 128


@dataclasses.dataclass(frozen=True)
class Pool:
    """GM programs that can play a part, and the accompaniment roles they take ("comp", "arp", "pad")."""

    programs: tuple[int, ...]
    roles: tuple[str, ...] = ()


POOLS = {
    "grand-piano": Pool((0, 1), ("comp", "arp", "pad")),  # acoustic grand, bright acoustic
    "electric-piano": Pool((2, 4, 5), ("comp", "pad", "arp")),  # electric grand, electric pianos 1-2
    "harpsichord": Pool((6,), ("arp", "comp")),
    "mallets": Pool((8, 9, 10, 11, 12, 13), ("arp",)),  # celesta, glockenspiel, music box, vibraphone, marimba, ...
    "vibraphone": Pool((11,), ("arp", "comp")),
    "jazz-organ": Pool((16, 17), ("pad", "comp")),  # drawbar, percussive
    "rock-organ": Pool((16, 18), ("pad", "comp")),  # drawbar, rock
    "church-organ": Pool((19, 20), ("pad",)),  # church, reed organ
    "accordion": Pool((21, 22, 23), ("pad", "comp")),  # accordion, harmonica, tango accordion
    "acoustic-guitar": Pool((24, 25), ("arp", "comp")),  # nylon, steel
    "clean-guitar": Pool((26, 27, 28), ("comp", "arp")),  # jazz, clean, muted
    "distorted-guitar": Pool((29, 30), ("comp",)),  # overdriven, distortion
    "acoustic-bass": Pool((32,)),
    "electric-bass": Pool((33, 34, 35)),  # finger, pick, fretless
    "slap-bass": Pool((36, 37)),
    "synth-bass": Pool((38, 39)),
    "solo-strings": Pool((40, 41, 42), ("pad",)),  # violin, viola, cello
    "low-strings": Pool((42, 43)),  # cello, contrabass: a bass line
    "tremolo-strings": Pool((44,), ("pad",)),
    "plucked-strings": Pool((45, 46), ("arp",)),  # pizzicato, harp
    "string-ensemble": Pool((48, 49, 50, 51), ("pad",)),  # string ensembles 1-2, synth strings 1-2
    "choir": Pool((52, 53, 54), ("pad",)),  # choir aahs, voice oohs, synth voice
    "brass": Pool((56, 57, 59, 60), ("pad",)),  # trumpet, trombone, muted trumpet, French horn
    "brass-section": Pool((61, 62, 63), ("comp", "pad")),  # brass section, synth brass 1-2
    "tuba": Pool((58,)),
    "saxophone": Pool((64, 65, 66, 67), ("pad",)),  # soprano, alto, tenor, baritone
    "woodwinds": Pool((68, 69, 71), ("pad", "arp")),  # oboe, English horn, clarinet
    "bassoon": Pool((70,)),
    "flute": Pool((72, 73, 74), ("arp", "pad")),  # piccolo, flute, recorder
    "folk-pipe": Pool((75, 77, 78, 79), ("pad",)),  # pan flute, shakuhachi, whistle, ocarina
    "synth-lead": Pool((80, 81, 82, 83, 84, 85, 86, 87), ("arp", "comp")),
    "synth-pad": Pool((88, 89, 90, 91, 92, 93, 94, 95), ("pad",)),
    "banjo": Pool((105,), ("arp", "comp")),
    "fiddle": Pool((110,), ("pad",)),
}
"""Every program pool a part draws from, by name."""

ELECTRIC_PROGRAMS = frozenset(
    {2, 4, 5, 7, 16, 17, 18, 26, 27, 28, 29, 30, 31, 33, 34, 35, 36, 37, 38, 39, 50, 51, 54, 62, 63}
    | set(range(80, 104))
)
"""Programs of electric or electronic instruments (the rest are acoustic: "unplugged")."""


@dataclasses.dataclass(frozen=True)
class Kit:
    """A drum kit: its GM drum programs (bank 128) and the keys its kick, snare, hat and crash play."""

    programs: tuple[int, ...]
    kick: int
    snare: int
    hat: int
    crash: int | None
    electronic: bool = False


KITS = {
    "rock": Kit((0, 8, 16), kick=36, snare=38, hat=42, crash=49),  # standard, room, power
    "jazz": Kit((32, 40), kick=35, snare=38, hat=51, crash=None),  # jazz, brush; the "hat" part on the ride
    "electronic": Kit((24, 25), kick=36, snare=39, hat=42, crash=None, electronic=True),  # electronic, TR-808; clap
}
"""Drum kits by name. An electronic kit plays open hi-hats (46) on a four-on-the-floor's off-beats."""


@dataclasses.dataclass(frozen=True)
class GenreSpec:
    """Genre-conditional distributions (probabilities in the order of the value tuples)."""

    tempo_bpm: tuple[float, float]
    drums: tuple[float, float, float]  # DRUM_PATTERNS
    kits: dict[str, float]
    swing: float
    major: float
    register: tuple[float, float, float]  # REGISTERS
    dynamics: tuple[float, float, float]  # DYNAMICS
    parts: dict[str, tuple[float, dict[str, float]]]  # part -> (probability it plays, pool -> weight)


GENRE_SPECS = {
    "rock": GenreSpec(
        (96, 160), (0.15, 0.85, 0.0), {"rock": 1.0}, 0.05, 0.5, (0.4, 0.45, 0.15), (0.05, 0.35, 0.6), {
            "lead": (1.0, {"distorted-guitar": 0.45, "clean-guitar": 0.15, "rock-organ": 0.1, "synth-lead": 0.1,
                           "grand-piano": 0.1, "saxophone": 0.1}),
            "chords": (0.9, {"distorted-guitar": 0.5, "clean-guitar": 0.2, "grand-piano": 0.15, "rock-organ": 0.15}),
            "pad": (0.3, {"rock-organ": 0.4, "string-ensemble": 0.3, "synth-pad": 0.3}),
            "bass": (0.95, {"electric-bass": 0.85, "slap-bass": 0.05, "synth-bass": 0.1}),
        }),
    "pop": GenreSpec(
        (84, 128), (0.35, 0.55, 0.1), {"rock": 0.6, "electronic": 0.4}, 0.1, 0.7, (0.2, 0.5, 0.3), (0.2, 0.55, 0.25), {
            "lead": (1.0, {"grand-piano": 0.2, "synth-lead": 0.2, "clean-guitar": 0.15, "electric-piano": 0.15,
                           "saxophone": 0.1, "solo-strings": 0.1, "flute": 0.1}),
            "chords": (0.9, {"grand-piano": 0.3, "electric-piano": 0.2, "acoustic-guitar": 0.2, "clean-guitar": 0.2,
                             "mallets": 0.1}),
            "pad": (0.5, {"string-ensemble": 0.4, "synth-pad": 0.4, "choir": 0.2}),
            "bass": (0.9, {"electric-bass": 0.6, "synth-bass": 0.3, "slap-bass": 0.1}),
        }),
    "jazz": GenreSpec(
        (70, 170), (0.0, 0.75, 0.25), {"jazz": 1.0}, 0.85, 0.55, (0.3, 0.5, 0.2), (0.35, 0.5, 0.15), {
            "lead": (1.0, {"saxophone": 0.35, "brass": 0.25, "grand-piano": 0.15, "clean-guitar": 0.1,
                           "vibraphone": 0.1, "woodwinds": 0.05}),
            "chords": (0.9, {"grand-piano": 0.5, "jazz-organ": 0.2, "clean-guitar": 0.15, "electric-piano": 0.15}),
            "pad": (0.25, {"brass-section": 0.5, "saxophone": 0.5}),
            "bass": (0.95, {"acoustic-bass": 0.8, "electric-bass": 0.2}),
        }),
    "classical": GenreSpec(
        (56, 140), (0.0, 0.0, 1.0), {"rock": 1.0}, 0.0, 0.55, (0.2, 0.45, 0.35), (0.35, 0.45, 0.2), {
            "lead": (1.0, {"solo-strings": 0.35, "woodwinds": 0.2, "flute": 0.15, "grand-piano": 0.15, "brass": 0.1,
                           "harpsichord": 0.05}),
            "chords": (0.85, {"grand-piano": 0.35, "plucked-strings": 0.25, "harpsichord": 0.15,
                              "string-ensemble": 0.25}),
            "pad": (0.6, {"string-ensemble": 0.6, "choir": 0.15, "church-organ": 0.1, "tremolo-strings": 0.15}),
            "bass": (0.7, {"low-strings": 0.7, "bassoon": 0.15, "tuba": 0.15}),
        }),
    "electronic": GenreSpec(
        (112, 140), (0.85, 0.15, 0.0), {"electronic": 1.0}, 0.0, 0.5, (0.25, 0.45, 0.3), (0.05, 0.4, 0.55), {
            "lead": (1.0, {"synth-lead": 0.65, "mallets": 0.1, "electric-piano": 0.1, "brass-section": 0.1,
                           "grand-piano": 0.05}),
            "chords": (0.8, {"synth-lead": 0.4, "synth-pad": 0.3, "electric-piano": 0.2, "mallets": 0.1}),
            "pad": (0.7, {"synth-pad": 0.8, "choir": 0.2}),
            "bass": (0.95, {"synth-bass": 0.85, "electric-bass": 0.15}),
        }),
    "folk": GenreSpec(
        (78, 136), (0.0, 0.4, 0.6), {"rock": 1.0}, 0.3, 0.7, (0.25, 0.5, 0.25), (0.35, 0.5, 0.15), {
            "lead": (1.0, {"flute": 0.15, "folk-pipe": 0.2, "fiddle": 0.2, "accordion": 0.15, "acoustic-guitar": 0.1,
                           "banjo": 0.1, "woodwinds": 0.1}),
            "chords": (0.95, {"acoustic-guitar": 0.6, "banjo": 0.15, "accordion": 0.1, "grand-piano": 0.1,
                              "plucked-strings": 0.05}),
            "pad": (0.2, {"accordion": 0.5, "string-ensemble": 0.5}),
            "bass": (0.6, {"acoustic-bass": 0.8, "electric-bass": 0.2}),
        }),
    "ambient": GenreSpec(
        (52, 96), (0.1, 0.05, 0.85), {"electronic": 1.0}, 0.0, 0.45, (0.3, 0.35, 0.35), (0.65, 0.3, 0.05), {
            "lead": (1.0, {"folk-pipe": 0.2, "flute": 0.1, "mallets": 0.25, "electric-piano": 0.1, "grand-piano": 0.1,
                           "synth-lead": 0.1, "solo-strings": 0.15}),
            "chords": (0.7, {"mallets": 0.35, "grand-piano": 0.15, "plucked-strings": 0.2, "electric-piano": 0.15,
                             "acoustic-guitar": 0.15}),
            "pad": (0.95, {"synth-pad": 0.55, "string-ensemble": 0.25, "choir": 0.2}),
            "bass": (0.35, {"synth-bass": 0.5, "low-strings": 0.3, "acoustic-bass": 0.2}),
        }),
}

GENRE_PARTS = {genre: {part: dict(pools) for part, (_, pools) in spec.parts.items()} for genre, spec in GENRE_SPECS.items()}
"""Per genre and part, the pools it draws from with their weights (for the README and the tests)."""

_DRAWN_FAMILIES = {FAMILIES[program // 8] for parts in GENRE_PARTS.values() for pools in parts.values()
                   for name in pools for program in POOLS[name].programs}
TAGGED_FAMILIES = tuple(family for family in FAMILIES if family in _DRAWN_FAMILIES)
"""The GM families some pool draws from, each a tag (synth effects, percussive and sound effects are not)."""

TAG_DEFINITIONS = {
    # acoustic
    "loud": f"RMS level of the mix >= {LOUD_DB:g} dBFS",
    "quiet": f"RMS level of the mix < {QUIET_DB:g} dBFS",
    "low-register": "melody and chords an octave below the middle register (melody around C4)",
    "high-register": "melody and chords an octave above the middle register (melody around C6)",
    "fast": f"tempo >= {FAST_BPM:g} BPM",
    "slow": f"tempo < {SLOW_BPM:g} BPM",
    "soft": "soft dynamics (note velocities around 0.55 of full)",
    "hard": "hard dynamics (note velocities around 0.95 of full)",
    "swing": "swung eighths (off-beat eighths at the triplet position), drums playing them",
    # instruments: the GM family of a program one of the parts plays
    **{family: f"a GM {family.replace('-', ' ')} program plays (programs {8 * FAMILIES.index(family)}-"
               f"{8 * FAMILIES.index(family) + 7})" for family in TAGGED_FAMILIES},
    "drums": "a GM drum kit plays (four-on-the-floor or backbeat)",
    # high level
    "dance": f"fast (>= {FAST_BPM:g} BPM) + four-on-the-floor kick + a bass line",
    "calm": f"slow (< {SLOW_BPM:g} BPM) + no drums + soft dynamics",
    "energetic": f"tempo >= {ENERGETIC_BPM:g} BPM + drums + hard dynamics",
    "happy": "major key",
    "sad": "minor key",
    "unplugged": "every program acoustic (no electric piano, organ, guitar or bass, no synth) and no electronic kit",
}
"""What each tag means, in terms of the generating parameters."""

SYNTH_GM_TAGS = tuple(TAG_DEFINITIONS)
"""Tag names, the labels of ``synth-gm-tags``."""

TAG_LEVELS = {
    **{tag: "acoustic" for tag in ("loud", "quiet", "low-register", "high-register", "fast", "slow", "soft", "hard",
                                   "swing")},
    **{tag: "instrument" for tag in (*TAGGED_FAMILIES, "drums")},
    **{tag: "high-level" for tag in ("dance", "calm", "energetic", "happy", "sad", "unplugged")},
}
"""Level of abstraction of each tag: "acoustic", "instrument" or "high-level"."""
