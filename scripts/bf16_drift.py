"""Which part of the model moves the masks under --dtype bf16: automatic mode on one photo with
every candidate kept (filters and NMS off), run in fp32 and with each part in bfloat16 alone,
then all of them, each run's masks compared with the fp32 run's (same prompt point, best mask
IoU). Parts: the image encoder, the image side of the decoder's two-way transformer (and, for
comparison, the whole transformer with its prompt tokens), its upscaling.

    python scripts/bf16_drift.py --checkpoint vit_b.pth --points-per-side 16
    python scripts/bf16_drift.py --device cuda --checkpoint vit_h.pth

A checkpoint from `scripts/benchmark.py --weights coherent --save-checkpoint PATH` gives region
masks, whose boundaries are where precision shows; plain random weights give noise masks.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PARTS = {  # each sets one part of the model to a dtype as Sam.set_precision does
    "encoder": lambda net, dt: net.image_encoder.set_precision(dt),
    # the whole encoder, its residual stream and neck too (what --dtype bf16 ran before they
    # stayed float32)
    "encoder+stream": lambda net, dt: net.image_encoder.to(dt),
    "transformer": lambda net, dt: net.mask_decoder.transformer.set_precision(dt),
    "upscaling": lambda net, dt: net.mask_decoder.output_upscaling.to(dt),
    # the whole transformer, its prompt tokens too (what --dtype bf16 ran before they stayed
    # float32)
    "transformer+tokens": lambda net, dt: net.mask_decoder.transformer.to(dt),
}
RUNS = (  # (row name, parts in bfloat16)
    ("encoder (attention and MLPs)", ["encoder"]),
    ("encoder, all of it", ["encoder+stream"]),
    ("transformer (image side)", ["transformer"]),
    ("transformer, tokens too", ["transformer+tokens"]),
    ("upscaling", ["upscaling"]),
    ("all three (--dtype bf16)", ["encoder", "transformer", "upscaling"]),
    ("all three, all of them (--dtype bf16 before)",
     ["encoder+stream", "transformer+tokens", "upscaling"]),
)


def masks_by_point(net, img, n: int) -> dict[tuple, list[np.ndarray]]:
    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.masks import rle_to_mask

    st = AmgSettings(points_per_side=n, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                     box_nms_thresh=1.0)
    with torch.inference_mode():
        recs = AutomaticMaskGenerator(net, st).generate(img)
    out: dict[tuple, list[np.ndarray]] = {}
    for r in recs:
        out.setdefault(tuple(np.round(r.point, 3)), []).append(rle_to_mask(r.rle))
    return out


def compare(ref: dict, other: dict) -> np.ndarray:
    """Each reference mask's best IoU among the other run's masks at the same point."""
    best = []
    for point, masks in ref.items():
        for ma in masks:
            top = 0.0
            for mb in other.get(point, []):
                u = (ma | mb).sum()
                top = max(top, float((ma & mb).sum() / u) if u else 1.0)
            best.append(top)
    return np.array(best)


def encoder_table(base, img, repeat: int) -> None:
    """The image embedding's relative L2 distance from fp32's, per encoder precision, and the
    time of one set_image (resize and encoder): after a warm-up call each, the precisions take
    turns `repeat` times (so a slow spell of the machine hits them alike), best time of each."""
    from sam_cli.predictor import Predictor

    preds = {"fp32": Predictor(base)}
    for name, part in (("attention and MLPs (--dtype bf16)", "encoder"),
                       ("all of it (--dtype bf16 before)", "encoder+stream")):
        net = copy.deepcopy(base)
        PARTS[part](net, torch.bfloat16)
        preds[name] = Predictor(net)
    for p in preds.values():
        p.set_image(img)  # warm-up
    best = dict.fromkeys(preds, float("inf"))
    for _ in range(repeat):
        for name, p in preds.items():
            t = time.perf_counter()
            p.set_image(img)
            if p.features.device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t)
    ref = preds.pop("fp32").features["image_embed"].float()
    print(f"# image embedding against fp32 (fp32: {best['fp32']:.3f} s per image; "
          f"best of {repeat}, taking turns)")
    print("| encoder in bfloat16 | embedding rel. L2 | s |")
    print("|---|---:|---:|")
    for name, p in preds.items():
        f = p.features["image_embed"].float()
        print(f"| {name} | {float((f - ref).norm() / ref.norm()):.2e} | {best[name]:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--image", default=str(REPO / "examples" / "chelsea.jpg"))
    ap.add_argument("--encoder-only", action="store_true",
                    help="only the image embedding's drift, with and without the float32 stream")
    ap.add_argument("--repeat", type=int, default=1, help="with --encoder-only: best of this many")
    a = ap.parse_args()
    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image
    from sam_cli.models.sam1.mask_decoder import MaskDecoder

    # A bfloat16 upscaling after a float32 transformer (or the reverse) is not a mix sam runs:
    # the upscaling reads the transformer's output in its own weights' dtype here.
    upscale = MaskDecoder._upscale_masks

    from sam_cli.models.sam1.factored import FactoredKeys

    def upscale_in_own_dtype(self, keys, hyper, h, w):
        dt = self.output_upscaling[0].weight.dtype
        if isinstance(keys, FactoredKeys):  # a float32 transformer's, kept factored
            keys = keys if dt == torch.float32 else keys.materialize()
        return upscale(self, keys if isinstance(keys, FactoredKeys) else keys.to(dt), hyper.to(dt), h, w)

    MaskDecoder._upscale_masks = upscale_in_own_dtype
    img = read_image(a.image)
    base = load_model(checkpoint=a.checkpoint, device=a.device)
    if a.encoder_only:
        return encoder_table(base, img, a.repeat)
    n = a.points_per_side
    t = time.perf_counter()
    ref = masks_by_point(base, img, n)
    count = sum(len(v) for v in ref.values())
    print(f"# {Path(a.checkpoint).name} on {a.device}, {n}x{n} points, every candidate kept: "
          f"{count} masks in fp32 ({time.perf_counter() - t:.1f} s); each run against fp32")
    print("| in bfloat16 | mean mask IoU | share at IoU ≥ 0.99 | lowest | s |")
    print("|---|---:|---:|---:|---:|")
    for name, parts in RUNS:
        net = copy.deepcopy(base)
        for p in parts:
            PARTS[p](net, torch.bfloat16)
        t = time.perf_counter()
        iou = compare(ref, masks_by_point(net, img, n))
        print(f"| {name} | {iou.mean():.4f} | {(iou >= 0.99).mean():.3f} | {iou.min():.3f} "
              f"| {time.perf_counter() - t:.1f} |", flush=True)


if __name__ == "__main__":
    main()
