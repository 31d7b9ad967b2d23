"""coco: coco.json, one COCO dataset (images, annotations, categories) for the run, built at
its end from the per-image coco-rle files, one image at a time, so memory does not grow with
the run."""

from __future__ import annotations

import json
from pathlib import Path

from ...errors import OutputError
from .. import writers
from . import ImageOutput, coco_rle

COCO_FILE = "coco.json"
REQUIRES = ("coco-rle",)


def outputs(base: Path) -> list[Path]:
    return []  # per image, coco-rle's file (REQUIRES)


def write(img: ImageOutput) -> None:
    pass


def finish(root: Path, rels: list[str]) -> Path:
    """Assemble coco.json from the per-image JSON files of the run's images.

    Streamed: each image's annotations are read from its file and written out before the next
    is read, so memory holds one image's masks and a short record per image, however large
    the run. The keys come in the order info, annotations, images, categories."""
    path = root / COCO_FILE
    images = []
    ann_id = 1
    with writers.atomic_open(path) as f:
        info = {"description": "Segment Anything masks made by sam"}
        f.write(b'{"info":' + writers.json_bytes(info) + b',"annotations":[')
        for image_id, rel in enumerate(rels, start=1):
            src = coco_rle.outputs(root / rel)[0]
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
