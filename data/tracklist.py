"""The list of tracks a dataset adapter produces, and how one track's audio is obtained.

A TrackList holds file names as Python gives them (``os.fsdecode``: undecodable bytes as
surrogates); whatever is written from it as text goes through ``msagg.data.names.escape_name``.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from msagg.data.splits import SPLITS

TASKS = ("tags", "classes")


@dataclasses.dataclass
class TrackList:
    """What a dataset adapter hands to prepare (see docs/DESIGN.md).

    Attributes:
        name: Dataset name, e.g. "synth-tags" or "esc10"; text (a folder's name escaped).
        task: "tags" (multi-label) or "classes" (single-label).
        label_names: Label names, in column order of ``labels``.
        track_ids: Unique track ids (ids made of file names hold them as Python does).
        sources: File paths as Python holds them (``os.fsdecode``; see ``msagg.data.names``), or
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
        msagg.data.synth.soundfont.SoundFontError: For a ``synthgm:`` source whose SoundFont cannot be used.
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
