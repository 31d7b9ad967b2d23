"""The cost of spreading a run: `sam auto` over one folder, the same images and settings, as a
plain run, in shards then `sam merge`, with one worker per device (`--devices`), and on Ray
(`--ray local`); each command timed whole (start-up, model loading, the run-level outputs),
in this run, on this machine, and the outputs compared byte for byte with the plain run's.

    python scripts/scale_bench.py                          # CPU: vit_b, 8 photos, 2 CPU workers
    python scripts/scale_bench.py --device cuda --devices 8 --images 64 --model vit_h
    python scripts/scale_bench.py --model tiny --images 4   # checks the script

At equal compute: on a CPU the workers share out the cores (`--devices cpu,cpu`: each gets
half), so a spread run can only lose; the overhead is what it loses. On a machine with N GPUs
`--devices N` gives each its own and the table says the speed-up. Needs the test extras.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def run(cmd: list[str], env: dict) -> float:
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} → exit {p.returncode}\n{p.stderr}")
    return time.perf_counter() - t


def differs(a: Path, b: Path) -> list[str]:
    out = []

    def walk(c: filecmp.dircmp, at: str) -> None:
        out.extend(at + n for n in c.left_only + c.right_only + c.diff_files)
        for name, sub in c.subdirs.items():
            walk(sub, f"{at}{name}/")

    walk(filecmp.dircmp(a, b, ignore=["sam-shards"]), "")
    return out


def random_run(model: str, images: int, prefix: str) -> tuple[Path, Path, Path]:
    """A temporary folder with a random-weight checkpoint of `model` ("tiny" or a model type,
    seed 0) and a folder of `images` copies of the example photos: (folder, checkpoint, photos)."""
    sys.path.insert(0, str(REPO / "tests"))
    import torch

    from reference import arch_kwargs, build_reference

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    ckpt = tmp / f"{model}.pth"
    torch.save(build_reference(**arch_kwargs(model), seed=0).state_dict(), ckpt)
    photos = tmp / "photos"
    photos.mkdir()
    srcs = sorted(EXAMPLES.glob("*.jpg"))
    for k in range(images):
        shutil.copy(srcs[k % len(srcs)], photos / f"p{k:04d}.jpg")
    return tmp, ckpt, photos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_b", help="vit_b, vit_l, vit_h or tiny (random weights)")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--points-per-side", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--devices", default=None, help="--devices for the worker row (default: cpu,cpu on a CPU, "
                    "the GPU count on cuda)")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--no-ray", action="store_true", help="leave out the Ray row")
    a = ap.parse_args()
    import torch

    tmp, ckpt, photos = random_run(a.model, a.images, "sam-scale-")
    devices = a.devices or ("cpu,cpu" if a.device == "cpu" else str(torch.cuda.device_count()))
    sam = [sys.executable, "-m", "sam_cli"]
    common = [str(photos), "-c", str(ckpt), "--points-per-side", str(a.points_per_side), "-f", "coco", "-q"]
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU, {cores} cores"
    print(f"# sam scale-out: {a.model} random weights, {a.images} photos, {a.points_per_side}×{a.points_per_side} "
          f"points, {where}, torch {torch.__version__}")
    print("| run | command | wall s | images/s | against plain | outputs |")
    print("|---|---|---|---|---|---|")
    plain = tmp / "plain"
    t0 = run([*sam, "auto", *common, "-o", str(plain), "--device", a.device], env)
    print(f"| plain | `sam auto --device {a.device}` | {t0:.1f} | {a.images / t0:.2f} | 1.00x | - |")

    def row(name: str, what: str, seconds: float, out: Path) -> None:
        d = differs(plain, out)
        same = "identical" if not d else f"{len(d)} files differ ({', '.join(d[:3])})"
        print(f"| {name} | {what} | {seconds:.1f} | {a.images / seconds:.2f} | {seconds / t0:.2f}x | {same} |")

    out = tmp / "shards"
    t = sum(run([*sam, "auto", *common, "-o", str(out), "--device", a.device, "--shard", f"{i}/{a.shards}"], env)
            for i in range(a.shards))
    t += run([*sam, "merge", str(out), "-q"], env)
    row(f"{a.shards} shards, one after another, then merge", f"`--shard I/{a.shards}` ×{a.shards}; `sam merge`",
        t, out)
    out = tmp / "devices"
    row(f"one worker per device ({devices})", f"`--devices {devices}`",
        run([*sam, "auto", *common, "-o", str(out), "--devices", devices], env), out)
    if not a.no_ray:
        out = tmp / "ray"
        row("Ray Data, local", "`--ray local`",
            run([*sam, "auto", *common, "-o", str(out), "--ray", "local", "--device", a.device], env), out)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
