"""Where automatic mode spends its time on a GPU (random weights from sam's own builder; no
reference). Prints, for one model:

* the image encoder per image at several batch sizes, with achieved TFLOP/s;
* the mask decoder over a 32×32 grid (1024 prompts) per precision and decoder batch, with
  every prompt upscaled and with the IoU filter first;
* prompted throughput in images/s (encoder batches of 8, 16 boxes per image);
* automatic mode end to end per image (default filters, filters off);
* the top CUDA operators of the decoder over the grid, every prompt upscaled;
* with --compile, the same decoder and the image encoder under torch.compile, as
  `sam auto --compile` runs them (Sam.compile_parts).

    python scripts/gpu_profile.py --model vit_h
    python scripts/gpu_profile.py --device cpu --checkpoint tiny.pth --points-per-side 4 \
        --encoder-batches 1 --decoder-batches 8 --no-profile    # checks the script on a CPU
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def sync() -> None:
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def activities(device: str) -> list:
    """torch.profiler activities for a device: the host, and CUDA on a GPU."""
    from torch.profiler import ProfilerActivity

    return [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])


def peak_gib() -> str:
    if not torch.cuda.is_initialized():
        return "host"
    gib = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return f"{gib:.1f} GiB"


def timed(fn, reps: int = 3) -> float:
    fn()
    sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="vit_h")
    ap.add_argument("--checkpoint", help="a checkpoint file instead of --model's random weights")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--encoder-batches", default="1,4,8")
    ap.add_argument("--decoder-batches", default="64,256")
    ap.add_argument("--prompted-batch", type=int, default=8, help="images per encoder batch, prompted row")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--points-per-side", type=int, default=32)
    a = ap.parse_args()
    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.checkpoints import build_from_arch, infer_arch, load_model, read_state_dict
    from sam_cli.io.images import read_image
    from sam_cli.registry import MODELS

    torch.manual_seed(0)
    if a.checkpoint:
        net = load_model(checkpoint=a.checkpoint, device=a.device)
        arch = infer_arch(read_state_dict(a.checkpoint))  # the model type of its shape, if any (TFLOP/s)
        spec = next((m for m in MODELS.values() if m.arch == arch), None)
    else:
        spec = MODELS[a.model]
        net = build_from_arch(spec.arch, a.device, spec.family).eval()
    img = read_image(REPO / "examples" / "chelsea.jpg")
    hw = img.shape[:2]
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else a.device
    print(f"# {a.checkpoint or a.model} on {where}, torch {torch.__version__}", flush=True)

    def decoder_rows(tag: str) -> None:
        """The decoder over a 32×32 grid: every prompt upscaled (IoU filter off), and with the
        default IoU filter first (random weights: no prompt passes, none is upscaled)."""
        gen = AutomaticMaskGenerator(net, AmgSettings(points_per_side=a.points_per_side))
        crop = gen.prepare_crops(img)[0]
        feats = gen.predictor.embed([crop.pixels], [crop.crop_hw])[0]
        pts, labels = grid_prompts(crop, a.device)
        for db in [int(x) for x in a.decoder_batches.split(",")]:
            for filt, kw in (("all upscaled", dict(pred_iou_thresh=0.0)), ("IoU filter first", {})):
                gen = AutomaticMaskGenerator(net, AmgSettings(points_per_side=a.points_per_side, points_per_batch=db, **kw))
                gen.predictor.set_features(feats)
                try:
                    sec = timed(lambda: gen._decode_points(pts, labels))
                except torch.OutOfMemoryError:
                    print(f"decoder {tag}, batch {db}: out of memory", flush=True)
                    torch.cuda.empty_cache()
                    continue
                print(f"decoder {tag}, {len(pts)} prompts in batches of {db}, {filt}: {sec * 1e3:.1f} ms "
                      f"(peak {peak_gib()})", flush=True)

    with torch.inference_mode():
        decoder_rows("fp32")
        net.set_precision(torch.bfloat16)
        decoder_rows("bf16")
        gen = AutomaticMaskGenerator(net, AmgSettings())
        x = gen.prepare_crops(img)[0].pixels
        for b in [int(v) for v in a.encoder_batches.split(",")]:
            sec = timed(lambda: gen.predictor.embed([x] * b, [hw] * b)) / b
            rate = f", {spec.gflop / sec / 1e3:.0f} TFLOP/s" if spec else ""
            print(f"encoder bf16, batch {b}: {sec * 1e3:.1f} ms/image{rate}", flush=True)
        # Prompted throughput, as segment-anything-fast measures it (images/s through the
        # encoder and a few box prompts each): --prompted-batch images (8) per encoder batch,
        # then 16 boxes per image through the decoder, masks upscaled to the image and copied
        # to the host.
        import numpy as np

        from sam_cli.predictor import Predictor

        pred = Predictor(net)
        g = np.random.default_rng(0)
        xy = g.uniform(0, 300, (16, 2))
        boxes = np.concatenate([xy, xy + g.uniform(20, 150, (16, 2))], 1).clip(0, [450, 299, 450, 299])


        nb = a.prompted_batch

        def prompted() -> None:
            feats = pred.embed([x] * nb, [hw] * nb)
            for i in range(nb):
                pred.set_features(feats[i])
                pred.predict(boxes=boxes, multimask=False)

        sec = timed(prompted) / nb
        print(f"prompted: encoder batch {nb} + 16 boxes per image: {1 / sec:.1f} images/s", flush=True)
        n = a.points_per_side
        for name, st in (("default filters", AmgSettings(points_per_side=n)),
                         ("filters off", AmgSettings(points_per_side=n, pred_iou_thresh=0, stability_score_thresh=0))):
            g = AutomaticMaskGenerator(net, st)
            recs = []
            sec = timed(lambda: recs.append(g.generate(img)), reps=2)
            print(f"generate, {n}x{n}, {name}: {sec:.3f} s/image, {len(recs[-1])} masks", flush=True)
            if not a.no_profile:
                step_table(g, img, a.device)
        crop = gen.prepare_crops(img)[0]
        t = time.perf_counter()
        for _ in range(10):
            gen.prepare_crops(img)
        sync()
        print(f"prepare_crops (read image resized on the GPU): {(time.perf_counter() - t) * 100:.1f} ms", flush=True)
        feats = gen.predictor.embed([crop.pixels], [crop.crop_hw])[0]
        # the whole decoder (no prompt skipped by the IoU filter), as in the decoder rows
        full = AutomaticMaskGenerator(net, AmgSettings(points_per_side=n, pred_iou_thresh=0.0))
        crop = full.prepare_crops(img)[0]
        full.predictor.set_features(feats)
        pts, labels = grid_prompts(crop, a.device)
        if not a.no_profile:
            from torch.profiler import profile

            on_gpu = a.device.startswith("cuda")
            with profile(activities=activities(a.device), record_shapes=True) as prof:
                full._decode_points(pts, labels)
                sync()
            # by input shape too: which of the decoder's LayerNorms (the image side's B×4096×256,
            # the upscaling's rows×64, the tokens') takes the time
            print(f"decoder bf16, {len(pts)} prompts in batches of {full.points_per_batch}, all upscaled:")
            print(prof.key_averages(group_by_input_shape=True).table(
                sort_by="cuda_time_total" if on_gpu else "cpu_time_total", row_limit=20,
                max_name_column_width=40, max_shapes_column_width=60), flush=True)
        h, w = crop.input_hw  # the embedding cells the upscaling covers: about h/16 × w/16
        layer_norm_rows(full.points_per_batch, -(-h // 16) * -(-w // 16), a.device)
        if a.compile:
            # Sam.compile_parts, as `sam auto --compile` does: encoder, transformer, upscaling
            eager = gen.predictor.embed([x] * 4, [hw] * 4)[0]["image_embed"]
            net.compile_parts()
            t = time.perf_counter()
            full._decode_points(pts, labels)
            sync()
            print(f"decoder bf16 under torch.compile: first call {time.perf_counter() - t:.1f} s", flush=True)
            sec = timed(lambda: full._decode_points(pts, labels))
            print(f"decoder bf16 under torch.compile, {len(pts)} prompts in batches of {full.points_per_batch}, "
                  f"all upscaled: {sec * 1e3:.1f} ms", flush=True)
            # the image encoder against its eager self at batch 4
            t = time.perf_counter()
            compiled = gen.predictor.embed([x] * 4, [hw] * 4)[0]["image_embed"]
            sync()
            first = time.perf_counter() - t
            sec = timed(lambda: gen.predictor.embed([x] * 4, [hw] * 4)[0]["image_embed"]) / 4
            rel = float((compiled - eager).norm() / eager.norm())
            print(f"encoder bf16 under torch.compile, batch 4: first call {first:.1f} s, then "
                  f"{sec * 1e3:.1f} ms/image (rel. L2 to eager {rel:.1e})", flush=True)


def layer_norm_rows(prompts: int, cells: int, device: str) -> None:
    """The decoder's two large LayerNorms in bfloat16 for one decoder call of `prompts`: the
    image side's (prompts·4096 rows of 256) and the upscaling's (prompts·cells·4 rows of 64),
    by torch's fused kernel and by a var_mean reduction then one elementwise expression.
    PyTorch's CUDA LayerNorm gives each row a block of threads, most of which may idle on rows
    of 64; if the second way wins there, the upscaling should take it."""
    def by_var_mean(x, w, b):
        var, mean = torch.var_mean(x.float(), dim=-1, keepdim=True, correction=0)
        return ((x - mean) * torch.rsqrt(var + 1e-6) * w + b).to(x.dtype)

    g = torch.Generator(device=device).manual_seed(0)
    for rows, ch, what in ((prompts * 4096, 256, "image side"), (prompts * cells * 4, 64, "upscaling")):
        x = torch.randn(rows, ch, device=device, generator=g).to(torch.bfloat16)
        w = torch.randn(ch, device=device, generator=g).to(torch.bfloat16)
        b = torch.randn(ch, device=device, generator=g).to(torch.bfloat16)
        fused = lambda: torch.nn.functional.layer_norm(x, (ch,), w, b, 1e-6)  # noqa: E731
        diff = float((fused().float() - by_var_mean(x, w, b).float()).abs().max())
        print(f"layer norm bf16, {what}, {rows}×{ch}: fused {timed(fused) * 1e3:.2f} ms, "
              f"var_mean {timed(lambda: by_var_mean(x, w, b)) * 1e3:.2f} ms (max diff {diff:.3f})",
              flush=True)


def step_table(gen, img, device: str) -> None:
    """One generate() under torch.profiler: host time of each step (the generator's
    record_function labels; a step that waits for the device includes the wait), then the
    operators with the most host time of their own."""
    from torch.profiler import profile

    with profile(activities=activities(device)) as prof:
        gen.generate(img)
        sync()
    ev = prof.key_averages()
    for e in sorted((e for e in ev if e.key.startswith("sam.")), key=lambda e: -e.cpu_time_total):
        print(f"  {e.key:<14} {e.count:>5} calls, host {e.cpu_time_total / 1e3:9.1f} ms", flush=True)
    print(ev.table(sort_by="self_cpu_time_total", row_limit=12, max_name_column_width=50), flush=True)


def grid_prompts(crop, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A crop's grid points as decoder prompts: P×1×2 in the input frame, P×1 labels."""
    from sam_cli.transforms import scale_coords

    pts = torch.as_tensor(scale_coords(crop.points, crop.crop_hw, crop.input_hw),
                          dtype=torch.float32, device=device)[:, None]
    return pts, torch.ones(pts.shape[:2], dtype=torch.int64, device=device)

if __name__ == "__main__":
    main()
