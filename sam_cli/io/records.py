"""Records for `sam segment`: one per returned mask, and the bytes of its output files."""

from __future__ import annotations

import io

import numpy as np
from pycocotools import mask as coco_mask


def mask_bbox_xywh(mask: np.ndarray) -> list[int]:
    """H×W bool → COCO XYWH box (width and height count pixels); [0, 0, 0, 0] if empty."""
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return [0, 0, 0, 0]
    return [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]


def coco_rle(mask: np.ndarray) -> dict:
    """H×W bool → COCO compressed RLE with str counts."""
    enc = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in enc["size"]], "counts": enc["counts"].decode("utf-8")}


def mask_records(masks: np.ndarray, iou: np.ndarray) -> list[dict]:
    """masks B×M×H×W bool, iou B×M → records in object order, then the model's mask order."""
    recs = []
    for oi, (obj_masks, obj_iou) in enumerate(zip(masks, iou)):
        for mi, (m, score) in enumerate(zip(obj_masks, obj_iou)):
            recs.append({
                "object_index": oi, "mask_index": mi, "predicted_iou": round(float(score), 6),
                "area": int(m.sum()), "bbox": mask_bbox_xywh(m),
            })
    return recs


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()
