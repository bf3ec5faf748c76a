"""How file names are written as text: ``escape_name`` and ``unescape_name`` (a leaf: imports nothing of msagg).

File names are bytes. Python holds a name it cannot decode as UTF-8 as a ``str`` with each bad
byte turned into a lone surrogate (``os.fsdecode``: byte 0xE9 becomes U+DCE9), which opens the
file but cannot be written as UTF-8. A name may also hold a newline or other control characters,
which would break a CSV row or a log line. So msagg keeps names in memory as Python gives them
(``TrackList.sources`` open the files as they are) and writes them into text (CSV files, logs,
error messages, the HDF5 cache) through ``escape_name``, a reversible backslash escape:

- an undecodable byte ``0xE9`` -> ``\\xe9`` (always 0x80..0xFF: bytes below decode as ASCII);
- newline, carriage return, tab -> ``\\n``, ``\\r``, ``\\t``; every other control character
  (U+0000..U+001F, U+007F..U+009F), U+2028, U+2029 and any other lone surrogate -> ``\\uXXXX``;
- a backslash -> ``\\\\``;
- everything else (spaces, leading dashes, accents, any printable Unicode) unchanged, so an
  ordinary name reads the same in the cache as on disk.

``unescape_name`` undoes it and ``os.fsencode(unescape_name(text))`` gives the file name's bytes:
``caf\\xe9.ogg`` in a cache or ``skipped.csv`` is the file whose name is ``b"caf\\xe9.ogg"``.
"""

from __future__ import annotations

import re

_NAMED_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_ESCAPE = re.compile("[\\\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|(.)|$)", re.DOTALL)
_UNESCAPED = {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}


def _escape_char(match: re.Match) -> str:
    char = match.group()
    if char in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's stand-in for the undecodable byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def escape_name(name: str) -> str:
    """A file name, path or any name made of one, as printable text that UTF-8 can hold.

    Args:
        name: As Python holds it (``os.fsdecode``: undecodable bytes as U+DC80..U+DCFF).

    Returns:
        The reversible escaped form described in the module docstring; ``name`` itself when it
        holds no backslash, control character or surrogate.
    """
    name = str(name)
    return _NEEDS_ESCAPE.sub(_escape_char, name) if _NEEDS_ESCAPE.search(name) else name


def unescape_name(text: str) -> str:
    """Undoes ``escape_name``: ``os.fsencode(unescape_name(escape_name(n))) == os.fsencode(n)``.

    Raises:
        ValueError: For a backslash that does not start one of ``escape_name``'s escapes.
    """

    def undo(match: re.Match) -> str:
        byte, code, other = match.groups()
        if byte is not None and int(byte, 16) >= 0x80:
            return chr(0xDC00 + int(byte, 16))
        if code is not None:
            return chr(int(code, 16))
        if other is not None and other in _UNESCAPED:
            return _UNESCAPED[other]
        raise ValueError(f"{text!r}: {match.group()!r} at {match.start()} is not an escape of escape_name")

    return _ESCAPE.sub(undo, text) if "\\" in text else text
