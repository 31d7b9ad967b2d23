from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SAM = Path(sys.executable).parent / "sam"


def run_sam(*args, input: bytes | None = None, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """Run the installed `sam` console script (falls back to python -m sam_cli)."""
    cmd = [str(SAM)] if SAM.exists() else [sys.executable, "-m", "sam_cli"]
    full_env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "100", **(env or {})}
    return subprocess.run(cmd + [str(a) for a in args], input=input, capture_output=True,
                          env=full_env, cwd=cwd, timeout=600)
