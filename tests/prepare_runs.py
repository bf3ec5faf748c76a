"""Finished prepare run folders for tests, built through the code the prepare stage uses.

``RunFolder`` writes config.json, metadata.json and DONE; ``msagg.data.formats.cache_writer.write_cache`` writes
the cache (``cache/``, shards and index) with the run's config hash, so downstream stages accept the folder as a real prepare run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from msagg.data.formats.cache import DIR_NAME
from msagg.data.formats.cache_writer import write_cache
from msagg.data.tracklist import TrackList
from msagg.stages import prepare
from msagg.stages.runs.folder import RunFolder


def make_prepare_run(folder: Path, tracklist: TrackList, waves: Iterable[np.ndarray], *, sample_rate: int,
                     tracks_per_shard: int | None = None) -> Path:
    """Writes ``folder`` as a finished prepare run holding ``tracklist`` and its waveforms.

    Args:
        folder: The run folder to create.
        tracklist: Tracks, labels and split (its ``name`` becomes the config's dataset).
        waves: float32 waveforms in [-1, 1] (or int16), one per track, at ``sample_rate``.
        sample_rate: Hz.
        tracks_per_shard: Consecutive tracks per shard (default: one shard).

    Returns:
        ``folder``.
    """
    config = prepare.Config(dataset=tracklist.name, sample_rate=sample_rate)
    with RunFolder(folder, "prepare", config) as run:
        run.start(overwrite=True)
        write_cache(folder / DIR_NAME, tracklist, waves, sample_rate=sample_rate, config_hash=run.hash,
                    tracks_per_shard=tracks_per_shard)
        run.finish({"num_tracks": len(tracklist)})
    return folder
