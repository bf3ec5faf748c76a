"""The list of tracks a dataset adapter produces, how one track's audio is obtained, and how file
names are written as text.

File names are bytes. Python holds a name it cannot decode as UTF-8 as a ``str`` with each bad
byte turned into a lone surrogate (``os.fsdecode``: byte 0xE9 becomes U+DCE9), which opens the
file but cannot be written as UTF-8. A name may also hold a newline or other control characters,
which would break a CSV row or a log line. So msagg keeps names in memory as Python gives them
(``TrackList.sources`` open the files as they are) and writes them into text (CSV files, logs,
error messages, the HDF5 cache) through ``escape_name``, a reversible backslash escape:

- an undecodable byte ``0xE9`` -> ``\\xe9`` (always 0x80..0xFF: bytes below decode as ASCII);
- newline, carriage return, tab -> ``\\n``, ``\\r``, ``\\t``; every other control character
  (U+0000..U+001F, U+007F..U+009F), U+2028, U+2029 and any other lone surrogate -> ``\\uXXXX``;
- a backslash -> ``\\\\``;
- everything else (spaces, leading dashes, accents, any printable Unicode) unchanged, so an
  ordinary name reads the same in the cache as on disk.

``unescape_name`` undoes it and ``os.fsencode(unescape_name(text))`` gives the file name's bytes:
``caf\\xe9.ogg`` in a cache or ``skipped.csv`` is the file whose name is ``b"caf\\xe9.ogg"``.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

TASKS = ("tags", "classes")
SPLITS = ("train", "valid", "test")

_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|(.)|$)", re.DOTALL)
_UNESCAPED = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def _escape_char(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the undecodable byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def escape_name(name: str) -> str:
    """A file name, path or any name made of one, as printable text that UTF-8 can hold.

    Args:
        name: As Python holds it (``os.fsdecode``: undecodable bytes as U+DC80..U+DCFF).

    Returns:
        The reversible escaped form described in the module docstring; ``name`` itself when it
        holds no backslash, control character or surrogate.
    """
    name = str(name)
    return _NEEDS_ESCAPE.sub(_escape_char, name) if _NEEDS_ESCAPE.search(name) else name


def unescape_name(text: str) -> str:
    """Undoes ``escape_name``: ``os.fsencode(unescape_name(escape_name(n))) == os.fsencode(n)``.

    Raises:
        ValueError: For a backslash that does not start one of ``escape_name``'s escapes.
    """

    def undo(match: re.Match) -> str:
        byte, code, other = match.groups()
        if byte is not None and int(byte, 16) >= 0x80:
            return chr(0xDC00 + int(byte, 16))
        if code is not None:
            return chr(int(code, 16))
        if other is not None and other in _UNESCAPED:
            return _UNESCAPED[other]
        raise ValueError(f"{text!r}: {match.group()!r} at {match.start()} is not an escape of escape_name")

    return _ESCAPE.sub(undo, text) if "\\" in text else text


@dataclasses.dataclass
class TrackList:
    """What a dataset adapter hands to prepare (see docs/DESIGN.md).

    Attributes:
        name: Dataset name, e.g. "synth-tags" or "esc10"; text (a folder's name escaped).
        task: "tags" (multi-label) or "classes" (single-label).
        label_names: Label names, in column order of ``labels``.
        track_ids: Unique track ids (ids made of file names hold them as Python does).
        sources: File paths as Python holds them (``os.fsdecode``; see the module docstring), or
            "synth:..." / "synthgm:..." strings rendered by ``msagg.data.synth.music`` / ``msagg.data.synth.gm``. Text
            written from a TrackList (the cache, ``skipped.csv``, messages) holds ``escape_name`` of
            its names.
        labels: (num_tracks, num_labels) uint8 multi-hot (one-hot for classes).
        split: "train", "valid" or "test" per track.
        split_info: How the split was made (kind, seed, fold, files); recorded in the cache.
        skipped: (path or id, reason) of tracks dropped while listing.
    """

    name: str
    task: str
    label_names: list[str]
    track_ids: list[str]
    sources: list[str]
    labels: np.ndarray
    split: list[str]
    split_info: dict = dataclasses.field(default_factory=dict)
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)

    def __post_init__(self):
        n = len(self.track_ids)
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if len(self.sources) != n or len(self.split) != n or self.labels.shape != (n, len(self.label_names)):
            raise ValueError(
                f"{self.name}: inconsistent track list: {n} ids, {len(self.sources)} sources, "
                f"{len(self.split)} split entries, labels {self.labels.shape} for {len(self.label_names)} labels"
            )
        bad = sorted(set(self.split) - set(SPLITS))
        if bad:
            raise ValueError(f"{self.name}: unknown split names {bad}; use {SPLITS}")

    def __len__(self) -> int:
        return len(self.track_ids)


GENERATED_PREFIXES = ("synth:", "synthgm:")
"""Sources that name a generated track (rendered by ``msagg.data.synth.music`` / ``msagg.data.synth.gm``), not a file."""


def absolute_source(source: str) -> str:
    """A file source as an absolute path (for a process with another working folder); a generated one unchanged."""
    return source if source.startswith(GENERATED_PREFIXES) else os.path.abspath(source)


def load_source(source: str, sample_rate: int) -> np.ndarray:
    """Decodes one track: a ``synth:`` or ``synthgm:`` string is rendered, anything else is an audio file path.

    Returns:
        float32 (num_samples,) mono waveform at ``sample_rate``.

    Raises:
        data.audio.AudioError: For an unreadable or empty file.
        data.soundfont.SoundFontError: For a ``synthgm:`` source whose SoundFont cannot be used.
    """
    if source.startswith("synth:"):
        from msagg.data.synth import music as synth

        return synth.render(source, sample_rate)
    if source.startswith("synthgm:"):
        from msagg.data.synth import gm as synth_gm

        return synth_gm.render(source, sample_rate)
    from msagg.data import audio

    return audio.load(source, sample_rate)


def source_seconds(source: str) -> float | None:
    """A track's duration without decoding it (a generated track's parameters, a file's header).

    Returns:
        Seconds, or None when unknown (a file that cannot be read, a malformed source).
    """
    try:
        if source.startswith("synth:"):
            from msagg.data.synth import music as synth

            return synth.track_from_source(source).duration_sec
        if source.startswith("synthgm:"):
            from msagg.data.synth import gm as synth_gm

            return synth_gm.track_from_source(source).duration_sec
    except ValueError:  # a malformed source: decoding will say why
        return None
    from msagg.data import audio

    return audio.duration(source)
