"""What importing some modules pulls in, measured in a fresh interpreter (tests of import hygiene)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def modules_loaded_by(*modules: str) -> set[str]:
    """The names in ``sys.modules`` after a fresh ``python -c 'import <modules>'`` run from the repo root."""
    code = f"import json, sys; import {', '.join(modules)}; print(json.dumps(sorted(sys.modules)))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    return set(json.loads(res.stdout.strip().splitlines()[-1]))
