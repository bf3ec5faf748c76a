"""General MIDI SoundFonts for the synth-gm corpus: where the default one lies, a file's identity, one load per process.

The default SoundFont is ``TimGM6mb.sf2`` (6 MB, GPL-2; see the README), shipped inside the
``pretty_midi`` package and found there without importing it. Any other ``.sf2`` (e.g.
FluidR3_GM, MIT) can be named by path. A file's identity is its sha256, which prepare records in
its config so that caches rendered from different SoundFonts never mix.

Rendering uses ``tinysoundfont`` (TinySoundFont's Python binding). It is not among msagg's
install requirements: its package declares ``pyaudio``, which only its real-time playback uses
and which does not build on Linux without the portaudio headers, so ``make venv`` installs it
with ``--no-deps`` (``INSTALL_COMMAND``). ``load`` parses a file once per process and hands out
clones (TinySoundFont's ``tsf_copy``: the sample data shared, voices and channels fresh), so every
track starts from the same state whatever was rendered before it in that process.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from msagg.data.errors import MsaggError
from msagg.data.names import escape_name

DEFAULT_NAME = "TimGM6mb.sf2"
"""The default SoundFont's file name inside the ``pretty_midi`` package."""

TINYSOUNDFONT_REQUIREMENT = "tinysoundfont>=0.3.7"
INSTALL_COMMAND = f"python -m pip install --no-deps '{TINYSOUNDFONT_REQUIREMENT}'"
"""How to install the renderer (the Makefile's venv rule runs it with the venv's python)."""

_RIFF_MAGIC, _SFBK_MAGIC = b"RIFF", b"sfbk"


class SoundFontError(MsaggError):
    """A SoundFont that cannot be used, or a missing renderer; the message is one line naming the file."""


@dataclasses.dataclass(frozen=True)
class SoundFontFile:
    """A SoundFont file and its identity.

    Attributes:
        path: Absolute path of the ``.sf2`` file.
        sha256: 64 hex digits of the file's sha256.
        default: Whether it is the default (pretty_midi's ``TimGM6mb.sf2``).
    """

    path: str
    sha256: str
    default: bool


def default_path() -> Path:
    """Where pretty_midi's ``TimGM6mb.sf2`` lies (found without importing pretty_midi).

    Raises:
        SoundFontError: When pretty_midi is not installed or holds no such file.
    """
    spec = importlib.util.find_spec("pretty_midi")
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / DEFAULT_NAME
        if path.is_file():
            return path
    if not folders:
        raise SoundFontError(f"the default SoundFont {DEFAULT_NAME} comes with pretty_midi, which is not installed: "
                             "pip install 'pretty_midi>=0.2.10', or give another SoundFont (--soundfont PATH)")
    raise SoundFontError(f"{escape_name(str(Path(folders[0]) / DEFAULT_NAME))}: no such file (pretty_midi "
                         "0.2.10 or later ships it); give another SoundFont with --soundfont PATH")


def resolve(path: str | os.PathLike | None = None) -> SoundFontFile:
    """The SoundFont a ``soundfont`` option names, checked to be a readable SoundFont file.

    Args:
        path: A ``.sf2`` file; None for the default (``default_path``).

    Returns:
        Its absolute path and sha256 (computed once per process for a file whose size and
        modification time have not changed).

    Raises:
        SoundFontError: For a missing, unreadable or empty file, a folder, or a file that is not a
            SoundFont (no ``RIFF....sfbk`` header), naming it.
    """
    default = path is None
    file = default_path() if default else Path(os.fsdecode(path)).expanduser()
    file = Path(os.path.abspath(file))
    try:
        st = file.stat()
    except OSError as err:
        raise SoundFontError(f"{escape_name(str(file))}: cannot read the SoundFont ({err.strerror or err})") from None
    if not file.is_file():
        raise SoundFontError(f"{escape_name(str(file))}: not a SoundFont file (a folder or a special file)")
    return SoundFontFile(str(file), _sha256(str(file), st.st_size, st.st_mtime_ns), default)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """The file's sha256, after checking its header (size and mtime key the cache)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != _RIFF_MAGIC or head[8:12] != _SFBK_MAGIC:
                what = "an empty file" if not head else "no RIFF sfbk header"
                raise SoundFontError(f"{escape_name(path)}: not a SoundFont (.sf2) file ({what})")
            digest.update(head)
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:
        raise SoundFontError(f"{escape_name(path)}: cannot read the SoundFont ({err.strerror or err})") from None
    return digest.hexdigest()


def renderer():
    """TinySoundFont's binding module (``tinysoundfont._tinysoundfont``, what ``tinysoundfont.Synth`` wraps).

    Raises:
        SoundFontError: When tinysoundfont is not installed, saying the command that installs it.
    """
    try:
        from tinysoundfont import _tinysoundfont
    except ImportError:
        raise SoundFontError(
            f"the synth-gm datasets render with tinysoundfont, which is not installed: run "
            f"{escape_name(sys.executable)} -m pip install --no-deps '{TINYSOUNDFONT_REQUIREMENT}' "
            "(make venv does; --no-deps skips pyaudio, which only its playback uses)"
        ) from None
    return _tinysoundfont


def version() -> str | None:
    """The installed tinysoundfont's version, or None."""
    try:
        return importlib.metadata.version("tinysoundfont")
    except importlib.metadata.PackageNotFoundError:
        return None


def load(soundfont: SoundFontFile):
    """A fresh TinySoundFont instance of ``soundfont``: no voices playing, every channel unset.

    The file is parsed once per process (and per sha256) and cloned for every call.

    Raises:
        SoundFontError: When tinysoundfont is missing, or cannot parse the file (naming it).
    """
    return renderer().SoundFont(_parsed(soundfont.path, soundfont.sha256))


@functools.lru_cache(maxsize=2)
def _parsed(path: str, sha256: str):
    try:
        return renderer().SoundFont(path)
    except RuntimeError as err:
        raise SoundFontError(f"{escape_name(path)}: tinysoundfont cannot load this SoundFont ({err})") from None

