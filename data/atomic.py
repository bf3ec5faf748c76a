"""Atomic file writes: write to a temporary name in the same folder, then rename."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path next to ``path``; renames it onto ``path`` on success.

    Args:
        path: The final file name.

    Yields:
        A temporary path in the same folder (so the rename is atomic on one filesystem), with
        the same suffix (writers such as Keras' ``model.save`` choose the format by it). It is
        removed if the body raises; one left by a killed process matches ``stale_temps(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def stale_temps(path: str | os.PathLike) -> list[Path]:
    """Temporary files that ``atomic_write(path)`` calls of killed processes left behind."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.stem}.tmp-*{path.suffix}"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Writes ``text`` to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_text(text)
