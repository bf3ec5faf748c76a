"""``msagg predict`` on folders: CSV and JSON output, to stdout or a file, and tags over time."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

import msagg
from msagg.pipeline.cli import main
from tiny_family import SAMPLE_RATE


@pytest.fixture()
def folder(tmp_path):
    """Three clips in a folder tree (one in a sub-folder), one unreadable file, one that is no audio."""
    root = tmp_path / "music"
    rng = np.random.default_rng(11)
    for i, name in enumerate(["one.wav", "sub/two.flac", "three.wav"]):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(root / name, (0.3 * rng.standard_normal(400 + 300 * i)).astype(np.float32), SAMPLE_RATE)
    (root / "bad.wav").write_bytes(b"not audio at all" * 10)
    (root / "cover.jpg").write_bytes(b"\xff\xd8")
    return root


def predict(*args):
    result = CliRunner().invoke(main, ["predict", *map(str, args)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def _labels(run) -> list[str]:
    return json.loads((run / "3^2" / "metrics.json").read_text())["label_names"]


def test_predict_a_folder_as_csv(tiny_family, folder):
    result = predict(folder, "--pretrain", tiny_family, "--format", "csv")
    assert result.exit_code == 1  # one file was not scored; the others were
    assert result.stderr.count(": not scored: ") == 1
    assert f"{folder / 'bad.wav'}: not scored: cannot decode" in result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["path", *_labels(tiny_family)]
    assert [r[0] for r in rows[1:]] == [str(folder / n) for n in ("one.wav", "sub/two.flac", "three.wav")]  # sorted by path
    family = msagg.load(tiny_family)
    for row in rows[1:]:
        expected = family.tag_file(row[0]).scores
        assert [float(x) for x in row[1:]] == pytest.approx(list(expected.values()), abs=2e-6)


def test_predict_json_over_time_gives_windows_with_start_times(tiny_family, folder):
    result = predict(folder / "one.wav", folder / "sub", "--pretrain", tiny_family, "--format", "json", "--over-time")
    assert result.exit_code == 0, result.output
    one, two = json.loads(result.stdout)
    assert [one["path"], two["path"]] == [str(folder / "one.wav"), str(folder / "sub" / "two.flac")]
    tags = msagg.load(tiny_family).tag_file(folder / "sub" / "two.flac", over_time=True)
    over_time = two["over_time"]
    assert over_time["window_sec"] == 64 / SAMPLE_RATE and len(over_time["times"]) == 700 // 64
    assert over_time["times"] == pytest.approx(list(tags.times))
    assert np.array(over_time["scores"]) == pytest.approx(tags.over_time, abs=2e-6)
    assert list(two["scores"]) == _labels(tiny_family)


def test_predict_over_time_as_csv_into_a_file(tiny_family, folder, tmp_path):
    out = tmp_path / "tags.csv"
    result = predict(folder / "three.wav", "--pretrain", tiny_family, "--format", "csv", "--over-time", "--out", out)
    assert result.exit_code == 0 and result.stdout == "" and f"predictions: {out}" in result.stderr
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0] == ["path", "start_sec", *_labels(tiny_family)]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx([i * 64 / SAMPLE_RATE for i in range(1000 // 64)])
    assert {r[0] for r in rows[1:]} == {str(folder / "three.wav")}


def test_predict_text_over_time_and_the_json_flag(tiny_family, folder):
    text = predict(folder / "one.wav", "--pretrain", tiny_family, "--over-time", "--top", "2")
    lines = text.stdout.splitlines()
    assert text.exit_code == 0 and lines[0].startswith(f"{folder / 'one.wav'}: ") and len(lines) == 1 + 400 // 64
    assert lines[1].startswith("  0.00 s: ") and lines[2].startswith("  0.03 s: ") and lines[1].count(",") == 1
    assert json.loads(predict(folder / "one.wav", "--pretrain", tiny_family, "--json").stdout)[0]["models"] == \
        ["3^2", "4^2"]


def test_over_time_needs_the_end_to_end_models(folder, tmp_path):
    result = predict(folder / "one.wav", "--classify", tmp_path, "--over-time")
    assert result.exit_code == 1
    assert "Error: scores over time come from the end-to-end models: use --pretrain RUN" in result.stderr
