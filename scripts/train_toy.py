"""Train a toy SAM whose masks behave like real ones, for checks that random weights cannot
make (REFERENCE §8): a random model's masks are speckled noise that covers most of the image,
its predicted IoUs pass no default filter, and bf16 against fp32 is meaningless on logits
that all sit near 0.

The toy is the tiny architecture of the tests (64 wide, 4 blocks, the real prompt encoder and
mask decoder), with a frozen random image encoder; only the prompt encoder and the mask
decoder learn, for a few minutes of CPU, to segment synthetic shapes from one point. Its
checkpoint has Meta's key names, so sam and the reference both load it.

    python scripts/train_toy.py -o toy.pth                 # train (about 5 min on 2 cores)
    python scripts/train_toy.py --check toy.pth            # held-out shapes: mIoU, auto mode
    python scripts/train_toy.py --check toy.pth --bf16     # + bf16 against fp32, mask IoU

Training uses sam's own modules; the script is not used at run time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.nn import functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sam_cli.registry import ArchSpec  # noqa: E402

TOY = ArchSpec(embed_dim=64, depth=4, num_heads=4, global_attn_indexes=(1, 3))
SIZE = 256  # synthetic images are SIZE×SIZE: one low-res logit per pixel


def synth(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A SIZE×SIZE RGB image of 3–6 flat-coloured ellipses and rectangles on a flat
    background, with mild noise, and its label map (0 background, k the k-th shape's
    visible part)."""
    bg = rng.integers(0, 256, 3)
    img = np.empty((SIZE, SIZE, 3), np.int16)
    img[:] = bg
    labels = np.zeros((SIZE, SIZE), np.int32)
    for k in range(1, int(rng.integers(3, 7))):
        color = rng.integers(0, 256, 3)
        while np.abs(color - bg).sum() < 120:
            color = rng.integers(0, 256, 3)
        shape = np.zeros((SIZE, SIZE), np.uint8)
        cx, cy = (int(v) for v in rng.integers(24, SIZE - 24, 2))
        a, b = (int(v) for v in rng.integers(14, 64, 2))
        if rng.random() < 0.5:
            cv2.ellipse(shape, (cx, cy), (a, b), float(rng.integers(0, 180)), 0, 360, 1, -1)
        else:
            cv2.rectangle(shape, (cx - a, cy - b), (cx + a, cy + b), 1, -1)
        img[shape > 0] = color
        labels[shape > 0] = k
    img += rng.integers(-6, 7, img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8), labels


def build(seed: int):
    from sam_cli.weights import build_from_arch

    torch.manual_seed(seed)
    sam = build_from_arch(TOY)
    # Zero-initialised tables would leave parts of the encoder unused: give them noise.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sam.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return sam


def embed(sam, images: list[np.ndarray]) -> torch.Tensor:
    from sam_cli.predictor import Predictor

    pred = Predictor(sam)
    out = []
    for img in images:
        x, _ = pred.prepare(img)
        out.append(pred.embed([x]))
    return torch.cat(out)


def sample_points(rng, labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """n points, about half on shapes (uniform over the shapes present) and half anywhere;
    returns XY in the 1024 input frame and the target masks n×SIZE×SIZE."""
    ids = np.unique(labels)
    pts, targets = [], []
    for i in range(n):
        if i % 2 == 0 and len(ids) > 1:
            k = rng.choice(ids[ids > 0])
            ys, xs = np.nonzero(labels == k)
            j = rng.integers(len(ys))
            y, x = ys[j], xs[j]
        else:
            y, x = rng.integers(0, SIZE, 2)
        pts.append(((x + 0.5) * 1024 / SIZE, (y + 0.5) * 1024 / SIZE))
        targets.append(labels == labels[y, x])
    return np.asarray(pts, np.float32), np.stack(targets)


def decode(sam, emb: torch.Tensor, pts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """All four mask tokens for one point each: logits n×4×256×256, iou n×4."""
    pe = sam.prompt_encoder
    coords = torch.from_numpy(pts)[:, None, :]
    sparse, dense = pe((coords, torch.ones(len(pts), 1, dtype=torch.long)), None, None)
    return sam.mask_decoder.predict_masks(emb, pe.get_dense_pe(), sparse, dense)


def losses(logits: torch.Tensor, iou: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SAM's recipe, simplified: focal-free BCE + dice on the best of the three multimask
    outputs and on the single output, and the IoU head regressed to each mask's real IoU."""
    t = target[:, None].float().expand_as(logits)
    bce = F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean((2, 3))
    prob = logits.sigmoid()
    dice = 1 - (2 * (prob * t).sum((2, 3)) + 1) / (prob.sum((2, 3)) + t.sum((2, 3)) + 1)
    per_mask = bce + dice  # n×4
    mask_loss = per_mask[:, 1:].min(1).values + per_mask[:, 0]
    with torch.no_grad():
        pred = logits > 0
        inter = (pred & (t > 0)).sum((2, 3)).float()
        union = (pred | (t > 0)).sum((2, 3)).float().clamp(min=1)
        real_iou = inter / union
    return mask_loss.mean() + F.mse_loss(iou, real_iou)


def train(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed)
    sam = build(a.seed)
    data = [synth(rng) for _ in range(a.images)]
    t0 = time.perf_counter()
    with torch.no_grad():
        embs = embed(sam.eval(), [img for img, _ in data])
    print(f"# embedded {a.images} images in {time.perf_counter() - t0:.0f} s", flush=True)
    sam.image_encoder.requires_grad_(False)
    params = [p for n, p in sam.named_parameters() if not n.startswith("image_encoder.")]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=a.lr, total_steps=a.steps, pct_start=0.1)
    sam.train()
    t0 = time.perf_counter()
    running = None
    for step in range(1, a.steps + 1):
        i = int(rng.integers(a.images))
        pts, target = sample_points(rng, data[i][1], a.points)
        logits, iou = decode(sam, embs[i : i + 1], pts)
        loss = losses(logits, iou, torch.from_numpy(target))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 50 == 0 or step == a.steps:
            print(f"step {step}: loss {running:.3f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    torch.save(sam.state_dict(), a.out)
    print(f"# wrote {a.out}")


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def check(a: argparse.Namespace) -> None:
    """Held-out shapes: mean IoU of the best of three masks for one point, and automatic mode
    with default settings; with --bf16 also bf16 against fp32."""
    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.masks import rle_to_mask
    from sam_cli.predictor import Predictor
    from sam_cli.weights import load_model

    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(a.seed + 1000)
    tests = [synth(rng) for _ in range(a.check_images)]
    nets = {"fp32": load_model(checkpoint=a.check)}
    if a.bf16:
        nets["bf16"] = load_model(checkpoint=a.check, dtype="bf16")
    results: dict[str, dict] = {}
    for name, net in nets.items():
        pred = Predictor(net)
        gen = AutomaticMaskGenerator(net, AmgSettings())
        ious, masks, autos = [], [], []
        for img, labels in tests:
            pred.set_image(img)
            pts, target = sample_points(np.random.default_rng(len(ious)), labels, 8)
            for pt, t in zip(pts * SIZE / 1024, target):
                m = pred.predict(point_coords=[pt], point_labels=[1], multimask=True).masks[0]
                ious.append(max(mask_iou(x, t) for x in m))
                masks.append(m)
            autos.append(gen.generate(img))
        results[name] = {"ious": ious, "masks": masks, "autos": autos}
        n_auto = [len(r) for r in autos]
        # how well automatic mode covers the shapes: each shape's best-matching mask
        cover = []
        for (img, labels), recs in zip(tests, autos):
            decoded = [rle_to_mask(r.rle) for r in recs]
            for k in np.unique(labels):
                cover.append(max((mask_iou(d, labels == k) for d in decoded), default=0.0))
        print(f"{name}: one point, best of 3 masks: mean IoU {np.mean(ious):.3f} with the true "
              f"shape over {len(ious)} points; automatic mode (defaults): {np.mean(n_auto):.1f} "
              f"masks per image, each shape's best mask mean IoU {np.mean(cover):.3f}")
    if a.bf16:
        f, b = results["fp32"], results["bf16"]
        pix = [mask_iou(x, y) for mf, mb in zip(f["masks"], b["masks"]) for x, y in zip(mf, mb)]
        print(f"bf16 vs fp32, prompted: mean mask IoU {np.mean(pix):.4f}, min {np.min(pix):.4f} "
              f"over {len(pix)} masks")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--out", type=Path, default=Path("toy.pth"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--points", type=int, default=8, help="prompts per step")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--check", type=Path, help="evaluate this checkpoint instead of training")
    ap.add_argument("--check-images", type=int, default=6)
    ap.add_argument("--bf16", action="store_true", help="with --check: bf16 against fp32 too")
    a = ap.parse_args()
    check(a) if a.check else train(a)


if __name__ == "__main__":
    main()
