"""Where automatic mode spends its time on a GPU: times one image end to end and prints the
top operators by CUDA and CPU time (random weights from sam's own builder; no reference).

    python scripts/gpu_profile.py --model vit_h --dtype bf16
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_h")
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--device", default="cuda")
    a = ap.parse_args()
    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.io.images import read_image
    from sam_cli.registry import MODELS
    from sam_cli.weights import build_from_arch

    torch.manual_seed(0)
    net = build_from_arch(MODELS[a.model].arch, a.device).eval()
    if a.dtype == "bf16":
        net.image_encoder.to(torch.bfloat16)
    img = read_image(REPO / "examples" / "chelsea.jpg")
    for name, s in (("default filters", AmgSettings()),
                    ("filters off", AmgSettings(pred_iou_thresh=0, stability_score_thresh=0))):
        gen = AutomaticMaskGenerator(net, s)
        gen.generate(img)
        torch.cuda.synchronize()
        t = time.perf_counter()
        recs = gen.generate(img)
        torch.cuda.synchronize()
        print(f"{name}: {time.perf_counter() - t:.3f} s/image, {len(recs)} masks", flush=True)
        crops = gen.prepare_crops(img)
        t = time.perf_counter()
        feats = gen.predictor.embed([crops[0].pixels])
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        gen.decode_crop(feats, crops[0], img.shape[:2])
        torch.cuda.synchronize()
        print(f"  encoder {t1 - t:.3f} s, decode_crop {time.perf_counter() - t1:.3f} s", flush=True)
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            gen.decode_crop(feats, crops[0], img.shape[:2])
            torch.cuda.synchronize()
        for key in ("cuda_time_total", "cpu_time_total"):
            print(prof.key_averages().table(sort_by=key, row_limit=12, max_name_column_width=40))


if __name__ == "__main__":
    main()
