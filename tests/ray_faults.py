"""What both ray engines' fault tests check of an unreachable ``--address``."""

from __future__ import annotations

import time
from pathlib import Path

from click.testing import CliRunner

from msagg.pipeline.cli import main


def assert_unreachable_address_fails_in_seconds(args: list[str], written: Path) -> None:
    """``msagg ARGS`` (with ``--engine ray --address 127.0.0.1:1``) fails within 15 s with one line
    naming the address, no traceback, and ``written`` (the run folder's parent) never made."""
    began = time.monotonic()
    result = CliRunner().invoke(main, args)
    assert time.monotonic() - began < 15
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1].startswith(
        "Error: cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused)")
    assert "Traceback" not in result.output
    assert not written.exists()
