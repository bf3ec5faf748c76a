"""The adapters of published datasets laid out as distributed, with their committed splits: mtat, gtzan."""

from __future__ import annotations

import csv
import logging
import os
import re
from pathlib import Path

import numpy as np

from msagg.data import splits as splits_mod
from msagg.data.adapters.common import Adapter, Listing, Problems, existing, one_hot, source_dir
from msagg.data.adapters.options import AdapterOptions
from msagg.data.names import escape_name
from msagg.data.splits import SPLITS

logger = logging.getLogger(__name__)

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
GTZAN_FOLDERS = ("genres", "genres_original", ".")  # "genres_original": the Kaggle re-distribution


def _list_mtat(source, opts: AdapterOptions, problems: Problems) -> Listing:
    root = source_dir(source, problems, "MagnaTagATune folder (annotations_final.csv and folders 0..f)")
    problems.raise_if_any()
    ann_path = root / "annotations_final.csv"
    if not ann_path.is_file():
        problems.add("no annotations", f"{escape_name(ann_path)} does not exist")
        problems.raise_if_any()
    top = splits_mod.mtat_top50()
    annotations: dict[str, tuple[str, np.ndarray]] = {}
    clip_lines: dict[str, list[int]] = {}
    with open(ann_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f, delimiter="\t", quotechar='"')
        header = [h.strip() for h in next(reader, [])]
        for required in ("clip_id", "mp3_path"):
            if required not in header:
                problems.add("missing column", f"{required!r} not in the header of {ann_path.name}")
        tag_index = []
        for tag, column in top:
            if column not in header:
                problems.add("unknown tag", f"{tag!r}: column {column!r} (top50_columns.tsv) not in {ann_path.name}")
            else:
                tag_index.append(header.index(column))
        problems.raise_if_any()
        id_col, path_col = header.index("clip_id"), header.index("mp3_path")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != len(header):
                problems.add("unreadable row", f"line {line}: {len(row)} fields, the header has {len(header)}")
                continue
            clip_id, mp3 = row[id_col].strip(), row[path_col].strip()
            values = [row[i].strip() for i in tag_index]
            bad = [top[k][1] for k, v in enumerate(values) if v not in ("0", "1")]
            if bad:
                problems.add("bad tag value", f"line {line}: columns {bad} are not 0 or 1")
                continue
            clip_lines.setdefault(clip_id, []).append(line)
            if mp3:
                annotations[mp3] = (clip_id, np.array(values, dtype=np.uint8))
    for clip_id, ls in clip_lines.items():
        if len(ls) > 1:
            problems.add("duplicate track id", f"clip_id {clip_id!r} (lines {', '.join(map(str, ls))})")
    official_lists = splits_mod.official_split("mtat")
    entries = [(s, e) for s in SPLITS for e in official_lists[s]]
    present = existing([str(root / e) for _, e in entries])
    ids, sources, labels, split, skipped = [], [], [], [], []
    for (s, e), ok in zip(entries, present):
        if not ok:
            skipped.append((str(root / e), "missing file"))
        elif e not in annotations:
            skipped.append((str(root / e), "not in annotations_final.csv"))
        else:
            clip_id, y = annotations[e]
            ids.append(clip_id)
            sources.append(str(root / e))
            labels.append(y)
            split.append(s)
    problems.raise_if_any()
    return Listing(
        name="mtat",
        task="tags",
        label_names=[t for t, _ in top],
        track_ids=ids,
        sources=sources,
        labels=np.array(labels, dtype=np.uint8).reshape(len(ids), len(top)),
        fold_names=[os.path.basename(s) for s in sources],
        official=split,
        official_info=splits_mod.official_split_info("mtat"),
        skipped=skipped,
    )


def _gtzan_base(root: Path) -> Path | None:
    for sub in GTZAN_FOLDERS:
        base = root if sub == "." else root / sub
        if any((base / g).is_dir() for g in GTZAN_GENRES):
            return base
    return None


def _list_gtzan(source, opts: AdapterOptions, problems: Problems) -> Listing:
    root = source_dir(source, problems, "GTZAN folder (holding genres/<genre>/<genre>.000NN.au)")
    problems.raise_if_any()
    base = _gtzan_base(root)
    if base is None:
        where = f"{escape_name(root)} or {escape_name(root / 'genres')}"
        problems.add("no genre folders", f"none of {', '.join(GTZAN_GENRES)} under {where}")
        problems.raise_if_any()
    files: dict[str, str] = {}  # stem "blues.00029" -> path
    for genre in GTZAN_GENRES:
        folder = base / genre
        if not folder.is_dir():
            logger.warning("gtzan: no folder %s", escape_name(folder))
            continue
        pattern = re.compile(rf"^{genre}\.\d{{5}}\.(au|wav)$", re.IGNORECASE)
        with os.scandir(folder) as it:
            for f in sorted(e.name for e in it if e.is_file()):
                if pattern.match(f):
                    stem, ext = os.path.splitext(f)
                    # an .au with a converted .wav beside it: take the .wav
                    if stem not in files or ext.lower() == ".wav":
                        files[stem] = str(folder / f)
    genre_index = {g: i for i, g in enumerate(GTZAN_GENRES)}
    if opts.own_split:  # the committed split; else every file present, split as asked
        ids, split, skipped = [], [], []
        for s, entries in splits_mod.official_split("gtzan").items():
            for e in entries:
                stem = os.path.splitext(os.path.basename(e))[0]
                if stem in files:
                    ids.append(stem)
                    split.append(s)
                else:
                    skipped.append((e, "missing file"))
        official, official_info = split, splits_mod.official_split_info("gtzan")
    else:
        ids, skipped, official, official_info = sorted(files), [], None, None
    return Listing(
        name="gtzan",
        task="classes",
        label_names=list(GTZAN_GENRES),
        track_ids=ids,
        sources=[files[i] for i in ids],
        labels=one_hot([genre_index[i.split(".")[0].lower()] for i in ids], len(GTZAN_GENRES)),
        fold_names=[os.path.basename(files[i]) for i in ids],
        official=official,
        official_info=official_info,
        skipped=skipped,
    )



MTAT = Adapter("mtat", _list_mtat, "MagnaTagATune as distributed",
               official=True)
GTZAN = Adapter("gtzan", _list_gtzan, "GTZAN as distributed",
                official=True)
