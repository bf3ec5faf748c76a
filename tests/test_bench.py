"""Benchmark of the SampleCNN family on tiny scales: positive figures, table, JSON-ready rows."""

import json

import pytest

from stages import bench

NUMBERS = ("train_segments_per_sec", "infer_segments_per_sec", "train_realtime_factor", "infer_realtime_factor",
           "train_gflops", "infer_gflops", "peak_rss_mb", "num_params", "multiply_adds_per_segment")


def test_benchmark_tiny_scales_in_process():
    rows = bench.run_benchmark(["3^2", "4x2"], width=0.25, batch_size=4, num_labels=5, quick=True, isolate=False)
    assert [r["scale"] for r in rows] == ["3^2", "4^2"]
    for row in rows:
        for key in NUMBERS:
            assert row[key] > 0, key
        # Real-time factor = segments/s x segment duration; GFLOP/s from the counted multiply-adds.
        assert row["infer_realtime_factor"] == pytest.approx(
            row["infer_segments_per_sec"] * row["input_length"] / 22050, rel=0.01, abs=0.01)
        assert row["train_gflops"] == pytest.approx(
            3 * 2 * row["multiply_adds_per_segment"] * row["train_segments_per_sec"] / 1e9, rel=0.05, abs=0.01)
        assert row["backend"] and row["device"] and "keras" in row["versions"]
        assert row["train_steps"] == bench.QUICK["train_steps"]
    assert rows[1]["input_length"] == 64
    json.dumps(rows)  # the CLI writes them as JSON

    table = bench.format_table(rows)
    lines = table.splitlines()
    assert "train seg/s" in lines[1] and "peak RSS MB" in lines[1]
    assert lines[3].startswith("3^2") and lines[4].startswith("4^2")
    assert f"backend {rows[0]['backend']}" in lines[0] and "22050 Hz" in lines[0]


def test_benchmark_isolated_process_measures_its_own_memory():
    (row,) = bench.run_benchmark(["3^2"], width=0.125, batch_size=2, num_labels=3, quick=True)
    assert row["train_segments_per_sec"] > 0 and row["peak_rss_mb"] > 0


def test_benchmark_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown scale '9\\^9'"):
        bench.run_benchmark(["9^9"], isolate=False)
    with pytest.raises(ValueError, match="train_steps must be >= 1, got 0"):
        bench.run_benchmark(["3^2"], train_steps=0, isolate=False)


def test_format_table_of_nothing():
    assert bench.format_table([]) == "(no results)"
