"""The SampleCNN families msagg ships, ready to extract features and tag audio with nothing trained.

``--pretrain general`` (extract, predict) and ``--pretrained general`` (crossval) name a shipped
family wherever a pretrain run folder is asked for; a folder of that name in the working directory
wins over the shipped family. Each family is a finished pretrain run folder inside the package
(config.json, metadata.json, DONE, summary.json, per scale model.keras, metrics.json, history.csv)
with a CORPUS.md that says what it was trained on, under which licences, and how to make it again.

- ``general``: three quarter-width SampleCNNs (3^8, 3^9, 4^6) trained on about 20 hours of real
  music (the soundtracks of nine Debian game packages) labelled by musicnn's MagnaTagATune and
  Million Song Dataset taggers: their outputs are those taggers' tags (guitar, piano, rock,
  electronic, female vocals, ...). ``make pretrain-general`` makes it again.

No Keras here: only names and paths.
"""

from __future__ import annotations

import os
from pathlib import Path

FOLDER = Path(__file__).resolve().parent

SHIPPED = {
    "general": "3 quarter-width SampleCNNs (3^8, 3^9, 4^6) trained on 20 h of real music with musicnn's tags",
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
    """What a pretrain run argument names: the path itself if it exists or is no shipped name, else the shipped family."""
    text = os.fspath(path)
    if text in SHIPPED and not os.path.exists(text):
        return shipped_folder(text)
    return Path(path)


KEPT = ("config.json", "metadata.json", "DONE", "summary.json")
KEPT_PER_SCALE = ("model.keras", "metrics.json", "history.csv", "curves.png", "DONE")
"""What of a finished pretrain run ships (no TensorBoard logs, no checkpoints)."""

_NOTES = """
## Teacher

The targets are the tag probabilities of musicnn's MTT_musicnn and MSD_musicnn taggers (Pons & Serra
2019; musicnn 0.1.0, ISC licence, read from the wheel by `msagg teach`) for every 3-s patch of every
track: the union of their 50-tag vocabularies (a tag both predict is their mean), time-aligned to
each training crop. The models' outputs are these tags.

## Made with

```sh
make pretrain-general     # corpus (apt-get download), msagg prepare --dataset unlabelled, msagg teach, msagg pretrain --preset general
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

