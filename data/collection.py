"""The audio files a command is given: files as named, folders searched recursively."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from msagg.data.adapters.common import AUDIO_EXTENSIONS, is_audio
from msagg.data.errors import MsaggError
from msagg.data.names import escape_name


class CollectionError(MsaggError):
    """A folder that holds no audio files."""


def audio_files(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Expands files and folders into the audio files to read, in a stable order.

    A folder stands for every audio file under it (``AUDIO_EXTENSIONS``, any depth, sorted by
    path; hidden files and folders left out); any other path is kept as given, so that a missing
    or unreadable file is reported by whoever reads it. A file named twice is kept once.

    Args:
        paths: Files and folders.

    Returns:
        The files, as ``str`` (``os.fsdecode``): each folder's files in sorted order, in the
        order the paths were given.

    Raises:
        CollectionError: For a folder that holds no audio files, naming it.

    Example:
        >>> audio_files(["song.wav", "albums/"])  # doctest: +SKIP
        ['song.wav', 'albums/a/01.flac', 'albums/a/02.flac', 'albums/b/01.mp3']
    """
    out: dict[str, None] = {}
    for path in paths:
        path = os.fsdecode(path)
        if not os.path.isdir(path):
            out.setdefault(path, None)
            continue
        found = []
        for folder, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            found.extend(os.path.join(folder, name) for name in files if is_audio(name))
        if not found:
            raise CollectionError(f"{escape_name(path)}: holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
        for file in sorted(found, key=lambda f: Path(f).parts):
            out.setdefault(file, None)
    return list(out)
