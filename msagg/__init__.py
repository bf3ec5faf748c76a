"""msagg: multi-level and multi-scale SampleCNN features for music classification (Lee & Nam, 2017).

The package installs one import name, ``msagg``; its parts live in the repository's top-level folders:
``msagg.pipeline`` (the command line and protocols), ``msagg.stages`` (prepare, pretrain, extract,
classify, predict), ``msagg.data`` (audio, datasets, file formats) and ``msagg.models`` (Keras builders).
Importing ``msagg`` loads neither TensorFlow nor Keras.

The Python API (``msagg.stages.family``; docs/api.md), loaded on first use:

    >>> import msagg
    >>> family = msagg.load("general")              # doctest: +SKIP
    >>> song = family.embed(wave, sample_rate)      # doctest: +SKIP
    >>> song.vectors["3^9/-1"]                      # doctest: +SKIP
    >>> family.tag(wave, sample_rate).top(5)        # doctest: +SKIP
    >>> msagg.embed_file("song.flac").vectors       # doctest: +SKIP
"""

import os as _os

__version__ = "0.1.0"

# Run from a checkout (this folder beside setup.py and the four folders), the sub-packages are the
# checkout's own folders, whichever msagg is installed; an installed msagg holds them inside itself.
_CHECKOUT = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if _os.path.isfile(_os.path.join(_CHECKOUT, "setup.py")) and _os.path.isfile(
        _os.path.join(_CHECKOUT, "stages", "__init__.py")):
    __path__.append(_CHECKOUT)

_API = {name: "msagg.stages.family" for name in ("load", "embed_file", "tag_file", "Family", "Embedding", "Tags")}
"""The API's names, imported from their module on first use (so ``import msagg`` stays cheap)."""


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'msagg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
