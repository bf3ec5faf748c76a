"""User-facing errors vs bugs in the CLI, and the backend's start-up notices kept off the terminal."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from msagg.data.errors import ConfigError, MsaggError
from msagg.pipeline import clitools
from msagg.stages import quiet


def _group_with(func):
    """A throwaway command wrapped like every msagg command."""

    @click.group()
    @click.option("--debug", is_flag=True)
    def group(debug):
        clitools.STATE["debug"] = debug

    group.command(name="boom")(clitools.friendly_errors(func))
    return group


def test_user_error_is_one_line_without_traceback():
    def boom():
        raise ConfigError("runs/x/config.json: seed='a': expected int")

    result = CliRunner().invoke(_group_with(boom), ["boom"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: runs/x/config.json: seed='a': expected int"


def test_os_error_names_the_path_in_one_line(tmp_path):
    target = tmp_path / "missing" / "file.json"

    def boom():
        open(target)

    result = CliRunner().invoke(_group_with(boom), ["boom"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {target}: No such file or directory"


def test_a_bug_shows_its_traceback_and_a_report_hint():
    def boom():
        return [1, 2][5]  # an IndexError: a bug, not bad input

    result = CliRunner().invoke(_group_with(boom), ["boom"])
    assert result.exit_code == 2
    assert "Traceback" in result.output and "IndexError" in result.output
    assert "please report it" in result.output


def test_a_plain_value_error_is_a_bug_not_a_user_error():
    def boom():
        raise ValueError("operands could not be broadcast together")  # e.g. from numpy

    result = CliRunner().invoke(_group_with(boom), ["boom"])
    assert result.exit_code == 2 and "Traceback" in result.output


def test_debug_shows_the_traceback_of_user_errors_too():
    def boom():
        raise MsaggError("bad input")

    result = CliRunner().invoke(_group_with(boom), ["--debug", "boom"])
    assert isinstance(result.exception, MsaggError)
    clitools.STATE["debug"] = False


def test_every_project_error_class_is_a_user_error():
    from msagg.data.adapters import DatasetError
    from msagg.data.audio import AudioError
    from msagg.data.formats.cache import CacheError
    from msagg.data.formats.features import FeaturesError
    from msagg.stages.prepare import PrepareError
    from msagg.stages.runs.folder import RunConflictError

    for cls in (DatasetError, AudioError, CacheError, FeaturesError, PrepareError, RunConflictError, ConfigError):
        assert issubclass(cls, MsaggError) and issubclass(cls, ValueError), cls


def test_filter_noise_keeps_other_lines():
    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1.5 2438 port.cc:153] oneDNN custom operations are on. You may see ...\n"
            "I0000 00:00:1.5 2438 cudart_stub.cc:31] Could not find cuda drivers on your machine\n"
            "E0000 00:00:1.6 2438 cuda_executor.cc:1] failed call to cuInit: UNKNOWN ERROR (303)\n"
            "something the user must see\n")
    assert quiet.filter_noise(text) == "something the user must see\n"


def _stderr_of(code: str) -> str:
    env = {k: v for k, v in __import__("os").environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 0, res.stderr
    return res.stderr


def test_import_backend_hides_the_start_up_notices():
    plain = _stderr_of("import keras, tensorflow as tf; tf.config.list_physical_devices()")
    if not quiet.NOISE.search(plain):
        pytest.skip("this TensorFlow build prints no start-up notices")
    assert not quiet.NOISE.search(_stderr_of("from msagg.stages import quiet; quiet.import_backend()"))


def test_backend_warnings_are_shown_only_at_debug_level():
    import logging

    try:
        clitools.setup_logging("info")
        assert not logging.getLogger("tensorflow").isEnabledFor(logging.WARNING)
        clitools.setup_logging("debug")
        assert logging.getLogger("tensorflow").isEnabledFor(logging.WARNING)
    finally:
        for name in quiet.BACKEND_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
