"""extract's Ray engine: row ranges of the cache computed on Ray actors, written in cache order by the driver.

``extract.run(Config(engine="ray", address=...))`` uses it through the engine registry
(``msagg.stages.engines``: ``connect``, then ``extractor``); it imports Ray only inside its functions.

How a run goes:

- ``connect(config)``: ``session(address)`` (``msagg.stages.engines.ray_session``, shared with prepare's
  engine) connects to a cluster (after a socket probe, so an unreachable address fails in seconds)
  or starts one of this machine's cores; a missing Ray is a one-line ``RayEngineError`` naming
  the install command. extract calls it before writing anything.
- ``Extractors`` starts the actors. Each loads the pretrain run's models once and opens the cache;
  the first one reports the ``ScaleInfo``\\ s the driver creates ``features.h5.partial`` with. The
  actors compute with ``msagg.stages.engines.taps``, as the local engine does.
- ``plan_ranges`` cuts the rows still to do into ranges (``row_ranges``: the cache's shards when
  it has them, else ``range_tracks`` consecutive tracks), each moved to the next boundary of
  extract's track groups (``msagg.data.segments.track_groups``): every forward pass then holds
  the same segments as in a local run, so the rows are the same bits, and a run resumed by
  either engine forms the same groups.
- ``Extractors.rows`` hands ranges to idle actors and yields their results strictly in cache
  order (results that arrive early wait, at most ``2 x num_actors`` ranges in flight or waiting),
  group by group: extract writes and flushes each group with its ``FeaturesWriter`` as a local
  run does (the same calls, so an uninterrupted run leaves the same bytes), and a killed run
  resumes from the last group written (``num_done``), at worst computing the ranges in flight
  again.
- A worker that dies (a killed process, a lost node) is restarted by Ray (``max_restarts``), its
  models loaded again, and the range it held computed again (``max_task_retries``).

Actors run the driver's own code (``msagg.stages.engines.ray_session``: the job's ``py_modules``, or the driver's
code folder on ``PYTHONPATH``), which each actor proves with its ``code_fingerprint``. Actors read
the cache and the pretrain run by absolute path: run folders must lie on a filesystem every node
sees, at the same path (each result carries the cache's and the models' hashes as that node read
them; another file is refused).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import re
import signal
import time
from collections import deque
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from msagg.data.errors import MsaggError
from msagg.data.formats.cache import AudioCache
from msagg.data.segments import track_groups
from msagg.stages.engines import taps
from msagg.stages.engines.ray_session import RayEngineError, check_code, code_env, code_fingerprint, first_line
from msagg.stages.engines.ray_session import session, split_address  # noqa: F401 (extract's engine is used through this module)

logger = logging.getLogger(__name__)

RANGE_TRACKS = 128
"""Tracks per range when the cache gives no shards: the unit of work of an actor, of a write and of resume."""


# ---------------------------------------------------------------------------------------------
# Row ranges


def _shard_bounds(shards: Any, num_tracks: int) -> list[tuple[int, int]] | None:
    """The (first, end) rows of each shard, if ``shards`` tiles ``[0, num_tracks)`` in order; else None.

    A shard may be a pair, a ``range``, or an object with ``first``/``end`` (or ``start``/``stop``).
    """
    bounds = []
    try:
        for shard in shards:
            if isinstance(shard, range):
                bounds.append((shard.start, shard.stop))
            elif hasattr(shard, "first") and hasattr(shard, "end"):
                bounds.append((int(shard.first), int(shard.end)))
            elif hasattr(shard, "start") and hasattr(shard, "stop"):
                bounds.append((int(shard.start), int(shard.stop)))
            else:
                first, end = shard
                bounds.append((int(first), int(end)))
    except (TypeError, ValueError):
        return None
    ends = [0] + [end for _, end in bounds]
    if not bounds or any(first != ends[i] or end <= first for i, (first, end) in enumerate(bounds)) \
            or ends[-1] != num_tracks:
        return None
    return bounds


def row_ranges(cache: Any, max_tracks: int = RANGE_TRACKS) -> list[tuple[int, int]]:
    """The cache's rows cut into consecutive ranges of at most ``max_tracks`` tracks.

    A cache that tells its shards (``cache.shards``: each shard's first and end row, in cache
    order) is cut at shard boundaries first, so that a range reads one file; a shard larger than
    ``max_tracks`` is cut further. Any other cache is cut every ``max_tracks`` rows.

    Args:
        cache: An ``AudioCache`` (anything with ``num_tracks``, and maybe ``shards``).
        max_tracks: Most tracks in one range.

    Returns:
        ``[(first, end), ...]`` covering ``[0, num_tracks)`` in order.
    """
    if max_tracks < 1:
        raise ValueError(f"max_tracks must be at least 1, got {max_tracks}")
    n = int(cache.num_tracks)
    shards = getattr(cache, "shards", None)
    bounds = _shard_bounds(shards, n) if shards is not None else None
    if shards is not None and bounds is None and n:
        logger.warning("%s: its shards do not tile its %d rows; cutting every %d rows instead",
                       getattr(cache, "path", "the cache"), n, max_tracks)
    out = []
    for first, end in bounds or [(0, n)]:
        out += [(lo, min(end, lo + max_tracks)) for lo in range(first, end, max_tracks)]
    return out


def group_starts(lengths: Sequence[int], input_lengths: dict[str, int], batch_size: int,
                 segments: str = "cover") -> list[int]:
    """Where extract's track groups start (``track_groups`` over every row), plus the row count."""
    starts, row = [], 0
    for chunk in track_groups(range(len(lengths)), lambda i: lengths[i], input_lengths.values(), batch_size,
                              segments):
        starts.append(row)
        row += len(chunk)
    return starts + [row]


def plan_ranges(cache: Any, input_lengths: dict[str, int], batch_size: int, max_tracks: int = RANGE_TRACKS,
                start: int = 0, segments: str = "cover") -> list[tuple[int, int]]:
    """The ranges a run computes: ``row_ranges`` moved onto group boundaries, from row ``start`` on.

    Each range end moves forward to the next start of a group of ``track_groups``, so that a
    range holds whole groups: an actor then forms exactly the groups (and forward passes) of a
    local run, whose rows are the same bits whatever the backend does with a batch.

    Args:
        cache: The ``AudioCache`` (its ``lengths``, ``num_tracks``, maybe ``shards``).
        input_lengths: Scale -> samples per segment.
        batch_size: Segments per forward pass.
        max_tracks: Most tracks in a range before moving its end.
        start: Rows below it are done (``FeaturesWriter.num_done``, itself a group boundary).
        segments: How songs are cut (the extract config's ``segments``).

    Returns:
        ``[(first, end), ...]`` covering ``[start, num_tracks)`` in order, none empty.
    """
    bounds = group_starts(np.asarray(cache.lengths), input_lengths, batch_size, segments)
    ends = []
    for _, end in row_ranges(cache, max_tracks):
        snapped = bounds[int(np.searchsorted(bounds, end))]
        if snapped > start and (not ends or snapped > ends[-1]):
            ends.append(snapped)
    firsts = [start] + ends[:-1]
    return [(a, b) for a, b in zip(firsts, ends) if b > a]


# ---------------------------------------------------------------------------------------------
# Actors


@dataclasses.dataclass
class RangeResult:
    """What an actor returns for rows ``[first, end)``: its groups' ``FeaturesWriter.write`` blocks, and provenance.

    Attributes:
        blocks: ``extract_rows``' ``(k, features, num_segments, classic)``, one per group of tracks.
    """

    first: int
    end: int
    blocks: list
    pid: int
    node: str
    restarted: bool
    cache_hash: str
    model_hashes: dict
    code: str


class _Extractor:
    """A Ray actor's state: the models loaded once, the cache open; computes ranges of rows.

    Args:
        config: extract's Config, its paths absolute.
        scales: Scales to load.
        batch_size: Segments per forward pass.
        die_once: Test hook: a flag file; the first actor to start a range while it exists
            removes it and kills its own process (SIGKILL), as a crashed worker would.
    """

    def __init__(self, config: Any, scales: Sequence[str], batch_size: int, die_once: str | None = None):
        import ray

        self.config, self.batch_size, self.die_once = config, batch_size, die_once
        self.cache = AudioCache(config.cache)
        self.models = taps.load_tap_models(config.pretrain, tuple(scales), precision=config.precision)
        self.node = ray.get_runtime_context().get_node_id()
        self.code = code_fingerprint()

    def scale_infos(self) -> tuple[str, dict]:
        return self.code, taps.scale_infos(self.models, self.config.song_pool)

    def compute(self, first: int, end: int) -> RangeResult:
        import ray

        if self.die_once:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.die_once)
                os.kill(os.getpid(), signal.SIGKILL)
        blocks = list(taps.extract_rows(self.cache, self.models, self.config, range(first, end), self.batch_size))
        return RangeResult(first, end, blocks, os.getpid(), self.node,
                           bool(ray.get_runtime_context().was_current_actor_reconstructed), self.cache.config_hash,
                           {scale: m.model_hash for scale, m in self.models.items()}, self.code)


def actor_runtime_env(ray) -> dict:
    """The actors' runtime environment: the driver's Keras backend (the same numbers need the same
    backend), and the driver's code (``ray_session.code_env``)."""
    import keras

    return {"env_vars": {"KERAS_BACKEND": keras.backend.backend(), **code_env(ray)}}


def actor_plan(ray, num_actors: int | None, num_ranges: int) -> tuple[int, dict]:
    """How many actors, and what each asks for.

    With GPUs in the cluster, one actor per GPU (``num_gpus=1``). Otherwise one per node, each
    asking for the CPUs of the smallest node (TensorFlow uses a node's cores, as in a local run);
    ``num_actors`` overrides the count (CPUs are then shared out). Never more actors than ranges.

    Returns:
        ``(count, resources)``: the number of actors and their ``.options`` resources.
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        count, ask = min(num_actors or gpus, gpus), {"num_gpus": 1, "num_cpus": 1}
    else:
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        node_cpus = int(min((n["Resources"]["CPU"] for n in nodes), default=1))
        count = num_actors or max(1, len(nodes))
        per_node = math.ceil(count / max(1, len(nodes)))
        ask = {"num_cpus": max(1, node_cpus // per_node), "num_gpus": 0}
    return max(1, min(count, num_ranges)), ask


class Extractors:
    """The actors of one extract run; a context manager (the actors end with it).

    Args:
        ray: The ``ray`` module of a ``session``.
        config: extract's Config.
        cache: The driver's open ``AudioCache`` (lengths, shards, config hash).
        scales: The scales to extract.
        batch_size: Segments per forward pass.
        range_tracks: Most tracks per range (before moving its end onto a group boundary).
        num_actors: Actors to start (None: one per GPU, else one per node).
        max_restarts: Restarts of a dead actor (and retries of its range) before the run fails.
        die_once: Test hook, see ``_Extractor``.
    """

    def __init__(self, ray, config: Any, cache: AudioCache, scales: Sequence[str], batch_size: int, *,
                 range_tracks: int = RANGE_TRACKS, num_actors: int | None = None, max_restarts: int = 3,
                 die_once: str | os.PathLike | None = None):
        if range_tracks < 1 or (num_actors is not None and num_actors < 1):
            raise ValueError(f"range_tracks and num_actors must be at least 1, got {range_tracks}, {num_actors}")
        self.ray, self.cache, self.batch_size, self.range_tracks = ray, cache, batch_size, range_tracks
        self.max_restarts = max_restarts
        self.config = dataclasses.replace(config, pretrain=str(Path(config.pretrain).resolve()),
                                          cache=str(Path(cache.path).resolve()))
        self.count, self.ask = actor_plan(ray, num_actors, len(row_ranges(cache, range_tracks)))
        remote = ray.remote(_Extractor).options(max_restarts=max_restarts, max_task_retries=max_restarts,
                                                runtime_env=actor_runtime_env(ray), **self.ask)
        logger.info("ray: starting %d actors (%s each); each loads the models", self.count,
                    ", ".join(f"{v} {k[4:-1].upper()}" for k, v in self.ask.items() if v))
        self.actors = [remote.remote(self.config, tuple(scales), batch_size, None if die_once is None else str(die_once))
                       for _ in range(self.count)]
        self._infos: dict | None = None
        self.stats = {"num_actors": self.count, "num_ranges": 0, "restarted_actors": 0, "nodes": 0}
        self._restarted: set[int] = set()
        self._nodes: set[str] = set()

    def __enter__(self) -> Extractors:
        return self

    def __exit__(self, *exc) -> None:
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor)
        self.actors = []

    def _get(self, ref):
        """``ray.get``, with an actor's own error raised as itself and a lost worker as ``RayEngineError``."""
        from ray import exceptions as rx

        try:
            return self.ray.get(ref)
        except rx.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, (MsaggError, OSError)):
                raise cause from None
            raise
        except rx.RayActorError as err:
            if err.actor_init_failed:  # e.g. a node that does not see the run folders
                last = re.sub(r"^[\w.]+: ", "", str(err).strip().splitlines()[-1].strip())  # "msagg.data.formats.cache.CacheError: "
                raise RayEngineError(f"a Ray actor could not load the models or open the cache: {last}") from None
            raise RayEngineError(f"a Ray worker died after {self.max_restarts} restarts, or its node was lost "
                                 f"({first_line(err)}); the rows written so far are kept: run the same "
                                 "command again to resume") from None
        except (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError) as err:
            raise RayEngineError(f"a Ray worker or node was lost ({first_line(err)}); the rows written so far "
                                 "are kept: run the same command again to resume") from None

    def scale_infos(self) -> dict:
        """The ``ScaleInfo`` of every scale, from the first actor's models (waits for it to load them)."""
        if self._infos is None:
            started = time.monotonic()
            code, self._infos = self._get(self.actors[0].scale_infos.remote())
            check_code(code)
            logger.info("ray: first actor ready in %.1f s", time.monotonic() - started)
        return self._infos

    def rows(self, start: int) -> Iterator[tuple[int, dict, dict, dict]]:
        """Rows ``[start, num_tracks)`` in cache order, group by group as ``extract_rows`` yields them.

        Written as they come, the blocks make the very writes of a local run (so the very bytes of
        its uninterrupted file); a range waits until every range before it has come.

        Yields:
            ``(k, features, num_segments, classic)`` of the next ``k`` rows.

        Raises:
            RayEngineError: A worker died more than ``max_restarts`` times, or a node read
                another cache or other models than the driver.
        """
        infos = self.scale_infos()
        ranges = plan_ranges(self.cache, {s: i.input_length for s, i in infos.items()}, self.batch_size,
                             self.range_tracks, start, self.config.segments)
        self.stats["num_ranges"] = len(ranges)
        logger.info("ray: %d ranges of rows [%d, %d) on %d actors", len(ranges), start, self.cache.num_tracks,
                    self.count)
        todo = deque(ranges)
        idle = deque(range(self.count))
        in_flight: dict[Any, int] = {}
        arrived: dict[int, RangeResult] = {}
        window = 2 * self.count
        next_first = ranges[0][0] if ranges else start
        while todo or in_flight or arrived:
            while idle and todo and len(in_flight) + len(arrived) < window:
                first, end = todo.popleft()
                actor = idle.popleft()
                in_flight[self.actors[actor].compute.remote(first, end)] = actor
            ready, _ = self.ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                actor = in_flight.pop(ref)
                idle.append(actor)
                result = self._get(ref)
                self._check(result, actor)
                arrived[result.first] = result
            while next_first in arrived:
                result = arrived.pop(next_first)
                next_first = result.end
                yield from result.blocks

    def _check(self, result: RangeResult, actor: int) -> None:
        check_code(result.code)
        expected = {s: i.model_hash for s, i in self.scale_infos().items()}
        if result.cache_hash != self.cache.config_hash or result.model_hashes != expected:
            what = "cache" if result.cache_hash != self.cache.config_hash else "models"
            path = self.config.cache if what == "cache" else self.config.pretrain
            raise RayEngineError(f"Ray node {result.node} read other {what} than this process at {path}; the run "
                                 "folders must lie on a filesystem every node sees, at the same path")
        self._nodes.add(result.node)
        if result.restarted and actor not in self._restarted:
            self._restarted.add(actor)
            logger.warning("ray: actor %d died and was restarted (now pid %d); its range was computed again",
                           actor, result.pid)
        self.stats.update(restarted_actors=len(self._restarted), nodes=len(self._nodes))

    def summary(self) -> dict:
        """What DONE records of the run: actors, ranges, restarted actors, nodes."""
        return dict(self.stats)


def connect(config: Any):
    """The Ray session of ``config.address`` (a context manager yielding the ``ray`` module)."""
    return session(config.address)


def extractor(connection, config: Any, cache: AudioCache, pretrain: Any, scales: Sequence[str], batch_size: int,
              **options) -> Extractors:
    """``Extractors`` of the session ``connection`` (the actors load ``config.pretrain`` themselves)."""
    return Extractors(connection, config, cache, scales, batch_size, **options)
