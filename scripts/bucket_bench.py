"""Reading from and writing to a bucket against a local disk: `sam auto` over the same photos,
the same model and settings, from a folder to a folder, from an S3 bucket to a folder, and from
a bucket to a bucket, in one process and in four (`--devices cpu,cpu,cpu,cpu`), with
--read-ahead's default (or the one given); each command timed whole (start-up, model loading, the run-level
outputs) in this run, on this machine, its peak memory (the resident memory of the command's
process tree, sampled every 20 ms) and its outputs compared byte for byte with the local run's.

The S3 server is moto's (`pip install 'moto[server]'`, in the test extra) on 127.0.0.1, started
by this script: the network is loopback, so what is measured is sam's own cost of a bucket
(listing, requests, uploads, staging), not a network's latency or bandwidth.

    python scripts/bucket_bench.py                      # tiny random model (reading dominates), 32 photos
    python scripts/bucket_bench.py --model vit_b --images 8
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def tree_rss(pid: int) -> int:
    """Resident bytes of pid and its descendants (Linux /proc)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass
    return total


def run(cmd: list[str], env: dict, repeat: int = 1) -> tuple[float, int, float]:
    """(seconds, peak resident bytes of the process tree, CPU seconds of this process meanwhile:
    the S3 server's, which shares the machine's cores with sam): the fastest of `repeat` runs."""
    if repeat > 1:
        return min(run(cmd, env) for _ in range(repeat))
    cpu = time.process_time()
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    peak = [0]

    def watch() -> None:
        while proc.poll() is None:
            peak[0] = max(peak[0], tree_rss(proc.pid))
            time.sleep(0.02)

    w = threading.Thread(target=watch, daemon=True)
    w.start()
    _, err = proc.communicate()
    w.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} → exit {proc.returncode}\n{err.decode()}")
    return time.perf_counter() - t, peak[0], time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny", help="tiny (the tests' architecture), vit_b, vit_l or vit_h; "
                    "random weights")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--points-per-side", type=int, default=4)
    ap.add_argument("--read-ahead", type=int, default=None, help="passed to sam (default: sam's own)")
    ap.add_argument("--repeat", type=int, default=1, help="each row the fastest of this many runs")
    ap.add_argument("--processes", default="1,4", help="the rows' process counts (4: --devices cpu×4)")
    a = ap.parse_args()
    import boto3
    import torch
    from moto.server import ThreadedMotoServer

    # the scale-out table's set-up and byte-for-byte comparison
    from scale_bench import differs, random_run

    tmp, ckpt, photos = random_run(a.model, a.images, "sam-bucket-")

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint, "SAM_THREADS": "1"}
    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="bench")
    for p in sorted(photos.iterdir()):
        s3.put_object(Bucket="bench", Key=f"photos/{p.name}", Body=p.read_bytes())

    def download(prefix: str, dest: Path) -> Path:
        for o in s3.list_objects_v2(Bucket="bench", Prefix=prefix + "/").get("Contents", []):
            path = dest / o["Key"][len(prefix) + 1:]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket="bench", Key=o["Key"])["Body"].read())
        return dest

    sam = [sys.executable, "-m", "sam_cli", "auto"]
    common = ["-c", str(ckpt), "--points-per-side", str(a.points_per_side), "-f", "png", "-f", "coco", "-q",
              "--device", "cpu"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"# sam with a bucket: {a.model} random weights, {a.images} photos, {a.points_per_side}×"
          f"{a.points_per_side} points, png + coco, CPU ({cores} cores, every process on one thread), "
          f"moto's S3 server on 127.0.0.1, torch {torch.__version__}")
    print("| processes | from → to | wall s | images/s | against disk → disk | peak MB | S3 server CPU s | outputs |")
    print("|---|---|---|---|---|---|---|---|")
    if a.read_ahead is not None:
        common += ["--read-ahead", str(a.read_ahead)]
    for procs in (int(n) for n in a.processes.split(",")):
        flags = ["--devices", ",".join(["cpu"] * procs)] if procs > 1 else []
        local = tmp / f"local{procs}"
        base, mem, _ = run([*sam, str(photos), "-o", str(local), *common, *flags, "--overwrite"], env, a.repeat)
        print(f"| {procs} | disk → disk | {base:.1f} | {a.images / base:.2f} | 1.00x | {mem / 2**20:.0f} | - | - |")
        for what, src, out in (("bucket → disk", "s3://bench/photos/", str(tmp / f"fromb{procs}")),
                               ("bucket → bucket", "s3://bench/photos/", f"s3://bench/out{procs}/")):
            t, mem, server_cpu = run([*sam, src, "-o", out, *common, *flags, "--overwrite"], env, a.repeat)
            got = Path(out) if not out.startswith("s3://") else download(f"out{procs}", tmp / f"got{procs}")
            d = differs(local, got)
            same = "identical" if not d else f"{len(d)} files differ ({', '.join(d[:3])})"
            print(f"| {procs} | {what} | {t:.1f} | {a.images / t:.2f} | {t / base:.2f}x | {mem / 2**20:.0f} | "
                  f"{server_cpu:.1f} | {same} |")
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
