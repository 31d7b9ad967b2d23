"""coco: coco.json, one COCO dataset (images, annotations, categories) for the run, built at
its end from the per-image coco-rle files, one image at a time, so memory does not grow with
the run."""

from __future__ import annotations

from pathlib import Path

from .. import writers
from . import FormatOptions, ImageOutput
from .dataset import Categories, docs, iou_note, mask_of

COCO_FILE = "coco.json"
REQUIRES = ("coco-rle",)


def outputs(base: Path) -> list[Path]:
    return []  # per image, coco-rle's file (REQUIRES)


def write(img: ImageOutput) -> None:
    pass


def finish(root: Path, rels: list[str], options: FormatOptions | None = None) -> tuple[Path, str]:
    """Assemble coco.json from the per-image JSON files of the run's images.

    Two passes over those files, each holding one image's annotations at a time, so memory
    does not grow with the run: the first collects the images' ids and the categories, the
    second writes the annotations. Images keep the prompt file's ids when every image has one
    (a COCO prompts file: the result scores against its dataset), else are numbered 1, 2, …
    in run order. Categories: the prompt file's ids and names; names without an id get the
    next free ids, in order of appearance; masks without a category (all of automatic mode's)
    are in options.category ("object"). With options.polygons, segmentations are polygons
    (polygons.py): one per part; holes, which COCO polygons cannot hold, are counted in the
    annotation's `polygon_holes`, parts under options.min_area in `polygon_parts_dropped`, and
    the note says how close the polygons are to the masks (mean IoU). The keys come in the
    order info, annotations, images, categories."""
    options = options or FormatOptions()
    path = root / COCO_FILE
    images, cats = Categories.scan(root, rels, options, COCO_FILE)
    ids = [im.get("id") for im in images]
    if None in ids or len(set(ids)) != len(ids):
        ids = list(range(1, len(images) + 1))
    ann_id = 1
    ious: list[float] = []
    with writers.atomic_open(path) as f:
        info = {"description": "Segment Anything masks made by sam",
                "file_name": "each image's path as sam names its outputs: relative to the folder given as "
                "input (for a prompt file, --images or the file's folder), else as given on the command line"}
        f.write(b'{"info":' + writers.json_bytes(info) + b',"annotations":[')
        for image_id, doc in zip(ids, docs(root, rels, COCO_FILE)):
            for a in doc["annotations"]:
                out = {"id": ann_id, "image_id": image_id, "category_id": cats.id_of(a),
                       "segmentation": a["segmentation"], "area": a["area"], "bbox": a["bbox"],
                       "iscrowd": 0, "score": a.get("score", a["predicted_iou"])}
                out.update((k, v) for k, v in a.items() if k not in out and k not in ("category", "category_id"))
                if options.polygons:
                    polygon_segmentation(out, options, ious)
                f.write((b"," if ann_id > 1 else b"") + writers.json_bytes(out))
                ann_id += 1
        # name: the image's unique name (kwcoco reads it; the output key is unique in a run)
        out_images = [{"id": i, "file_name": im["file_name"], "name": im["file_name"], "width": im["width"],
                       "height": im["height"]} for i, im in zip(ids, images)]
        categories = [{"id": i, "name": n, "supercategory": "object"} for i, n in cats.ids.items()]
        f.write(b'],"images":' + writers.json_bytes(out_images) + b',"categories":'
                + writers.json_bytes(categories) + b"}")
    return path, iou_note("polygons", ious) if options.polygons else ""


def polygon_segmentation(ann: dict, options: FormatOptions, ious: list[float]) -> None:
    """Replace an annotation's RLE segmentation by polygons, in place (see finish); its IoU
    with the mask, rasterised by pycocotools, is appended to `ious`."""
    from pycocotools import mask as coco_mask

    from ...masks import mask_crop
    from ...polygons import crop_outline

    h, w = ann["segmentation"]["size"]
    compressed = {"size": [h, w], "counts": ann["segmentation"]["counts"].encode()}
    outline = crop_outline(mask_crop(mask_of(ann)), tolerance=options.tolerance, min_area=options.min_area)
    ann["segmentation"] = outline.flat()
    if outline.holes:
        ann["polygon_holes"] = len(outline.holes)
    if outline.dropped:
        ann["polygon_parts_dropped"] = outline.dropped
    if ann["segmentation"]:
        poly = coco_mask.merge(coco_mask.frPyObjects(ann["segmentation"], h, w))
        ious.append(float(coco_mask.iou([poly], [compressed], [0])[0, 0]))
    else:
        ious.append(0.0 if ann["area"] else 1.0)
