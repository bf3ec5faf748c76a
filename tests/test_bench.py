"""Benchmark of the SampleCNN family on tiny scales: positive figures, table, JSON-ready rows."""

import json

import numpy as np
import pytest

from msagg.models import sample_cnn, specs
from msagg.stages.bench import models as bench

NUMBERS = ("train_segments_per_sec", "infer_segments_per_sec", "train_realtime_factor", "infer_realtime_factor",
           "train_gflops", "infer_gflops", "peak_rss_mb", "num_params", "multiply_adds_per_segment")


def test_benchmark_tiny_scales_in_process():
    rows = bench.run_benchmark(["3^2", "4x2"], width=0.25, batch_size=4, num_labels=5, quick=True, isolate=False)
    assert [r["scale"] for r in rows] == ["3^2", "4^2"]
    assert [(r["variant"], r["block"], r["multi"]) for r in rows] == [("basic", "basic", False)] * 2
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
    assert "train seg/s" in lines[1] and "peak RSS MB" in lines[1] and "variant" in lines[1]
    assert lines[3].split()[:2] == ["3^2", "basic"] and lines[4].split()[:2] == ["4^2", "basic"]
    assert f"backend {rows[0]['backend']}" in lines[0] and "22050 Hz" in lines[0]


def test_benchmark_isolated_process_measures_its_own_memory():
    (row,) = bench.run_benchmark(["3^2"], width=0.125, batch_size=2, num_labels=3, quick=True)
    assert row["train_segments_per_sec"] > 0 and row["peak_rss_mb"] > 0


def test_benchmark_rejects_bad_settings():
    with pytest.raises(ValueError, match="unknown scale '9\\^9'"):
        bench.run_benchmark(["9^9"], isolate=False)
    with pytest.raises(ValueError, match="train_steps must be >= 1, got 0"):
        bench.run_benchmark(["3^2"], train_steps=0, isolate=False)
    with pytest.raises(ValueError, match="block must be one of 'basic', 'se', 'res', 'rese', got 'resnet'"):
        bench.run_benchmark(["3^2"], blocks=["se", "resnet"], isolate=False)
    with pytest.raises(ValueError, match="multi must be a bool"):
        bench.run_benchmark(["3^2"], multi="no", isolate=False)
    with pytest.raises(ValueError, match="give blocks or block, not both"):
        bench.run_benchmark(["3^2"], blocks=["se"], block="res", isolate=False)


def test_benchmark_variants_in_quick_mode():
    rows = bench.run_benchmark(["3^2"], blocks=["basic", "rese"], multi=True, width=0.125, batch_size=2,
                               num_labels=3, quick=True, isolate=False)
    assert [(r["scale"], r["variant"], r["block"], r["multi"]) for r in rows] == [
        ("3^2", "basic+multi", "basic", True), ("3^2", "rese+multi", "rese", True)]
    for row in rows:
        assert row["train_segments_per_sec"] > 0 and row["infer_segments_per_sec"] > 0
        model = sample_cnn.build_sample_cnn("3^2", 3, width=0.125, block=row["block"], multi=True)
        assert row["num_params"] == sum(int(np.prod(w.shape)) for w in model.trainable_weights)
        assert row["multiply_adds_per_segment"] == specs.count_multiply_adds(
            "3^2", 0.125, 3, block=row["block"], multi=True)
    # ReSE-2 has two convolutions and SE per block: more parameters and work than basic blocks.
    assert rows[1]["num_params"] > rows[0]["num_params"]
    assert rows[1]["multiply_adds_per_segment"] > rows[0]["multiply_adds_per_segment"]
    lines = bench.format_table(rows).splitlines()
    assert lines[3].split()[:2] == ["3^2", "basic+multi"] and lines[4].split()[:2] == ["3^2", "rese+multi"]


def test_format_table_of_nothing():
    assert bench.format_table([]) == "(no results)"


def test_plan_is_scale_major_and_checks_everything_first():
    planned = bench.plan(["3^2", "4x2"], blocks=["se", "res"], multi=True, quick=True)
    assert [(scale, s.variant) for scale, s in planned] == [
        ("3^2", "se+multi"), ("3^2", "res+multi"), ("4^2", "se+multi"), ("4^2", "res+multi")]
    assert all(s.train_steps == bench.QUICK["train_steps"] for _, s in planned)
    assert [s.variant for _, s in bench.plan(["3^2"])] == ["basic"]
    with pytest.raises(ValueError, match="no blocks to measure"):
        bench.plan(["3^2"], blocks=[])


def test_bench_command_measures_a_variant_and_refuses_a_bad_block(tmp_path):
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--scales", "3^2", "--block", "rese", "--multi", "--width", "0.125",
                                       "--batch-size", "2", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(out.read_text())["rows"]
    assert (row["scale"], row["variant"], row["block"], row["multi"]) == ("3^2", "rese+multi", "rese", True)
    assert "rese+multi" in result.output

    result = CliRunner().invoke(main, ["bench", "--scales", "3^2", "--block", "basic,resnet", "--out", str(out)])
    assert result.exit_code == 2
    assert "block must be one of 'basic', 'se', 'res', 'rese', got 'resnet'" in result.output


def test_benchmark_precisions_side_by_side():
    rows = bench.run_benchmark(["3^2"], blocks=["basic", "se"], precisions=["float32", "bf16"], width=0.125,
                               batch_size=2, num_labels=3, quick=True, isolate=False)
    assert [(r["variant"], r["precision"]) for r in rows] == [
        ("basic", "float32"), ("basic", "bf16"), ("se", "float32"), ("se", "bf16")]
    assert all(r["train_segments_per_sec"] > 0 and r["infer_segments_per_sec"] > 0 for r in rows)
    assert rows[0]["num_params"] == rows[1]["num_params"]  # the same model, computing in bfloat16
    lines = bench.format_table(rows).splitlines()
    assert "precision" in lines[1]
    assert [line.split()[:3] for line in lines[3:7]] == [
        ["3^2", "basic", "float32"], ["3^2", "basic", "bf16"], ["3^2", "se", "float32"], ["3^2", "se", "bf16"]]
    with pytest.raises(ValueError, match="precision must be one of float32, bf16, got 'fp8'"):
        bench.plan(["3^2"], precisions=["bf16", "fp8"])
    with pytest.raises(ValueError, match="give precisions or precision, not both"):
        bench.plan(["3^2"], precisions=["bf16"], precision="float32")
    with pytest.raises(ValueError, match="no precisions to measure"):
        bench.plan(["3^2"], precisions=[])


def test_bench_command_precision_option(tmp_path):
    from click.testing import CliRunner

    from msagg.pipeline.cli import main

    out = tmp_path / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--scales", "3^2", "--width", "0.125", "--batch-size", "2",
                                       "--precision", "float32, bf16", "--quick", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [row["precision"] for row in json.loads(out.read_text())["rows"]] == ["float32", "bf16"]
    result = CliRunner().invoke(main, ["bench", "--scales", "3^2", "--precision", "fp16", "--out", str(out)])
    assert result.exit_code == 2 and "precision must be one of float32, bf16, got 'fp16'" in result.output
