"""The pipeline scale benchmark (msagg bench-pipeline) on tiny settings: table, JSON, memory and disk checks."""

import dataclasses
import json
import time

import pytest
from click.testing import CliRunner

from msagg.pipeline.cli import main
from msagg.stages.bench import pipeline as bp
from msagg.stages.bench.measure import own_peak_rss_mb
from msagg.stages import quiet

TINY = ["--tracks", "2", "--track-sec", "1", "--scales", "3^2,4x2", "--width", "0.125", "--workers", "1"]
STEPS = ["prepare", "models", "crops 3^9", "crops 2^13", "extract", "prepare", "crops 3^9", "crops 2^13", "extract"]


def test_bench_pipeline_command_prints_the_table_and_writes_the_json(tmp_path, monkeypatch):
    # In this process (each step in its own would cost a backend import, seconds, per step), and
    # few crop batches.
    run_benchmark = bp.run_benchmark
    monkeypatch.setattr(bp, "run_benchmark", lambda settings, **options: run_benchmark(
        dataclasses.replace(settings, min_crop_batches=5), isolate=False, **options))
    out, work = tmp_path / "bench" / "pipeline.json", tmp_path / "work"
    result = CliRunner().invoke(main, ["bench-pipeline", *TINY, "--work", str(work), "--keep", "--out", str(out)])
    assert result.exit_code == 0, result.output

    report = json.loads(out.read_text())
    assert report["sizes"] == [2, 8] and report["isolated"] is False and report["settings"]["min_crop_batches"] == 5
    assert report["settings"]["scales"] == ["3^2", "4^2"] and report["settings"]["crop_scales"] == ["3^9", "2^13"]
    rows = report["rows"]
    assert [r["step"] for r in rows] == STEPS
    assert [r["num_tracks"] for r in rows] == [2, None, 2, 2, 2, 8, 8, 8, 8]
    for row in rows:
        assert row["peak_rss_mb"] > 0 and row["wall_sec"] >= 0, row["step"]
    for row in (r for r in rows if r["step"] == "prepare"):
        assert row["num_cached"] == row["num_tracks"] and row["audio_sec"] == row["num_tracks"] * 1.0
        assert row["files_per_sec"] > 0 and row["realtime_factor"] > 0 and row["decode_workers"] == 1
        # The cache is the int16 audio (2 bytes a sample) plus its index; the folder holds the cache.
        assert row["cache_bytes"] > row["num_tracks"] * 22050 * 2
        assert row["disk_final_bytes"] >= row["cache_bytes"] * 0.9 and row["disk_samples"] >= 1
        assert row["disk_peak_bytes"] >= row["disk_final_bytes"]
        assert row["disk_peak_ratio"] == pytest.approx(row["disk_peak_bytes"] / row["disk_final_bytes"], abs=1e-4)
        assert "peak_rss_workers_mb" in row
    for row in (r for r in rows if r["step"].startswith("crops")):
        assert row["input_length"] == {"crops 3^9": 59049, "crops 2^13": 16384}[row["step"]]
        assert row["num_batches"] >= 5 and row["segments_per_sec"] > 0
        assert row["realtime_factor"] == pytest.approx(row["segments_per_sec"] * row["input_length"] / 22050,
                                                       rel=0.01)
    for row in (r for r in rows if r["step"] == "extract"):
        assert row["num_extracted"] == row["num_tracks"] and row["scales"] == ["3^2", "4^2"]
        assert row["realtime_factor"] == pytest.approx(row["audio_sec"] / row["stage_sec"], rel=0.01)
    models = rows[1]
    assert set(models["num_params"]) == {"3^2", "4^2"} and models["width"] == 0.125
    assert [g["step"] for g in report["rss_growth"]] == ["prepare", "crops 3^9", "crops 2^13", "extract"]
    for g in report["rss_growth"]:
        assert g["ratio"] == pytest.approx(g["large_mb"] / g["small_mb"], abs=1e-3)
        assert g["grows"] == (g["ratio"] > bp.RSS_GROWTH_LIMIT)
    assert report["disk_ok"] is True and report["limits"] == {"rss_growth": 1.2, "disk_peak_ratio": 1.05}
    assert report["environment"]["backend"] and "keras" in report["environment"]["versions"]

    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("tracks"))
    assert "1 s tracks at 22050 Hz, 1 decoding worker;" in lines[header - 1]
    assert "peak RSS MB" in lines[header] and "peak/final" in lines[header]
    assert [line.split()[:2] for line in lines[header + 2:header + 4]] == [["2", "prepare"], ["-", "models"]]
    assert "files/s" in lines[header + 2] and "tracks/s" in lines[header + 6]
    growth = next(i for i, line in enumerate(lines) if line.startswith("step "))
    assert lines[growth].split()[:6] == ["step", "peak", "RSS", "MB", "at", "2"]
    assert lines[growth + 5].startswith("extract")
    assert f"written: {out}" in result.output and f"data kept: {work}" in result.output

    # --keep: the corpora, models and features stay, in a folder marked as the benchmark's.
    assert (work / bp.MARKER).is_file() and (work / "pretrain" / "DONE").is_file()
    for n in (2, 8):
        assert (work / f"tracks-{n}" / "prepare" / "cache" / "index.h5").is_file()
        assert (work / f"tracks-{n}" / "extract" / "features.h5").is_file()


def test_bench_pipeline_refuses_bad_input_in_one_line(tmp_path):
    runner = CliRunner()
    out = str(tmp_path / "p.json")
    for args, code, message in [
        (["--tracks", "0"], 2, "Invalid value for '--tracks': 0 is not in the range x>=1."),
        (["--track-sec", "0"], 2, "Invalid value for '--track-sec': 0.0 is not in the range x>0."),
        (["--scales", "3^9,9^9"], 2, "unknown scale '9^9'"),
        (["--width", "-1"], 2, "Invalid value for '--width'"),
    ]:
        result = runner.invoke(main, ["bench-pipeline", *args, "--out", out])
        assert result.exit_code == code, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
    assert not (tmp_path / "p.json").exists()

    # A work folder holding other files is not emptied: one line, nothing touched.
    work = tmp_path / "mine"
    work.mkdir()
    (work / "notes.txt").write_text("keep me")
    result = runner.invoke(main, ["bench-pipeline", *TINY, "--work", str(work), "--out", out])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {work}: the folder holds other files (notes.txt); give an empty or new folder for --work")
    assert (work / "notes.txt").read_text() == "keep me" and sorted(p.name for p in work.iterdir()) == ["notes.txt"]

    # Too little disk for the larger corpus: one line before anything is generated; the folder
    # this run made is gone.
    work = tmp_path / "new"
    result = runner.invoke(main, ["bench-pipeline", "--tracks", "10000000", "--work", str(work), "--out", out])
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith(f"Error: {work}: the benchmark needs about ") and "40000000 tracks of 29 s" in last
    assert last.endswith("measure fewer --tracks or give --work elsewhere")
    assert not work.exists()


def test_settings_refuse_bad_values():
    for changes, message in [
        ({"num_tracks": 0}, "num_tracks must be an integer >= 1, got 0"),
        ({"num_tracks": True}, "num_tracks must be an integer >= 1, got True"),
        ({"workers": 0}, "workers must be an integer >= 1, got 0"),
        ({"track_sec": float("nan")}, "track_sec must be a positive number, got nan"),
        ({"scales": ()}, "no scales for extract"),
    ]:
        with pytest.raises(ValueError, match=message):
            bp.Settings(**changes)
    assert bp.plan(bp.Settings(scales=("3x9", "3^9", "2**13"))).scales == ("3^9", "2^13")
    assert bp.Settings(num_tracks=5).sizes == (5, 20)


def test_summary_flags_memory_growth_and_disk_peak():
    settings = bp.Settings(num_tracks=3)
    rows = [
        {"step": "prepare", "num_tracks": 3, "peak_rss_mb": 100.0, "disk_peak_ratio": 1.0},
        {"step": "models", "num_tracks": None, "peak_rss_mb": 900.0},
        {"step": "extract", "num_tracks": 3, "peak_rss_mb": 1000.0},
        {"step": "prepare", "num_tracks": 12, "peak_rss_mb": 119.0, "disk_peak_ratio": 1.2},
        {"step": "extract", "num_tracks": 12, "peak_rss_mb": 1300.0},
    ]
    report = bp.summarize(settings, rows, environment={}, isolated=True, work_dir=None, seconds=1.0)
    assert report["rss_growth"] == [
        {"step": "prepare", "small_mb": 100.0, "large_mb": 119.0, "ratio": 1.19, "grows": False},
        {"step": "extract", "small_mb": 1000.0, "large_mb": 1300.0, "ratio": 1.3, "grows": True},
    ]
    assert report["disk_ok"] is False
    assert report["flags"] == [
        "extract: peak RSS grows 1.30x from 3 to 12 tracks (limit 1.20)",
        "prepare of 12 tracks: disk peaked at 1.200x the final size (limit 1.05)",
    ]
    table = bp.format_table(report)
    assert "GROWS (> 1.20)" in table and "FLAG: extract: peak RSS grows 1.30x" in table
    assert "disk: peak / final size of each prepare run folder ABOVE 1.05" in table


def test_disk_watcher_keeps_the_peak(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    with bp.DiskWatcher(folder, interval=0.01) as watcher:
        (folder / "big").write_bytes(b"x" * 2_000_000)
        time.sleep(0.2)
        (folder / "big").unlink()
        (folder / "sub").mkdir()
        (folder / "sub" / "small").write_bytes(b"x" * 500_000)
    assert watcher.samples >= 3
    assert watcher.peak >= 2_000_000 > bp.tree_bytes(folder) >= 500_000


def test_work_folder_is_made_emptied_and_removed(tmp_path):
    work, created = bp._work_folder(None)  # a temporary folder, removed at the end
    try:
        assert created and work.is_dir() and not any(work.iterdir())
    finally:
        bp._clean(work, created)
    assert not work.exists()

    work = tmp_path / "w"
    assert bp._work_folder(work) == (work, True)
    (work / "tracks-2").mkdir()
    (work / "tracks-2" / "x").write_text("old")
    assert bp._work_folder(work) == (work, False)  # a previous run's: emptied, kept
    assert sorted(p.name for p in work.iterdir()) == [bp.MARKER]
    bp._clean(work, False)
    assert work.is_dir() and not any(work.iterdir())


def test_a_step_in_its_own_process_reports_its_own_peak_memory(tmp_path):
    # Linux keeps ru_maxrss across exec: a spawned process would report this (backend-loaded)
    # process's size. The step's own peak (VmHWM) is that of a process without the backend.
    quiet.import_backend()
    settings = bp.Settings(num_tracks=2, track_sec=1.0, workers=1)
    row = bp._run_step(bp.prepare_step, dict(settings=settings, num_tracks=2, out_dir=str(tmp_path / "p")),
                       isolate=True, keras=False, workers=True)
    assert row["num_cached"] == 2 and row["files_per_sec"] > 0
    assert 0 < row["peak_rss_step_mb"] < 0.6 * own_peak_rss_mb()
    assert row["peak_rss_mb"] == max(row["peak_rss_step_mb"], row["peak_rss_workers_mb"])
