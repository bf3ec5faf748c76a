"""Fake MagnaTagATune and GTZAN trees, laid out as distributed, through prepare."""

from __future__ import annotations

import csv

import numpy as np
import soundfile as sf

from msagg.data import splits
from msagg.data.formats.cache import AudioCache
from msagg.stages import prepare


def _tone(path, seconds=1.0, rate=16000, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.2 * np.sin(2 * np.pi * 330 * t), rate, format=fmt)


def _fake_mtat(root):
    official = splits.official_split("mtat")
    chosen = {"train": official["train"][:6], "valid": official["valid"][:2], "test": official["test"][:3]}
    columns = [c for _, c in splits.mtat_top50()] + [f"other {i}" for i in range(138)]
    header = ["clip_id", *columns, "mp3_path"]
    lines = ["\t".join(f'"{h}"' for h in header)]
    for clip_id, path in enumerate(p for s in chosen.values() for p in s):
        row = {"clip_id": str(clip_id), "mp3_path": path, "guitar": "1", "techno": str(clip_id % 2)}
        lines.append("\t".join(f'"{row.get(h, "0")}"' for h in header))
    root.mkdir(parents=True)
    (root / "annotations_final.csv").write_text("\n".join(lines) + "\n")
    for path in chosen["train"] + chosen["valid"] + chosen["test"][:2]:  # the last test clip is missing
        _tone(root / path, fmt="MP3")
    corrupt = root / chosen["train"][1]
    corrupt.write_bytes(b"ID3\x03\x00\x00\x00\x00\x00\x00 this is not an mp3 stream" * 4)
    return chosen, corrupt


def test_mtat_tree_prepares_with_standard_split_and_reports_problems(tmp_path):
    chosen, corrupt = _fake_mtat(tmp_path / "mtat")
    config = prepare.Config(dataset="mtat", source=str(tmp_path / "mtat"), sample_rate=8000)
    cache_path = prepare.run(config, tmp_path / "run", workers=1, progress=False)
    with AudioCache(cache_path) as cache:
        assert cache.task == "tags" and len(cache.label_names) == 50
        counts = {s: len(cache.indices(s)) for s in ("train", "valid", "test")}
        assert counts == {"train": 5, "valid": 2, "test": 2}  # 6 - corrupt, 2, 3 - missing
        assert cache.sample_rate == 8000
    with open(tmp_path / "run" / "skipped.csv") as f:
        skipped = {row["source"]: row["reason"] for row in csv.DictReader(f)}
    assert str(corrupt) in skipped and skipped[str(corrupt)]
    missing = str(tmp_path / "mtat" / chosen["test"][2])
    assert skipped[missing] == "missing file"


def test_gtzan_tree_official_and_random_splits(tmp_path):
    official = splits.official_split("gtzan")
    root = tmp_path / "gtzan" / "genres"
    present = official["train"][:3] + official["valid"][:1] + official["test"][:2]
    for line in present:
        genre, name = line.split("/")
        _tone(root / genre / name.replace(".wav", ".au"), rate=22050)
    cache_path = prepare.run(prepare.Config(dataset="gtzan", source=str(tmp_path / "gtzan")), tmp_path / "run",
                             workers=1, progress=False)
    with AudioCache(cache_path) as cache:
        assert cache.task == "classes" and len(cache.label_names) == 10
        assert [len(cache.indices(s)) for s in ("train", "valid", "test")] == [3, 1, 2]
        assert cache.lengths.tolist() == [22050] * 6
    rows = list(csv.DictReader(open(tmp_path / "run" / "skipped.csv")))
    assert len(rows) == 443 + 197 + 290 - 6 and {r["reason"] for r in rows} == {"missing file"}
