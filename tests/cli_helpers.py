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


def four_photo_run(tmp_path: Path, ckpt: Path) -> list:
    """`sam auto` arguments (all but -o) for four copies of a photo in tmp_path/in, with png and
    coco-rle outputs: a run with images before and after any point it is stopped at."""
    import shutil

    from conftest import EXAMPLES

    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        shutil.copy(EXAMPLES / "chelsea.jpg", src / f"img{i}.jpg")
    return ["auto", src, "-c", ckpt, "--points-per-side", "4", "--pred-iou-thresh", "0",
            "--stability-score-thresh", "0", "-f", "png", "-f", "coco-rle"]
