"""The list of tracks a dataset adapter produces, and how one track's audio is obtained."""

from __future__ import annotations

import dataclasses

import numpy as np

TASKS = ("tags", "classes")
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class TrackList:
    """What a dataset adapter hands to prepare (see docs/DESIGN.md).

    Attributes:
        name: Dataset name, e.g. "synth-tags" or "esc10".
        task: "tags" (multi-label) or "classes" (single-label).
        label_names: Label names, in column order of ``labels``.
        track_ids: Unique track ids.
        sources: File paths, or "synth:..." strings rendered by ``data.synth``.
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


def load_source(source: str, sample_rate: int) -> np.ndarray:
    """Decodes one track: a ``synth:`` string is rendered, anything else is an audio file path.

    Returns:
        float32 (num_samples,) mono waveform at ``sample_rate``.

    Raises:
        data.audio.AudioError: For an unreadable or empty file.
    """
    if source.startswith("synth:"):
        from data import synth

        return synth.render(source, sample_rate)
    from data import audio

    return audio.load(source, sample_rate)
