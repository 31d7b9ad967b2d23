"""Where the image encoder spends its time on the CPU: one vit_b (or --model) forward with
random weights, sam's threads and allocator setting, the top operators by self time, and a
matmul peak measured in the same run.

    python scripts/cpu_profile.py --model vit_b --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    a = ap.parse_args()
    from torch.profiler import ProfilerActivity, profile

    from sam_cli.device import tune_allocator
    from sam_cli.registry import MODELS
    from sam_cli.weights import build_from_arch

    tune_allocator()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    spec = MODELS[a.model]
    enc = build_from_arch(spec.arch).eval().image_encoder
    x = torch.randn(1, 3, 1024, 1024)
    with torch.inference_mode():
        enc(x)
        t = time.perf_counter()
        enc(x)
        sec = time.perf_counter() - t
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            enc(x)
    m = torch.randn(2048, 2048)
    m @ m
    t = time.perf_counter()
    for _ in range(3):
        m @ m
    peak = 3 * 2 * 2048**3 / (time.perf_counter() - t) / 1e9
    print(f"# {a.model} encoder, {a.threads} threads: {sec:.2f} s ({spec.gflop / sec:.0f} GFLOP/s); "
          f"matmul peak in this run {peak:.0f} GFLOP/s")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))


if __name__ == "__main__":
    main()
