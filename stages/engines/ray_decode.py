"""prepare's Ray engine: every shard left to decode is one Ray task running ``decode_shard``.

``prepare.run(Config(engine="ray", address=...))`` uses it through ``engine(...)``, a context
manager that opens the Ray session (``msagg.stages.engines.ray_session``) and yields a ``ShardDecoder``, the
``engine`` of ``msagg.stages.engines.decode.decode_all``. Ray is imported only inside functions, and nothing
here imports keras.

How a run goes: the driver (the ``msagg prepare`` process) lists the dataset, plans the shards and
finds those a killed run finished (``open_cache_dir``, ``finished_shards``: exactly as the local
engine does). Each remaining shard becomes a task (``num_cpus=1``, at most ``2 x`` the cluster's
CPUs submitted at a time, in shard order) that decodes its tracks and writes
``cache/shard-NNNNN.h5`` itself, atomically, into the run folder, which must therefore lie on a
filesystem every node sees at the same path. A task returns the shard's summary; the driver
hands the summaries to ``decode_all``, which collects them, and ``msagg.stages.prepare`` writes the index
and ``skipped.csv`` from them, as it does for the local engine: the cache is the same (the same
shards, samples, sha256s and index).

Faults: a task whose worker dies (SIGKILL, out of memory, a lost node) is run again by Ray
(``max_retries``); the attempt that dies mid-shard leaves only a temporary file, which the next
attempt removes (and reports: DONE's ``ray.retried_shards``). A strict failure, a shard written
where the driver cannot see it, or any error ends the run after cancelling the tasks still queued
or running (a cancelled task stops between two tracks and leaves no file; on SIGINT or SIGTERM
running tasks are killed at once, and the next run removes what they left); the finished shards
are kept, and the same command resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from msagg.data.atomic import stale_temps
from msagg.data.formats.cache_layout import PLAN_NAME
from msagg.data.formats.cache_writer import shard_file_name
from msagg.data.errors import MsaggError
from msagg.data.tracklist import absolute_source
from msagg.stages.engines.decode import PrepareError, decode_shard
from msagg.stages.engines.ray_session import RayEngineError, code_env, code_fingerprint, first_line, session
from msagg.stages.engines.shard_plan import ShardPlan

logger = logging.getLogger(__name__)

MAX_RETRIES = 3
"""Times Ray runs a shard's task again after its worker died, before the run fails."""

CANCEL_WAIT_SEC = 10.0
"""How long a failed run waits for its cancelled tasks to remove their temporary files."""

VISIBLE_WAIT_SEC = 10.0
"""How long the driver waits for a shard a node wrote to appear here (a network filesystem's caches)."""


@contextlib.contextmanager
def engine(address: str | None = None, *, num_cpus: int | None = None, **options) -> Iterator[ShardDecoder]:
    """The Ray session of a prepare run and its ``ShardDecoder``.

    Args:
        address: A running Ray cluster, or None for a local one of ``num_cpus`` CPUs.
        num_cpus: CPUs of a local cluster (default: this process's cores).
        **options: Keyword options of ``ShardDecoder``.

    Raises:
        RayEngineError: Ray is missing, or the cluster cannot be reached (nothing is written).
    """
    with session(address, num_cpus=num_cpus, stage="prepare") as ray:
        yield ShardDecoder(ray, **options)


def _decode_task(cache_dir: str, plan: ShardPlan, shard: int, sources: Sequence[str], strict: bool, code: str,
                 die_once: str | None) -> tuple[dict, dict]:
    """A Ray task: decodes one shard where the driver's run folder is, returns its summary and provenance.

    Refuses, before writing anything, to run other msagg code than the driver's (``code``) and to
    write into a folder that is not the driver's run folder (no ``plan.json`` seen there).
    """
    import ray

    context = ray.get_runtime_context()
    node = context.get_node_id()
    if code_fingerprint() != code:
        raise RayEngineError(f"Ray node {node} runs another msagg than the driver (code {code_fingerprint()}, driver "
                             f"{code}); start the workers from the same msagg, or let msagg start the Ray session "
                             "(it sends its code)")
    if not (Path(cache_dir) / PLAN_NAME).is_file():
        raise PrepareError(f"Ray node {node} does not see {Path(cache_dir) / PLAN_NAME}: the run folder must lie on "
                           "a filesystem every node sees, at the same path")
    earlier = stale_temps(Path(cache_dir) / shard_file_name(shard))  # of an attempt whose worker died mid-shard
    for path in earlier:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def on_track(row: int, num_samples: int | None) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(die_once)  # test hook: the first task to decode a track while it exists dies, mid-shard
            os.kill(os.getpid(), signal.SIGKILL)

    summary = decode_shard(cache_dir, plan, shard, sources, strict=strict, on_track=on_track if die_once else None,
                           stop=context.is_canceled)
    return summary, {"node": node, "pid": os.getpid(), "retried": bool(earlier)}


class ShardDecoder:
    """The shards of one prepare run decoded as Ray tasks (``msagg.stages.engines.decode.decode_all``'s ``engine``).

    Args:
        ray: The ``ray`` module of a session.
        max_retries: Runs of a shard's task after its worker died, before the run fails.
        die_once: Test hook: a flag file; the first task to decode a track while it exists
            removes it and kills its own process (SIGKILL) with the shard half written.
    """

    def __init__(self, ray, *, max_retries: int = MAX_RETRIES, die_once: str | os.PathLike | None = None):
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        self.ray, self.max_retries = ray, max_retries
        self.die_once = None if die_once is None else os.path.abspath(die_once)
        self.stats = {"num_tasks": 0, "retried_shards": 0, "nodes": 0}
        self._nodes: set[str] = set()

    @property
    def workers(self) -> int:
        """The cluster's CPUs: how many shards are decoded at once."""
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def summary(self) -> dict:
        """What DONE records: tasks, shards decoded again after their worker died, nodes that decoded."""
        return dict(self.stats)

    def __call__(self, cache_dir: str, plan: ShardPlan, tasks: list[tuple[int, list[str]]], strict: bool,
                 finished: Callable[[dict], None], on_track: Callable[[int, int | None], None]) -> None:
        """Decodes ``tasks`` (``(shard, sources)``) as Ray tasks; see ``msagg.stages.engines.decode.decode_all``.

        Raises:
            PrepareError: From ``finished`` (strict mode), or a node that does not see the run folder.
            WriteError: A node's disk refused a write.
            RayEngineError: A task's worker died more than ``max_retries`` times, its node was lost,
                a node runs other msagg code, or wrote a shard the driver does not see.
        """
        cache_dir = os.path.abspath(cache_dir)  # the workers' working folder is not the driver's
        options: dict[str, Any] = {"num_cpus": 1, "max_retries": self.max_retries, "retry_exceptions": False}
        env = code_env(self.ray)
        if env:
            options["runtime_env"] = {"env_vars": env}
        remote = self.ray.remote(_decode_task).options(**options)
        code = code_fingerprint()
        todo = list(reversed(tasks))
        pending: dict[Any, int] = {}
        window = 2 * self.workers
        self.stats["num_tasks"] = len(tasks)
        written = []
        interrupted = False
        try:
            while todo or pending:
                while todo and len(pending) < window:
                    shard, sources = todo.pop()
                    ref = remote.remote(cache_dir, plan, shard, [absolute_source(s) for s in sources], strict,
                                        code, self.die_once)
                    pending[ref] = shard
                ready, _ = self.ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    summary, where = self._get(ref, pending.pop(ref), cache_dir)
                    self._note(where)
                    for row, n in zip(summary.get("rows", []), summary.get("lengths", [])):
                        on_track(row, n)
                    for row, _ in summary["failed"] if summary["written"] else []:
                        on_track(row, None)
                    finished(summary)
                    if summary["written"]:
                        written.append(summary)
        except BaseException as err:
            interrupted = not isinstance(err, Exception)
            raise
        finally:
            if pending:
                self._cancel(list(pending), force=interrupted)
        self._check_visible(cache_dir, written)

    def _get(self, ref, shard: int, cache_dir: str) -> tuple[dict, dict]:
        """``ray.get``: a task's own error raised as itself, a lost worker or node as ``RayEngineError``."""
        from ray import exceptions as rx

        try:
            summary, where = self.ray.get(ref)
        except rx.RayTaskError as err:
            cause = getattr(err, "cause", None)
            if isinstance(cause, (MsaggError, OSError)):
                raise cause from None
            raise
        except (rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError, rx.OutOfMemoryError) as err:
            raise RayEngineError(f"shard {shard}: its Ray worker died on every attempt ({self.max_retries + 1}), or "
                                 f"its node was lost ({first_line(err)}); the finished shards are kept in {cache_dir}: "
                                 "run the same command again to resume") from None
        except rx.RayError as err:  # e.g. the runtime environment (the code sent) could not be set up
            raise RayEngineError(f"shard {shard}: Ray could not run its task ({first_line(err)}); the finished shards "
                                 f"are kept in {cache_dir}") from None
        return summary, where

    def _note(self, where: dict) -> None:
        self._nodes.add(where["node"])
        if where["retried"]:
            self.stats["retried_shards"] += 1
            logger.warning("ray: a worker died decoding a shard; it was decoded again (pid %d)", where["pid"])
        self.stats["nodes"] = len(self._nodes)

    def _cancel(self, refs: list, *, force: bool = False) -> None:
        """Cancels tasks queued or running; a running one stops between two tracks and removes its temp.

        With ``force`` (the run was interrupted: SIGINT, SIGTERM), running tasks are killed at once
        and not waited for; their temporary files are removed by the next run.
        """
        for ref in refs:
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=force)
        if not force:
            with contextlib.suppress(Exception):
                self.ray.wait(refs, num_returns=len(refs), timeout=CANCEL_WAIT_SEC)

    def _check_visible(self, cache_dir: str, summaries: list[dict]) -> None:
        """Waits (briefly) until every shard written this run is seen here with its size."""
        deadline = time.monotonic() + VISIBLE_WAIT_SEC
        for summary in summaries:
            path = Path(cache_dir) / summary["file"]
            while True:
                with contextlib.suppress(OSError):
                    os.listdir(cache_dir)  # revalidates a network filesystem's cached listing
                    if path.stat().st_size == summary["bytes"]:
                        break
                if time.monotonic() > deadline:
                    raise RayEngineError(f"{path}: a Ray node wrote this shard, but this process does not see it (or "
                                         "sees another size); the run folder must lie on a filesystem every node "
                                         "sees, at the same path")
                time.sleep(0.5)


def decoder(config: Any, workers: int, options: Mapping[str, Any] | None = None):
    """prepare's Ray engine: the session of ``config.address`` and its ``ShardDecoder`` (``engine``)."""
    return engine(config.address, num_cpus=workers, **(options or {}))
