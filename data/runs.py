"""Run folders as inputs: the one resolver from "a run folder or its file" to the file and the folder."""

from __future__ import annotations

import os
from pathlib import Path


def run_file(path: str | os.PathLike, file_name: str) -> Path:
    """The file ``file_name`` of a run folder, or ``path`` itself when it names that kind of file.

    Args:
        path: A run folder (e.g. ``runs/demo/prepare/synth-tags``) or a file in one
            (``.../cache.h5``; any file with ``file_name``'s suffix, such as a renamed copy).
        file_name: The file a finished run of that stage holds, e.g. "cache.h5", "features.h5".

    Returns:
        ``path`` when it is an existing file or ends in ``file_name``'s suffix, else
        ``path / file_name``.
    """
    path = Path(path)
    if path.is_file() or (not path.is_dir() and path.suffix == Path(file_name).suffix):
        return path
    return path / file_name


def run_folder(path: str | os.PathLike) -> Path:
    """The run folder of ``path``: the path itself if it is a folder, else the folder holding the file."""
    path = Path(path)
    return path.parent if path.is_file() or (not path.is_dir() and path.suffix) else path
