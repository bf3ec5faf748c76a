"""The exclusive lock of a run folder: ``flock`` on ``<folder>/.lock``, taken before a stage reads or writes there."""

from __future__ import annotations

import contextlib
import contextvars
import errno
import fcntl
import functools
import os
import stat
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from msagg.data.errors import MsaggError

LOCK_NAME = ".lock"
"""The lock file in a run folder while a stage runs there (removed when the stage ends)."""


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
