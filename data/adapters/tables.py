"""The adapters of track tables: csv (a CSV or TSV file of paths and labels), csv-tags, csv-classes."""

from __future__ import annotations

import csv
import io
import os
from collections import Counter
from pathlib import Path

import numpy as np

from msagg.data.adapters.common import Adapter, Listing, Problems, duplicates, existing
from msagg.data.adapters.options import AdapterOptions
from msagg.data.names import escape_name, unescape_name

CSV_RESERVED = ("path", "id", "track_id", "split", "labels", "genre")
SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "valid": "valid", "val": "valid", "validation": "valid", "dev": "valid",
    "test": "test", "testing": "test",
}  # fmt: skip


def _csv_delimiter(path: Path, header_line: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    return "\t" if header_line.count("\t") > header_line.count(",") else ","


def _list_csv(forced: str | None, source, opts: AdapterOptions, problems: Problems) -> Listing:
    """A CSV file of tracks; ``forced``: the task ("tags" or "classes"), or None to infer it."""
    if source is None:
        problems.add("no source", "give the CSV file")
        problems.raise_if_any()
    path = Path(source).expanduser()
    if not path.is_file():
        why = "does not exist" if not path.exists() else "a folder"
        problems.add("not a file", f"{escape_name(path)} ({why}); give the CSV file")
        problems.raise_if_any()
    base = str(path.parent)
    text = _read_text(path, problems)
    with io.StringIO(text, newline="") as f:
        first = f.readline()
        f.seek(0)
        reader = csv.reader(f, delimiter=_csv_delimiter(path, first))
        header = _next_row(reader, problems)
        if not header or not any(h.strip() for h in header):
            problems.add("no header", f"{escape_name(path)} is empty or has no header line")
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

        ids, sources, written, rows_labels, split_values, lines = [], [], [], [], [], []
        while (row := _next_row(reader, problems)) is not None:
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
            written.append(p)
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
    duplicates(ids, [f"line {n}" for n in lines], problems)
    found = existing(sources)
    for i in np.flatnonzero(~found):
        # A name that is not UTF-8 can only be written escaped, as msagg writes it (skipped.csv).
        unescaped = _unescaped(written[i], base)
        if unescaped is not None:
            sources[i], found[i] = unescaped, True
    for i in np.flatnonzero(~found):
        problems.add("missing file", f"line {lines[i]}: {escape_name(sources[i])}")
    if not ids and not problems:
        problems.add("no tracks", f"{escape_name(path)} lists no tracks")
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
    return Listing(
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



def _next_row(reader, problems: Problems) -> list[str] | None:
    """The reader's next row (None at the end), or an "unreadable CSV" problem raised at once."""
    try:
        return next(reader, None)
    except csv.Error as err:
        problems.add("unreadable CSV", f"line {reader.line_num}: {err}")
        problems.raise_if_any()


def _read_text(path: Path, problems: Problems) -> str:
    """The CSV file's text (UTF-8, a byte-order mark dropped), or a "not a CSV file" problem raised at once.

    Random bytes, an audio file or a spreadsheet given as the CSV are refused here with the first
    byte that is not UTF-8 (or the NUL byte text never holds), not by the CSV reader deep inside.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        problems.add("not a CSV file", f"byte 0x{data[err.start]:02x} at line {line} (offset {err.start}) is not "
                     "UTF-8 text; give a UTF-8 text file whose header names a path column")
        problems.raise_if_any()
    nul = text.find("\0")
    if nul >= 0:
        problems.add("not a CSV file", f"line {text.count(chr(10), 0, nul) + 1} holds a NUL byte (binary data, "
                     "not text); give a UTF-8 text file whose header names a path column")
        problems.raise_if_any()
    return text


def _unescaped(written: str, base: str) -> str | None:
    """The file a CSV path names in ``escape_name``'s form (``caf\\xe9.wav``), if there is one."""
    try:
        name = unescape_name(written)
    except ValueError:
        return None
    path = name if os.path.isabs(name) else os.path.join(base, name)
    return path if name != written and os.path.lexists(path) and not os.path.isdir(path) else None


def _list_csv_any(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_csv(None, source, opts, problems)


def _list_csv_tags(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_csv("tags", source, opts, problems)


def _list_csv_classes(source, opts: AdapterOptions, problems: Problems) -> Listing:
    return _list_csv("classes", source, opts, problems)


# official: a split column, where the file has one (without it, the split is stratified)
CSV = Adapter("csv", _list_csv_any, "a CSV file: path, labels 'a;b' or genre or 0/1 tag columns, optional split",
              official=True)
CSV_TAGS = Adapter("csv-tags", _list_csv_tags, "csv, always tags", official=True)
CSV_CLASSES = Adapter("csv-classes", _list_csv_classes, "csv, one class per track", official=True)
