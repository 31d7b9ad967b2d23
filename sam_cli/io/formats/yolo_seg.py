"""yolo-seg: labels/a/x.txt for the image a/x.jpg, a line per mask `class x1 y1 … xn yn`
(vertices normalised to 0..1 of the image's width and height), and data.yaml naming the
classes, for YOLO segmentation training. Written at the end of the run from the per-image
coco-rle files (REQUIRES), when every class of the run is known: classes are numbered 0, 1, …
in the order of the categories' ids (dataset.Categories: a prompt file's ids, then names as
they first come, then options.category for masks without one).

Each mask is one polygon (polygons.single_polygon): its parts and holes joined by zero-width
corridors, traced through the boundary pixels' centres, which OpenCV's fillPoly (what YOLO's
data loaders rasterise with) fills back exactly, corridors aside. The note says how close the
filled polygons come to the masks (mean IoU). Two images whose label files would have one name
(a/x.jpg and a/x.png) are a collision: the second's labels are not written, and the run fails
with both named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import OutputError
from .. import writers
from . import FormatOptions, ImageOutput
from .dataset import Categories, docs, iou_note, mask_of

REQUIRES = ("coco-rle",)
LABELS = "labels"
DATA_YAML = "data.yaml"


def label_path(root: Path, rel: str) -> Path:
    return root / LABELS / Path(rel).with_suffix(".txt")


def outputs(base: Path) -> list[Path]:
    return []  # per image, coco-rle's file (REQUIRES); the labels are written at the end


def write(img: ImageOutput) -> None:
    pass


def finish(root: Path, rels: list[str], options: FormatOptions | None = None) -> tuple[Path, str]:
    from ...masks import mask_crop
    from ...polygons import crop_outline, fill_polygon, single_polygon

    options = options or FormatOptions()
    _, cats = Categories.scan(root, rels, options, LABELS + "/")
    classes = list(cats.ids.values())
    ious: list[float] = []
    owner: dict[Path, str] = {}
    collisions = []
    for rel, doc in zip(rels, docs(root, rels, LABELS + "/")):
        path = label_path(root, rel)
        if owner.setdefault(path, rel) != rel:
            collisions.append(f"{rel} (its labels would be {path}, as {owner[path]}'s are)")
            continue
        w, h = doc["image"]["width"], doc["image"]["height"]
        lines = []
        for a in doc["annotations"]:
            crop = mask_crop(mask_of(a))
            poly = single_polygon(crop_outline(crop, tolerance=options.tolerance, min_area=options.min_area,
                                               centres=True))
            if len(poly) == 0:
                ious.append(0.0 if crop.mask.any() else 1.0)
                continue
            # the corridors join vertices, so the polygon stays inside the mask's box
            filled = fill_polygon(poly - [crop.x0, crop.y0], crop.mask.shape)
            union = int((filled | crop.mask).sum())
            ious.append(float((filled & crop.mask).sum() / union) if union else 1.0)
            xy = np.clip(poly / [w, h], 0, 1)
            lines.append(f"{cats.index_of(a)} " + " ".join(f"{v:.6f}" for v in xy.ravel()))
        writers.atomic_write_bytes(path, ("\n".join(lines) + "\n" if lines else "").encode())
    yaml = ["# classes of the masks sam wrote; add the dataset's path, train and val", f"nc: {len(classes)}",
            "names:"] + [f"  {k}: {json.dumps(n)}" for k, n in enumerate(classes)]
    writers.atomic_write_bytes(root / DATA_YAML, ("\n".join(yaml) + "\n").encode())
    if collisions:
        raise OutputError(f"{root / LABELS}: label files of several images would have one name: "
                          + "; ".join(collisions))
    return root / LABELS, iou_note("polygons filled as YOLO loaders do", ious)
