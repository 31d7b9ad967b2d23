"""Segment a photo with the ONNX files of `sam export onnx --encoder` and onnxruntime alone:
no torch, no sam. Needs numpy, Pillow and onnxruntime (`pip install onnxruntime pillow`).

    sam export onnx --encoder -o onnx/
    python scripts/onnx_segment.py onnx/ photo.jpg --point 320,240 -o mask.png
    python scripts/onnx_segment.py onnx/ photo.jpg --box 40,60,400,380 --point 200,200 -o mask.png

Coordinates are in the photo's pixels. The mask is mask token 0's, as `sam segment` gives for
the same prompts (`--best`: the best of the three multimask outputs by predicted IoU, for a
lone click); with a decoder exported with --return-single-mask, the decoder has chosen.

What the encoder wants (encoder.onnx's input, 1×3×1024×1024 float32): the photo as RGB,
resized so its long side is 1024 (Pillow's bilinear, which antialiases when it shrinks; the
short side rounded to the nearest pixel), minus the pixel mean and divided by the pixel std
per channel, then padded with zeros at the bottom and right.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)  # SAM's, per RGB channel
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)
SIDE = 1024


def encoder_input(rgb: np.ndarray) -> tuple[np.ndarray, float, float]:
    """H×W×3 uint8 → (1×3×1024×1024 input, x scale, y scale into the 1024 frame)."""
    from PIL import Image

    h, w = rgb.shape[:2]
    s = SIDE / max(h, w)
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    resized = np.asarray(Image.fromarray(rgb).resize((nw, nh), Image.BILINEAR), np.float32)
    x = np.zeros((1, 3, SIDE, SIDE), np.float32)
    x[0, :, :nh, :nw] = ((resized - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
    return x, nw / w, nh / h


def xy(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx_dir", type=Path, help="the folder with encoder.onnx and decoder.onnx")
    ap.add_argument("image", type=Path)
    ap.add_argument("--point", type=xy, action="append", default=[], help="X,Y of a point on the object")
    ap.add_argument("--neg-point", type=xy, action="append", default=[], help="X,Y of a point off it")
    ap.add_argument("--box", type=xy, help="X0,Y0,X1,Y1 around the object")
    ap.add_argument("--best", action="store_true", help="the best of the three multimask outputs")
    ap.add_argument("-o", "--output", type=Path, required=True, help="the mask, a PNG (255 in the mask)")
    a = ap.parse_args()
    import onnxruntime as ort
    from PIL import Image

    rgb = np.asarray(Image.open(a.image).convert("RGB"))
    h, w = rgb.shape[:2]
    x, sx, sy = encoder_input(rgb)
    cpu = ["CPUExecutionProvider"]
    emb = ort.InferenceSession(str(a.onnx_dir / "encoder.onnx"), providers=cpu).run(None, {"image": x})[0]

    coords = [*a.point, *a.neg_point]
    labels = [1.0] * len(a.point) + [0.0] * len(a.neg_point)
    if a.box:
        coords += [a.box[:2], a.box[2:]]
        labels += [2.0, 3.0]
    else:
        coords.append([0.0, 0.0])  # no box: a padding point, as SAM's prompt encoder adds
        labels.append(-1.0)
    pts = np.array(coords, np.float32) * np.array([sx, sy], np.float32)
    dec = ort.InferenceSession(str(a.onnx_dir / "decoder.onnx"), providers=cpu)
    masks, iou = dec.run(["masks", "iou_predictions"], {
        "image_embeddings": emb, "point_coords": pts[None], "point_labels": np.array([labels], np.float32),
        "mask_input": np.zeros((1, 1, 256, 256), np.float32), "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([h, w], np.float32)})
    k = 0
    if masks.shape[1] > 1 and a.best:
        k = 1 + int(np.argmax(iou[0, 1:]))
    mask = masks[0, k] > 0
    Image.fromarray(mask.astype(np.uint8) * 255).save(a.output)
    print(f"{a.output}: {int(mask.sum())} pixels of {h}x{w}, predicted IoU {float(iou[0, k]):.3f}")


if __name__ == "__main__":
    main()
