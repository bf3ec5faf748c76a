"""Checks that what msagg reads is what msagg wrote: schema versions and checksums.

- Schema versions are integers; ``schema_version_problem`` says what was found instead, with
  its type (a string "1" is refused: msagg always writes an integer, so anything else was not
  written by msagg's writer).
- Checksums: the numeric datasets of the audio cache and the features file carry HDF5's
  per-chunk Fletcher-32 checksum (``CHECKSUM``, verified by HDF5 on every read; variable-length
  string datasets cannot take filters). ``damaged_ranges`` finds which chunks of a range fail,
  so the reader can name the tracks or rows affected. Files written before the checksum was
  added read as before, unverified.

That an upstream run folder is finished, and that its file is the one its ``DONE`` marks, is
checked where run folders are known: ``msagg.stages.runs.upstream``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

CHECKSUM = {"fletcher32": True}
"""h5py ``create_dataset`` keywords of every numeric dataset msagg writes."""


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
