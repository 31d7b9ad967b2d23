"""SAM 3's text prompts in `sam` beside the peers people reach for: Ultralytics'
`SAM3SemanticPredictor` and transformers' `Sam3Model` (with `Sam3Processor`'s parts). Same
machine, same run, same random weights, same threads, same photos; beside each timing, how far
the peer's detections agree with sam's.

    pip install -e '.[test,bench]'
    python scripts/sam3_bench.py                         # full size, 2 photos, every tool
    python scripts/sam3_bench.py --photos 1 --tools sam,transformers
    python scripts/sam3_bench.py --device cuda

Weights: Meta's full-size SAM 3 architecture with random weights (normal, std 0.02; seed 0),
saved as Meta's sam3.pt is laid out (`detector.` and the point-and-box head's `tracker.` keys).
sam and Ultralytics read that file; transformers gets the same tensors under its own names
(tests/sam3_hf.py, checked strictly).
Ultralytics imports OpenAI's `clip` package for its tokenizer, which is installed from GitHub
(out of reach of a package index); this script gives it sam's tokenizer under that name (the
same tokens as Meta's: tests/test_sam3_parts.py).

Each tool in its own process (its peak memory its own): the image encoder on each photo
(s/image), then the detector on each photo's features with 1 phrase, with 5 phrases, and with 5
phrases keeping every query (a threshold of 0: 1000 masks made at the photo's size; random
weights score below the default 0.5, so the first two rows make no masks). A row's phrases are
encoded once, on its first photo, as a run over a folder encodes them once. Images per second are 1 / (encoder + detector).
Agreement, on the last row: each peer's scores and masks beside sam's, detections paired in
score order (transformers leaves the geometry encoder's CLS token out of a text-only prompt,
where Meta's processor and sam keep it, and applies the sigmoid before resizing masks;
Ultralytics resizes the image its own way and runs NMS, here given a threshold of 1, off).
Ultralytics is given imgsz 1008, SAM 3's resolution: its default imgsz (640, made 644) runs the
model on a 46² token grid instead of 72², a lighter and other workload.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests")]
from benchmark import EXAMPLES, allocator_line, peak_mb, read, set_allocator, sync  # noqa: E402

TOOLS = ("sam", "ultralytics", "transformers")
NAMES = {"sam": "sam", "ultralytics": "Ultralytics", "transformers": "transformers"}
PHOTOS = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")
PHRASES = ("cat", "cup", "person", "rocket", "dog")
ROWS = ("encoder", "1 phrase", "5 phrases", "5 phrases, all kept")


def make_checkpoint(dest: Path, size: str) -> Path:
    from sam_cli.checkpoints import build_from_arch
    from sam_cli.models.sam3.model import Sam3Arch

    if size == "tiny":
        from sam3_tiny import save_tiny_sam3

        return save_tiny_sam3(dest)
    torch.manual_seed(0)
    net = build_from_arch(Sam3Arch(), family="sam3")
    with torch.no_grad():  # Meta's modules leave some tensors uninitialised
        for p in net.parameters():
            p.normal_(0, 0.02)
    torch.save({"model": net.state_dict()}, dest)  # detector. and tracker. (the point-and-box head) keys
    return dest


def _clip_stand_in() -> None:
    """`import clip` for Ultralytics: its tokenizer is sam's (Meta's tokens), nothing else."""
    from sam_cli.models.sam3.tokenizer import Tokenizer

    class SimpleTokenizer:
        def __call__(self, texts, context_length: int = 32):
            return Tokenizer(context=context_length)([texts] if isinstance(texts, str) else list(texts))

    clip = types.ModuleType("clip")
    clip.simple_tokenizer = types.SimpleNamespace(SimpleTokenizer=SimpleTokenizer)
    sys.modules["clip"] = clip


def tool(name: str, ckpt: str, device: str, size: str = "full"):
    """(encode(rgb, path) → features, detect(features, rgb, phrases, threshold) → (scores, a function
    giving the masks as H×W bool arrays: outside the timing, as the tools' outputs differ in kind))."""
    if name == "sam":
        from sam_cli.checkpoints import load
        from sam_cli.masks import rle_to_mask
        from sam_cli.models.sam3.tokenizer import Tokenizer
        from sam_cli.text_prompts import TextSegmenter, TextSettings

        net = load(checkpoint=ckpt, device=device).net
        Tokenizer()  # its vocabulary read now, as the peers' tokenizers are made when they load
        segs: dict = {}

        def encode(rgb, path):
            return net.encode(net.prepare(torch.from_numpy(rgb)).to(net.device))["trunk"]

        def detect(trunk, rgb, phrases, threshold):
            key = (phrases, threshold)
            if key not in segs:  # text features once per phrase, as the command makes them
                segs[key] = TextSegmenter(net, TextSettings(phrases, threshold))
            recs = segs[key].segment(rgb, trunk)  # what the command writes: run-length encoded masks
            return np.array([r.source["score"] for r in recs]), lambda: [rle_to_mask(r.rle) for r in recs]

        return encode, detect
    if name == "ultralytics":
        _clip_stand_in()
        from ultralytics.models.sam import SAM3SemanticPredictor

        side = 1008 if size == "full" else 112
        pred = SAM3SemanticPredictor(overrides=dict(conf=0.5, iou=1.0, task="segment", mode="predict", model=ckpt,
                                                    imgsz=side, device=device, half=False, save=False, verbose=False))
        threads = torch.get_num_threads()
        pred.setup_model(verbose=False)  # its device selection sets torch to min(8, cores - 1) threads:
        torch.set_num_threads(threads)  # put back, here and before each call (as peers_bench does)

        def encode(rgb, path):
            torch.set_num_threads(threads)
            pred.set_image(str(path))
            return pred.features

        def detect(features, rgb, phrases, threshold):  # its API for features computed before
            torch.set_num_threads(threads)
            pred.args.conf = threshold
            masks, boxes = pred.inference_features(features, src_shape=rgb.shape[:2], text=list(phrases))
            if masks is None:
                return np.zeros(0), list
            return boxes[:, 4].cpu().numpy(), lambda: list(masks.cpu().numpy().astype(bool))

        return encode, detect
    from transformers import Sam3ImageProcessor
    from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

    from sam_cli.checkpoints import load

    from sam3_hf import clip_tokenizer, transformers_model

    net = load(checkpoint=ckpt).net
    model = transformers_model(net).to(device)
    side = net.img_size
    images, tokenizer = Sam3ImageProcessor(size={"height": side, "width": side}), clip_tokenizer()
    texts: dict = {}

    def encode(rgb, path):
        x = images(images=rgb, return_tensors="pt")["pixel_values"].to(device)
        return model.get_vision_features(pixel_values=x)

    def detect(vision, rgb, phrases, threshold):
        n = len(phrases)
        if phrases not in texts:
            enc = tokenizer(list(phrases), padding="max_length", max_length=32, truncation=True, return_tensors="pt")
            texts[phrases] = model.get_text_features(input_ids=enc.input_ids.to(device),
                                                     attention_mask=enc.attention_mask.to(device)), enc.attention_mask
        text, mask = texts[phrases]
        many = Sam3VisionEncoderOutput(
            fpn_hidden_states=tuple(f.expand(n, -1, -1, -1) for f in vision.fpn_hidden_states),
            fpn_position_encoding=tuple(f.expand(n, -1, -1, -1) for f in vision.fpn_position_encoding))
        out = model(vision_embeds=many, text_embeds=text, attention_mask=mask.to(device))
        found = images.post_process_instance_segmentation(out, threshold=threshold, target_sizes=[rgb.shape[:2]] * n)
        return (np.concatenate([f["scores"].cpu().numpy() for f in found]),
                lambda: [m for f in found for m in f["masks"].bool().cpu().numpy()])

    return encode, detect


def worker(name: str, a: argparse.Namespace, out: Path) -> dict:
    import time

    torch.set_num_threads(a.threads)
    set_allocator(name == "sam", a.peer_allocator)
    t = time.perf_counter()
    encode, detect = tool(name, a.ckpt, a.device, a.size)
    res: dict = {"load_s": time.perf_counter() - t, "rows": {r: [] for r in ROWS}, "threads": []}
    with torch.inference_mode():
        photos = [(EXAMPLES / p, read(p)) for p in PHOTOS[: a.photos]]
        feats = []
        for path, rgb in photos:
            sync(a.device)
            t = time.perf_counter()
            feats.append(encode(rgb, path))
            sync(a.device)
            res["rows"]["encoder"].append(time.perf_counter() - t)
        # row by row over the photos: each row's phrases are encoded once, on its first photo
        for row, phrases, threshold in (("1 phrase", PHRASES[:1], 0.5), ("5 phrases", PHRASES, 0.5),
                                        ("5 phrases, all kept", PHRASES, 0.0)):
            for k, ((_, rgb), f) in enumerate(zip(photos, feats)):
                t = time.perf_counter()
                scores, masks = detect(f, rgb, phrases, threshold)
                sync(a.device)
                res["rows"][row].append(time.perf_counter() - t)
                res["threads"].append(torch.get_num_threads())  # what each call ran on
                if threshold == 0.0:
                    masks = masks()
                    np.savez_compressed(out / f"{name}.{k}.npz", scores=scores,
                                        masks=np.stack(masks) if masks else np.zeros((0, *rgb.shape[:2]), bool))
    res["peak_mb"] = peak_mb(a.device)
    return res


def agreement(name: str, photos: int, out: Path) -> str:
    """Detections paired in score order (per photo): how many each kept, the largest score
    difference and the mean mask IoU of the pairs."""
    kept, diffs, ious = [0, 0], [], []
    for k in range(photos):
        ours, theirs = (dict(np.load(out / f"{t}.{k}.npz")) for t in ("sam", name))  # each array read once
        kept[0] += len(ours["scores"])
        kept[1] += len(theirs["scores"])
        a, b = np.argsort(-ours["scores"], kind="stable"), np.argsort(-theirs["scores"], kind="stable")
        for i, j in zip(a, b):
            diffs.append(abs(float(ours["scores"][i]) - float(theirs["scores"][j])))
            m, n = ours["masks"][i], theirs["masks"][j]
            union = np.logical_or(m, n).sum()
            ious.append(np.logical_and(m, n).sum() / union if union else 1.0)
    if not diffs:
        return f"{kept[1]} / {kept[0]} kept"
    return (f"{kept[1]} / {kept[0]} kept; scores within {max(diffs):.1e}; "
            f"mean mask IoU {np.mean(ious):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tools", default=",".join(TOOLS))
    ap.add_argument("--photos", type=int, default=2)
    ap.add_argument("--size", choices=("full", "tiny"), default="full",
                    help="tiny: the tests' SAM 3 (sam and transformers only: Ultralytics builds full size)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--peer-allocator", default="system", choices=["system", "tuned"],
                    help="give the peers sam's malloc setting too (device.tune_allocator)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a, Path(a.out))))
        return
    tools = a.tools.split(",")
    if "sam" not in tools or any(t not in TOOLS for t in tools):
        ap.error(f"--tools: sam and any of {', '.join(TOOLS[1:])}")
    import importlib.util

    missing = [t for t in tools[1:] if importlib.util.find_spec(t) is None]
    if missing:
        print(f"# not installed, left out: {', '.join(missing)}", file=sys.stderr)
        tools = [t for t in tools if t not in missing]
    a.photos = min(a.photos, len(PHOTOS))
    where = torch.cuda.get_device_name() if a.device.startswith("cuda") else f"CPU, {a.threads} threads"
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        ckpt = make_checkpoint(out / "sam3.pt", a.size)
        for name in tools:
            cmd = [sys.executable, __file__, "--worker", name, "--ckpt", str(ckpt), "--out", tmp, "--device", a.device,
                   "--threads", str(a.threads), "--photos", str(a.photos), "--size", a.size,
                   "--peer-allocator", a.peer_allocator]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode:
                print(f"{name} failed:\n{p.stderr[-3000:]}", file=sys.stderr)
                continue
            results[name] = json.loads(p.stdout.strip().splitlines()[-1])
            if a.json:  # as each tool finishes: a later failure keeps what was measured
                Path(a.json).write_text(json.dumps({"results": results}, indent=1))
        agree = {t: agreement(t, a.photos, out) for t in results if t != "sam" and "sam" in results}
    print(f"# SAM 3 text prompts, {a.size} size, random weights: sam beside the peers ({where}; torch {torch.__version__}; "
          f"{a.photos} photo(s): {', '.join(PHOTOS[:a.photos])}; phrases {', '.join(PHRASES)})")
    print(allocator_line(a.peer_allocator, "peers"))
    shown = [t for t in tools if t in results]
    print("| s/image (mean over the photos) | " + " | ".join(NAMES[t] for t in shown) + " |")
    print("|---|" + "---:|" * len(shown))
    mean = {t: {r: float(np.mean(v)) for r, v in results[t]["rows"].items()} for t in shown}
    for row in ROWS:
        label = "image encoder" if row == "encoder" else f"detector, {row}"
        print(f"| {label} | " + " | ".join(f"{mean[t][row]:.3f}" for t in shown) + " |")
    for row in ("1 phrase", "5 phrases"):
        print(f"| images/s, {row} | " + " | ".join(f"{1 / (mean[t]['encoder'] + mean[t][row]):.4f}" for t in shown)
              + " |")
    print("| loading the model, s | " + " | ".join(f"{results[t]['load_s']:.1f}" for t in shown) + " |")
    print("| threads each call ran on | " + " | ".join(",".join(map(str, sorted(set(results[t]["threads"]))))
                                                      for t in shown) + " |")
    print("| peak memory, MB | " + " | ".join(f"{results[t]['peak_mb']:.0f}" for t in shown) + " |")
    for t, text in agree.items():
        print(f"\n{NAMES[t]} beside sam, 5 phrases all kept: {text}")
    if a.json:
        Path(a.json).write_text(json.dumps({"results": results, "agreement": agree}, indent=1))


if __name__ == "__main__":
    main()
