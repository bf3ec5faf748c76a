"""Dataset adapters: turn a dataset as distributed into a TrackList (ids, sources, labels, split).

Every adapter only lists and validates: it reads folder listings, CSV files and the committed
split files, never audio. All problems found are collected and raised together as one
``DatasetError`` before anything is decoded.

``make_tracklist(name, source, **options)``; per adapter (track id; labels; default split):

- ``synth-tags``: ``synth<seed>-<index:05d>``; ``SYNTH_TAGS`` (tags); stratified. ``synth-genre``:
  the same with corpus seed ``seed + GENRE_SEED_OFFSET``; ``SYNTH_GENRES`` (classes).
- ``folder``: ``<class folder>/<file path in it without extension>``; class = sub-folder name
  (sorted; spaces allowed); stratified. Audio = ``AUDIO_EXTENSIONS``, hidden files ignored.
  ``esc10``: ``folder`` with fold_from_name ``^(\d+)-`` and fold 1 by default.
- ``csv`` (``csv-tags`` / ``csv-classes`` force the task): column ``path`` (relative to the CSV's
  folder, or absolute); labels from ``labels`` (names separated by ';'), or ``genre`` (one class),
  or else every other column as a 0/1 tag column; optional ``track_id``/``id`` (default: the
  path as written) and ``split`` (train / valid|val|validation|dev / test). Tags when a row has
  several labels or 0/1 columns are used, else classes. Tab-separated when the file ends in .tsv
  or its header has more tabs than commas.
- ``mtat``: root holding ``annotations_final.csv`` and folders ``0``..``f``; id = ``clip_id``;
  the 50 tags of ``data/splits/mtat/top50_tags.txt`` (tags); the committed split.
- ``gtzan``: root holding ``genres/<genre>/<genre>.000NN.au|wav`` (or that ``genres`` folder);
  id = ``<genre>.000NN``; 10 genres (classes); the committed fault-filtered split, or
  ``split="random"`` over every file present.
- ``fsdd``: folder (or its ``recordings/``) of ``{digit}_{speaker}_{index}.wav``; id = file stem;
  digits "0".."9" (classes); index 0-4 test (official), 5-9 valid (ours), the rest train.

Options shared by all: ``split="random"`` (stratified with ``split_seed``), ``folds``/``fold``
(stratified k-fold, fold 1..k), ``fold_from_name``/``fold`` (folds written in file names),
``top_k`` (the k labels most frequent in train). A split without valid tracks gets a stratified
slice of train (``splits.KFOLD_VALID_FRACTION``). Tracks of an official split missing on disk go
to ``skipped``; missing files a CSV names are errors.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from data import splits as splits_mod
from data.errors import MsaggError
from data.tracklist import SPLITS, TrackList

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".au", ".aiff", ".aif")
"""File name endings the folder adapters list (case-insensitive)."""

GENRE_SEED_OFFSET = 1000
"""synth-genre draws its corpus with ``seed + GENRE_SEED_OFFSET``, so that features pretrained on
synth-tags (``seed``) are evaluated on songs they never heard."""

GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
GTZAN_FOLDERS = ("genres", "genres_original", ".")  # "genres_original": the Kaggle re-distribution
ESC10_FOLD_PATTERN = r"^(\d+)-"
DEFAULT_FOLD_PATTERNS = {"esc10": ESC10_FOLD_PATTERN}
"""Datasets whose official folds are read from file names unless told otherwise (fold 1 by default)."""
FSDD_PATTERN = re.compile(r"^(\d)_([^_]+)_(\d+)$")
FSDD_TEST = range(0, 5)  # official: recordings 0-4 of every digit and speaker are the test set
FSDD_VALID = range(5, 10)  # ours: the official split has no validation set

CSV_RESERVED = ("path", "id", "track_id", "split", "labels", "genre")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid",
    "test": "test", "testing": "test",
}  # fmt: skip
MAX_SHOWN_PER_KIND = 10


class DatasetError(MsaggError):
    """A dataset that cannot be listed; the message names every kind of problem found.

    Attributes:
        dataset: The dataset (adapter name and source).
        problems: Every problem, as "kind: detail" strings (the message shows at most
            ``MAX_SHOWN_PER_KIND`` of each kind).
    """

    def __init__(self, dataset: str, problems: Mapping[str, Sequence[str]]):
        self.dataset = dataset
        self.problems = [f"{kind}: {d}" if d else kind for kind, items in problems.items() for d in items]
        plural = "s" if len(self.problems) != 1 else ""
        lines = [f"{dataset}: {len(self.problems)} problem{plural} found, nothing decoded:"]
        for kind, items in problems.items():
            for detail in items[:MAX_SHOWN_PER_KIND]:
                lines.append(f"  {kind}: {detail}" if detail else f"  {kind}")
            if len(items) > MAX_SHOWN_PER_KIND:
                lines.append(f"  ... and {len(items) - MAX_SHOWN_PER_KIND} more '{kind}'")
        super().__init__("\n".join(lines))

    def __reduce__(self):
        return (_rebuild_error, (self.dataset, self.problems, str(self)))


def _rebuild_error(dataset, problems, message):
    err = DatasetError.__new__(DatasetError)
    ValueError.__init__(err, message)
    err.dataset, err.problems = dataset, problems
    return err


class _Problems:
    """Collects problems by kind, in the order found."""

    def __init__(self, dataset: str):
        self.dataset = dataset
        self.items: dict[str, list[str]] = {}

    def add(self, kind: str, detail: str = "") -> None:
        self.items.setdefault(kind, []).append(detail)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise DatasetError(self.dataset, self.items)


@dataclasses.dataclass
class _Options:
    num_tracks: int
    seed: int
    min_sec: float
    max_sec: float
    split_seed: int
    folds: int | None
    fold: int | str | None
    fold_from_name: str | None
    top_k: int | None
    split: str | None
    fold_valid: str = "next"


@dataclasses.dataclass
class _Listing:
    """What an adapter found, before the split is resolved and top_k applied."""

    name: str
    task: str
    label_names: list[str]
    track_ids: list[str]
    sources: list[str]
    labels: np.ndarray
    fold_names: list[str] | None  # what fold_from_name is searched in (file names); None: not files
    official: list[str] | None = None  # the dataset's own split, if it has one
    official_info: dict | None = None
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    info: dict = dataclasses.field(default_factory=dict)  # extra split_info entries
    user_labels: bool = False  # labels come from the user's data: a label missing from train is an error


# ---------------------------------------------------------------------------------------------
# Helpers


def _existing(paths: Sequence[str]) -> np.ndarray:
    """Whether each path is an existing non-folder entry: one os.scandir per distinct folder."""
    listings: dict[str, set[str]] = {}
    found = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        folder, base = os.path.split(p)
        names = listings.get(folder)
        if names is None:
            try:
                with os.scandir(folder or ".") as it:
                    names = {e.name for e in it if not e.is_dir()}
            except OSError:
                names = set()
            listings[folder] = names
        found[i] = base in names
    return found


def _is_audio(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(AUDIO_EXTENSIONS)


def _one_hot(indices: Sequence[int], num_labels: int) -> np.ndarray:
    labels = np.zeros((len(indices), num_labels), dtype=np.uint8)
    labels[np.arange(len(indices)), np.asarray(indices, dtype=np.int64)] = 1
    return labels


def _duplicates(ids: Sequence[str], where: Sequence[str], problems: _Problems) -> None:
    counts = Counter(ids)
    if len(counts) == len(ids):
        return
    places: dict[str, list[str]] = {}
    for tid, w in zip(ids, where):
        if counts[tid] > 1:
            places.setdefault(tid, []).append(w)
    for tid, ws in places.items():
        problems.add("duplicate track id", f"{tid!r} ({', '.join(ws)})")


def _source_dir(source, problems: _Problems, what: str) -> Path | None:
    if source is None:
        problems.add("no source", f"give the {what}")
        return None
    path = Path(source).expanduser()
    if not path.is_dir():
        problems.add("not a folder", f"{path} ({'does not exist' if not path.exists() else 'a file'}); give the {what}")
        return None
    return path


# ---------------------------------------------------------------------------------------------
# Adapters


def _list_synth(name: str, source, opts: _Options, problems: _Problems) -> _Listing:
    if source is not None:
        problems.add("unused option", f"source={source!r}: {name} is generated, it has no source")
    if not isinstance(opts.num_tracks, (int, np.integer)) or opts.num_tracks < 1:
        problems.add("bad option", f"num_tracks must be a positive integer, got {opts.num_tracks!r}")
    if not 0 < opts.min_sec <= opts.max_sec:
        problems.add("bad option", f"need 0 < min_sec <= max_sec, got {opts.min_sec} and {opts.max_sec}")
    problems.raise_if_any()
    try:
        from data import synth
    except ImportError as err:  # pragma: no cover - only while data.synth is missing
        raise DatasetError(name, {"synthetic corpus unavailable": [str(err)]}) from err

    genre = name == "synth-genre"
    corpus_seed = opts.seed + (GENRE_SEED_OFFSET if genre else 0)
    try:
        tracks = synth.describe(opts.num_tracks, corpus_seed, opts.min_sec, opts.max_sec)
    except ValueError as err:
        raise DatasetError(name, {"bad option": [str(err)]}) from None
    label_names = list(synth.SYNTH_GENRES if genre else synth.SYNTH_TAGS)
    column = {n: i for i, n in enumerate(label_names)}
    labels = np.zeros((len(tracks), len(label_names)), dtype=np.uint8)
    for row, track in enumerate(tracks):
        for label in [track.genre] if genre else track.tags:
            if label not in column:
                problems.add("unknown label", f"track {track.index}: {label!r}")
            else:
                labels[row, column[label]] = 1
    problems.raise_if_any()
    return _Listing(
        name=name,
        task="classes" if genre else "tags",
        label_names=label_names,
        track_ids=[f"synth{corpus_seed}-{t.index:05d}" for t in tracks],
        sources=[synth.source_string(corpus_seed, t.index, opts.min_sec, opts.max_sec) for t in tracks],
        labels=labels,
        fold_names=None,
        info={
            "corpus": {
                "seed": int(corpus_seed),
                "num_tracks": int(opts.num_tracks),
                "min_sec": float(opts.min_sec),
                "max_sec": float(opts.max_sec),
            }
        },
    )


def _list_folder(name: str, source, opts: _Options, problems: _Problems) -> _Listing:
    root = _source_dir(source, problems, "folder holding one sub-folder per class")
    problems.raise_if_any()
    with os.scandir(root) as it:
        entries = sorted(it, key=lambda e: e.name)
    classes = [e.name for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and _is_audio(e.name)]
    if not classes:
        detail = f"{root} has no sub-folders"
        if loose:
            detail += f" but {len(loose)} audio files: put them in one folder per class"
        problems.add("no class folders", detail)
        problems.raise_if_any()
    if loose:
        logger.warning("%s: %d audio files directly in %s are not in a class folder: left out", name, len(loose), root)
    ids, sources, class_index, file_names = [], [], [], []
    for c, cls in enumerate(classes):
        found = 0
        for dirpath, dirnames, filenames in os.walk(root / cls):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for f in sorted(filenames):
                if not _is_audio(f):
                    continue
                path = Path(dirpath) / f
                rel = path.relative_to(root / cls)
                ids.append(f"{cls}/{rel.with_suffix('').as_posix()}")
                sources.append(str(path))
                class_index.append(c)
                file_names.append(f)
                found += 1
        if not found:
            problems.add("empty class folder", f"{cls!r} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
    _duplicates(ids, sources, problems)
    problems.raise_if_any()
    return _Listing(
        name=root.resolve().name or name,
        task="classes",
        label_names=classes,
        track_ids=ids,
        sources=sources,
        labels=_one_hot(class_index, len(classes)),
        fold_names=file_names,
        user_labels=True,
    )


def _list_fsdd(name: str, source, opts: _Options, problems: _Problems) -> _Listing:
    root = _source_dir(source, problems, "FSDD folder (holding recordings/ or the wav files)")
    problems.raise_if_any()
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    ids, sources, digits, official = [], [], [], []
    with os.scandir(folder) as it:
        names = sorted(e.name for e in it if e.is_file() and _is_audio(e.name))
    for f in names:
        stem = os.path.splitext(f)[0]
        m = FSDD_PATTERN.match(stem)
        if m is None:
            problems.add("unexpected file name", f"{f} (expected {{digit}}_{{speaker}}_{{index}}.wav)")
            continue
        index = int(m.group(3))
        ids.append(stem)
        sources.append(str(folder / f))
        digits.append(int(m.group(1)))
        official.append("test" if index in FSDD_TEST else "valid" if index in FSDD_VALID else "train")
    if not names:
        problems.add("no recordings", f"no audio files in {folder}")
    _duplicates(ids, sources, problems)
    problems.raise_if_any()
    return _Listing(
        name="fsdd",
        task="classes",
        label_names=[str(d) for d in range(10)],
        track_ids=ids,
        sources=sources,
        labels=_one_hot(digits, 10),
        fold_names=[Path(s).name for s in sources],
        official=official,
        official_info={
            "kind": "official",
            "dataset": "fsdd",
            "rule": "recording index 0-4 test (official), 5-9 valid (ours: the official split has none), rest train",
        },
    )


def _csv_delimiter(path: Path, header_line: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    return "\t" if header_line.count("\t") > header_line.count(",") else ","


def _list_csv(name: str, source, opts: _Options, problems: _Problems) -> _Listing:
    forced = {"csv-tags": "tags", "csv-classes": "classes"}.get(name)
    if source is None:
        problems.add("no source", "give the CSV file")
        problems.raise_if_any()
    path = Path(source).expanduser()
    if not path.is_file():
        why = "does not exist" if not path.exists() else "a folder"
        problems.add("not a file", f"{path} ({why}); give the CSV file")
        problems.raise_if_any()
    base = str(path.parent)
    with open(path, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        reader = csv.reader(f, delimiter=_csv_delimiter(path, first))
        header = next(reader, None)
        if not header or not any(h.strip() for h in header):
            problems.add("no header", f"{path} is empty or has no header line")
            problems.raise_if_any()
        columns = [h.strip() for h in header]
        lower = [c.lower() for c in columns]
        for c, n in Counter(lower).items():
            if n > 1:
                problems.add("duplicate column", repr(c))
        if "path" not in lower:
            problems.add("no path column", f"columns are {columns}; need 'path'")
        col = {c: lower.index(c) for c in CSV_RESERVED if c in lower}
        id_col = col.get("track_id", col.get("id"))
        tag_cols = [i for i, c in enumerate(lower) if c not in CSV_RESERVED and c]
        if "labels" in col:
            mode = "labels"
        elif "genre" in col:
            mode = "genre"
        elif tag_cols:
            mode = "columns"
        else:
            problems.add("no labels", f"columns are {columns}; need 'labels' (names separated by ';'), 'genre', "
                         "or 0/1 tag columns")
        problems.raise_if_any()

        ids, sources, rows_labels, split_values, lines = [], [], [], [], []
        for row in reader:
            line = reader.line_num
            if not row or not any(v.strip() for v in row):
                continue
            if len(row) != len(columns):
                problems.add("unreadable row", f"line {line}: {len(row)} fields, the header has {len(columns)}")
                continue
            p = row[col["path"]].strip()
            if not p:
                problems.add("empty path", f"line {line}")
                continue
            tid = row[id_col].strip() if id_col is not None else p
            if not tid:
                problems.add("empty track id", f"line {line}")
                continue
            if mode == "labels":
                names = list(dict.fromkeys(s.strip() for s in row[col["labels"]].split(";") if s.strip()))
            elif mode == "genre":
                names = [row[col["genre"]].strip()] if row[col["genre"]].strip() else []
            else:
                names = []
                for i in tag_cols:
                    v = row[i].strip().lower()
                    if v in ("1", "1.0", "true"):
                        names.append(columns[i])
                    elif v not in ("0", "0.0", "false", ""):
                        detail = f"line {line}: column {columns[i]!r} holds {row[i]!r}, expected 0 or 1"
                        problems.add("bad tag value", detail)
            if "split" in col:
                raw = row[col["split"]].strip()
                s = SPLIT_ALIASES.get(raw.lower())
                if s is None:
                    problems.add("unknown split", f"line {line}: {raw!r} (use train, valid or test)")
                split_values.append(s)
            ids.append(tid)
            sources.append(p if os.path.isabs(p) else os.path.join(base, p))
            rows_labels.append(names)
            lines.append(line)

    if mode == "columns":
        label_names = [columns[i] for i in tag_cols]
    else:
        label_names = sorted({n for names in rows_labels for n in names})
    if forced:
        task = forced
    elif mode == "labels":
        task = "tags" if any(len(names) > 1 for names in rows_labels) else "classes"
    else:
        task = "classes" if mode == "genre" else "tags"
    if task == "classes":
        for names, line in zip(rows_labels, lines):
            if len(names) != 1:
                what = "no label" if not names else f"{len(names)} labels ({'; '.join(names)})"
                hint = "" if forced else "; name the dataset csv-tags if tracks may have several or none"
                problems.add("not one class", f"line {line}: {what}{hint}")
    _duplicates(ids, [f"line {n}" for n in lines], problems)
    missing = np.flatnonzero(~_existing(sources))
    for i in missing:
        problems.add("missing file", f"line {lines[i]}: {sources[i]}")
    if not ids and not problems:
        problems.add("no tracks", f"{path} lists no tracks")
    column = {n: i for i, n in enumerate(label_names)}
    labels = np.zeros((len(ids), len(label_names)), dtype=np.uint8)
    for r, names in enumerate(rows_labels):
        labels[r, [column[n] for n in names]] = 1
    if mode == "columns" and opts.top_k is None:
        empty = [n for n, c in zip(label_names, labels.sum(axis=0)) if c == 0]
        for n in empty:
            problems.add("empty tag", f"column {n!r} has no track tagged 1 (drop it, or use top_k)")
    problems.raise_if_any()

    official = official_info = None
    if "split" in col:
        official = split_values
        official_info = {"kind": "csv column", "file": str(path), "column": columns[col["split"]]}
    return _Listing(
        name=path.stem,
        task=task,
        label_names=label_names,
        track_ids=ids,
        sources=sources,
        labels=labels,
        fold_names=[os.path.basename(s) for s in sources],
        official=official,
        official_info=official_info,
        info={"label_format": mode},  # "labels" (names), "genre" or "columns" (0/1 per tag)
        user_labels=True,
    )


def _list_mtat(name: str, source, opts: _Options, problems: _Problems) -> _Listing:
    root = _source_dir(source, problems, "MagnaTagATune folder (annotations_final.csv and folders 0..f)")
    problems.raise_if_any()
    ann_path = root / "annotations_final.csv"
    if not ann_path.is_file():
        problems.add("no annotations", f"{ann_path} does not exist")
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
    present = _existing([str(root / e) for _, e in entries])
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
    return _Listing(
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


def _list_gtzan(name: str, source, opts: _Options, problems: _Problems) -> _Listing:
    root = _source_dir(source, problems, "GTZAN folder (holding genres/<genre>/<genre>.000NN.au)")
    problems.raise_if_any()
    base = _gtzan_base(root)
    if base is None:
        problems.add("no genre folders", f"none of {', '.join(GTZAN_GENRES)} under {root} or {root / 'genres'}")
        problems.raise_if_any()
    files: dict[str, str] = {}  # stem "blues.00029" -> path
    for genre in GTZAN_GENRES:
        folder = base / genre
        if not folder.is_dir():
            logger.warning("gtzan: no folder %s", folder)
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
    if opts.split in (None, "official") and opts.folds is None and opts.fold_from_name is None:
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
    return _Listing(
        name="gtzan",
        task="classes",
        label_names=list(GTZAN_GENRES),
        track_ids=ids,
        sources=[files[i] for i in ids],
        labels=_one_hot([genre_index[i.split(".")[0].lower()] for i in ids], len(GTZAN_GENRES)),
        fold_names=[os.path.basename(files[i]) for i in ids],
        official=official,
        official_info=official_info,
        skipped=skipped,
    )


ADAPTERS = {
    "synth-tags": _list_synth,
    "synth-genre": _list_synth,
    "folder": _list_folder,
    "esc10": _list_folder,
    "csv": _list_csv,
    "csv-tags": _list_csv,
    "csv-classes": _list_csv,
    "mtat": _list_mtat,
    "gtzan": _list_gtzan,
    "fsdd": _list_fsdd,
}
OFFICIAL = ("csv", "csv-tags", "csv-classes", "mtat", "gtzan", "fsdd")  # have their own split


# ---------------------------------------------------------------------------------------------
# Split, top_k, checks


def _check_options(name: str, opts: _Options, problems: _Problems) -> None:
    if opts.split not in (None, "official", "random"):
        problems.add("bad option", f"split must be 'official' or 'random', got {opts.split!r}")
    if opts.split == "official" and name not in OFFICIAL:
        problems.add("bad option", f"split='official': {name} has no official split (known for {', '.join(OFFICIAL)})")
    if opts.fold_from_name is not None and opts.folds is not None:
        problems.add("bad option", "give either fold_from_name (folds named in file names) or folds (k-fold), not both")
    if opts.split is not None and (opts.folds is not None or opts.fold_from_name is not None):
        problems.add("bad option", f"split={opts.split!r} cannot be combined with folds or fold_from_name")
    if (opts.folds is not None or opts.fold_from_name is not None) and opts.fold is None:
        problems.add("bad option", "folds and fold_from_name need fold (the test fold)")
    if opts.fold is not None and opts.folds is None and opts.fold_from_name is None:
        problems.add("bad option", f"fold={opts.fold!r} needs folds (k-fold) or fold_from_name")
    if opts.fold_from_name is not None and name.startswith("synth"):
        problems.add("bad option", f"fold_from_name needs files; {name} is generated")
    if opts.fold_valid not in ("next", "slice"):
        problems.add("bad option", f"fold_valid must be 'next' or 'slice', got {opts.fold_valid!r}")
    if opts.top_k is not None and (not isinstance(opts.top_k, (int, np.integer)) or opts.top_k < 1):
        problems.add("bad option", f"top_k must be a positive integer, got {opts.top_k!r}")


def _resolve_split(lst: _Listing, opts: _Options, problems: _Problems) -> tuple[list[str], dict]:
    try:
        if opts.fold_from_name is not None:
            return splits_mod.folds_from_names(
                lst.fold_names, opts.fold_from_name, opts.fold,
                valid=opts.fold_valid, labels=lst.labels, task=lst.task, seed=opts.split_seed,
            )  # fmt: skip
        if opts.folds is not None:
            return splits_mod.kfold(lst.labels, lst.task, opts.folds, opts.fold, seed=opts.split_seed)
        if lst.official is not None and opts.split != "random":
            split, info = list(lst.official), dict(lst.official_info)
            info["counts"] = splits_mod.split_counts(split)
            return split, info
        return splits_mod.stratified_split(lst.labels, lst.task, seed=opts.split_seed)
    except ValueError as err:
        problems.add("bad split", str(err))
        return [], {}


def _carve_valid(lst: _Listing, split: list[str], info: dict, seed: int) -> list[str]:
    """An official split without valid tracks: a stratified slice of train becomes valid."""
    train = np.flatnonzero(np.array(split) == "train")
    fraction = splits_mod.KFOLD_VALID_FRACTION
    sub, _ = splits_mod.stratified_split(
        lst.labels[train], lst.task, fractions=(1 - fraction, fraction, 0), seed=seed
    )
    split = list(split)
    for i, s in zip(train, sub):
        split[i] = s
    info["valid"] = {"kind": "stratified slice of train", "fraction": fraction, "seed": int(seed)}
    info["counts"] = splits_mod.split_counts(split)
    return split


def _top_k(lst: _Listing, split: list[str], k: int) -> tuple[_Listing, list[str]]:
    """Keeps the k labels most frequent in train (ties by name), in that order.

    Tags: every track is kept, even one left without any kept tag: it is a negative example
    for every tag, and dropping it would make the track list depend on k. (The committed MTAT
    split was made the other way, without clips lacking a top-50 tag.)
    Classes: tracks of the other classes go to ``skipped``.
    """
    counts = lst.labels[np.array(split) == "train"].sum(axis=0)
    order = sorted(range(len(lst.label_names)), key=lambda j: (-int(counts[j]), lst.label_names[j]))[:k]
    labels = lst.labels[:, order]
    keep = np.ones(len(lst.track_ids), dtype=bool) if lst.task == "tags" else labels.any(axis=1)
    skipped = list(lst.skipped)
    for i in np.flatnonzero(~keep):
        cls = lst.label_names[int(np.argmax(lst.labels[i]))]
        skipped.append((lst.sources[i], f"class {cls!r} not among the top {k}"))
    out = dataclasses.replace(
        lst,
        label_names=[lst.label_names[j] for j in order],
        track_ids=[t for t, ok in zip(lst.track_ids, keep) if ok],
        sources=[s for s, ok in zip(lst.sources, keep) if ok],
        labels=labels[keep],
        skipped=skipped,
    )
    return out, [s for s, ok in zip(split, keep) if ok]


def _skip_summary(skipped: Sequence[tuple[str, str]]) -> str:
    if not skipped:
        return ""
    reasons = Counter(reason for _, reason in skipped)
    return f" ({len(skipped)} skipped: " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()) + ")"


def make_tracklist(
    name: str,
    source: str | os.PathLike | None = None,
    *,
    num_tracks: int = 300,
    seed: int = 0,
    min_sec: float = 10.0,
    max_sec: float = 30.0,
    split_seed: int = 0,
    folds: int | None = None,
    fold: int | str | None = None,
    fold_from_name: str | None = None,
    top_k: int | None = None,
    split: str | None = None,
    fold_valid: str = "next",
) -> TrackList:
    """Lists a dataset: track ids, sources, labels and split, validated; nothing is decoded.

    Args:
        name: The adapter: synth-tags, synth-genre, folder, esc10, csv, csv-tags, csv-classes,
            mtat, gtzan or fsdd.
        source: Folder or CSV file of the dataset (None for the synthetic ones).
        num_tracks, seed, min_sec, max_sec: The synthetic corpus (synth-genre uses
            ``seed + GENRE_SEED_OFFSET``).
        split_seed: Seed of a stratified split, of k-fold assignment, or of a valid slice.
        folds, fold: k-fold cross-validation; fold = the test fold, 1..folds.
        fold_from_name: Regex whose first group, searched in each file name, is the file's
            official fold; ``fold`` (as written in the names) is the test fold, the next fold
            the valid one. ``esc10`` defaults to ``^(\\d+)-`` and fold 1.
        fold_valid: With fold_from_name: "next" (valid = the next fold, train = the other
            folds) or "slice" (valid = a stratified slice of the other folds, train = the rest:
            closer to the published "train on all other folds" protocols, but clips cut from one
            recording may sit in both train and valid).
        top_k: Keep the k labels most frequent in the train split.
        split: None (the dataset's own split if it has one, else stratified), "official", or
            "random" (stratified with ``split_seed`` even where an official split exists).

    Returns:
        The TrackList; ``split_info`` records the adapter, source, split kind, seed or fold and
        files; ``skipped`` lists tracks of an official split that are not on disk.

    Raises:
        DatasetError: Listing every problem: unknown dataset or options, missing files,
            unknown tags, duplicate ids, empty classes, unreadable CSV rows (with line numbers),
            an empty dataset or a split without train tracks.
    """
    dataset = f"{name} {source}" if source is not None else str(name)
    problems = _Problems(dataset)
    if name not in ADAPTERS:
        problems.add("unknown dataset", f"{name!r}; known: {', '.join(ADAPTERS)}")
        problems.raise_if_any()
    if name in DEFAULT_FOLD_PATTERNS and folds is None and split is None:
        fold_from_name = DEFAULT_FOLD_PATTERNS[name] if fold_from_name is None else fold_from_name
        fold = 1 if fold is None else fold
    opts = _Options(
        num_tracks, seed, min_sec, max_sec, split_seed, folds, fold, fold_from_name, top_k, split, fold_valid
    )
    _check_options(name, opts, problems)
    problems.raise_if_any()

    lst = ADAPTERS[name](name, source, opts, problems)
    if name == "esc10":
        lst.name = "esc10"
    if not lst.track_ids:
        problems.add("empty dataset", f"no tracks{_skip_summary(lst.skipped)}")
        problems.raise_if_any()
    split_list, info = _resolve_split(lst, opts, problems)
    problems.raise_if_any()
    if "train" not in split_list:
        problems.add("no train tracks", f"{info.get('kind', '')} split: {splits_mod.split_counts(split_list)}")
        problems.raise_if_any()
    if "valid" not in split_list:
        split_list = _carve_valid(lst, split_list, info, opts.split_seed)
    if top_k is not None:
        lst, split_list = _top_k(lst, split_list, int(top_k))
        info["top_k"] = int(top_k)
        info["counts"] = splits_mod.split_counts(split_list)
    split_arr = np.array(split_list)
    in_train = lst.labels[split_arr == "train"].any(axis=0)
    anywhere = lst.labels.any(axis=0)
    for j, label in enumerate(lst.label_names):
        if anywhere[j] and not in_train[j]:
            if lst.user_labels:
                problems.add("unknown label", f"{label!r} has tracks only outside the train split (cannot be learned)")
            else:
                logger.warning("%s: label %r has no track in the train split", lst.name, label)
        elif not anywhere[j]:
            logger.warning("%s: label %r has no track", lst.name, label)
    problems.raise_if_any()

    info = {"adapter": name, "source": None if source is None else str(source), **info, **lst.info}
    tl = TrackList(
        name=lst.name,
        task=lst.task,
        label_names=list(lst.label_names),
        track_ids=list(lst.track_ids),
        sources=list(lst.sources),
        labels=np.ascontiguousarray(lst.labels, dtype=np.uint8),
        split=[str(s) for s in split_list],
        split_info=info,
        skipped=list(lst.skipped),
    )
    logger.info(
        "%s: %d tracks %s, %d labels (%s)%s",
        tl.name, len(tl), info.get("counts"), len(tl.label_names), tl.task, _skip_summary(tl.skipped),
    )  # fmt: skip
    return tl
