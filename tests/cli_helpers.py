from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
from pathlib import Path

SAM = Path(sys.executable).parent / "sam"


#: Options that start other processes (workers, Ray): run_sam runs those as a real process.
SPREADING = ("--devices", "--ray")


def run_sam(*args, input: bytes | None = None, env: dict | None = None, cwd=None,
            process: bool | None = None) -> subprocess.CompletedProcess:
    """`sam` with these arguments: in this process (sam_here) by default, which shows what
    an option, a usage error or an output does without a new interpreter importing torch; as
    the installed console script when process=True (signals, pipes, what a process imports)
    or when the run starts workers or Ray."""
    if process is None:
        process = any(str(a) in SPREADING for a in args)
    if not process:
        return sam_here(*args, input=input, env=env, cwd=cwd)
    return sam_process(*args, input=input, env=env, cwd=cwd)


def sam_process(*args, input: bytes | None = None, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
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


def sam_here(*args, input: bytes | None = None, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    """`sam` called in this process (cli.app.main), as run_sam calls the installed command:
    the same exit code, stdout and stderr bytes, without a new interpreter importing torch.
    For what does not depend on the process (options, usage, outputs); signals, pipes and
    workers take run_sam."""
    import io
    import signal

    from sam_cli.cli.app import main

    out, err = io.BytesIO(), io.BytesIO()
    streams = (sys.stdin, sys.stdout, sys.stderr)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    os.environ.update({"NO_COLOR": "1", "COLUMNS": "100", **(env or {})})
    code = 0
    wrappers = ()
    try:
        if cwd is not None:
            os.chdir(cwd)
        wrappers = (io.TextIOWrapper(io.BytesIO(input or b""), encoding="utf-8"),
                    io.TextIOWrapper(out, encoding="utf-8", write_through=True),
                    io.TextIOWrapper(err, encoding="utf-8", write_through=True))
        sys.stdin, sys.stdout, sys.stderr = wrappers
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.stdin, sys.stdout, sys.stderr = streams
        for w in wrappers:
            w.flush()
            w.detach()  # the bytes stay readable
        for s, h in handlers.items():
            signal.signal(s, h)
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        if threads is not None:  # sam sets torch's threads from SAM_THREADS
            sys.modules["torch"].set_num_threads(threads)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


def lines(proc) -> list[dict]:
    """The JSON lines a `sam` call printed on stdout."""
    return [json.loads(x) for x in proc.stdout.decode().splitlines()]


def same_trees(a: Path, b: Path, ignore=("sam-shards",)) -> list[str]:
    """The files that differ or are missing between two output folders (byte for byte)."""
    diff = []

    def walk(c: filecmp.dircmp, at: str) -> None:
        diff.extend(at + n for n in c.left_only + c.right_only + c.diff_files + c.funny_files)
        for name, sub in c.subdirs.items():
            walk(sub, f"{at}{name}/")

    walk(filecmp.dircmp(a, b, ignore=list(ignore)), "")
    return diff
