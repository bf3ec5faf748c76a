"""Checks that what msagg reads is what msagg wrote: finished run folders, schema versions, checksums.

- Upstream run folders: a stage reads another stage's file only once that run wrote ``DONE``
  (its last write); ``require_done`` names the folder otherwise, and ``check_same_run`` refuses
  a file whose config hash is not the one ``DONE`` records.
- Schema versions are integers; ``schema_version_problem`` says what was found instead, with
  its type (a string "1" is refused: msagg always writes an integer, so anything else was not
  written by msagg's writer).
- Checksums: the numeric datasets of the audio cache and the features file carry HDF5's
  per-chunk Fletcher-32 checksum (``CHECKSUM``, verified by HDF5 on every read; variable-length
  string datasets cannot take filters). ``damaged_ranges`` finds which chunks of a range fail,
  so the reader can name the tracks or rows affected. Files written before the checksum was
  added read as before, unverified.
"""

from __future__ import annotations

import json
import os
from typing import Any, Sequence

import numpy as np

from msagg.data.errors import MsaggError
from msagg.data.runs import run_folder

DONE_FILE = "DONE"
CHECKSUM = {"fletcher32": True}
"""h5py ``create_dataset`` keywords of every numeric dataset msagg writes."""


class UnfinishedRunError(MsaggError):
    """An upstream run folder that is missing, has not finished (no DONE), or holds another run's file."""


def require_done(path: str | os.PathLike, stage: str) -> dict:
    """The ``DONE`` record of the run folder of ``path``, which must exist.

    Args:
        path: A run folder, or a file in one (the folder holding it is checked).
        stage: The stage that writes such folders ("prepare", "extract"), for the message.

    Returns:
        The JSON of ``DONE`` ({} when it is not a JSON object).

    Raises:
        UnfinishedRunError: Naming the folder, if it does not exist or has no ``DONE``.
    """
    folder = run_folder(path)
    if not folder.is_dir():
        raise UnfinishedRunError(f"{folder}: no such {stage} run folder (run `msagg {stage}` first)")
    done = folder / DONE_FILE
    if not done.is_file():
        raise UnfinishedRunError(f"{folder}: this {stage} run has not finished (no {DONE_FILE} marker); "
                                 f"run `msagg {stage}` into it again to finish it")
    try:
        info = json.loads(done.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return info if isinstance(info, dict) else {}


def check_same_run(file: str | os.PathLike, file_hash: str, done: dict) -> None:
    """Refuses a file whose recorded config hash differs from the one its folder's ``DONE`` holds.

    Either hash missing or empty (files and markers of older versions) is accepted.

    Raises:
        UnfinishedRunError: Naming the file and both hashes.
    """
    done_hash = str(done.get("config_hash") or "")
    if file_hash and done_hash and file_hash != done_hash:
        raise UnfinishedRunError(f"{file}: written by a run with config hash {file_hash}, but the folder's "
                                 f"{DONE_FILE} marks a run with config hash {done_hash}; run its stage again")


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
