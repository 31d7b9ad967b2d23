"""Where automatic mode spends its time on a GPU (random weights from sam's own builder; no
reference). Prints, for one model:

* the image encoder per image at several batch sizes, with achieved TFLOP/s;
* the mask decoder over a 32×32 grid (1024 prompts) per precision and decoder batch;
* prompted throughput in images/s (encoder batches of 8, 16 boxes per image);
* automatic mode end to end per image (default filters, filters off);
* the top CUDA operators of one decode_crop;
* with --compile, the same decoder under torch.compile (an experiment: sam does not compile).

    python scripts/gpu_profile.py --model vit_h
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def timed(fn, reps: int = 3) -> float:
    fn()
    torch.cuda.synchronize()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_h")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--encoder-batches", default="1,4,8")
    ap.add_argument("--decoder-batches", default="64,256")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.io.images import read_image
    from sam_cli.registry import MODELS
    from sam_cli.weights import build_from_arch

    torch.manual_seed(0)
    spec = MODELS[a.model]
    net = build_from_arch(spec.arch, a.device).eval()
    img = read_image(REPO / "examples" / "chelsea.jpg")
    hw = img.shape[:2]
    print(f"# {a.model} on {torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)

    def decoder_rows(tag: str) -> None:
        gen = AutomaticMaskGenerator(net, AmgSettings())
        crop = gen.prepare_crops(img)[0]
        feats = gen.predictor.embed([crop.pixels])
        for db in [int(x) for x in a.decoder_batches.split(",")]:
            gen = AutomaticMaskGenerator(net, AmgSettings(points_per_batch=db))
            try:
                sec = timed(lambda: gen.decode_crop(feats, crop, hw))
            except torch.OutOfMemoryError:
                print(f"decoder {tag}, batch {db}: out of memory", flush=True)
                torch.cuda.empty_cache()
                continue
            print(f"decoder {tag}, 1024 prompts in batches of {db}: {sec * 1e3:.1f} ms "
                  f"(peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB)", flush=True)
            torch.cuda.reset_peak_memory_stats()

    with torch.inference_mode():
        decoder_rows("fp32")
        net.set_precision(torch.bfloat16)
        decoder_rows("bf16")
        gen = AutomaticMaskGenerator(net, AmgSettings())
        x = gen.prepare_crops(img)[0].pixels
        for b in [int(v) for v in a.encoder_batches.split(",")]:
            sec = timed(lambda: gen.predictor.embed([x] * b)) / b
            print(f"encoder bf16, batch {b}: {sec * 1e3:.1f} ms/image, "
                  f"{spec.gflop / sec / 1e3:.0f} TFLOP/s", flush=True)
        # Prompted throughput, as segment-anything-fast measures it (images/s through the
        # encoder and a few box prompts each): 8 images per encoder batch, then 16 boxes per
        # image through the decoder, masks upscaled to the image and copied to the host.
        import numpy as np

        from sam_cli.predictor import Predictor

        pred = Predictor(net)
        g = np.random.default_rng(0)
        xy = g.uniform(0, 300, (16, 2))
        boxes = np.concatenate([xy, xy + g.uniform(20, 150, (16, 2))], 1).clip(0, [450, 299, 450, 299])

        ihw = gen.prepare_crops(img)[0].input_hw

        def prompted() -> None:
            feats = pred.embed([x] * 8)
            for i in range(8):
                pred.set_features(feats[i : i + 1], hw, ihw)
                pred.predict(boxes=boxes, multimask=False)

        sec = timed(prompted) / 8
        print(f"prompted: encoder batch 8 + 16 boxes per image: {1 / sec:.1f} images/s", flush=True)
        for name, s in (("default filters", AmgSettings()),
                        ("filters off", AmgSettings(pred_iou_thresh=0, stability_score_thresh=0))):
            g = AutomaticMaskGenerator(net, s)
            recs = []
            sec = timed(lambda: recs.append(g.generate(img)), reps=2)
            print(f"generate, {name}: {sec:.3f} s/image, {len(recs[-1])} masks", flush=True)
        crop = gen.prepare_crops(img)[0]
        t = time.perf_counter()
        for _ in range(10):
            gen.prepare_crops(img)
        torch.cuda.synchronize()
        print(f"prepare_crops (read image resized on the GPU): {(time.perf_counter() - t) * 100:.1f} ms", flush=True)
        feats = gen.predictor.embed([crop.pixels])
        if not a.no_profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                gen.decode_crop(feats, crop, hw)
                torch.cuda.synchronize()
            print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=50), flush=True)
        if a.compile:
            dec = net.mask_decoder
            dec.forward = torch.compile(dec.forward, dynamic=False)
            t = time.perf_counter()
            gen.decode_crop(feats, crop, hw)
            torch.cuda.synchronize()
            print(f"decoder bf16 under torch.compile: first call {time.perf_counter() - t:.1f} s", flush=True)
            sec = timed(lambda: gen.decode_crop(feats, crop, hw))
            print(f"decoder bf16 under torch.compile, 1024 prompts in batches of {gen.points_per_batch}: "
                  f"{sec * 1e3:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
