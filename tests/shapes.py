"""Masks drawn on a small canvas, for the format tests (test_polygon_formats.py,
test_interop.py): shapes with holes, several parts and thin bars, as mask records, and one
run of a format over them."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from sam_cli import masks as M
from sam_cli.io.formats import FormatOptions
from sam_cli.io.outputs import OutputLayout
from sam_cli.masks import MaskRecord

H, W = 120, 160


def objects() -> np.ndarray:
    """Five masks: a disc with a hole, a square, an ellipse, two blobs apart, a thin bar."""
    ms = np.zeros((5, H, W), np.uint8)
    cv2.circle(ms[0], (50, 60), 40, 1, -1)
    cv2.circle(ms[0], (50, 60), 12, 0, -1)
    cv2.rectangle(ms[1], (100, 10), (150, 50), 1, -1)
    cv2.ellipse(ms[2], (120, 90), (30, 15), 20, 0, 360, 1, -1)
    cv2.circle(ms[3], (20, 20), 10, 1, -1)
    cv2.circle(ms[3], (60, 110), 8, 1, -1)
    ms[4, 100:104, 90:150] = 1
    return ms.astype(bool)


def auto_records(masks):
    rles = M.masks_to_rle(torch.from_numpy(masks))
    return [MaskRecord(r, [0, 0, 0, 0], 0.9, [1.0, 2.0], 0.95, [0, 0, W, H]) for r in rles]


def iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())



def write_one(tmp_path, fmt: str, **options):
    """The five objects() as automatic records of image s/a.jpg (and z.png with none), written
    in format `fmt` by the run engine's layout: (masks, the run-level file, its note)."""
    masks = objects()
    layout = OutputLayout(tmp_path, (fmt,), options=FormatOptions(**options))
    layout.write("s/a.jpg", np.zeros((H, W, 3), np.uint8), auto_records(masks))
    layout.write("z.png", np.zeros((H, W, 3), np.uint8), [])
    [(path, note)] = layout.finish(["s/a.jpg", "z.png"])
    return masks, path, note
