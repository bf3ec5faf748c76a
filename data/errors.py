"""User-facing errors: one base class that the CLI prints as a single line without a traceback.

Anything a user can fix (a bad file, a bad option, a missing or unfinished upstream run folder,
a run folder that holds another run) is raised as a ``MsaggError`` subclass whose message names
the file or value and the reason. Every other exception is a bug: the CLI shows its traceback.
``MsaggError`` derives from ``ValueError`` so that library callers catching ``ValueError`` keep
working.
"""

from __future__ import annotations


class MsaggError(ValueError):
    """An error the user can fix; the message names the file or value and the reason."""


class ConfigError(MsaggError):
    """A config value, preset, key or config file that cannot be used; the message names it."""
