"""Run folders: an exclusive lock first, then config.json + metadata.json, outputs next, DONE last.

``RunFolder`` is a stage's own output folder. Its parts live beside it: the lock in
``msagg.stages.runs.lock``, the records (config.json and its hash, metadata.json, DONE) in
``msagg.stages.runs.records``, the check of a run another stage reads in ``msagg.stages.runs.upstream``;
the names the stages use with ``RunFolder`` are importable from here too.
"""

from __future__ import annotations

import datetime
import errno
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any, Mapping

from msagg.data.atomic import write_json
from msagg.data.errors import MsaggError
from msagg.stages.runs.lock import LOCK_NAME, FolderLock, RunFolderBusy, lock_scope  # noqa: F401 (importable here)
from msagg.stages.runs.records import (CONFIG_FILE, DONE_FILE, METADATA_FILE, OMIT_DEFAULT, OMIT_NONE,  # noqa: F401
                                       OMIT_VALUE, RUNTIME, config_dict, config_hash, json_ready, read_json_config,
                                       read_json_record)
from msagg.stages.runs.upstream import Upstream

logger = logging.getLogger(__name__)

PACKAGES = ("msagg", "numpy", "h5py", "keras", "tensorflow", "jax", "scikit-learn", "soundfile", "soxr")

_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class RunConflictError(MsaggError):
    """The run folder holds a different config and overwriting was not asked for, or holds a run no flag
    lets this stage replace: another stage's, or one this run reads."""


def _a(stage: str) -> str:
    """"a pretrain", "an extract": the stage with its article."""
    return f"{'an' if stage[:1] in 'aeiou' else 'a'} {stage}"


def _versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _git_commit() -> str | None:
    """The commit of msagg's own checkout, or None when msagg does not run from one (an installed wheel,
    even one whose virtual environment sits inside some other git repository)."""
    import msagg.stages

    root = Path(msagg.stages.__file__).resolve().parent.parent  # the checkout holding stages/, if any
    try:
        res = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = res.stdout.split()
    if res.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None
    return lines[1]


class RunFolder:
    """One stage's output folder.

    A stage takes the folder's exclusive lock before it reads or writes anything there
    (``RunFolder(...).lock()`` in a ``@lock_scope`` function, or ``with RunFolder(...)``;
    ``start`` takes it too if not yet taken) and holds it until ``finish`` has written DONE.
    A second process gets ``RunFolderBusy``. Readers of a finished folder need no lock.

    Args:
        out_dir: The folder.
        stage: Stage name ("prepare", "pretrain", ...).
        config: The stage's resolved config dataclass.
        upstream: Named upstream runs: each an ``Upstream`` (``open_upstream``), or a run folder;
            metadata.json records their folders and config hashes. ``start`` takes more.
        runtime: What this process resolved on this machine and does not hash (e.g. the
            devices), recorded in metadata.json under "runtime" each time the run starts or resumes.
    """

    def __init__(self, out_dir: str | Path, stage: str, config: Any,
                 upstream: Mapping[str, str | Path | Upstream] | None = None, *,
                 runtime: Mapping[str, Any] | None = None):
        self.path = Path(out_dir)
        self.stage = stage
        self.config = config
        self.config_json = config_dict(config)
        self.hash = config_hash(self.config_json)
        self.upstream = {k: v if isinstance(v, Upstream) else Path(v) for k, v in (upstream or {}).items()}
        self.runtime = dict(runtime or {})
        self._lock = FolderLock(self.path)

    def lock(self) -> RunFolder:
        """Takes the folder's exclusive lock (creating the folder if needed); a no-op if held.

        Returns:
            self.

        A finished run of this config in a folder this process cannot write (a read-only disk,
        runs shared read-only) needs no lock: nothing will be written there, and readers of a
        finished folder take none.

        Raises:
            RunFolderBusy: If another process holds it ("<folder> is in use by process N").
            RunConflictError: If the folder holds another stage's run (its metadata.json says so),
                whatever ``start`` is later asked; the lock this call took is dropped.
            OSError: If the lock file cannot be created (naming it), unless the run is done.
        """
        took = not self.locked
        try:
            self._lock.acquire()
        except OSError as err:
            if err.errno not in _READ_ONLY or not self.done:
                raise
            logger.debug("%s: finished and not writable (%s); no lock needed to find it done", self.path, err)
        try:
            self._refuse_another_stage()
        except BaseException:
            if took:
                self.release()
            raise
        return self

    def held_stage(self) -> str | None:
        """The stage whose run the folder holds, as its metadata.json says (None: no such record)."""
        stage = read_json_record(self.path / METADATA_FILE).get("stage")
        return stage if isinstance(stage, str) and stage else None

    def _refuse_another_stage(self) -> None:
        """Refuses a folder holding another stage's run: no flag lets this stage write there.

        Raises:
            RunConflictError: Naming the folder, the stage it holds and what to do.
        """
        held = self.held_stage()
        if held is not None and held != self.stage:
            raise RunConflictError(
                f"{self.path}: holds {_a(held)} run, not {_a(self.stage)} run; --overwrite replaces only "
                f"{_a(self.stage)} run: choose another output folder (--out) for {self.stage}")

    def _refuse_upstream(self) -> None:
        """Refuses to write into a folder that is, or holds, a run this run reads.

        Raises:
            RunConflictError: Naming the folder, the run it holds and what to do.
        """
        here = os.path.realpath(self.path)
        for key, run in self.upstream.items():
            folder = run.folder if isinstance(run, Upstream) else run
            there = os.path.realpath(folder)
            if there != here and not there.startswith(here.rstrip(os.sep) + os.sep):
                continue
            stage = run.stage if isinstance(run, Upstream) else read_json_record(Path(folder) / METADATA_FILE).get(
                "stage")
            what = f"the {stage} run" if stage else "the run"
            where = "holds" if there == here else f"holds {folder},"
            raise RunConflictError(
                f"{self.path}: {where} {what} this {self.stage} run reads ({key}); writing there would destroy "
                f"it, whatever the flags: choose another output folder (--out) for {self.stage}")

    def release(self) -> None:
        """Drops the lock (``finish`` does; ``lock_scope`` and ``with`` do on any exit)."""
        self._lock.release()

    @property
    def locked(self) -> bool:
        """Whether this object holds the folder's lock."""
        return self._lock.held

    def __enter__(self) -> RunFolder:
        return self.lock()

    def __exit__(self, *exc) -> None:
        self.release()

    @property
    def done(self) -> bool:
        """Whether this folder holds a finished run of this very config."""
        if not (self.path / DONE_FILE).is_file():
            return False
        try:
            return self._stored_hash() == self.hash
        except MsaggError:
            return False

    def _stored_hash(self) -> str | None:
        """The hash of the folder's config.json; None if it has none.

        Raises:
            MsaggError: If config.json cannot be read or is not a JSON config, naming it.
        """
        try:
            return config_hash(read_json_config(self.path / CONFIG_FILE))
        except FileNotFoundError:
            return None

    def _clear(self) -> None:
        """Removes everything in the folder but the lock file, which is what this run holds."""
        for child in self.path.iterdir():
            if child.name == LOCK_NAME:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()

    def start(self, overwrite: bool = False, *, upstream: Mapping[str, str | Path | Upstream] | None = None) -> bool:
        """Takes the lock (if not yet taken) and prepares the folder.

        Args:
            overwrite: Replace a folder holding a run of this stage with another config (or a finished run).
            upstream: More upstream runs to record, as in the constructor: a stage opens them
                after it took the lock and found no finished run of its own (which needs none).

        Returns:
            False when the same config already finished here (nothing to do; the lock is
            dropped), else True.

        Raises:
            RunFolderBusy: If another process is running a stage in this folder.
            RunConflictError: If the folder holds another config, or a config.json that is not
                valid JSON, and ``overwrite`` is False; whatever ``overwrite`` says, if it is (or holds)
                one of the upstream runs, or holds another stage's run. A lock this call took is dropped.
        """
        self.upstream.update({k: v if isinstance(v, Upstream) else Path(v) for k, v in (upstream or {}).items()})
        took = not self.locked
        self.lock()
        try:
            return self._start(overwrite)
        except BaseException:
            if took:
                self.release()
            raise

    def _start(self, overwrite: bool) -> bool:
        self._refuse_upstream()
        self._refuse_another_stage()  # again: metadata.json may have come since the lock (an older msagg)
        try:
            stored = self._stored_hash()
        except MsaggError as err:
            if not overwrite:
                raise RunConflictError(f"{err}; choose another output folder or pass --overwrite to replace "
                                       "this run") from None
            logger.warning("overwriting %s: %s", self.path, err)
            self._clear()
            stored = None
        if stored is not None and stored != self.hash:
            if not overwrite:
                raise RunConflictError(self._another_config(stored))
            logger.warning("overwriting %s (old config hash %s)", self.path, stored)
            self._clear()
        elif stored == self.hash and (self.path / DONE_FILE).is_file():
            if not overwrite:
                logger.info("%s: %s already done with config %s; nothing to do", self.path, self.stage, self.hash)
                self.release()
                return False
            self._clear()
        upstream = {key: self._upstream_record(run) for key, run in self.upstream.items()}
        logger.info("%s config %s: %s", self.stage, self.hash, json.dumps(self.config_json, sort_keys=True))
        write_json(self.path / CONFIG_FILE, self.config_json)
        write_json(
            self.path / METADATA_FILE,
            {
                "stage": self.stage,
                "config_hash": self.hash,
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "git_commit": _git_commit(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "packages": _versions(),
                "upstream": upstream,
                **({"runtime": json_ready(self.runtime)} if self.runtime else {}),
            },
        )
        return True

    def _another_config(self, stored: str) -> str:
        """What the refusal of a folder holding this stage's run with another config says."""
        hashes = f"hash {stored}, this one {self.hash}"
        if (self.path / DONE_FILE).is_file():
            return (f"{self.path}: holds a finished {self.stage} run with another config ({hashes}); choose "
                    "another output folder, or pass --overwrite to replace it")
        return (f"{self.path}: holds a {self.stage} run with another config that did not finish (no {DONE_FILE}; "
                f"{hashes}); pass --overwrite to replace it, or choose another output folder")

    @staticmethod
    def _upstream_record(run: Path | Upstream) -> dict:
        """What metadata.json records of an upstream run: its folder and config hash (None if unknown).

        Raises:
            MsaggError: For a folder whose config.json is not a JSON config, naming it.
        """
        if isinstance(run, Upstream):
            return {"path": str(run.folder), "config_hash": run.config_hash}
        hashed = None
        if (run / CONFIG_FILE).is_file():
            hashed = config_hash(read_json_config(run / CONFIG_FILE))
        return {"path": str(run), "config_hash": hashed}

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Writes the DONE marker (with an optional summary) last, then drops the lock."""
        write_json(
            self.path / DONE_FILE,
            {
                "config_hash": self.hash,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **(dict(summary) if summary else {}),
            },
        )
        self.release()
