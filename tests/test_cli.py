"""The msagg command line through click's CliRunner: help, errors, and the prepare stage."""

from __future__ import annotations


import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from msagg.pipeline.cli import main
from msagg.pipeline.clitools import CROSSVAL_SKIPS

COMMANDS = ["prepare", "pretrain", "extract", "classify", "predict", "embed", "bench", "crossval", "bench-pipeline"]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_explains_every_option(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    # Every option has a help text.
    for param in main.commands[command].params:
        if param.param_type_name == "option":
            assert param.help, f"{command} {param.name} has no help"


def test_group_help_lists_stages():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output


def _folder_dataset(root, bad=True):
    rng = np.random.default_rng(0)
    for label, freq in (("low tone", 220.0), ("high tone", 1760.0)):
        (root / label).mkdir(parents=True)
        for i in range(6):
            t = np.arange(8000) / 8000
            wave = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
            sf.write(root / label / f"clip {i}.wav", wave, 8000)
    if bad:
        (root / "low tone" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    return root


def test_prepare_folder_skips_corrupt_file(tmp_path):
    src = _folder_dataset(tmp_path / "src")
    out = tmp_path / "run"
    runner = CliRunner()
    result = runner.invoke(main, ["prepare", "--dataset", "folder", "--source", str(src), "--out", str(out),
                                  "--sample-rate", "8000", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "DONE").is_file() and (out / "cache" / "index.h5").is_file()
    skipped = (out / "skipped.csv").read_text()
    assert "broken.wav" in skipped
    # Re-running is a no-op; a different config in the same folder is refused with a clear message.
    assert runner.invoke(main, ["prepare", "--dataset", "folder", "--source", str(src), "--out", str(out),
                                "--sample-rate", "8000", "--workers", "1"]).exit_code == 0
    result = runner.invoke(main, ["prepare", "--dataset", "folder", "--source", str(src), "--out", str(out),
                                  "--sample-rate", "16000", "--workers", "1"])
    assert result.exit_code == 1
    assert "another config" in result.output and "Traceback" not in result.output


def test_prepare_strict_names_the_file(tmp_path):
    src = _folder_dataset(tmp_path / "src")
    result = CliRunner().invoke(main, ["prepare", "--dataset", "folder", "--source", str(src), "--strict",
                                       "--out", str(tmp_path / "run"), "--sample-rate", "8000", "--workers", "1"])
    assert result.exit_code == 1
    assert "broken.wav" in result.output


def test_bad_input_is_one_line_error(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["prepare", "--dataset", "folder", "--source", str(tmp_path / "nowhere"),
                                  "--out", str(tmp_path / "run")])
    assert result.exit_code == 1 and "nowhere" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["prepare", "--dataset", "nope", "--out", str(tmp_path / "run2")])
    assert result.exit_code == 1 and "nope" in result.output
    result = runner.invoke(main, ["prepare", "--set", "sample_rate=fast", "--out", str(tmp_path / "run3")])
    assert result.exit_code == 1 and "sample_rate='fast': expected int" in result.output
    assert not (tmp_path / "run3").exists()


def test_python_dash_m_pipeline():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "msagg", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "msagg" in res.stdout


def test_prepare_and_crossval_options_are_the_config_fields():
    import dataclasses

    from msagg.stages.prepare import Config

    for command, skip in (("prepare", ()), ("crossval", CROSSVAL_SKIPS)):
        options = {p.name: p for p in main.commands[command].params if p.param_type_name == "option"}
        for field in dataclasses.fields(Config):
            if field.name in skip:
                assert field.name not in options, f"{command} sets {field.name} per fold"
                continue
            option = options[field.name]
            assert option.opts == ["--" + field.name.replace("_", "-")] and option.help == field.metadata["help"]


def test_prepare_bad_option_combination_is_refused_before_the_run_folder(tmp_path):
    src = _folder_dataset(tmp_path / "src", bad=False)
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["prepare", "--dataset", "folder", "--source", str(src), "--split", "official",
                                       "--out", str(out)])
    assert result.exit_code == 1 and "split='official': folder has no official split" in result.output
    assert "Traceback" not in result.output and not out.exists()
    result = CliRunner().invoke(main, ["prepare", "--dataset", "synth-tags", "--fold", "2", "--out", str(out)])
    assert result.exit_code == 1 and "fold=2: needs folds" in result.output and not out.exists()
