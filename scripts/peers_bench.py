"""Benchmark `sam` beside Meta's reference and the peers people reach for: Ultralytics' SAM
(`ultralytics.models.sam.Predictor`) and Hugging Face transformers (`SamModel`, `SamProcessor`,
`pipeline("mask-generation")`). Same machine, same run, same weights, same threads, same photos;
beside each timing, the tool's agreement with Meta's reference on the same weights.

    pip install -e '.[bench]'
    python scripts/peers_bench.py                                  # CPU, vit_b, every row
    python scripts/peers_bench.py --points-per-side 16 --folder-images 4 --folder-points-per-side 16
    python scripts/peers_bench.py --device cuda --model vit_h
    python scripts/peers_bench.py --model tiny --points-per-side 4 --folder-images 2 --folder-points-per-side 4

Weights: one random checkpoint in Meta's layout (tests/reference.py, seed 0), made confident and
coherent as `scripts/benchmark.py --weights coherent` makes them, so that masks pass the default
filters and survive NMS as a trained model's do. Ultralytics loads Meta's file unchanged (its SAM
keeps Meta's key names); transformers' SamModel gets the same tensors under its own names
(`hf_state_dict` below: a renaming, checked strictly, and one matrix used twice).

Threads: every tool runs on --threads (default: torch's default, the machine's cores). What each
does when left alone is printed under the table. Each measurement runs in a fresh process, so
its peak memory (resident set on the CPU, torch's peak allocation on a GPU) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests")]
import benchmark as bm  # noqa: E402  (scripts/benchmark.py: photos, reference runs, sam runs)

IMPLS = ("ref", "ours", "ultralytics", "transformers")
NAMES = {"ref": "Meta's reference", "ours": "sam", "ultralytics": "Ultralytics",
         "transformers": "transformers"}
ROWS = ("encoder", "boxes", "auto", "auto-all", "folder")
#: the row of scripts/benchmark.py that runs the reference and sam for each row here
BM_ROW = {"encoder": "encoder", "boxes": "boxes", "auto": "auto-default", "auto-all": "auto-all",
          "folder": "folder"}
#: the reference's automatic-mode defaults that every tool is given
AMG = dict(pred_iou_thresh=0.88, stability_score_thresh=0.95, stability_score_offset=1.0, box_nms_thresh=0.7)
#: every candidate kept: filters and NMS off (random weights leave one mask after NMS, so this row
#: is the one where each tool's per-mask work, upscaling, RLE and the rest, is compared)
AMG_ALL = dict(pred_iou_thresh=0.0, stability_score_thresh=0.0, stability_score_offset=1.0, box_nms_thresh=1.0)


def ul_auto(pred, source, pps: int, amg: dict) -> np.ndarray:
    """Ultralytics' everything mode with the reference's settings. It compares predicted IoU and
    stability with > even at 0, so "off" is -1 there; its NMS threshold is the predictor's iou."""
    pred.args.iou = amg["box_nms_thresh"]
    off = -1.0
    return ul_masks(pred(source=source, points_stride=pps, conf_thres=amg["pred_iou_thresh"] or off,
                         stability_score_thresh=amg["stability_score_thresh"] or off,
                         stability_score_offset=amg["stability_score_offset"]))


def hf_auto(gen, image, pps: int, amg: dict) -> list:
    return gen(image, points_per_crop=pps, points_per_batch=64, pred_iou_thresh=amg["pred_iou_thresh"],
               stability_score_thresh=amg["stability_score_thresh"],
               stability_score_offset=amg["stability_score_offset"], crops_nms_thresh=amg["box_nms_thresh"])["masks"]


# ------------------------------------------------------------------- transformers' key names


def hf_state_dict(meta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's SAM state dict under transformers' SamModel names. The modules are the same; only
    names differ: nn.Sequential indices become named layers, "norm" becomes "layer_norm", the
    MLPs' first and last layers are proj_in and proj_out, and the prompt encoder's random Fourier
    matrix is also the model's shared image positional embedding."""
    from reference import HF_HEAD_RENAMES, hf_mlp_key

    seq = [  # (pattern, replacement), applied in order
        (r"^image_encoder\.", "vision_encoder."),
        (r"^vision_encoder\.blocks\.", "vision_encoder.layers."),
        (r"^vision_encoder\.patch_embed\.proj\.", "vision_encoder.patch_embed.projection."),
        (r"^vision_encoder\.neck\.0\.", "vision_encoder.neck.conv1."),
        (r"^vision_encoder\.neck\.1\.", "vision_encoder.neck.layer_norm1."),
        (r"^vision_encoder\.neck\.2\.", "vision_encoder.neck.conv2."),
        (r"^vision_encoder\.neck\.3\.", "vision_encoder.neck.layer_norm2."),
        *HF_HEAD_RENAMES,
        (r"\.point_embeddings\.", ".point_embed."),
    ]
    out = {}
    for k, v in meta.items():
        for pat, rep in seq:
            k = re.sub(pat, rep, k)
        out[hf_mlp_key(k, r"iou_prediction_head|output_hypernetworks_mlps\.\d+")] = v
    out["shared_image_embedding.positional_embedding"] = out["prompt_encoder.shared_embedding.positional_embedding"]
    return out


def hf_model(a):
    from transformers import SamConfig, SamModel

    from reference import arch_kwargs

    arch = arch_kwargs(a.model)
    cfg = SamConfig(vision_config=dict(hidden_size=arch["embed_dim"], num_hidden_layers=arch["depth"],
                                       num_attention_heads=arch["num_heads"],
                                       global_attn_indexes=list(arch["global_attn_indexes"])))
    net = SamModel(cfg)
    net.load_state_dict(hf_state_dict(torch.load(a.ckpt, map_location="cpu", weights_only=True)), strict=True)
    return net.to(a.device).eval()


def hf_processor():
    from transformers import SamImageProcessor, SamProcessor

    return SamProcessor(image_processor=SamImageProcessor())  # what SamProcessor.from_pretrained gives


def hf_generator(a, net):
    from transformers import SamImageProcessor, pipeline

    return pipeline("mask-generation", model=net, image_processor=SamImageProcessor(), device=a.device)


# --------------------------------------------------------------------------- Ultralytics


def ul_predictor(a, out: Path, conf: float = 0.25):
    """Ultralytics' SAM predictor over the benchmark's checkpoint, as `SAM("sam_b.pt")` builds it
    (conf 0.25 is what SAM.predict passes), then the thread count put back: Ultralytics' device
    selection sets torch to min(8, cpu_count - 1) threads."""
    from ultralytics.models.sam import Predictor
    from ultralytics.models.sam.build import _build_sam, build_sam

    from reference import arch_kwargs

    if a.model == "tiny":
        arch = arch_kwargs("tiny")
        net = _build_sam(arch["embed_dim"], arch["depth"], arch["num_heads"],
                         list(arch["global_attn_indexes"]), checkpoint=a.ckpt)
    else:  # its builder chooses the architecture by the file's name, as for its own downloads
        named = out / f"sam_{a.model[-1]}.pt"
        if not named.exists():
            named.symlink_to(a.ckpt)
        net = build_sam(str(named))
    pred = Predictor(overrides=dict(conf=conf, task="segment", mode="predict", imgsz=1024, model="sam_b.pt",
                                    save=False, verbose=False, device=a.device))
    pred.setup_model(model=net, verbose=False)
    torch.set_num_threads(a.threads)
    return pred


def ul_masks(results) -> np.ndarray:
    r = results[0]
    if r.masks is None:
        return np.zeros((0, *r.orig_shape), bool)
    return r.masks.data.cpu().numpy().astype(bool)


# ------------------------------------------------------------------------------ workers


def rles(masks) -> list[dict]:
    from pycocotools import mask as coco_mask

    out = []
    for m in masks:
        r = coco_mask.encode(np.asfortranarray(np.asarray(m, dtype=np.uint8)))
        out.append({"rle": {"size": list(r["size"]), "counts": r["counts"].decode()}})
    return out


def peer_worker(row: str, impl: str, a, out: Path) -> dict:
    torch.set_num_threads(a.threads)
    dev = a.device
    if row == "folder":
        return peer_folder(impl, a, out)
    if impl == "ultralytics":  # every candidate: its after-NMS conf filter off too
        pred = ul_predictor(a, out, conf=0.0 if row == "auto-all" else 0.25)
    else:
        net, proc = hf_model(a), hf_processor()
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    res: dict = {}
    with torch.inference_mode():
        if row == "encoder":
            img = bm.read("chelsea.jpg")
            if impl == "ultralytics":
                bgr = np.ascontiguousarray(img[:, :, ::-1])  # it takes OpenCV's BGR order
                res["seconds"], _ = bm.timed(lambda: pred.set_image(bgr), a.repeat, dev)
                emb = pred.features
            else:
                def encode():
                    px = proc(images=img, return_tensors="pt")["pixel_values"].to(dev)
                    return net.get_image_embeddings(px)
                res["seconds"], emb = bm.timed(encode, a.repeat, dev)
            np.save(out / f"{impl}.npy", emb.float().cpu().numpy())
        elif row == "boxes":
            img, boxes = bm.read("coffee.jpg"), bm.boxes_prompt()
            if impl == "ultralytics":
                pred.set_image(np.ascontiguousarray(img[:, :, ::-1]))

                def predict():
                    r = pred(bboxes=boxes, multimask_output=False)
                    order = r[0].boxes.cls.cpu().numpy().astype(int)  # which box each mask is for
                    masks = np.zeros((len(boxes), 1, *img.shape[:2]), bool)
                    masks[order, 0] = ul_masks(r)
                    return masks, len(order)
            else:
                inputs = proc(images=img, input_boxes=[boxes.tolist()], return_tensors="pt")
                emb = net.get_image_embeddings(inputs["pixel_values"].to(dev))

                def predict():
                    o = net(image_embeddings=emb, input_boxes=inputs["input_boxes"].to(dev), multimask_output=False)
                    m = proc.image_processor.post_process_masks(o.pred_masks.cpu(), inputs["original_sizes"],
                                                                inputs["reshaped_input_sizes"])[0]
                    return m.numpy().astype(bool), len(m)
            res["seconds"], (masks, res["returned"]) = bm.timed(predict, a.repeat, dev)
            np.save(out / f"{impl}.npy", masks)
        else:  # auto, auto-all
            img, amg = bm.read("chelsea.jpg"), AMG if row == "auto" else AMG_ALL
            if impl == "transformers":
                from PIL import Image

                gen = hf_generator(a, net)
            bm.sync(dev)
            t = time.perf_counter()
            if impl == "ultralytics":
                masks = ul_auto(pred, np.ascontiguousarray(img[:, :, ::-1]), a.points_per_side, amg)
            else:
                masks = hf_auto(gen, Image.fromarray(img), a.points_per_side, amg)
            bm.sync(dev)
            res["seconds"] = time.perf_counter() - t
            (out / f"{impl}.json").write_text(json.dumps(rles(masks)))  # after the clock: not counted
    res["peak_mb"] = bm.peak_mb(dev)
    return res


def peer_folder(impl: str, a, out: Path) -> dict:
    """Each peer's loop over the folder's photos with its automatic mode at the reference's
    default settings, masks written as COCO RLE JSON per photo, as the reference's loop does.
    Seconds per photo in the steady state, as scripts/benchmark.py's folder row measures."""
    t = time.perf_counter()
    src = sorted(Path(a.folder_dir).glob("*.jpg"))
    dest = out / impl
    dest.mkdir()
    stamps = []
    if impl == "ultralytics":
        pred = ul_predictor(a, out)

        def masks_of(p: Path):
            return ul_auto(pred, str(p), a.folder_points_per_side, AMG)
    else:
        gen = hf_generator(a, hf_model(a))

        def masks_of(p: Path):
            return hf_auto(gen, str(p), a.folder_points_per_side, AMG)
    with torch.inference_mode():
        for p in src:
            (dest / f"{p.stem}.json").write_text(json.dumps(rles(masks_of(p))))
            bm.sync(a.device)
            stamps.append(time.perf_counter())
    wall = (time.perf_counter() - t) / len(src)
    steady = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else wall
    return {"seconds": steady, "wall": wall, "peak_mb": bm.peak_mb(a.device)}


# ----------------------------------------------------------------------------- agreement


def coco_rle(r: dict, h: int, w: int) -> dict:
    from pycocotools import mask as coco_mask

    if isinstance(r["counts"], list):  # uncompressed, as the reference's and sam's records are
        return coco_mask.frPyObjects(r, h, w)
    return {"size": [h, w], "counts": r["counts"].encode()}


def mask_set_agreement(ref: list[dict], theirs: list[dict]) -> str:
    """Each reference mask against the best-overlapping mask of theirs (mask IoU): how many
    have a counterpart at IoU >= 0.99, and the mean best IoU (0 where none)."""
    from pycocotools import mask as coco_mask

    if not ref:
        return f"the reference kept no masks ({len(theirs)} theirs)"
    h, w = ref[0]["rle"]["size"]
    r = [coco_rle(x["rle"], h, w) for x in ref]
    t = [coco_rle(x["rle"], h, w) for x in theirs]
    best = np.zeros(len(r))
    if t:
        best = np.asarray(coco_mask.iou(r, t, [0] * len(t))).reshape(len(r), len(t)).max(1)
    return (f"{int((best >= 0.99).sum())}/{len(r)} ref masks found at IoU >= 0.99 ({len(t)} theirs), "
            f"mean best IoU {best.mean():.4f}")


def agreement(row: str, impl: str, out: Path, res: dict) -> str:
    if row == "folder":
        return "(agreement: the automatic row)"
    if row == "encoder":
        r, o = np.load(out / "ref.npy"), np.load(out / f"{impl}.npy")
        return f"embedding rel. L2 {np.linalg.norm(r - o) / np.linalg.norm(r):.1e}"
    if row == "boxes":
        r, o = np.load(out / "ref.npy"), np.load(out / f"{impl}.npy")
        if r.shape != o.shape:
            return f"shapes differ: {o.shape} against {r.shape}"
        note = "" if res.get("returned", len(r)) == len(r) else f", {res['returned']}/{len(r)} masks returned"
        return f"{(r == o).mean() * 100:.3f}% pixels equal{note}"
    ref = json.loads((out / "ref.json").read_text())
    theirs = json.loads((out / f"{impl}.json").read_text())
    return mask_set_agreement(ref, theirs)


# ---------------------------------------------------------------------------------- main


LABELS = {
    "encoder": "image encoder (preprocessing included), s/image",
    "boxes": "prompted: 64 boxes on one photo (embedding ready), s",
    "auto": "automatic, {pps}x{pps} grid, the reference's default filters, s/image",
    "auto-all": "automatic, {pps}x{pps} grid, filters and NMS off (every candidate kept), s/image",
    "folder": "a folder of {n} photos, automatic ({fpps}x{fpps}, default filters), s/image, steady state",
}

DEFAULTS = """\
# Left alone, on this machine: Ultralytics sets torch to min(8, cpu_count - 1) = {ul} threads and
#   OMP_NUM_THREADS=1 where unset, and SAM.predict drops masks whose predicted IoU is at most 0.25
#   (conf); transformers and the reference keep torch's default ({td} threads). Here every tool has {t}.
# Automatic mode, what differs from the reference's settings given to every tool:
#   Ultralytics letterboxes the photo (OpenCV bilinear resize, padded with grey 114 before
#   normalising, where the reference pads with 0 after), prompts and filters in the 1024x1024
#   input frame, thresholds masks there and scales them to the photo; its stability offset
#   defaults to 0.95 (1.0 given here) and it drops masks under conf 0.25 after NMS.
#   transformers' mask-generation pipeline: torchvision's resize (SamImageProcessor's default),
#   otherwise the reference's steps; its NMS (crops_nms_thresh) is given the reference's box NMS 0.7.
# Timings end when each tool returns its masks: the peers' dense masks are encoded as RLE after the
#   clock, the reference's and sam's RLEs inside it (they return RLEs)."""


def main() -> None:
    from sam_cli.registry import MODELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="vit_b", choices=[*MODELS, "tiny"])
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--impls", default=",".join(IMPLS))
    bm.add_run_args(ap)
    a = ap.parse_args()
    # what scripts/benchmark.py's workers read
    a.dtype, a.folder_filters, a.batch_size, a.compile, a.ref_allocator = "fp32", "default", 0, False, "system"

    if a.worker:
        row, impl = a.worker
        os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))
        if impl in ("ref", "ours"):
            res = bm.worker(BM_ROW[row], impl, a, Path(a.out))
        else:
            res = peer_worker(row, impl, a, Path(a.out))
        print(json.dumps(res))
        return

    impls = [i for i in a.impls.split(",") if i]
    if "ref" not in impls:
        impls.insert(0, "ref")  # the agreement column needs it
    with tempfile.TemporaryDirectory(prefix="sam-peers-") as tmpdir:
        tmp = Path(tmpdir)
        scale, shift = bm.make_checkpoint(a, tmp, "coherent")
        versions = tool_versions()
        dev_name = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU, {a.threads} threads"
        print(f"# sam beside its peers: {a.model}, coherent confident random weights (mask logits x{scale:.0f}, "
              f"predicted IoUs {shift:+.3f}), fp32, {dev_name}, torch {torch.__version__}, {versions}")
        results: dict = {}
        failed = 0
        head = " | ".join(NAMES[i] for i in impls)
        print(f"\n| row | {head} | {' | '.join(f'{NAMES[i]}: agreement with the reference' for i in impls if i != 'ref')} |")
        print("|---|" + "---:|" * len(impls) + "---|" * (len(impls) - 1))
        for row in [r for r in a.rows.split(",") if r]:
            out = tmp / row
            out.mkdir()
            res = {}
            for impl in impls:
                cmd = [sys.executable, __file__, "--worker", row, impl, "--ckpt", a.ckpt, "--out", str(out),
                       "--device", a.device, "--model", a.model, "--threads", str(a.threads),
                       "--repeat", str(a.repeat), "--points-per-side", str(a.points_per_side),
                       "--folder-dir", a.folder_dir, "--folder-points-per-side", str(a.folder_points_per_side)]
                env = {**os.environ, "OMP_NUM_THREADS": str(a.threads)}
                res[impl] = bm.run_worker(cmd, f"{row} {impl}", env)
                failed += res[impl] is None
            for impl in impls:
                if impl != "ref" and res.get(impl):
                    res[impl]["agreement"] = agreement(row, impl, out, res[impl]) if res.get("ref") else "-"
            results[row] = res
            label = LABELS[row].format(pps=a.points_per_side, n=a.folder_images, fpps=a.folder_points_per_side)
            cells = [f"{res[i]['seconds']:.3f}" if res.get(i) else "failed" for i in impls]
            agree = [res[i]["agreement"] if res.get(i) else "-" for i in impls if i != "ref"]
            print(f"| {label} | {' | '.join(cells)} | {' | '.join(agree)} |", flush=True)
        print("\nPeak memory of each measurement's process, MB" +
              (" (torch's peak allocation on the GPU)" if a.device.startswith("cuda") else " (resident set)") + ":\n")
        print(f"| row | {head} |")
        print("|---|" + "---:|" * len(impls))
        for row, res in results.items():
            cells = [bm.mb(res.get(i)) for i in impls]
            print(f"| {row} | {' | '.join(cells)} |")
        print()
        print(DEFAULTS.format(ul=min(8, max(1, (os.cpu_count() or 1) - 1)), td=torch.get_num_threads(),
                              t=a.threads))
        if a.json:
            Path(a.json).write_text(json.dumps({"args": vars(a), "versions": versions, "rows": results}, indent=1))
    if failed:
        raise SystemExit(f"{failed} measurement(s) failed")


def tool_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("segment-anything", "ultralytics", "transformers"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} not installed")
    return ", ".join(out)


if __name__ == "__main__":
    main()
