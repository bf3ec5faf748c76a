"""Safe file writes: atomic replacement, write errors that surface at once, temps left by kills.

Every file msagg writes goes through here:

- ``atomic_write(path)`` (and ``write_json``, ``write_text``): the body writes a temporary file
  ``.<stem>.tmp-<pid><suffix>`` in the same folder; it is fsynced and renamed onto ``path`` on
  success, removed on error. A failed write (full disk, quota, I/O error) raises ``WriteError``
  naming ``path``, never a half-written file under the final name.
- ``CheckedFile``: the file object h5py writes through (cache and features writers). HDF5 cannot
  recover from a failed write: its error surfaces late (at a flush, at close, or only as
  "Exception ignored" in a destructor) and closing such a file can crash the interpreter (h5py
  issue #914). A ``CheckedFile`` remembers the first failed write, lets HDF5 go on as if it had
  succeeded (the file is abandoned anyway), and ``check()`` raises it as a ``WriteError``.
- ``stale_temps(path)`` / ``stale_temps_in(folder)`` / ``remove_stale_temps(folder)``: the
  temporary files a killed process left behind (every temp name above matches ``TEMP_NAME``);
  stages remove those of dead processes from their run folder when they start.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

from msagg.data.errors import MsaggError

logger = logging.getLogger(__name__)

TEMP_NAME = re.compile(r"^\.(?P<stem>.+)\.tmp-(?P<pid>\d+)(?P<suffix>\.[^.]*)?$")
"""Names ``atomic_write`` gives its temporary files: ``.<stem>.tmp-<pid><suffix>``."""


class WriteError(MsaggError):
    """A write to disk failed; the message is one line naming the file and the reason.

    Example: ``no space left on device while writing runs/x/features.h5.partial``.

    Attributes:
        path: The file being written.
        errno: The OS error number (e.g. ``errno.ENOSPC``), or None.
        reason: The reason, lower case ("no space left on device").
    """

    def __init__(self, path: str | os.PathLike, reason: str, errno_: int | None = None):
        self.path = Path(path)
        self.reason = reason
        self.errno = errno_
        super().__init__(f"{reason} while writing {self.path}")

    @classmethod
    def from_os_error(cls, path: str | os.PathLike, err: OSError) -> "WriteError":
        """The ``WriteError`` for an ``OSError`` met while writing ``path``."""
        reason = err.strerror or (os.strerror(err.errno) if err.errno else "") or str(err) or type(err).__name__
        return cls(path, reason[:1].lower() + reason[1:], err.errno)

    def __reduce__(self):
        return type(self), (self.path, self.reason, self.errno)


def temp_path(path: str | os.PathLike) -> Path:
    """The temporary name ``atomic_write(path)`` writes first: ``.<stem>.tmp-<pid><suffix>``."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def fsync_dir(folder: str | os.PathLike) -> None:
    """Makes a rename in ``folder`` durable (best effort: some filesystems refuse a folder fsync)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success.

    Args:
        path: The final file name.
        durable: fsync the file before the rename (and the folder after it), so a crash never
            leaves a renamed file whose contents are not on disk, and a write error the OS
            reports late still stops the rename.

    Yields:
        A temporary path in the same folder (so the rename is atomic on one filesystem), with
        the same suffix (writers such as Keras' ``model.save`` choose the format by it). It is
        removed if the body raises; one left by a killed process matches ``stale_temps(path)``.

    Raises:
        WriteError: Naming ``path``, for an ``OSError`` about the temporary file (or one without
            a file name, as a full disk gives on ``write``), the fsync or the rename. Other
            exceptions of the body pass unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if durable:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    except OSError as err:
        if err.filename in (None, str(tmp), tmp, str(path), path):
            raise WriteError.from_os_error(path, err) from err
        raise
    except WriteError as err:
        if err.path == tmp:  # e.g. from a CheckedFile on the temp: name the file the user knows
            raise WriteError(path, err.reason, err.errno) from err
        raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def stale_temps(path: str | os.PathLike) -> list[Path]:
    """Temporary files that ``atomic_write(path)`` calls of killed processes left behind."""
    path = Path(path)
    return sorted(p for p in path.parent.glob(f".{path.stem}.tmp-*{path.suffix}")
                  if (m := TEMP_NAME.match(p.name)) and m["stem"] == path.stem and (m["suffix"] or "") == path.suffix)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) writes nothing more
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def stale_temps_in(folder: str | os.PathLike, *, recursive: bool = True, writers_ended: bool = False) -> list[Path]:
    """Temporary files of ``atomic_write`` under ``folder`` whose writing process is gone.

    A temp whose process id belongs to a live process (perhaps writing it right now) is left out,
    unless ``writers_ended``.

    Args:
        folder: A run folder.
        recursive: Also look in its sub-folders.
        writers_ended: The caller holds the folder's lock and every writer it started has ended,
            so every temp is stale, even one whose killed writer still looked alive (still exiting)
            when the caller started.

    Returns:
        Sorted paths (none if ``folder`` does not exist).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp-*") if recursive else folder.glob(".*.tmp-*")
    return sorted(p for p in found if (m := TEMP_NAME.match(p.name)) and p.is_file()
                  and (writers_ended or not _alive(int(m["pid"]))))


def remove_stale_temps(folder: str | os.PathLike, *, recursive: bool = True, writers_ended: bool = False) -> list[Path]:
    """Deletes what ``stale_temps_in(folder, recursive=..., writers_ended=...)`` finds; a stage calls
    it when it starts (and prepare once its decoders have ended).

    Returns:
        The paths removed.
    """
    removed = []
    for stale in stale_temps_in(folder, recursive=recursive, writers_ended=writers_ended):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    if removed:
        logger.info("%s: removed %d temporary file(s) left by killed processes: %s", folder, len(removed),
                    ", ".join(str(p.relative_to(folder)) for p in removed))
    return removed


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` (UTF-8) to ``path`` atomically.

    Raises:
        WriteError: Naming ``path``, if the disk refuses the write.
    """
    with atomic_write(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically (``WriteError`` if the disk refuses)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


class CheckedFile:
    """A file object for ``h5py.File(CheckedFile(path, mode), mode)`` that stops at the first failed write.

    HDF5 calls ``seek``, ``tell``, ``readinto``/``read``, ``write``, ``truncate`` and ``flush``
    (which fsyncs). The first ``OSError`` of a write, truncate or fsync is kept in ``error``;
    from then on writes are dropped but reported as done, so HDF5 never enters its failed state
    and can close the file cleanly. Whatever was on disk before the failure is left as it was
    (a later run can resume from what was durably flushed). Writers call ``check()`` after each
    block, or wrap HDF5 calls in ``with f.checked():``.

    Args:
        path: The file.
        mode: "w" (create or truncate) or "r+" (an existing file).
    """

    def __init__(self, path: str | os.PathLike, mode: str = "w"):
        if mode not in ("w", "r+"):
            raise ValueError(f"mode must be 'w' or 'r+', got {mode!r}")
        self.path = Path(path)
        self.error: OSError | None = None
        flags = os.O_RDWR | (os.O_CREAT | os.O_TRUNC if mode == "w" else 0)
        self._fd: int | None = os.open(self.path, flags, 0o666)
        self._pos = 0
        self._size = os.fstat(self._fd).st_size

    def __repr__(self) -> str:
        return f"CheckedFile({str(self.path)!r})"

    # --- the file-object protocol h5py's "fileobj" driver uses ---

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = base + int(offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = len(view)
        got = 0
        while got < n:
            chunk = os.pread(self._fd, n - got, self._pos + got)
            if not chunk:
                break
            view[got : got + len(chunk)] = chunk
            got += len(chunk)
        view[got:] = bytes(n - got)  # past the end (or a dropped write): zeros, as a sparse file reads
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(self._size - self._pos, 0)
        buffer = bytearray(size)
        self.readinto(buffer)
        return bytes(buffer)

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        if self.error is None:
            try:
                done = 0
                while done < n:
                    done += os.pwrite(self._fd, view[done:], self._pos + done)
            except OSError as err:
                self.error = err
        self._pos += n
        self._size = max(self._size, self._pos)
        return n

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else int(size)
        if self.error is None:
            try:
                os.ftruncate(self._fd, size)
            except OSError as err:
                self.error = err
        self._size = size
        return size

    def flush(self) -> None:
        """fsyncs, so what HDF5 flushed is on disk (and a late write error shows now)."""
        if self.error is None and self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as err:
                self.error = err

    # --- msagg's side ---

    def check(self) -> None:
        """Raises the first failed write as a ``WriteError`` naming the file; nothing if none failed."""
        if self.error is not None:
            raise WriteError.from_os_error(self.path, self.error) from self.error

    @contextlib.contextmanager
    def checked(self) -> Iterator[None]:
        """Runs HDF5 calls, then ``check()``; an exception HDF5 raised after a dropped write (it
        may read back what never reached the disk) is replaced by the ``WriteError`` behind it."""
        try:
            yield
        except Exception:
            self.check()
            raise
        self.check()

    def close(self) -> None:
        """Closes the descriptor (idempotent); does not raise ``error`` (call ``check``)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @property
    def closed(self) -> bool:
        return self._fd is None
