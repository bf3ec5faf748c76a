"""Saved classifiers for `msagg predict`: loading them needs neither matplotlib nor the classify stage."""

import subprocess
import sys
from pathlib import Path


def test_predict_modules_import_without_matplotlib():
    code = ("import sys; import stages.predict; import stages.predictor; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'; "
            "assert 'stages.classify' not in sys.modules and 'stages.plots' not in sys.modules")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parent.parent)
    assert res.returncode == 0, res.stderr[-2000:]
