"""The shard plan of a prepare run: which tracks each shard of the cache holds, fixed before decoding.

The listing is cut into shards of consecutive tracks (``plan_shards``), recorded in
``cache/plan.json`` with the listing's sha256 (``open_cache_dir``), so that every worker, machine
and resumed run agrees on it; ``finished_shards`` finds the shards a killed run completed.
``msagg.stages.engines.decode`` decodes the shards (all these names are importable from there too).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np

from msagg.data.atomic import write_json
from msagg.data.formats.cache_layout import PLAN_NAME, CacheError
from msagg.data.formats.cache_writer import read_shard_summary, shard_file_name
from msagg.data.names import escape_name
from msagg.data.tracklist import TrackList, source_seconds

logger = logging.getLogger(__name__)

DEFAULT_SHARD_MB = 1024.0
MB = 1_000_000
MIN_SHARDS = 32
"""A corpus is cut into at least this many shards (when it has the tracks), so that every worker of
a pool, or of a cluster, has shards to decode, and the last shards to finish are short."""
ESTIMATE_SAMPLE = 32
"""Tracks whose durations (read without decoding) estimate the size of a track."""
DEFAULT_TRACK_SEC = 30.0
"""A track's duration when none of the sampled ones can be read (the clip length of MTAT and GTZAN)."""


@dataclasses.dataclass(frozen=True)
class ShardPlan:
    """Which tracks go in which shard: consecutive listing indices, ``tracks_per_shard`` per shard.

    Attributes:
        num_tracks: Tracks of the listing.
        tracks_per_shard: Tracks of every shard but the last.
        sample_rate: Hz of the cache.
        listing_sha256: sha256 of the listing's sources (``listing_digest``).
        shard_mb: The size it aimed at (recorded; the plan is the two counts above).
    """

    num_tracks: int
    tracks_per_shard: int
    sample_rate: int
    listing_sha256: str
    shard_mb: float = DEFAULT_SHARD_MB

    @property
    def num_shards(self) -> int:
        return max(1, math.ceil(self.num_tracks / self.tracks_per_shard))

    def tracks(self, shard: int) -> range:
        """Listing indices of a shard's tracks."""
        if not 0 <= shard < self.num_shards:
            raise IndexError(f"shard {shard} out of range (0..{self.num_shards - 1})")
        first = shard * self.tracks_per_shard
        return range(first, min(first + self.tracks_per_shard, self.num_tracks))

    @property
    def plan_id(self) -> str:
        """16 hex digits naming the plan; every shard records it."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def listing_digest(tracklist: TrackList) -> str:
    """sha256 of the listing's sources in order (the config hash does not cover the files a folder holds)."""
    text = "\n".join(escape_name(s) for s in tracklist.sources)  # escaped names hold no newline
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def estimate_track_seconds(sources: Sequence[str]) -> float:
    """The median duration of up to ``ESTIMATE_SAMPLE`` tracks spread evenly over the listing.

    Read without decoding (``msagg.data.tracklist.source_seconds``); ``DEFAULT_TRACK_SEC`` when none
    can be read.
    """
    if not sources:
        return DEFAULT_TRACK_SEC
    picks = np.unique(np.linspace(0, len(sources) - 1, min(len(sources), ESTIMATE_SAMPLE)).round().astype(int))
    known = [d for d in (source_seconds(sources[i]) for i in picks) if d]
    return float(np.median(known)) if known else DEFAULT_TRACK_SEC


def plan_shards(tracklist: TrackList, *, sample_rate: int, shard_mb: float = DEFAULT_SHARD_MB) -> ShardPlan:
    """Cuts the listing into shards of consecutive tracks of about ``shard_mb`` each.

    Tracks per shard = ``shard_mb`` over the estimated size of a track (int16 at ``sample_rate``
    for ``estimate_track_seconds``), but no more than a ``MIN_SHARDS``-th of the listing, and at
    least 1. Sizes are not known before decoding, so a fixed count is the plan that is the same
    for every worker, every machine and every resumed run; shards vary in size as tracks do.
    """
    n = len(tracklist)
    track_bytes = 2 * sample_rate * estimate_track_seconds(tracklist.sources)
    by_size = int(shard_mb * MB // max(track_bytes, 1.0))
    per = max(1, min(by_size, math.ceil(n / MIN_SHARDS)))
    return ShardPlan(num_tracks=n, tracks_per_shard=per, sample_rate=int(sample_rate),
                     listing_sha256=listing_digest(tracklist), shard_mb=float(shard_mb))


def open_cache_dir(cache_dir: Path, tracklist: TrackList, *, sample_rate: int, shard_mb: float) -> ShardPlan:
    """Creates the cache folder with its plan, or returns the plan of the one a killed run left.

    A folder whose ``plan.json`` was made for another listing (files added or removed since: the
    shards would hold other tracks), another rate or shard size, or that cannot be read, is
    removed and started again.
    """
    digest = listing_digest(tracklist)
    plan_path = cache_dir / PLAN_NAME
    if cache_dir.exists():
        try:
            plan = ShardPlan(**json.loads(plan_path.read_text()))
        except (OSError, ValueError, TypeError):
            plan = None
        if plan is not None and (plan.listing_sha256, plan.sample_rate, plan.shard_mb, plan.num_tracks) == (
                digest, sample_rate, float(shard_mb), len(tracklist)):
            return plan
        logger.warning("%s: left by a run over another listing of the dataset (or another plan); decoding again",
                       cache_dir)
        shutil.rmtree(cache_dir)
    plan = plan_shards(tracklist, sample_rate=sample_rate, shard_mb=shard_mb)
    cache_dir.mkdir(parents=True)
    write_json(plan_path, dataclasses.asdict(plan))
    logger.info("%s: %d shards of %d tracks (about %.3g MB each)", cache_dir, plan.num_shards, plan.tracks_per_shard,
                plan.tracks_per_shard * 2 * sample_rate * estimate_track_seconds(tracklist.sources) / MB)
    return plan


def finished_shards(cache_dir: Path, plan: ShardPlan, *, strict: bool = False) -> dict[int, dict]:
    """The summaries of the shards of ``plan`` already in ``cache_dir``, by shard number.

    A shard file that is not of this plan, or cannot be read, is removed (it is decoded again).
    In strict mode so is a shard that recorded failed tracks: a strict run must fail on them
    again, or decode them if they were fixed.
    """
    done = {}
    for shard in range(plan.num_shards):
        path = cache_dir / shard_file_name(shard)
        if not path.exists():
            continue
        rows = plan.tracks(shard)
        try:
            summary = read_shard_summary(path)
        except CacheError as err:
            summary, why = None, str(err)
        else:
            same = (summary["plan_id"], summary["shard"], summary["first"], summary["end"]) == (
                plan.plan_id, shard, rows.start, rows.stop)
            why = None if same else "of another plan"
        if why is None and strict and summary["failed"]:
            why = "recorded failed tracks (strict mode tries them again)"
        if why is not None:
            logger.warning("%s: %s; decoding it again", path, why)
            path.unlink()
            continue
        done[shard] = summary
    return done
