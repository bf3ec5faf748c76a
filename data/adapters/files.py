"""The adapters of audio files in folders: folder (one sub-folder per class), esc10, fsdd."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

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



FOLDER = Adapter("folder", _list_folder, "one sub-folder per class")
ESC10 = Adapter("esc10", _list_esc10, "ESC-10, its official folds in the file names",
                fold_pattern=ESC10_FOLD_PATTERN, default_fold=1)
FSDD = Adapter("fsdd", _list_fsdd, "Free Spoken Digit Dataset", official=True)
