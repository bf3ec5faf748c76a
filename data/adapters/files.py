"""The adapters of audio files in folders: folder (one sub-folder per class), esc10, fsdd, unlabelled."""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from msagg.data.adapters.common import (
    AUDIO_EXTENSIONS, Adapter, Listing, Problems, duplicates, is_audio, one_hot, source_dir,
)  # fmt: skip
from msagg.data.adapters.options import AdapterOptions
from msagg.data.names import escape_name

logger = logging.getLogger(__name__)

ESC10_FOLD_PATTERN = r"^(\d+)-"
"""ESC-10 file names start with their fold: ``1-100032-A.ogg`` is in fold 1."""
FSDD_PATTERN = re.compile(r"^(\d)_([^_]+)_(\d+)$")
FSDD_TEST = range(0, 5)  # official: recordings 0-4 of every digit and speaker are the test set
FSDD_VALID = range(5, 10)  # ours: the official split has no validation set
UNLABELLED_VALID_FRACTION = 0.1
"""Share of an unlabelled collection's tracks that go to valid (by a hash of their id: see ``hashed_split``)."""


def _folder(name: str, source, problems: Problems) -> Listing:
    """One class per sub-folder (sorted), its audio files at any depth; named after the folder."""
    root = source_dir(source, problems, "folder holding one sub-folder per class")
    problems.raise_if_any()
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and is_audio(e.name)]
    if not classes:
        detail = f"{escape_name(root)} has no sub-folders"
        if loose:
            detail += f" but {len(loose)} audio files: put them in one folder per class"
        problems.add("no class folders", detail)
        problems.raise_if_any()
    if loose:
        logger.warning("%s: %d audio files directly in %s are not in a class folder: left out", name, len(loose),
                       escape_name(root))
    ids, sources, class_index, file_names = [], [], [], []
    for c, cls in enumerate(classes):
        found = 0
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if not is_audio(f):
                    continue
                path = Path(dirpath) / f
                rel = path.relative_to(root / cls)
                ids.append(f"{cls}/{rel.with_suffix('').as_posix()}")
                sources.append(str(path))
                class_index.append(c)
                file_names.append(f)
                found += 1
        if not found:
            problems.add("empty class folder",
                         f"'{escape_name(cls)}' holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    duplicates(ids, sources, problems)
    problems.raise_if_any()
    return Listing(
        name=escape_name(root.resolve().name) or name,  # a dataset name is text, never opened
        task="classes",
        label_names=classes,
        track_ids=ids,
        sources=sources,
        labels=one_hot(class_index, len(classes)),
        fold_names=file_names,
        user_labels=True,
    )



def _list_folder(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _folder("folder", source, problems)


def _list_esc10(source, opts: AdapterOptions, problems: Problems) -> Listing:
    listing = _folder("esc10", source, problems)
    listing.name = "esc10"  # the dataset, whatever its folder is called (reports look up references by it)
    return listing


def _list_fsdd(source, opts: AdapterOptions, problems: Problems) -> Listing:
    root = source_dir(source, problems, "FSDD folder (holding recordings/ or the wav files)")
    problems.raise_if_any()
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    ids, sources, digits, official = [], [], [], []
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and is_audio(e.name))
    for f in names:
        stem = os.path.splitext(f)[0]
        m = FSDD_PATTERN.match(stem)
        if m is None:
            problems.add("unexpected file name", f"{escape_name(f)} (expected {{digit}}_{{speaker}}_{{index}}.wav)")
            continue
        index = int(m.group(3))
        ids.append(stem)
        sources.append(str(folder / f))
        digits.append(int(m.group(1)))
        official.append("test" if index in FSDD_TEST else "valid" if index in FSDD_VALID else "train")
    if not names:
        problems.add("no recordings", f"no audio files in {escape_name(folder)}")
    duplicates(ids, sources, problems)
    problems.raise_if_any()
    return Listing(
        name="fsdd",
        task="classes",
        label_names=[str(d) for d in range(10)],
        track_ids=ids,
        sources=sources,
        labels=one_hot(digits, 10),
        fold_names=[Path(s).name for s in sources],
        official=official,
        official_info={
            "kind": "official",
            "dataset": "fsdd",
            "rule": "recording index 0-4 test (official), 5-9 valid (ours: the official split has none), rest train",
        },
    )



def hashed_split(track_ids, fraction: float = UNLABELLED_VALID_FRACTION, seed: int = 0) -> list[str]:
    """A train/valid split fixed by each id alone: valid where sha256(seed, id) falls below ``fraction``.

    Adding or removing files never moves another file between train and valid. With two or more
    tracks, at least one is valid (the one with the lowest hash) and at least one train.
    """
    keys = [int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2**64 for i in track_ids]
    split = ["valid" if k < fraction else "train" for k in keys]
    if len(keys) >= 2:
        order = sorted(range(len(keys)), key=keys.__getitem__)
        if "valid" not in split:
            split[order[0]] = "valid"
        if "train" not in split:
            split[order[-1]] = "train"
    return split


def _list_unlabelled(source, opts: AdapterOptions, problems: Problems) -> Listing:
    """Every audio file under a folder, at any depth, with no labels: a music collection to pretrain on."""
    root = source_dir(source, problems, "folder of audio files (any layout)")
    problems.raise_if_any()
    ids, sources = [], []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for f in sorted(filenames):
            if is_audio(f) and not f.startswith("."):
                path = Path(dirpath) / f
                ids.append(path.relative_to(root).with_suffix("").as_posix())
                sources.append(str(path))
    order = sorted(range(len(ids)), key=ids.__getitem__)
    ids, sources = [ids[k] for k in order], [sources[k] for k in order]
    if not ids:
        problems.add("no audio files", f"none under {escape_name(root)} ({', '.join(AUDIO_EXTENSIONS)})")
    duplicates(ids, sources, problems)
    problems.raise_if_any()
    split = hashed_split(ids, seed=opts.split_seed)
    return Listing(
        name=escape_name(root.resolve().name) or "unlabelled",
        task="tags",
        label_names=[],
        track_ids=ids,
        sources=sources,
        labels=np.zeros((len(ids), 0), dtype=np.uint8),
        fold_names=[Path(s).name for s in sources],
        official=split,
        official_info={"kind": "hashed", "rule": f"valid where sha256(split_seed:id) < {UNLABELLED_VALID_FRACTION}, "
                                                  "else train (no test)", "seed": int(opts.split_seed)},
    )


FOLDER = Adapter("folder", _list_folder, "one sub-folder per class")
ESC10 = Adapter("esc10", _list_esc10, "ESC-10, its official folds in the file names",
                fold_pattern=ESC10_FOLD_PATTERN, default_fold=1)
FSDD = Adapter("fsdd", _list_fsdd, "Free Spoken Digit Dataset", official=True)
UNLABELLED = Adapter("unlabelled", _list_unlabelled, "every audio file under a folder, no labels (a music collection "
                     "to pretrain on with teacher labels: msagg teach)", official=True)
