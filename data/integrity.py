"""Checks that what msagg reads is what msagg wrote: schema versions and checksums.

- Schema versions are integers; ``schema_version_problem`` says what was found instead, with
  its type (a string "1" is refused: msagg always writes an integer, so anything else was not
  written by msagg's writer).
- Checksums: the numeric datasets of the audio cache and the features file carry HDF5's
  per-chunk Fletcher-32 checksum (``CHECKSUM``, verified by HDF5 on every read; variable-length
  string datasets cannot take filters). ``damaged_ranges`` finds which chunks of a range fail,
  so the reader can name the tracks or rows affected. Files written before the checksum was
  added read as before, unverified.
- Text tables (variable-length strings, which take no filter) are covered by the root attribute
  ``text_sha256`` (``TEXT_SHA256``): JSON, table path -> ``text_sha256`` of its values, written
  with the file (``record_text_sha256``) and compared on open (``text_sha256_problem``). Files
  written before it lack the attribute and read as before, unverified.
- Everything of an audio shard outside its /audio chunks (HDF5's own metadata, attributes, the
  small tables) is covered by ``sha256_outside``, computed from the raw bytes, so that a reader
  checks it before HDF5 parses the file: damaged HDF5 metadata can make the library loop forever.
  ``chunk_byte_ranges`` says where the chunks lie (they carry Fletcher-32 themselves).

That an upstream run folder is finished, and that its file is the one its ``DONE`` marks, is
checked where run folders are known: ``msagg.stages.runs.upstream``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from typing import Any, Mapping, Sequence

import numpy as np

CHECKSUM = {"fletcher32": True}
"""h5py ``create_dataset`` keywords of every numeric dataset msagg writes."""
TEXT_SHA256 = "text_sha256"
"""Root attribute: JSON, text table path -> ``text_sha256`` of its values."""
_BLOCK = 1 << 20
_checked: set[tuple] = set()
"""Files ``checked_outside`` found intact in this process: (path, device, inode, size, mtime, digest)."""
_checked_lock = threading.Lock()


def schema_version_problem(value: Any, expected: int) -> str | None:
    """None if ``value`` (a stored ``schema_version``) is the integer ``expected``; else what it is.

    Returns:
        E.g. "schema version 2", "schema_version '1' (a str)".
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return None if int(value) == expected else f"schema version {int(value)}"
    if isinstance(value, np.generic):
        value = value.item()
    return f"schema_version {value!r} (a {type(value).__name__})"


def damaged_ranges(dataset, start: int, stop: int) -> list[tuple[int, int]]:
    """The chunks (along the first axis) of ``dataset[start:stop]`` that cannot be read.

    Reads chunk by chunk; used after a read of the range failed, to say where.

    Args:
        dataset: An ``h5py.Dataset``.
        start, stop: The range of the first axis that failed.

    Returns:
        ``[(lo, hi), ...]`` ranges of whole chunks whose read fails (their checksum, usually);
        ``[(start, stop)]`` for a dataset without chunks, or if every chunk reads (the failure
        was elsewhere).
    """
    n = int(dataset.shape[0])
    start, stop = max(int(start), 0), min(int(stop), n)
    if dataset.chunks is None or stop <= start:
        return [(start, stop)]
    rows = int(dataset.chunks[0])
    bad = []
    for lo in range(start - start % rows, stop, rows):
        hi = min(lo + rows, n)
        try:
            dataset[lo:hi]
        except OSError:
            bad.append((lo, hi))
    return bad or [(start, stop)]


def describe_read_error(err: OSError) -> str:
    """Why a read failed, in words: a checksum mismatch or the error HDF5 gave."""
    text = str(err)
    if "filter returned failure" in text or "checksum" in text.lower():
        return "fail their Fletcher-32 checksum"
    return f"cannot be read ({text.splitlines()[0] if text else type(err).__name__})"


def name_some(names: Sequence[str], limit: int = 8) -> str:
    """``"a, b, c"``, or ``"a, b, ... and 12 more"`` past ``limit`` names."""
    names = [str(n) for n in names]
    if len(names) <= limit:
        return ", ".join(names)
    return f"{', '.join(names[:limit])} and {len(names) - limit} more"


def ranges_text(ranges: Sequence[tuple[int, int]]) -> str:
    """``"[0, 64), [128, 192)"``."""
    return ", ".join(f"[{lo}, {hi})" for lo, hi in ranges)


# --- text tables -------------------------------------------------------------------------------


def text_sha256(values) -> str:
    """sha256 hex digest of a table of strings: of its values as compact ASCII JSON.

    Args:
        values: A str array or nested list of any shape, as ``dataset.asstr()[()]`` reads it.

    Returns:
        ``sha256(json.dumps(values.tolist(), separators=(",", ":")).encode("ascii"))``: rows as
        nested lists, non-ASCII characters as ``\\u`` escapes.
    """
    values = values.tolist() if isinstance(values, np.ndarray) else values
    return hashlib.sha256(json.dumps(values, separators=(",", ":")).encode("ascii")).hexdigest()


def record_text_sha256(h5, names: Sequence[str] | None = None) -> None:
    """Writes the attribute ``TEXT_SHA256`` of ``h5`` from the text tables it holds now.

    Args:
        h5: An ``h5py.File`` open for writing.
        names: Paths of its text tables (e.g. ``"split"``, ``"shards/file"``); default: those
            the attribute already lists (after a deliberate edit of a table).
    """
    if names is None:
        names = list(json.loads(h5.attrs[TEXT_SHA256]))
    h5.attrs[TEXT_SHA256] = json.dumps({name: text_sha256(h5[name].asstr()[()]) for name in names}, sort_keys=True)


def text_sha256_problem(h5, tables: Mapping[str, Any] | None = None) -> str | None:
    """What is wrong with the text tables of ``h5``, or None (also for a file without ``TEXT_SHA256``).

    Args:
        h5: An open ``h5py.File``.
        tables: Table path -> its values, where the caller has read them already; the others
            listed in the attribute are read from ``h5``.

    Returns:
        E.g. "/split does not match the sha256 recorded when it was written", naming the first
        table (in path order) that differs, is missing, or cannot be read; or saying that the
        attribute itself is damaged.
    """
    recorded = h5.attrs.get(TEXT_SHA256)
    if recorded is None:
        return None
    try:
        recorded = json.loads(recorded.decode() if isinstance(recorded, bytes) else str(recorded))
        if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
            raise ValueError("not an object of strings")
    except ValueError:
        return f"attribute {TEXT_SHA256} is damaged (not the JSON object msagg writes)"
    tables = tables or {}
    for name in sorted(recorded):
        if name in tables:
            values = tables[name]
        elif h5.get(name) is None:
            return f"/{name} is missing"
        else:
            try:
                values = h5[name].asstr()[()]
            except (OSError, ValueError, TypeError, UnicodeDecodeError) as err:
                return f"/{name} cannot be read ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        if text_sha256(values) != recorded[name]:
            return f"/{name} does not match the sha256 recorded when it was written"
    return None


# --- raw bytes of a file -----------------------------------------------------------------------


def chunk_byte_ranges(dataset) -> list[tuple[int, int]]:
    """Where the stored chunks of ``dataset`` lie in its file: merged ``[start, end)`` byte ranges, ascending."""
    spans: list[tuple[int, int]] = []
    dataset.id.chunk_iter(lambda info: spans.append((int(info.byte_offset), int(info.byte_offset + info.size))))
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and merged[-1][1] >= start:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(a, b) for a, b in merged]


def sha256_outside(path: str | os.PathLike, ranges: Sequence[Sequence[int]]) -> str:
    """sha256 hex digest of a file's bytes outside ``ranges``, read as raw bytes (no HDF5).

    Args:
        path: The file.
        ranges: ``[start, end)`` byte ranges to leave out, ascending and disjoint.

    Returns:
        The digest of the bytes before, between and after the ranges, in file order.

    Raises:
        OSError: If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        pos = 0
        for start, end in [*((int(a), int(b)) for a, b in ranges), (None, None)]:
            fh.seek(pos)
            left = None if start is None else max(start - pos, 0)
            while left is None or left > 0:
                block = fh.read(_BLOCK if left is None else min(left, _BLOCK))
                if not block:
                    break
                digest.update(block)
                if left is not None:
                    left -= len(block)
            if end is not None:
                pos = max(pos, end)
    return digest.hexdigest()


def checked_outside(path: str | os.PathLike, ranges: Sequence[Sequence[int]], expected: str) -> str | None:
    """Checks a file's bytes outside ``ranges`` against ``expected``, once per process for the file as it is.

    A file found intact is remembered by path, inode, size and modification time, so reopening it
    (or another reader of the same file in this process) reads nothing again.

    Args:
        path: The file.
        ranges: As ``sha256_outside``.
        expected: The sha256 hex digest recorded when the file was written.

    Returns:
        None if the digest is ``expected``; else the digest found.

    Raises:
        OSError: If the file cannot be read.
    """
    st = os.stat(path)
    key = (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, expected)
    with _checked_lock:
        if key in _checked:
            return None
    found = sha256_outside(path, ranges)
    if found != expected:
        return found
    with _checked_lock:
        _checked.add(key)
    return None
