"""Tests for data/adapters/: every adapter on a small fake tree, and the errors that list all problems."""

import csv
import importlib.util
import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from msagg.data import splits
from msagg.data.names import escape_name, unescape_name
from msagg.data.adapters import (
    ADAPTERS, GENRE_SEED_OFFSET, GTZAN_GENRES, AdapterOptions, DatasetError, make_tracklist,
)  # fmt: skip

SHARED = Path(__file__).resolve().parents[2] / "shared"
ESC10 = SHARED / "datasets" / "esc10"
FSDD = SHARED / "datasets" / "fsdd"
HAVE_SYNTH = importlib.util.find_spec("msagg.data.synth.music") is not None


def _wav(path: Path, format: str | None = None) -> Path:
    """A real 10 ms tone (content does not matter to adapters, which never decode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = 0.1 * np.sin(2 * np.pi * 440 * np.arange(80) / 8000).astype(np.float32)
    sf.write(os.fsencode(path), wave, 8000, format=format or path.suffix[1:].upper())  # bytes: any name
    return path


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


# ---------------------------------------------------------------------------------------------
# folder


@pytest.fixture
def folder_tree(tmp_path):
    """3 classes with spaces in their names, 10 clips each in ESC-10 style names (fold = first digit)."""
    root = tmp_path / "my sounds"
    for c, cls in enumerate(["Dog bark", "Rain drops", "Sea waves"]):
        for i in range(10):
            _wav(root / cls / f"{i % 5 + 1}-{1000 * c + i}-A.wav")
    _touch(root / "Dog bark" / "notes.txt")
    _touch(root / "Dog bark" / ".hidden.wav")
    _touch(root / "README.md")
    return root


def test_folder_lists_classes_with_spaces(folder_tree):
    tl = make_tracklist("folder", folder_tree)
    assert tl.name == "my sounds" and tl.task == "classes"
    assert tl.label_names == ["Dog bark", "Rain drops", "Sea waves"]
    assert len(tl) == 30 and "Dog bark/1-0-A" in tl.track_ids
    i = tl.track_ids.index("Rain drops/3-1002-A")
    assert tl.sources[i] == str(folder_tree / "Rain drops" / "3-1002-A.wav")
    assert tl.labels.dtype == np.uint8 and tl.labels[i].tolist() == [0, 1, 0]
    assert np.all(tl.labels.sum(axis=1) == 1)
    assert tl.split_info["kind"] == "stratified" and tl.split_info["seed"] == 0
    assert tl.split_info["counts"] == {"train": 21, "valid": 3, "test": 6}
    assert tl.skipped == []


def test_folder_split_is_deterministic(folder_tree):
    a = make_tracklist("folder", folder_tree, AdapterOptions(split_seed=5))
    b = make_tracklist("folder", folder_tree, AdapterOptions(split_seed=5))
    c = make_tracklist("folder", folder_tree, AdapterOptions(split_seed=6))
    assert a.split == b.split and a.split != c.split and a.split_info["seed"] == 5


def test_folder_fold_from_name(folder_tree):
    tl = make_tracklist("folder", folder_tree, AdapterOptions(fold_from_name=r"^(\d)-", fold=4))
    for tid, s in zip(tl.track_ids, tl.split):
        fold = int(tid.split("/")[1][0])
        assert s == {4: "test", 5: "valid"}.get(fold, "train"), tid
    assert tl.split_info["kind"] == "folds_from_names" and tl.split_info["valid_fold"] == 5
    assert json.loads(json.dumps(tl.split_info)) == tl.split_info  # stored as JSON in the cache


def test_folder_kfold(folder_tree):
    tested = []
    for fold in (1, 2, 3, 4, 5):
        tl = make_tracklist("folder", folder_tree, AdapterOptions(folds=5, fold=fold, split_seed=1))
        assert tl.split_info["kind"] == "kfold" and tl.split_info["fold"] == fold
        assert json.loads(json.dumps(tl.split_info)) == tl.split_info
        tested += [t for t, s in zip(tl.track_ids, tl.split) if s == "test"]
    assert sorted(tested) == sorted(tl.track_ids)


def test_folder_lists_all_problems_at_once(tmp_path):
    root = tmp_path / "bad"
    _wav(root / "a b" / "x.wav")
    _wav(root / "a b" / "x.flac")  # same track id as x.wav
    (root / "empty one").mkdir()
    _touch(root / "no audio" / "notes.txt")
    with pytest.raises(DatasetError) as err:
        make_tracklist("folder", root)
    message = str(err.value)
    assert "3 problems found" in message
    assert "empty class folder: 'empty one'" in message and "empty class folder: 'no audio'" in message
    assert "duplicate track id: 'a b/x'" in message
    assert len(err.value.problems) == 3


def test_folder_without_class_folders(tmp_path):
    _wav(tmp_path / "flat" / "a.wav")
    with pytest.raises(DatasetError, match=r"no class folders: .* but 1 audio files: put them in one folder per class"):
        make_tracklist("folder", tmp_path / "flat")


def test_folder_missing_source(tmp_path):
    with pytest.raises(DatasetError, match=r"not a folder: .*nowhere \(does not exist\)"):
        make_tracklist("folder", tmp_path / "nowhere")


def test_folder_lists_names_that_are_not_utf8(tmp_path):
    root = os.path.join(os.fsencode(tmp_path), b"corpus \xe9")
    names = [b"a/caf\xe9.wav", b"a/new\nline.wav", b"a/-dash.wav", b"a/x.wav", b"b\xff/1.wav", b"b\xff/2.wav",
             b"b\xff/3.wav", b"a/y.wav"]
    for name in names:
        _wav(Path(os.fsdecode(os.path.join(root, name))))
    tl = make_tracklist("folder", os.fsdecode(root))
    assert tl.name == "corpus \\xe9"  # a dataset name is text
    assert tl.label_names == ["a", os.fsdecode(b"b\xff")]
    assert sorted(os.fsencode(s) for s in tl.sources) == sorted(os.path.join(root, n) for n in names)
    assert os.fsdecode(b"a/caf\xe9") in tl.track_ids and "a/new\nline" in tl.track_ids


def test_folder_problems_name_files_escaped(tmp_path):
    root = os.fsencode(tmp_path / "bad")
    _wav(Path(os.fsdecode(os.path.join(root, b"c\xe9/x\n.wav"))))
    _wav(Path(os.fsdecode(os.path.join(root, b"c\xe9/x\n.flac"))))
    with pytest.raises(DatasetError) as err:
        make_tracklist("folder", os.fsdecode(root))
    message = str(err.value)
    message.encode("utf-8")
    assert "duplicate track id: 'c\\xe9/x\\n' (" in message and "/c\\xe9/x\\n.flac" in message


@pytest.mark.parametrize("name", [b"plain name.wav", b"caf\xe9.ogg", b"new\nline", b"-dash", b"back\\slash\\x41",
                                  bytes(range(1, 256)), "\u0085 \u2028 \U0001f3b5 \u00e9".encode()])
def test_escape_name_is_text_and_reversible(name):
    text = escape_name(os.fsdecode(name))
    text.encode("utf-8")  # h5py and CSV files can hold it
    assert len(text.splitlines()) <= 1 and text.isprintable()
    assert os.fsencode(unescape_name(text)) == name
    if name in (b"plain name.wav", b"-dash"):
        assert text == os.fsdecode(name)  # ordinary names are unchanged


def test_escape_name_examples_and_bad_escapes():
    assert escape_name(os.fsdecode(b"caf\xe9.ogg")) == "caf\\xe9.ogg"
    assert escape_name("a\nb\tc\\d\x00") == "a\\nb\\tc\\\\d\\u0000"
    assert unescape_name("caf\\xe9") == os.fsdecode(b"caf\xe9")
    for bad in ["a\\", "a\\x41", "a\\q", "a\\u12"]:
        with pytest.raises(ValueError, match="not an escape"):
            unescape_name(bad)


# ---------------------------------------------------------------------------------------------
# csv


def _write_csv(path: Path, rows: list[list[str]], delimiter=",") -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f, delimiter=delimiter).writerows(rows)
    return path


def test_csv_tag_names(tmp_path):
    audio = [_wav(tmp_path / "audio" / f"t{i}.wav") for i in range(20)]
    names = ["rock;loud", "rock", "jazz;calm", "calm", "rock;calm;loud"]
    rows = [["track_id", "path", "labels"]]
    for i, p in enumerate(audio):
        rows.append([f"id{i:02d}", f"audio/{p.name}" if i % 2 else str(p), names[i % 5]])
    tl = make_tracklist("csv", _write_csv(tmp_path / "list.csv", rows))
    assert tl.name == "list" and tl.task == "tags"
    assert tl.label_names == ["calm", "jazz", "loud", "rock"]
    assert tl.track_ids[:2] == ["id00", "id01"]
    assert tl.sources[0] == str(audio[0]) and tl.sources[1] == str(tmp_path / "audio" / "t1.wav")
    assert tl.labels[4].tolist() == [1, 0, 1, 1]
    assert tl.split_info["kind"] == "stratified" and tl.split_info["method"] == "iterative stratification"


def test_csv_names_a_file_that_is_not_utf8_by_its_escaped_form(tmp_path):
    latin1 = _wav(Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav"))))
    rows = [["path", "genre"]] + [[f"s{i}.wav", "ab"[i % 2]] for i in range(8)] + [["caf\\xe9.wav", "a"]]
    for i in range(8):
        _wav(tmp_path / f"s{i}.wav")
    tl = make_tracklist("csv", _write_csv(tmp_path / "list.csv", rows))
    assert tl.sources[-1] == str(latin1) and tl.track_ids[-1] == "caf\\xe9.wav"
    rows.append(["gone\\xe9.wav", "b"])
    with pytest.raises(DatasetError, match=r"missing file: line 11: .*/gone\\\\xe9\.wav"):
        make_tracklist("csv", _write_csv(tmp_path / "list.csv", rows))


def test_csv_single_labels_are_classes_and_split_column(tmp_path):
    rows = [["path", "genre", "split"]]
    for i in range(12):
        _wav(tmp_path / f"s{i}.wav")
        rows.append([f"s{i}.wav", ["pop", "metal"][i % 2], ["train", "train", "val", "test"][i % 4]])
    tl = make_tracklist("csv", _write_csv(tmp_path / "genres.tsv", rows, delimiter="\t"))
    assert tl.task == "classes" and tl.label_names == ["metal", "pop"]
    assert tl.track_ids[0] == "s0.wav" and tl.split[:4] == ["train", "train", "valid", "test"]
    assert tl.split_info["kind"] == "csv column" and tl.split_info["counts"] == {"train": 6, "valid": 3, "test": 3}
    # the column is ignored when a random split is asked for
    random = make_tracklist("csv", tmp_path / "genres.tsv", AdapterOptions(split="random"))
    assert random.split_info["kind"] == "stratified"


def test_csv_labels_column_task_detection_and_override(tmp_path):
    rows = [["path", "labels"]] + [[_wav(tmp_path / f"{i}.wav").name, "ab"[i % 2]] for i in range(10)]
    path = _write_csv(tmp_path / "l.csv", rows)
    assert make_tracklist("csv", path).task == "classes"
    assert make_tracklist("csv-tags", path).task == "tags"


def test_csv_split_column_without_valid_gets_a_valid_slice(tmp_path):
    rows = [["path", "labels", "split"]]
    for i in range(40):
        rows.append([_wav(tmp_path / f"{i}.wav").name, "ab"[i % 2], "test" if i < 8 else "train"])
    tl = make_tracklist("csv", _write_csv(tmp_path / "l.csv", rows), AdapterOptions(split_seed=2))
    assert tl.split_info["counts"] == {"train": 28, "valid": 4, "test": 8}
    assert tl.split_info["valid"] == {"kind": "stratified slice of train", "fraction": 0.125, "seed": 2}
    assert tl.split[:8] == ["test"] * 8


def test_csv_01_columns_and_top_k(tmp_path):
    rows = [["id", "path", "Guitar", "no vocals", "drums", "flute", "split"]]
    tags = {  # train counts: Guitar 4, no vocals 3, drums 3, flute 1
        "train": [(1, 1, 1, 0), (1, 0, 1, 0), (1, 1, 0, 1), (1, 1, 1, 0), (0, 0, 0, 0)],
        "valid": [(1, 0, 0, 1)],
        "test": [(0, 1, 1, 1), (0, 0, 0, 1)],
    }
    n = 0
    for s, values in tags.items():
        for v in values:
            rows.append([f"t{n}", _wav(tmp_path / f"t{n}.wav").name, *map(str, v), s])
            n += 1
    path = _write_csv(tmp_path / "msd.csv", rows)
    full = make_tracklist("csv", path)
    assert full.task == "tags" and full.label_names == ["Guitar", "no vocals", "drums", "flute"]
    assert full.labels.tolist()[0] == [1, 1, 1, 0]
    top = make_tracklist("csv", path, AdapterOptions(top_k=3))
    # most frequent in train first, the tie between 'drums' and 'no vocals' broken by name
    assert top.label_names == ["Guitar", "drums", "no vocals"]
    assert top.labels[0].tolist() == [1, 1, 1] and top.labels[2].tolist() == [1, 0, 1]
    assert len(top) == 8 and top.labels[4].sum() == 0  # untagged tracks are kept
    assert top.split_info["top_k"] == 3
    assert json.loads(json.dumps(top.split_info)) == top.split_info


def test_csv_top_k_on_classes_skips_other_classes(tmp_path):
    rows = [["path", "genre"]]
    for i, g in enumerate(["a"] * 10 + ["b"] * 8 + ["c"] * 3):
        rows.append([_wav(tmp_path / f"{i}.wav").name, g])
    tl = make_tracklist("csv", _write_csv(tmp_path / "g.csv", rows), AdapterOptions(top_k=2))
    assert tl.label_names == ["a", "b"] and len(tl) == 18
    assert len(tl.skipped) == 3 and tl.skipped[0][1] == "class 'c' not among the top 2"
    assert sum(tl.split_info["counts"].values()) == 18


def test_csv_lists_all_problems_with_line_numbers(tmp_path):
    _wav(tmp_path / "ok.wav")
    rows = [
        ["id", "path", "labels", "split"],
        ["a", "ok.wav", "rock", "train"],  # line 2
        ["b", "gone.wav", "rock", "train"],  # line 3: missing file
        ["a", "ok.wav", "pop", "test"],  # line 4: duplicate id
        ["c", "ok.wav", "rock"],  # line 5: a field short
        ["d", "ok.wav", "rock", "holdout"],  # line 6: unknown split
        ["e", "", "rock", "train"],  # line 7: empty path
    ]
    with pytest.raises(DatasetError) as err:
        make_tracklist("csv", _write_csv(tmp_path / "bad.csv", rows))
    message = str(err.value)
    for part in [
        "missing file: line 3: " + str(tmp_path / "gone.wav"),
        "duplicate track id: 'a' (line 2, line 4)",
        "unreadable row: line 5: 3 fields, the header has 4",
        "unknown split: line 6: 'holdout'",
        "empty path: line 7",
    ]:
        assert part in message, part


def test_csv_bad_tag_values_and_empty_tags(tmp_path):
    _wav(tmp_path / "x.wav")
    rows = [["path", "piano", "harp"], ["x.wav", "1", "0"], ["x.wav", "yes", "0"]]
    with pytest.raises(DatasetError, match=r"(?s)bad tag value: line 3: column 'piano' holds 'yes'.*"
                       r"duplicate track id: 'x.wav'"):  # fmt: skip
        make_tracklist("csv", _write_csv(tmp_path / "t.csv", rows))
    rows = [["path", "piano", "harp"], ["x.wav", "1", "0"]]
    with pytest.raises(DatasetError, match=r"empty tag: column 'harp' has no track tagged 1"):
        make_tracklist("csv", _write_csv(tmp_path / "t.csv", rows))


def test_csv_label_only_outside_train_is_unknown(tmp_path):
    rows = [["path", "labels", "split"]]
    for i in range(6):
        rows.append([_wav(tmp_path / f"{i}.wav").name, "rare" if i == 5 else "common", "train valid test".split()[i % 3]])
    with pytest.raises(DatasetError, match=r"unknown label: 'rare' has tracks only outside the train split"):
        make_tracklist("csv", _write_csv(tmp_path / "l.csv", rows))


def test_csv_classes_override_rejects_several_labels(tmp_path):
    rows = [["path", "labels"], [_wav(tmp_path / "a.wav").name, "x;y"], [_wav(tmp_path / "b.wav").name, ""]]
    with pytest.raises(DatasetError, match=r"(?s)not one class: line 2: 2 labels \(x; y\).*line 3: no label"):
        make_tracklist("csv-classes", _write_csv(tmp_path / "l.csv", rows))


def test_csv_header_problems(tmp_path):
    with pytest.raises(DatasetError, match=r"no path column: columns are \['file', 'labels'\]"):
        make_tracklist("csv", _write_csv(tmp_path / "a.csv", [["file", "labels"], ["x", "y"]]))
    with pytest.raises(DatasetError, match=r"no labels: columns are \['path', 'split'\]"):
        make_tracklist("csv", _write_csv(tmp_path / "b.csv", [["path", "split"], ["x", "train"]]))


def test_csv_lists_tens_of_thousands_of_rows_quickly(tmp_path):
    num, num_files = 30000, 320  # several rows may share a file; creating 30000 files is slow on some disks
    files = [_touch(tmp_path / f"{i % 16:x}" / f"TR{i:06d}.mp3") for i in range(num_files)]
    rows = [["track_id", "path", "labels"]]
    for i in range(num):
        p = files[i % num_files]
        rows.append([f"TR{i:06d}", f"{p.parent.name}/{p.name}", f"tag{i % 7};tag{i % 11}"])
    path = _write_csv(tmp_path / "big.csv", rows)
    start = time.perf_counter()
    tl = make_tracklist("csv", path, AdapterOptions(top_k=10))
    assert time.perf_counter() - start < 10.0
    assert len(tl) == num and len(tl.label_names) == 10


# ---------------------------------------------------------------------------------------------
# mtat


def _mtat_header():
    """clip_id, 188 tag columns (the 50 top ones among 138 fillers, in a shuffled order), mp3_path."""
    columns = [c for _, c in splits.mtat_top50()] + [f"filler tag {i}" for i in range(138)]
    columns = [columns[i] for i in np.random.default_rng(0).permutation(len(columns))]
    return ["clip_id", *columns, "mp3_path"]


def _write_annotations(root: Path, rows: list[dict], header=None) -> Path:
    """annotations_final.csv as distributed: tab-separated, every field double-quoted."""
    header = header or _mtat_header()
    lines = ["\t".join(f'"{h}"' for h in header)]
    for row in rows:
        values = [row.get(h, "0") for h in header]
        lines.append("\t".join(f'"{v}"' for v in values))
    root.mkdir(parents=True, exist_ok=True)
    path = root / "annotations_final.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def mtat_tree(tmp_path):
    official = splits.official_split("mtat")
    chosen = {"train": official["train"][:4], "valid": official["valid"][:2], "test": official["test"][:3]}
    root = tmp_path / "magnatagatune"
    rows = []
    clip = 100
    for s, entries in chosen.items():
        for e in entries:
            rows.append({"clip_id": str(clip), "mp3_path": e, "guitar": "1", "no vocals": str(clip % 2)})
            clip += 1
    _write_annotations(root, rows + [{"clip_id": "999", "mp3_path": "0/not-in-any-split.mp3", "guitar": "1"}])
    present = [e for s in chosen.values() for e in s if e != chosen["test"][2]]  # one clip missing on disk
    for e in present + ["0/not-in-any-split.mp3"]:
        _wav(root / e, format="MP3")
    return root, chosen


def test_mtat_fake_tree(mtat_tree):
    root, chosen = mtat_tree
    tl = make_tracklist("mtat", root)
    assert tl.name == "mtat" and tl.task == "tags"
    assert tl.label_names == [n for n, _ in splits.mtat_top50()] and len(tl.label_names) == 50
    assert tl.split_info["counts"] == {"train": 4, "valid": 2, "test": 2}
    assert tl.split_info["kind"] == "official" and tl.split_info["files"]["test"] == "data/splits/mtat/test.txt"
    assert json.loads(json.dumps(tl.split_info)) == tl.split_info
    assert tl.track_ids[:4] == ["100", "101", "102", "103"] and "999" not in tl.track_ids
    assert tl.sources[0] == str(root / chosen["train"][0])
    guitar, no_vocals = tl.label_names.index("guitar"), tl.label_names.index("noVocals")
    assert np.all(tl.labels[:, guitar] == 1)
    assert tl.labels[:, no_vocals].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]
    assert tl.labels.sum() == 8 + 4
    missing = str(root / chosen["test"][2])
    assert (missing, "missing file") in tl.skipped
    reasons = {r for _, r in tl.skipped}
    assert reasons == {"missing file"}  # the other split clips are neither on disk nor annotated
    assert len(tl.skipped) == 15244 + 1529 + 4332 - 8


def test_mtat_clip_on_disk_but_not_annotated(mtat_tree):
    root, chosen = mtat_tree
    extra = splits.official_split("mtat")["train"][10]
    _wav(root / extra, format="MP3")
    tl = make_tracklist("mtat", root)
    assert (str(root / extra), "not in annotations_final.csv") in tl.skipped
    assert len(tl) == 8


def test_mtat_top_k_keeps_frequent_tags(mtat_tree):
    tl = make_tracklist("mtat", mtat_tree[0], AdapterOptions(top_k=2))
    assert tl.label_names == ["guitar", "noVocals"]


def test_mtat_lists_all_problems(tmp_path):
    header = _mtat_header()
    header[header.index("no vocals")] = "no_vocals"  # a top-50 column the mapping cannot find
    _write_annotations(tmp_path, [], header=header)
    with pytest.raises(DatasetError, match=r"unknown tag: 'noVocals': column 'no vocals'"):
        make_tracklist("mtat", tmp_path)
    e = splits.official_split("mtat")["train"][0]
    path = _write_annotations(tmp_path, [{"clip_id": "1", "mp3_path": e}, {"clip_id": "1", "mp3_path": e, "piano": "x"}])
    with open(path, "a") as f:
        f.write('"2"\t"0"\n')
    with pytest.raises(DatasetError) as err:
        make_tracklist("mtat", tmp_path)
    message = str(err.value)
    assert "bad tag value: line 3: columns ['piano'] are not 0 or 1" in message
    assert "unreadable row: line 4: 2 fields, the header has 190" in message


def test_mtat_without_annotations(tmp_path):
    with pytest.raises(DatasetError, match=r"no annotations: .*annotations_final\.csv does not exist"):
        make_tracklist("mtat", tmp_path)


def test_mtat_with_no_clip_present_is_empty(tmp_path):
    _write_annotations(tmp_path, [])
    with pytest.raises(DatasetError, match=r"empty dataset: no tracks \(21105 skipped: 21105 missing file\)"):
        make_tracklist("mtat", tmp_path)


# ---------------------------------------------------------------------------------------------
# gtzan


@pytest.fixture
def gtzan_tree(tmp_path):
    """genres/<genre>/<genre>.000NN.au for 3 train, 1 valid, 1 test entry of each genre, one missing."""
    official = splits.official_split("gtzan")
    root = tmp_path / "GTZAN"
    listed = {}
    for genre in GTZAN_GENRES:
        for s, take in (("train", 3), ("valid", 1), ("test", 1)):
            for e in [e for e in official[s] if e.startswith(genre + "/")][:take]:
                listed[e] = s
    missing = next(e for e, s in listed.items() if s == "test")
    for e in listed:
        if e != missing:
            _wav(root / "genres" / e.replace(".wav", ".au"), format="AU")
    extra = root / "genres" / "jazz" / "jazz.00033.au"  # a faulty clip left out of the filtered split
    assert "jazz/jazz.00033.wav" not in sum(official.values(), [])
    _wav(extra, format="AU")
    return root, listed, missing


def test_gtzan_official_split(gtzan_tree):
    root, listed, missing = gtzan_tree
    tl = make_tracklist("gtzan", root)
    assert tl.name == "gtzan" and tl.task == "classes" and tl.label_names == list(GTZAN_GENRES)
    assert tl.split_info["counts"] == {"train": 30, "valid": 10, "test": 9}
    assert tl.split_info["kind"] == "official" and tl.split_info["dataset"] == "gtzan"
    assert (missing, "missing file") in tl.skipped and {r for _, r in tl.skipped} == {"missing file"}
    assert len(tl.skipped) == 930 - 49  # the split entries not in the tree
    for tid, source, y, s in zip(tl.track_ids, tl.sources, tl.labels, tl.split):
        assert listed[f"{tid.split('.')[0]}/{tid}.wav"] == s
        assert source.endswith(f"{tid}.au") and tl.label_names[int(np.argmax(y))] == tid.split(".")[0]
    assert "jazz.00033" not in tl.track_ids


def test_gtzan_accepts_the_genres_folder_and_wav(gtzan_tree, tmp_path):
    root = tmp_path / "converted" / "genres"
    _wav(root / "blues" / "blues.00029.wav")  # the first train entry
    _wav(root / "rock" / "rock.00033.wav")
    _wav(root / "rock" / "rock.00033.au", format="AU")  # converted beside the original: the .wav is used
    tl = make_tracklist("gtzan", root)
    assert tl.track_ids == ["blues.00029", "rock.00033"] and tl.split == ["train", "test"]
    assert tl.sources[0].endswith("blues.00029.wav") and tl.sources[1].endswith("rock.00033.wav")


def test_gtzan_random_split(gtzan_tree):
    root, listed, _ = gtzan_tree
    tl = make_tracklist("gtzan", root, AdapterOptions(split="random", split_seed=7))
    assert len(tl) == len(listed) and "jazz.00033" in tl.track_ids
    assert tl.split_info["kind"] == "stratified" and tl.split_info["seed"] == 7 and tl.skipped == []
    assert tl.split == make_tracklist("gtzan", root, AdapterOptions(split="random", split_seed=7)).split


def test_gtzan_no_train_track_is_an_error(tmp_path):
    _wav(tmp_path / "genres" / "blues" / "blues.00012.au", format="AU")  # a test entry only
    with pytest.raises(DatasetError, match=r"no train tracks: official split: \{'train': 0, 'valid': 0, 'test': 1\}"):
        make_tracklist("gtzan", tmp_path)


# ---------------------------------------------------------------------------------------------
# synthetic corpus (data.synth is written separately)


@pytest.mark.skipif(not HAVE_SYNTH, reason="msagg.data.synth.music is not available yet")
def test_synth_tags():
    from msagg.data.synth import music as synth

    tl = make_tracklist("synth-tags", None, AdapterOptions(num_tracks=40, seed=3, min_sec=1.0, max_sec=2.0))
    assert tl.name == "synth-tags" and tl.task == "tags" and tl.label_names == list(synth.SYNTH_TAGS)
    assert len(tl) == 40 and len(set(tl.track_ids)) == 40
    assert tl.sources[5] == synth.source_string(3, 5, 1.0, 2.0)
    described = synth.describe(40, 3, 1.0, 2.0)
    assert [tl.label_names[j] for j in np.flatnonzero(tl.labels[5])] == list(described[5].tags)
    assert tl.split_info["kind"] == "stratified" and tl.split_info["corpus"]["seed"] == 3
    again = make_tracklist("synth-tags", None, AdapterOptions(num_tracks=40, seed=3, min_sec=1.0, max_sec=2.0))
    assert again.split == tl.split


@pytest.mark.skipif(not HAVE_SYNTH, reason="msagg.data.synth.music is not available yet")
def test_synth_genre_uses_another_corpus():
    from msagg.data.synth import music as synth

    options = AdapterOptions(num_tracks=30, seed=3, min_sec=1.0, max_sec=2.0, folds=3, fold=2)
    tl = make_tracklist("synth-genre", None, options)
    assert tl.task == "classes" and tl.label_names == list(synth.SYNTH_GENRES)
    assert np.all(tl.labels.sum(axis=1) == 1)
    assert tl.split_info["corpus"]["seed"] == 3 + GENRE_SEED_OFFSET and tl.split_info["kind"] == "kfold"
    assert tl.sources[0] == synth.source_string(3 + GENRE_SEED_OFFSET, 0, 1.0, 2.0)


@pytest.mark.skipif(not HAVE_SYNTH, reason="msagg.data.synth.music is not available yet")
def test_synth_bad_options():
    with pytest.raises(DatasetError, match=r"(?s)num_tracks must be a positive integer.*min_sec <= max_sec"):
        make_tracklist("synth-tags", None, AdapterOptions(num_tracks=0, min_sec=5.0, max_sec=1.0))


# ---------------------------------------------------------------------------------------------
# options and the error type


def test_unknown_dataset_lists_the_known_ones():
    with pytest.raises(DatasetError, match=r"unknown dataset: 'magna'; known: synth-tags, synth-genre, synth-gm-tags, "
                       r"synth-gm-genre, folder, .*gtzan"):
        make_tracklist("magna")


def test_conflicting_options_are_all_listed(folder_tree):
    with pytest.raises(DatasetError) as err:
        options = AdapterOptions(folds=5, fold_from_name=r"^(\d)", split="sideways", top_k=0)
        make_tracklist("folder", folder_tree, options)
    message = str(err.value)
    assert "split must be 'official' or 'random'" in message
    assert "give either fold_from_name" in message and "top_k must be a positive integer" in message
    with pytest.raises(DatasetError, match=r"fold=2 needs folds"):
        make_tracklist("folder", folder_tree, AdapterOptions(fold=2))
    with pytest.raises(DatasetError, match=r"split='official': folder has no official split"):
        make_tracklist("folder", folder_tree, AdapterOptions(split="official"))


def test_registry_describes_every_adapter():
    assert list(ADAPTERS) == ["synth-tags", "synth-genre", "synth-gm-tags", "synth-gm-genre", "folder", "esc10", "csv",
                              "csv-tags", "csv-classes", "mtat", "gtzan", "fsdd", "unlabelled"]
    assert all(name == adapter.name and adapter.summary for name, adapter in ADAPTERS.items())
    assert {n for n, a in ADAPTERS.items() if a.generated} == {"synth-tags", "synth-genre", "synth-gm-tags",
                                                               "synth-gm-genre"}
    assert {n for n, a in ADAPTERS.items() if a.soundfont} == {"synth-gm-tags", "synth-gm-genre"}
    assert {n for n, a in ADAPTERS.items() if a.official} == {"csv", "csv-tags", "csv-classes", "mtat", "gtzan", "fsdd", "unlabelled"}
    assert {n: a.fold_pattern for n, a in ADAPTERS.items() if a.fold_pattern} == {"esc10": r"^(\d+)-"}
    esc10 = ADAPTERS["esc10"]
    assert (esc10.with_defaults(AdapterOptions()).fold_from_name, esc10.with_defaults(AdapterOptions()).fold) == (
        r"^(\d+)-", 1)
    assert esc10.with_defaults(AdapterOptions(fold=3)).fold == 3
    # k-fold or a split instead of the official folds
    assert esc10.with_defaults(AdapterOptions(folds=5, fold=2)).fold_from_name is None
    assert esc10.with_defaults(AdapterOptions(split="random")).fold is None


def test_esc10_reads_its_folds_from_the_names(folder_tree):
    tl = make_tracklist("esc10", folder_tree)
    assert tl.name == "esc10" and tl.split_info["adapter"] == "esc10"
    assert tl.split_info["kind"] == "folds_from_names" and tl.split_info["fold"] == 1
    assert tl.split == make_tracklist("folder", folder_tree, AdapterOptions(fold_from_name=r"^(\d+)-", fold=1)).split
    assert make_tracklist("esc10", folder_tree, AdapterOptions(split="random")).split_info["kind"] == "stratified"


def test_options_problems_name_the_option_and_value():
    assert AdapterOptions().problems(ADAPTERS["folder"]) == []
    assert AdapterOptions(fold=2).problems(ADAPTERS["esc10"]) == []  # the official folds are in the names
    assert AdapterOptions(fold=2).problems(ADAPTERS["folder"]) == [
        "fold=2 needs folds (k-fold cross-validation) or fold_from_name (folds in file names)"]
    assert AdapterOptions(split="official").problems(ADAPTERS["gtzan"]) == []
    assert AdapterOptions(fold_from_name="(", fold=1).problems(ADAPTERS["folder"])[0].startswith(
        "fold_from_name='(': not a valid regular expression")
    # A dataset the registry does not know: the rules that hold for every dataset.
    assert AdapterOptions(folds=3).problems() == [
        "fold=None: must say which fold is the test split when folds or fold_from_name is given"]
    assert AdapterOptions(split="official", fold=1).problems() == [
        "fold=1 needs folds (k-fold cross-validation) or fold_from_name (folds in file names)"]


def test_corpus_size_is_ignored_by_datasets_of_files(folder_tree, caplog):
    tl = make_tracklist("folder", folder_tree, AdapterOptions(num_tracks=5, min_sec=1.0))
    assert len(tl) == 30 and "num_tracks, min_sec only size generated datasets: ignored" in caplog.text


@pytest.mark.skipif(not HAVE_SYNTH, reason="msagg.data.synth.music is not available yet")
def test_synth_defaults_are_the_demo_corpus():
    default = make_tracklist("synth-genre", None, AdapterOptions(num_tracks=30))
    explicit = make_tracklist("synth-genre", None, AdapterOptions(num_tracks=30, seed=0, min_sec=10.0, max_sec=30.0))
    assert default.sources == explicit.sources and default.split == explicit.split
    assert default.split_info == explicit.split_info
    assert default.split_info["corpus"] == {"seed": GENRE_SEED_OFFSET, "num_tracks": 30, "min_sec": 10.0,
                                            "max_sec": 30.0}


def test_dataset_error_is_a_value_error_and_pickles():
    err = DatasetError("x", {"missing file": [f"f{i}.wav" for i in range(25)], "empty class folder": ["'a'"]})
    assert isinstance(err, ValueError) and len(err.problems) == 26
    message = str(err)
    assert "26 problems" in message and "... and 15 more 'missing file'" in message
    assert "empty class folder: 'a'" in message  # every kind is shown, however many of another
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == message and again.problems == err.problems


# ---------------------------------------------------------------------------------------------
# real datasets beside the repository (../shared)


@pytest.mark.skipif(not ESC10.is_dir(), reason=f"ESC-10 not found at {ESC10}")
def test_esc10_official_folds():
    tested = set()
    for fold in range(1, 6):
        tl = make_tracklist("folder", ESC10, AdapterOptions(fold_from_name=r"^(\d)-", fold=fold))
        assert len(tl) == 400 and len(tl.label_names) == 10 and tl.label_names[0] == "001 - Dog bark"
        assert tl.split_info["counts"] == {"train": 240, "valid": 80, "test": 80}
        assert np.all(tl.labels[np.array(tl.split) == "test"].sum(axis=0) == 8)
        tested |= {t for t, s in zip(tl.track_ids, tl.split) if s == "test"}
    assert len(tested) == 400
    esc = make_tracklist("esc10", ESC10)
    assert esc.name == "esc10" and esc.split_info["fold"] == 1
    sliced = make_tracklist("esc10", ESC10, AdapterOptions(fold=3, fold_valid="slice"))
    assert sliced.split_info["counts"] == {"train": 280, "valid": 40, "test": 80}


@pytest.mark.skipif(not FSDD.is_dir(), reason=f"FSDD not found at {FSDD}")
def test_fsdd_official_split():
    tl = make_tracklist("fsdd", FSDD)
    assert tl.name == "fsdd" and tl.task == "classes" and tl.label_names == [str(d) for d in range(10)]
    assert len(tl) == 3000 and tl.split_info["counts"] == {"train": 2400, "valid": 300, "test": 300}
    i = tl.track_ids.index("7_jackson_3")
    assert tl.split[i] == "test" and tl.labels[i, 7] == 1
    assert tl.split[tl.track_ids.index("7_jackson_32")] == "train"


def test_fsdd_fake_tree(tmp_path):
    for digit in (0, 1):
        for index in range(12):
            _wav(tmp_path / "recordings" / f"{digit}_lucas_{index}.wav")
    _wav(tmp_path / "recordings" / "hello.wav")
    with pytest.raises(DatasetError, match=r"unexpected file name: hello\.wav"):
        make_tracklist("fsdd", tmp_path)
    (tmp_path / "recordings" / "hello.wav").unlink()
    tl = make_tracklist("fsdd", tmp_path)
    assert tl.split_info["counts"] == {"train": 4, "valid": 10, "test": 10}
    assert tl.split[tl.track_ids.index("1_lucas_4")] == "test"


def test_label_groups_synth_tag_levels_and_unknown():
    from msagg.data.synth import music as synth
    from msagg.data.adapters import label_groups

    tags = ["sad", "loud", "piano", "fast"]
    groups = label_groups("synth-tags", tags)
    assert groups == {"loud": "acoustic", "fast": "acoustic", "piano": "instrument", "sad": "high-level"}
    assert list(groups) == ["loud", "fast", "piano", "sad"]  # by level (acoustic, instrument, high-level)
    assert set(label_groups("synth-tags", list(synth.SYNTH_TAGS)).values()) == set(synth.TAG_LEVELS.values())
    assert label_groups("no-such-dataset", tags) is None
    assert label_groups("synth-genre", list(synth.SYNTH_GENRES)) is None  # classes: no levels
    assert label_groups("synth-tags", ["loud", "not-a-tag"]) is None
