"""Outputs of `sam auto`, per image and per run. Each is written under a temporary name and
renamed, so an interrupted run never leaves a half-written file under a real name, and an
image counts as done exactly when all its requested outputs exist."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import masks as M
from ..errors import OutputError
from . import writers

METADATA_HEADER = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
    "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
)
COCO_FILE = "coco.json"
#: Threads encoding one image's mask PNGs.
PNG_THREADS = min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class OutputLayout:
    """Where each format goes for an image whose output key is `rel` (e.g. "a/x.jpg")."""

    root: Path
    formats: tuple[str, ...]

    def __post_init__(self) -> None:
        # fail before any image is read or the model loaded, not once per image
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(f"{self.root}: exists and is not a folder")

    def paths(self, rel: str) -> dict[str, Path]:
        base = self.root / rel
        out = {}
        for f in self.formats:
            if f == "png":
                out[f] = base.with_name(base.name + ".masks")
            elif f in ("coco-rle", "coco"):
                out["json"] = base.with_name(base.name + ".json")
            elif f == "label-map":
                out[f] = base.with_name(base.name + ".labels.png")
            elif f == "overlay":
                out[f] = base.with_name(base.name + ".overlay.jpg")
        return out

    def is_complete(self, rel: str) -> bool:
        for kind, p in self.paths(rel).items():
            if kind == "png":
                if not (p / "metadata.csv").is_file():
                    return False
            elif not p.is_file():
                return False
        return True


def annotation(rec, coco_rle: dict | None = None) -> dict:
    """A record as the reference's coco_rle output mode gives it (bbox in the COCO convention)."""
    area = rec.area
    return {
        "segmentation": coco_rle or M.rle_to_coco(rec.rle),
        "area": area,
        "bbox": M.xyxy_to_xywh_coco(rec.box, area),
        "predicted_iou": float(rec.predicted_iou),
        "point_coords": [[float(v) for v in rec.point]],
        "stability_score": float(rec.stability_score),
        "crop_box": M.crop_xyxy_to_xywh(rec.crop_box),
    }


def _write_png_folder(path: Path, records, anns: list[dict]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        lines = [METADATA_HEADER]

        def write_mask(i: int) -> None:
            rle = records[i].rle
            (tmp / f"{i}.png").write_bytes(writers.crop_png(M.rle_to_crop(rle), rle["size"]))

        # PNG encoding is most of this and OpenCV releases the GIL in it: the masks are
        # encoded on several threads (a 12 MP mask takes 15–30 ms on one core)
        pool = ThreadPoolExecutor(PNG_THREADS, thread_name_prefix="sam-png")
        try:
            for _ in pool.map(write_mask, range(len(records))):
                pass
        finally:  # on an error or Ctrl-C, the masks not yet started are not encoded
            pool.shutdown(cancel_futures=True)
        for i, ann in enumerate(anns):
            x, y = ann["point_coords"][0]
            lines.append(",".join(str(v) for v in (
                i, ann["area"], *ann["bbox"], x, y, ann["predicted_iou"],
                ann["stability_score"], *ann["crop_box"],
            )))
        (tmp / "metadata.csv").write_text("\n".join(lines) + "\n")
        if path.exists():
            trash = path.with_name(f".{path.name}.{os.getpid()}.old")
            os.replace(path, trash)
            os.replace(tmp, path)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def label_map(records, hw: tuple[int, int]) -> np.ndarray:
    """H×W uint16: each pixel is 1 + the index of the smallest mask covering it, else 0."""
    out = np.zeros(hw, dtype=np.uint16)
    order = sorted(range(len(records)), key=lambda i: -records[i].area)
    for i in order:  # largest first, so smaller masks paint over them
        crop = M.rle_to_crop(records[i].rle)  # only the mask's box is decoded and painted
        out[crop.window][crop.mask] = min(i + 1, 65535)
    return out


def write_image_outputs(layout: OutputLayout, rel: str, image: np.ndarray, records, file_name: str) -> list[str]:
    """Write every requested per-image output; returns the paths written."""
    paths = layout.paths(rel)
    anns = [annotation(r) for r in records]
    h, w = image.shape[:2]
    written = []
    for kind, p in paths.items():
        if kind == "json":
            doc = {"image": {"file_name": file_name, "width": w, "height": h}, "annotations": anns}
            writers.write_json(p, doc)
        elif kind == "png":
            _write_png_folder(p, records, anns)
        elif kind == "label-map":
            writers.atomic_write_bytes(p, writers.encode_png(label_map(records, (h, w))))
        elif kind == "overlay":
            crops = [M.rle_to_crop(r.rle) for r in records]
            writers.write_image(p, writers.overlay_crops(image, crops))
        written.append(str(p))
    return written


def write_coco_dataset(layout: OutputLayout, rels: list[str]) -> Path:
    """Assemble one COCO dataset file from the per-image JSON files of this run's images.

    Streamed: each image's annotations are read from its file and written out before the next
    is read, so memory holds one image's masks and a short record per image, however large
    the run. The keys come in the order info, annotations, images, categories."""
    path = layout.root / COCO_FILE
    images = []
    ann_id = 1
    with writers.atomic_open(path) as f:
        info = {"description": "Segment Anything masks made by sam"}
        f.write(b'{"info":' + writers.json_bytes(info) + b',"annotations":[')
        for image_id, rel in enumerate(rels, start=1):
            src = layout.paths(rel)["json"]
            try:
                doc = json.loads(src.read_text())
            except (OSError, ValueError) as e:
                raise OutputError(f"{src}: cannot read it back for {COCO_FILE} ({e})") from None
            im = doc["image"]
            images.append({"id": image_id, "file_name": im["file_name"], "width": im["width"],
                           "height": im["height"]})
            for a in doc["annotations"]:
                f.write((b"," if ann_id > 1 else b"") + writers.json_bytes({
                    "id": ann_id, "image_id": image_id, "category_id": 1,
                    "segmentation": a["segmentation"], "area": a["area"], "bbox": a["bbox"],
                    "iscrowd": 0, "score": a["predicted_iou"],
                    "predicted_iou": a["predicted_iou"], "stability_score": a["stability_score"],
                    "point_coords": a["point_coords"], "crop_box": a["crop_box"],
                }))
                ann_id += 1
        f.write(b'],"images":' + writers.json_bytes(images) + b',"categories":'
                + writers.json_bytes([{"id": 1, "name": "object", "supercategory": "object"}]) + b"}")
    return path
