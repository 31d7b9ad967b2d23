"""The prompt-to-mask step on the CPU, per prompt: decoder.onnx in onnxruntime (float and
quantised) beside sam's torch decoder and Meta's reference (SamPredictor), same weights, same
embedding, same prompts, in this run; each mask compared with sam's.

    python scripts/onnx_bench.py                 # vit_b random weights, chelsea.jpg
    python scripts/onnx_bench.py --model tiny    # checks the script

A prompt's time is from the prompt to the full-size mask logits (decoder and upscaling), the
median of --repeat calls after one warm-up. Needs the test extras.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def timed(fn, repeat: int) -> tuple[float, object]:
    out = fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="vit_b")
    ap.add_argument("--image", default=str(REPO / "examples/chelsea.jpg"))
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch and onnxruntime threads (default: all)")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    import onnxruntime as ort
    import torch
    from segment_anything import SamPredictor

    from sam_cli.checkpoints import load_model
    from sam_cli.export.onnx import DecoderOptions, export_decoder
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    from reference import arch_kwargs, build_reference

    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="sam-onnx-"))
    ref = build_reference(**arch_kwargs(a.model), seed=0).eval()
    ckpt = tmp / "m.pth"
    torch.save(ref.state_dict(), ckpt)
    net = load_model(checkpoint=ckpt)
    img = read_image(Path(a.image))
    h, w = img.shape[:2]
    ours = Predictor(net)
    ours.set_image(img)
    meta = SamPredictor(ref)
    meta.set_image(img)
    emb = ours.features["image_embed"].float().numpy()
    opts = ort.SessionOptions()
    if a.threads:
        opts.intra_op_num_threads = a.threads
    sessions = {}
    for name, q in (("onnxruntime", False), ("onnxruntime, quantised", True)):
        path = export_decoder(net, tmp / name.replace(", ", "-") / "decoder.onnx", DecoderOptions(quantize=q))
        sessions[name] = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    s = 1024 / max(h, w)
    prompts = {
        "one click": dict(pts=np.array([[w * 0.5, h * 0.45]]), labels=np.array([1]), box=None),
        "a box": dict(pts=None, labels=None, box=np.array([w * 0.2, h * 0.2, w * 0.8, h * 0.9])),
    }
    print(f"# sam ONNX decoder: {a.model} random weights, {Path(a.image).name} ({w}x{h}), CPU, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__}")
    print("| prompt | runtime | ms per prompt | against sam's torch decoder |")
    print("|---|---|---|---|")
    for kind, p in prompts.items():
        def sam_torch():
            with torch.inference_mode():
                return ours.predict(point_coords=p["pts"], point_labels=p["labels"],
                                    boxes=None if p["box"] is None else p["box"][None], multimask=False).masks[0, 0]

        def meta_torch():
            with torch.inference_mode():
                return meta.predict(point_coords=p["pts"], point_labels=p["labels"], box=p["box"],
                                    multimask_output=False)[0][0]

        coords = [] if p["pts"] is None else list(p["pts"])
        labels = [] if p["labels"] is None else list(p["labels"].astype(float))
        if p["box"] is not None:
            coords += [p["box"][:2], p["box"][2:]]
            labels += [2.0, 3.0]
        else:
            coords.append(np.zeros(2))
            labels.append(-1.0)
        feed = {"image_embeddings": emb, "point_coords": (np.array(coords) * s).astype(np.float32)[None],
                "point_labels": np.array([labels], np.float32),
                "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
                "orig_im_size": np.array([h, w], np.float32)}
        ms, base = timed(sam_torch, a.repeat)
        rows = [("sam, torch", ms, base)]
        ms, m = timed(meta_torch, a.repeat)
        rows.append(("Meta's reference, torch", ms, m))
        for name, sess in sessions.items():
            ms, out = timed(lambda sess=sess: sess.run(["masks"], feed)[0][0, 0] > 0, a.repeat)
            rows.append((name, ms, out))
        for name, ms, m in rows:
            agree = "-" if m is base else f"{(np.asarray(m) == np.asarray(base)).mean() * 100:.3f} % of pixels equal"
            print(f"| {kind} | {name} | {ms:.1f} | {agree} |")


if __name__ == "__main__":
    main()
