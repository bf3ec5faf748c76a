"""Where the ``general`` family is found by name.

``--pretrain general`` (extract, predict, embed), ``--pretrained general`` (crossval) and
``msagg.load("general")`` name the family ``make pretrain-general`` makes: three half-width
SampleCNNs (3^8, 3^9, 4^6) pretrained on about 20 hours of real music (the soundtracks of nine
Debian game packages, ``msagg.data.corpus``) with musicnn's tags as soft targets (``msagg teach``),
written to ``runs/general/pretrain`` under the working directory. A folder called ``general`` in the
working directory wins. msagg ships no pretrained weights in the package: the family is made (about
1.5 h on 2 CPU cores) or brought by the user.

No Keras here: only names and paths.
"""

from __future__ import annotations

import os
from pathlib import Path

GENERAL = "general"
GENERAL_RUN = Path("runs") / "general" / "pretrain"
"""Where ``make pretrain-general`` writes the family, relative to the working directory."""


def resolve(path: str | os.PathLike) -> Path:
    """What a pretrain run argument names: the path itself, or for "general" (when no such folder
    exists) ``GENERAL_RUN`` if it exists."""
    text = os.fspath(path)
    if text == GENERAL and not os.path.exists(text) and GENERAL_RUN.is_dir():
        return GENERAL_RUN
    return Path(path)
