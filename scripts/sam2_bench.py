"""SAM 2.1 in `sam` beside Meta's `sam2` package (SAM2ImagePredictor, SAM2AutomaticMaskGenerator),
Ultralytics' SAM 2.1 (`SAM2Predictor`, when installed: the bench extra) and transformers'
`Sam2Model` (with `Sam2Processor` and `pipeline("mask-generation")`): same machine, same run,
same random weights in each model's real architecture (Meta's file, which Ultralytics loads
strictly under its own file names and transformers strictly under its key names,
tests/sam2_hf.py), same threads, same photo. Prints one table, with how
far each peer agrees with sam beside each timing, and `sam`'s own vit_b for scale. Ultralytics'
and transformers' automatic modes are given SAM2AutomaticMaskGenerator's defaults (their own differ).

    python scripts/sam2_bench.py                                  # every SAM 2.1 size, every row
    python scripts/sam2_bench.py --models sam2.1_hiera_tiny --rows encoder,boxes
    python scripts/sam2_bench.py --device cuda --models sam2.1_hiera_large,vit_h

Rows: `encoder` (one photo's features, s/image), `boxes` (64 boxes on one photo, features set),
`auto` (automatic mode, --points-per-side², default filters: random weights' masks rarely pass
them, so this is the decoder and the filter), `auto-all` (filters off at --all-points-per-side²:
every mask upscaled, stability-scored, boxed and encoded). Each measurement runs in a fresh
subprocess, so its peak memory (resident set; torch's peak on a GPU) is its own. Needs the test
extra and Meta's sam2 (the README's test command installs both).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from benchmark import allocator_line, boxes_prompt, peak_mb, read, set_allocator, timed  # noqa: E402

ROWS = ("encoder", "boxes", "auto", "auto-all")
#: Meta's config file of each SAM 2.1 size (in the sam2 package)
CONFIGS = {"sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
           "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
           "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml"}
PHOTO = "coffee.jpg"  # 600×400: the boxes row's boxes are drawn on it


def has_meta() -> bool:
    """Whether Meta's sam2 is installed (without it, sam's rows alone)."""
    import importlib.util

    return importlib.util.find_spec("sam2") is not None


def make_checkpoint(model: str, dest: Path, seed: int = 0) -> Path:
    """Random weights in `model`'s architecture, saved as Meta's file is laid out."""
    torch.manual_seed(seed)
    if model in CONFIGS and has_meta():
        from sam2.build_sam import build_sam2

        net = build_sam2(CONFIGS[model], None, device="cpu")
        torch.save({"model": net.state_dict()}, dest)
    elif model in CONFIGS:  # sam's own build: the image path's keys in Meta's layout
        from sam_cli.checkpoints import build_from_arch
        from sam_cli.registry import MODELS

        torch.save({"model": build_from_arch(MODELS[model].arch, family="sam2").state_dict()}, dest)
    else:
        from sam_cli.checkpoints import build_from_arch
        from sam_cli.registry import MODELS

        torch.save(build_from_arch(MODELS[model].arch).state_dict(), dest)
    return dest


#: Ultralytics' file name of each SAM 2.1 size (its builder picks the architecture by the name)
ULTRALYTICS = {"sam2.1_hiera_tiny": "sam2.1_t.pt", "sam2.1_hiera_small": "sam2.1_s.pt",
               "sam2.1_hiera_base_plus": "sam2.1_b.pt", "sam2.1_hiera_large": "sam2.1_l.pt"}
#: SAM2AutomaticMaskGenerator's defaults, which Ultralytics is given (its own differ)
SAM2_AMG = dict(pred_iou_thresh=0.8, stability_score_thresh=0.95, stability_score_offset=1.0, box_nms_thresh=0.7)


def has_transformers() -> bool:
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def has_ultralytics() -> bool:
    import importlib.util

    return importlib.util.find_spec("ultralytics") is not None


def worker(row: str, impl: str, model: str, ckpt: str, a: argparse.Namespace, out: Path) -> dict:
    torch.set_num_threads(a.threads)
    set_allocator(impl == "sam", a.peer_allocator)
    img = read(PHOTO)
    if impl == "ultralytics":
        from peers_bench import ul_auto, ul_masks
        from ultralytics.models.sam import SAM2Predictor
        from ultralytics.models.sam.build import build_sam

        named = out / ULTRALYTICS[model]  # Meta's file under Ultralytics' name: loaded strictly, unchanged
        if not named.exists():
            named.symlink_to(ckpt)
        pred = SAM2Predictor(overrides=dict(conf=0.0 if row == "auto-all" else 0.25, task="segment",
                                            mode="predict", imgsz=1024, model=ULTRALYTICS[model], save=False,
                                            verbose=False, device=a.device))
        pred.setup_model(model=build_sam(str(named)), verbose=False)
        torch.set_num_threads(a.threads)  # its device selection sets its own thread count
        bgr = np.ascontiguousarray(img[:, :, ::-1])  # it takes OpenCV's BGR order

        def encode():
            pred.set_image(bgr)

        def boxes():
            r = pred(bboxes=boxes_prompt(), multimask_output=False)
            order = r[0].boxes.cls.cpu().numpy().astype(int)  # which box each mask is for
            masks = np.zeros((len(boxes_prompt()), *img.shape[:2]), bool)
            masks[order] = ul_masks(r)
            return masks

        def auto(side, filters):
            amg = SAM2_AMG if filters else dict(SAM2_AMG, pred_iou_thresh=0.0, stability_score_thresh=0.0)
            return ul_auto(pred, bgr, side, amg)
    elif impl == "transformers":
        from peers_bench import hf_auto
        from PIL import Image
        from transformers import Sam2ImageProcessor, Sam2Processor, pipeline

        from sam_cli.registry import MODELS

        from sam2_hf import transformers_model

        meta = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
        net = transformers_model(MODELS[model].arch, meta)
        net = net.to(a.device).eval()
        proc = Sam2Processor(image_processor=Sam2ImageProcessor())  # what from_pretrained gives

        def encode():
            px = proc(images=img, return_tensors="pt")["pixel_values"].to(a.device)
            return net.get_image_embeddings(px)

        def boxes():
            inputs = proc(images=img, input_boxes=[boxes_prompt().tolist()], return_tensors="pt")
            o = net(image_embeddings=emb[0], input_boxes=inputs["input_boxes"].to(a.device), multimask_output=False)
            return proc.post_process_masks(o.pred_masks.cpu(), inputs["original_sizes"])[0][:, 0].numpy().astype(bool)

        def auto(side, filters):
            amg = SAM2_AMG if filters else dict(SAM2_AMG, pred_iou_thresh=0.0, stability_score_thresh=0.0)
            gen = pipeline("mask-generation", model=net, image_processor=proc.image_processor, device=a.device)
            return hf_auto(gen, Image.fromarray(img), side, amg)

        emb = [None]  # the boxes row's image features, set below before the clock starts
    elif impl == "meta":
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
        from sam2.build_sam import build_sam2
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        net = build_sam2(CONFIGS[model], ckpt, device=a.device)
        pred = SAM2ImagePredictor(net)

        def encode():
            pred.set_image(img)

        def boxes():
            return pred.predict(box=boxes_prompt(), multimask_output=False)[0][:, 0]

        def auto(side, filters):
            kw = {} if filters else dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
            return SAM2AutomaticMaskGenerator(net, points_per_side=side, output_mode="uncompressed_rle",
                                              **kw).generate(img)
    else:
        from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
        from sam_cli.checkpoints import load_model
        from sam_cli.predictor import Predictor

        net = load_model(checkpoint=ckpt, device=a.device)
        pred = Predictor(net)

        def encode():
            pred.set_image(img)

        def boxes():
            return pred.predict(boxes=boxes_prompt(), multimask=False, low_res=False).masks[:, 0]

        def auto(side, filters):
            kw = {} if filters else dict(pred_iou_thresh=0.0, stability_score_thresh=0.0)
            return AutomaticMaskGenerator(net, AmgSettings(points_per_side=side, **kw)).generate(img)

    with torch.inference_mode():
        if row == "encoder":
            sec, _ = timed(encode, a.repeat, a.device)
            return {"sec": sec, "peak_mb": peak_mb(a.device)}
        features = encode()
        if impl == "transformers":
            emb[0] = features
        if row == "boxes":
            sec, masks = timed(boxes, a.repeat, a.device)
            np.save(out / f"{model}.{impl}.boxes.npy", np.asarray(masks, bool))
            return {"sec": sec, "peak_mb": peak_mb(a.device)}
        side, filters = (a.points_per_side, True) if row == "auto" else (a.all_points_per_side, False)
        sec, recs = timed(lambda: auto(side, filters), 1, a.device)
        return {"sec": sec, "peak_mb": peak_mb(a.device), "masks": len(recs)}


def agreement(row: str, model: str, res: dict, out: Path, peer: str = "meta") -> str:
    if row == "boxes":
        a, b = (np.load(out / f"{model}.{i}.boxes.npy") for i in ("sam", peer))
        return f"{(a == b).mean() * 100:.3f} % pixels equal"
    if row.startswith("auto"):
        return f"masks {res['sam'].get('masks')} / {res[peer].get('masks')}"
    return ""


def main() -> None:
    from sam_cli.registry import MODELS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join([*CONFIGS, "vit_b"]))
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--points-per-side", type=int, default=32)
    ap.add_argument("--all-points-per-side", type=int, default=8)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--peers", default="meta,ultralytics,transformers",
                    help="which installed peers to run beside sam (empty: sam's own rows alone)")
    ap.add_argument("--peer-allocator", default="system", choices=["system", "tuned"],
                    help="give the peers sam's malloc setting too (device.tune_allocator)")
    ap.add_argument("--worker", nargs=4, metavar=("ROW", "IMPL", "MODEL", "CKPT"), help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(*a.worker, a, Path(a.out))))
        return
    models = a.models.split(",")
    for m in models:
        if m not in MODELS or (m not in CONFIGS and MODELS[m].family != "sam1"):
            ap.error(f"unknown model {m!r} (one of {', '.join([*CONFIGS, 'vit_b', 'vit_l', 'vit_h'])})")
    rows = a.rows.split(",")
    asked = [p for p in a.peers.split(",") if p]
    if any(p not in ("meta", "ultralytics", "transformers") for p in asked):
        ap.error("--peers: any of meta, ultralytics, transformers")
    peers = [p for p, there in (("meta", has_meta()), ("ultralytics", has_ultralytics()),
                                ("transformers", has_transformers())) if there and p in asked]
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU, {a.threads} threads"
    names = {"meta": "Meta", "ultralytics": "Ultralytics", "transformers": "transformers"}
    print(f"# SAM 2.1: sam beside {' and '.join(names[p] for p in peers) or 'no peer'} ({where}; torch "
          f"{torch.__version__}; random weights; {PHOTO}; auto {a.points_per_side}² default filters, auto-all "
          f"{a.all_points_per_side}² filters off)")
    print(allocator_line(a.peer_allocator, "peers"))
    head = ["model", "row", "sam s", *[f"{names[p]} {x}" for p in peers for x in ("s", "/ sam")], "sam peak MB",
            *[f"{names[p]} peak MB" for p in peers], *[f"agreement, {names[p]}" for p in peers]]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        for m in models:
            ckpt = make_checkpoint(m, out / f"{m}.pt")
            impls = ["sam", *peers] if m in CONFIGS else ["sam"]
            for row in rows:
                if m not in CONFIGS and row in ("boxes", "auto-all"):
                    continue
                res = {}
                for impl in impls:
                    cmd = [sys.executable, __file__, "--worker", row, impl, m, str(ckpt), "--out", tmp,
                           "--device", a.device, "--threads", str(a.threads), "--repeat", str(a.repeat),
                           "--points-per-side", str(a.points_per_side),
                           "--all-points-per-side", str(a.all_points_per_side), "--peer-allocator", a.peer_allocator]
                    p = subprocess.run(cmd, capture_output=True, text=True)
                    if p.returncode:
                        print(f"{m} {row} {impl} failed:\n{p.stderr[-2000:]}", file=sys.stderr)
                        res[impl] = {}
                    else:
                        res[impl] = json.loads(p.stdout.strip().splitlines()[-1])

                def fmt(x, f="{:.2f}"):
                    return f.format(x) if x is not None else "–"
                s = res["sam"].get("sec")
                cells = [m, row, fmt(s)]
                for peer in peers:
                    r = res.get(peer, {}).get("sec")
                    cells += [fmt(r), f"{r / s:.2f}x" if s and r else ""]
                cells += [fmt(res[k].get("peak_mb") if k in res else None, "{:.0f}") for k in ("sam", *peers)]
                cells += [agreement(row, m, res, out, peer) if s and res.get(peer, {}).get("sec") else ""
                          for peer in peers]
                print("| " + " | ".join(cells) + " |", flush=True)
                results.append({"model": m, "row": row, **{k: v for k, v in res.items()}})
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
