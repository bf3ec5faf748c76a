"""Run folders: an exclusive lock first, then config.json + metadata.json, outputs next, DONE last."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import datetime
import errno
import fcntl
import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from msagg.data.atomic import write_json
from msagg.data.errors import MsaggError

logger = logging.getLogger(__name__)

PACKAGES = ("msagg", "numpy", "h5py", "keras", "tensorflow", "jax", "scikit-learn", "soundfile", "soxr")


LOCK_NAME = ".lock"
"""The lock file in a run folder while a stage runs there (removed when the stage ends)."""

_READ_ONLY = (errno.EACCES, errno.EPERM, errno.EROFS)


class RunConflictError(MsaggError):
    """The run folder holds a different config and overwriting was not asked for."""


class RunFolderBusy(MsaggError):
    """Another process holds the run folder's lock.

    Attributes:
        path: The run folder.
        pid: The process holding it (None if it could not be read).
    """

    def __init__(self, path: str | os.PathLike, pid: int | None):
        self.path, self.pid = Path(path), pid
        holder = f"process {pid}" if pid is not None else "another process"
        super().__init__(f"{self.path} is in use by {holder}; wait for it to end or choose another output folder")

    def __reduce__(self):
        return type(self), (self.path, self.pid)


OMIT_NONE = "omit_none"
"""Field metadata key: a field added to a Config later, left out of config.json (and the hash) while None,
so run folders made before it existed keep their hash (prepare's ``audio_from``)."""
RUNTIME = "runtime"
"""Field metadata key: a Config field that chooses how a stage runs, not what it computes (extract's
``engine`` and ``address``): never in config.json nor the hash, so a run started one way can be
resumed, or found done, another way, and its downstream runs see the same upstream hash."""

OMIT_VALUE = "omit_value"
"""Field metadata key whose value is the field's legacy value: a field added to a Config later, with a
new default, left out of config.json (and the hash) while it holds the legacy value, so run folders
made before it existed keep their hash and read as that value (extract's ``segments``: "drop"),
while runs with the new default hash differently from the old ones."""

OMIT_DEFAULT = "omit_default"
"""Field metadata key: a field added to a Config later, left out of config.json (and the hash) while it
holds its default, so run folders made before it existed keep their hash (prepare's ``shard_mb``,
pretrain's ``devices`` and ``precision``, extract's ``precision``); any other value is recorded and hashed."""


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def config_dict(config: Any) -> dict:
    """A JSON-ready dict of a config dataclass (tuples become lists; ``OMIT_NONE`` fields left out
    while None, ``OMIT_DEFAULT`` fields while they hold their default, ``OMIT_VALUE`` fields while they
    hold their legacy value, ``RUNTIME`` fields always)."""
    data = _json(dataclasses.asdict(config))
    for field in dataclasses.fields(config):
        if field.metadata.get(RUNTIME) or (field.metadata.get(OMIT_NONE) and data.get(field.name) is None):
            data.pop(field.name, None)
        elif OMIT_VALUE in field.metadata and data.get(field.name) == _json(field.metadata[OMIT_VALUE]):
            data.pop(field.name)
        elif (field.metadata.get(OMIT_DEFAULT) and field.default is not dataclasses.MISSING
              and field.name in data and data[field.name] == _json(field.default)):
            data.pop(field.name)
    return data


def config_hash(config: Any) -> str:
    """12 hex digits of the sha256 of the config's sorted JSON."""
    data = config if isinstance(config, Mapping) else config_dict(config)
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_json_config(path: str | Path) -> dict:
    """Reads a run folder's config.json (or any JSON config file) as a dict.

    Raises:
        MsaggError: If the file cannot be read or is not a JSON object, naming it and the reason.
        FileNotFoundError: If there is no such file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except OSError as err:
        raise MsaggError(f"{path}: cannot read ({err.strerror or err})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MsaggError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise MsaggError(f"{path}: not a config (expected a JSON object of config keys)")
    return data


def read_config(run_dir: str | Path) -> dict:
    """Reads a finished run folder's config.json.

    Raises:
        MsaggError: If the folder has no DONE marker or no config.json, naming the folder, or
            if config.json is not valid JSON, naming the file.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise MsaggError(f"{run_dir}: not a run folder (no config.json)")
    if not (run_dir / "DONE").is_file():
        raise MsaggError(f"{run_dir}: this run has not finished (no DONE marker); run its stage first")
    return read_json_config(run_dir / "config.json")


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


def _read_pid(fd: int) -> int | None:
    """The pid in a lock file; its owner writes it just after locking, so a brief wait may be needed."""
    for _ in range(50):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return int(text)
        time.sleep(0.01)
    return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing owner may have removed it)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _first_missing(folder: Path) -> Path | None:
    """The outermost of ``folder`` and its parents that does not exist (what ``mkdir -p`` creates)."""
    missing = None
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing = path
    return missing


_SCOPE: contextvars.ContextVar[list | None] = contextvars.ContextVar("run_folder_locks", default=None)

F = TypeVar("F", bound=Callable[..., Any])


def lock_scope(func: F) -> F:
    """Decorates a stage's ``run``: the run-folder locks taken during a call end with the call.

    ``RunFolder.finish`` drops the lock after writing DONE; this drops it as well when the stage
    returns early (nothing to do) or raises, so that this process (a library caller, a test,
    ``msagg crossval``) can run a stage on that folder again. A killed process needs nothing:
    the OS drops its locks.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        token = _SCOPE.set([])
        try:
            return func(*args, **kwargs)
        finally:
            locks = _SCOPE.get()
            _SCOPE.reset(token)
            for lock in reversed(locks):
                lock.release()

    return wrapper  # type: ignore[return-value]


class FolderLock:
    """An exclusive lock on a folder: ``flock`` on ``<folder>/.lock``, a file holding the owner's pid.

    The OS drops the lock when its process ends, however it ends, so a lock file that a killed
    process left behind locks nothing (the next owner takes it over). ``release`` removes the file
    while still holding the lock, and ``acquire`` starts again when the file it locked is no
    longer the one at ``<folder>/.lock``, so two owners never overlap and an ended run leaves no
    file behind. Locks are per lock object: a second one on the same folder is refused even in
    the same process.

    Args:
        folder: The folder (created by ``acquire`` if missing).

    Use as a context manager, or call ``acquire`` and ``release``.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None
        self._owner: int | None = None
        self._created: Path | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock in this process (not in a forked child)."""
        return self._fd is not None and self._owner == os.getpid()

    def acquire(self) -> FolderLock:
        """Takes the lock without waiting; a no-op if this object holds it already.

        Returns:
            self.

        Raises:
            RunFolderBusy: If another process (or lock object) holds it; nothing in the folder
                is written or truncated.
            OSError: If the folder or its lock file cannot be created (naming the path).
        """
        if self.held:
            return self
        self._refuse_non_folder()
        created = _first_missing(self.folder)
        for _ in range(1000):
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
            except FileExistsError:  # a file, or a folder a releasing owner removed between two checks
                self._refuse_non_folder()
                continue
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # a releasing owner removed the folder it had made: make it again
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise RunFolderBusy(self.folder, pid) from None
            except BaseException:
                os.close(fd)
                raise
            if not _same_file(fd, self.path):  # its owner removed it after we opened it: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self._fd, self._owner, self._created = fd, os.getpid(), created
            scope = _SCOPE.get()
            if scope is not None:
                scope.append(self)
            return self
        raise OSError(errno.EAGAIN, "lock file keeps being replaced", str(self.path))

    def _refuse_non_folder(self) -> None:
        """Raises NotADirectoryError if something other than a folder is at ``folder``.

        One ``stat``, not ``exists()`` then ``is_dir()``: another owner's ``release`` may remove the
        folder between two calls, and a folder that vanished is not a file.
        """
        try:
            mode = os.stat(self.folder).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(self.folder))

    def release(self) -> None:
        """Removes the lock file, then drops the lock, then removes the folders ``acquire`` made if
        they are empty. A no-op when not held (in a forked child too: the lock is its parent's)."""
        if not self.held:
            return
        fd, self._fd = self._fd, None
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        finally:
            os.close(fd)  # type: ignore[arg-type]
        if self._created is not None:
            folder = self.folder
            while True:
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == self._created:
                    break
                folder = folder.parent

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


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
        upstream: Named upstream run folders; their config hashes are recorded.
        runtime: What this process resolved on this machine and does not hash (e.g. the
            devices), recorded in metadata.json under "runtime" each time the run starts or resumes.
    """

    def __init__(self, out_dir: str | Path, stage: str, config: Any, upstream: Mapping[str, str | Path] | None = None,
                 *, runtime: Mapping[str, Any] | None = None):
        self.path = Path(out_dir)
        self.stage = stage
        self.config = config
        self.config_json = config_dict(config)
        self.hash = config_hash(self.config_json)
        self.upstream = {k: Path(v) for k, v in (upstream or {}).items()}
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
            OSError: If the lock file cannot be created (naming it), unless the run is done.
        """
        try:
            self._lock.acquire()
        except OSError as err:
            if err.errno not in _READ_ONLY or not self.done:
                raise
            logger.debug("%s: finished and not writable (%s); no lock needed to find it done", self.path, err)
        return self

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
        if not (self.path / "DONE").is_file():
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
            return config_hash(read_json_config(self.path / "config.json"))
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

    def start(self, overwrite: bool = False) -> bool:
        """Takes the lock (if not yet taken) and prepares the folder.

        Returns:
            False when the same config already finished here (nothing to do; the lock is
            dropped), else True.

        Raises:
            RunFolderBusy: If another process is running a stage in this folder.
            RunConflictError: If the folder holds another config, or a config.json that is not
                valid JSON, and ``overwrite`` is False. A lock this call took is dropped.
        """
        took = not self.locked
        self.lock()
        try:
            return self._start(overwrite)
        except BaseException:
            if took:
                self.release()
            raise

    def _start(self, overwrite: bool) -> bool:
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
                raise RunConflictError(
                    f"{self.path} holds a {self.stage} run with another config (hash {stored}, "
                    f"this one {self.hash}); choose another output folder or pass --overwrite"
                )
            logger.warning("overwriting %s (old config hash %s)", self.path, stored)
            self._clear()
        elif stored == self.hash and (self.path / "DONE").is_file():
            if not overwrite:
                logger.info("%s: %s already done with config %s; nothing to do", self.path, self.stage, self.hash)
                self.release()
                return False
            self._clear()
        upstream = {}
        for key, folder in self.upstream.items():
            hashed = None
            if (folder / "config.json").is_file():
                hashed = config_hash(read_json_config(folder / "config.json"))
            upstream[key] = {"path": str(folder), "config_hash": hashed}
        logger.info("%s config %s: %s", self.stage, self.hash, json.dumps(self.config_json, sort_keys=True))
        write_json(self.path / "config.json", self.config_json)
        write_json(
            self.path / "metadata.json",
            {
                "stage": self.stage,
                "config_hash": self.hash,
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "git_commit": _git_commit(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "packages": _versions(),
                "upstream": upstream,
                **({"runtime": _json(self.runtime)} if self.runtime else {}),
            },
        )
        return True

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Writes the DONE marker (with an optional summary) last, then drops the lock."""
        write_json(
            self.path / "DONE",
            {
                "config_hash": self.hash,
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                **(dict(summary) if summary else {}),
            },
        )
        self.release()
