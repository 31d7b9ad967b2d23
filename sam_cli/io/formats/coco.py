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

    Two passes over those files, each holding one image's annotations at a time, so memory
    does not grow with the run: the first collects the images' ids and the categories, the
    second writes the annotations. Images keep the prompt file's ids when every image has one
    (a COCO prompts file: the result scores against its dataset), else are numbered 1, 2, …
    in run order. Categories: the prompt file's ids and names; names without an id get the
    next free ids, in order of appearance; masks without a category (all of automatic mode's)
    are category "object". The keys come in the order info, annotations, images, categories."""
    path = root / COCO_FILE
    images, named, names = [], {}, []  # named: id → name; names: categories without an id
    unnamed = False  # some mask has no category
    for doc in _docs(root, rels):
        images.append(doc["image"])
        for a in doc["annotations"]:
            if "category_id" in a:
                named.setdefault(a["category_id"], a.get("category"))
            elif "category" in a:
                names.append(a["category"])
            else:
                unnamed = True
    ids = [im.get("id") for im in images]
    if None in ids or len(set(ids)) != len(ids):
        ids = list(range(1, len(images) + 1))
    categories = {i: str(i) if n is None else n for i, n in named.items()}
    by_name = {n: i for i, n in named.items() if n is not None}
    next_id = max(named, default=0) + 1
    for n in dict.fromkeys(names):
        if n not in by_name:
            by_name[n], categories[next_id] = next_id, n
            next_id += 1
    object_id = None
    if unnamed or not categories:
        object_id = by_name.get("object", next_id if categories else 1)
        categories[object_id] = "object"
    ann_id = 1
    with writers.atomic_open(path) as f:
        info = {"description": "Segment Anything masks made by sam"}
        f.write(b'{"info":' + writers.json_bytes(info) + b',"annotations":[')
        for image_id, doc in zip(ids, _docs(root, rels)):
            for a in doc["annotations"]:
                cat = a["category_id"] if "category_id" in a else by_name.get(a.get("category"), object_id)
                out = {"id": ann_id, "image_id": image_id, "category_id": cat,
                       "segmentation": a["segmentation"], "area": a["area"], "bbox": a["bbox"],
                       "iscrowd": 0, "score": a.get("score", a["predicted_iou"])}
                out.update((k, v) for k, v in a.items() if k not in out and k not in ("category", "category_id"))
                f.write((b"," if ann_id > 1 else b"") + writers.json_bytes(out))
                ann_id += 1
        out_images = [{"id": i, "file_name": im["file_name"], "width": im["width"], "height": im["height"]}
                      for i, im in zip(ids, images)]
        cats = [{"id": i, "name": n, "supercategory": "object"}
                for i, n in sorted(categories.items())]
        f.write(b'],"images":' + writers.json_bytes(out_images) + b',"categories":'
                + writers.json_bytes(cats) + b"}")
    return path


def _docs(root: Path, rels: list[str]):
    """Each image's coco-rle document, read one at a time."""
    for rel in rels:
        src = coco_rle.outputs(root / rel)[0]
        try:
            yield json.loads(src.read_text())
        except (OSError, ValueError) as e:
            raise OutputError(f"{src}: cannot read it back for {COCO_FILE} ({e})") from None
