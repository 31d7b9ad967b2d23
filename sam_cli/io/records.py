"""Mask records as JSON-ready dicts: `sam segment`'s (one per returned mask), automatic
mode's (`annotation`, the reference's coco_rle output), and the bytes of their files."""

from __future__ import annotations

import io

import numpy as np

from .. import masks as M


def mask_records(masks: np.ndarray, iou: np.ndarray, index: np.ndarray | None = None) -> list[dict]:
    """masks B×M×H×W bool, iou B×M → records in object order, then the model's mask order;
    index B×M: the decoder's index of each mask (default: its position)."""
    recs = []
    for oi, (obj_masks, obj_iou) in enumerate(zip(masks, iou)):
        for mi, (m, score) in enumerate(zip(obj_masks, obj_iou)):
            recs.append({
                "object_index": oi, "mask_index": mi if index is None else int(index[oi, mi]),
                "predicted_iou": round(float(score), 6),
                "area": int(m.sum()), "bbox": M.mask_xywh_coco(m),
            })
    return recs


def annotation(rec: M.MaskRecord | M.PromptedMask, coco_rle: dict | None = None) -> dict:
    """A record as the reference's coco_rle output mode gives it (bbox in the COCO convention);
    a prompted mask's with its object's index, its mask's index, the prompt file's category,
    score and id of the object, and the prompts used."""
    area = rec.area
    if isinstance(rec, M.PromptedMask):
        return {
            "segmentation": coco_rle or M.rle_to_coco(rec.rle), "area": area,
            "bbox": M.xyxy_to_xywh_coco(rec.box, area), "predicted_iou": float(rec.predicted_iou),
            "object_index": rec.object_index, "mask_index": rec.mask_index,
            **{k: v for k, v in rec.source.items() if v is not None}, "prompt": rec.prompt,
        }
    return {
        "segmentation": coco_rle or M.rle_to_coco(rec.rle),
        "area": area,
        "bbox": M.xyxy_to_xywh_coco(rec.box, area),
        "predicted_iou": float(rec.predicted_iou),
        "point_coords": [[float(v) for v in rec.point]],
        "stability_score": float(rec.stability_score),
        "crop_box": M.crop_xyxy_to_xywh(rec.crop_box),
        **({"score": float(rec.score)} if rec.score is not None else {}),
    }


def npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()
