"""Where the ``general`` family is found by name, and the family msagg ships.

``--pretrain general`` (extract, predict, embed), ``--pretrained general`` (crossval) and
``msagg.load("general")`` name, in this order: a folder called ``general`` in the working
directory; ``runs/general/pretrain`` under it (what ``make pretrain-general`` writes); else the family
shipped inside the package. Each is a finished pretrain run folder (config.json, metadata.json, DONE,
summary.json, per scale model.keras, metrics.json, history.csv); the shipped one has a CORPUS.md that
says what it was trained on, under which licences, and how to make it again.

- ``general``: two half-width SampleCNNs (3^8, 4^6) trained on about 20 hours of real music (the
  soundtracks of nine Debian game packages, ``msagg.data.corpus``) labelled by musicnn's MagnaTagATune
  and Million Song Dataset taggers (``msagg teach``): they fit the taggers' tags and the MTT tagger's
  own view of each patch, and their outputs are those tags (guitar, piano, rock, electronic, ...).

No Keras here: only names and paths.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER = Path(__file__).resolve().parent
GENERAL = "general"
GENERAL_RUN = Path("runs") / "general" / "pretrain"
"""Where ``make pretrain-general`` writes the family, relative to the working directory."""

SHIPPED = {
    GENERAL: "2 half-width SampleCNNs (3^8, 4^6) trained on 20 h of real music with musicnn's tags and features",
}
"""Name -> what it is, for every family that ships in the package."""


def shipped_folder(name: str) -> Path:
    """The run folder of a shipped family.

    Raises:
        KeyError: For a name that is not shipped.
    """
    if name not in SHIPPED:
        raise KeyError(f"no shipped family {name!r}; msagg ships {', '.join(SHIPPED)}")
    return FOLDER / name


def resolve(path: str | os.PathLike) -> Path:
    """What a pretrain run argument names: the path itself if it exists or is no family's name; for
    "general", ``GENERAL_RUN`` if it exists, else the shipped family."""
    text = os.fspath(path)
    if text != GENERAL or os.path.exists(text):
        return Path(path)
    return GENERAL_RUN if GENERAL_RUN.is_dir() else shipped_folder(text)


KEPT = ("config.json", "metadata.json", "DONE", "summary.json")
KEPT_PER_SCALE = ("model.keras", "metrics.json", "history.csv", "curves.png", "DONE")
"""What of a finished pretrain run ships (no TensorBoard logs, no checkpoints)."""

_NOTES = """
## Teacher

The targets are the tag probabilities of musicnn's MTT_musicnn and MSD_musicnn taggers (Pons & Serra
2019; musicnn 0.1.0, ISC licence, read from the wheel by `msagg teach`) for every 3-s patch of every
track: the union of their 50-tag vocabularies (a tag both predict is their mean), time-aligned to
each training crop; and MTT_musicnn's own view of each patch (its back end's mean and max pools, 1,506
numbers, standardized), which a second, linear head fits (mean squared error, weight 1) and which is
not kept in the models. The models' outputs are the tags.

## Made with

```sh
make pretrain-general     # corpus (apt-get download), msagg prepare --dataset unlabelled, msagg teach --set features=true, msagg pretrain --preset general
```

The weights were learned from the recordings above; their licences (GPL and CC BY-SA) are those of
the music, recorded here so that a user can judge what applies to derived models.
"""


def ship(run: str | os.PathLike, name: str, corpus: str | os.PathLike) -> Path:
    """Copies a finished pretrain run into the package as family ``name``, with its CORPUS.md.

    Args:
        run: The pretrain run folder (``make pretrain-general``: runs/general/pretrain).
        name: A key of ``SHIPPED``.
        corpus: The corpus's CORPUS.md (``python -m msagg.data.corpus`` writes it).
    """
    import json
    import shutil

    run, target = Path(run), shipped_folder(name)
    if not (run / "DONE").is_file():
        raise SystemExit(f"{run}: not a finished pretrain run")
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for file in KEPT:
        shutil.copyfile(run / file, target / file)
    summary = json.loads((run / "summary.json").read_text())
    for scale in summary:
        (target / scale).mkdir()
        for file in KEPT_PER_SCALE:
            if (run / scale / file).is_file():
                shutil.copyfile(run / scale / file, target / scale / file)
    rows = "\n".join(f"| {scale} | {row['num_params']} | {row['epochs']} | {row['seconds'] / 60:.0f} min | "
                     f"{row['segments_per_sec']} |" for scale, row in summary.items())
    (target / "CORPUS.md").write_text(
        Path(corpus).read_text(encoding="utf-8") + _NOTES
        + "\n## Training\n\n| scale | parameters | epochs | training time | segments/s |\n|---|---:|---:|---:|---:|\n"
        + rows + "\n", encoding="utf-8")
    return target
