"""COCO prompts: a dataset file (`images`, `annotations` with `bbox`, `categories`), or a
detection results list (`[{image_id, category_id, bbox, score}, ...]`) together with the
dataset file that names its images (--coco-dataset). Boxes are COCO's [x, y, w, h] in pixels.
Every image of the dataset is an item, in the dataset's order, with its annotations' (or
detections') boxes as objects; the category's name and id, the score and the annotation's id
are carried to the outputs, and the image's id to coco.json, so it can be scored against the
dataset with pycocotools."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from ...errors import PromptError
from .base import PromptItem, PromptSource, make_object


def _load(path: Path, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise PromptError(f"{what} {path}: cannot read it ({e.strerror or e})") from None
    except ValueError as e:
        raise PromptError(f"{what} {path}: not a JSON file ({e})") from None


def _check_dataset(doc, path: Path, what: str) -> None:
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        hint = ("one JSON object per line? name it .jsonl or give --prompt-format jsonl"
                if isinstance(doc, dict) and "image" in doc else None)
        raise PromptError(f"{what} {path}: not a COCO dataset (it needs an \"images\" list)", hint=hint)
    seen: dict[int, int] = {}
    for k, im in enumerate(doc["images"]):
        if not (isinstance(im, dict) and isinstance(im.get("file_name"), str) and _is_id(im.get("id"))):
            raise PromptError(f"{what} {path}: images[{k}] needs an integer \"id\" and a \"file_name\"")
        if (first := seen.setdefault(im["id"], k)) != k:  # every annotation of that id would be ambiguous
            raise PromptError(f"{what} {path}: images[{k}] has the id {im['id']} of images[{first}]",
                              hint="image ids must be unique")


def read(src: PromptSource) -> Iterator[PromptItem]:
    path = Path(src.path)
    doc = _load(path, "--prompts")
    if isinstance(doc, list):  # a results list: the images come from --coco-dataset
        if src.coco_dataset is None:
            raise PromptError(f"--prompts {path}: a COCO results list names images only by id",
                              hint="give --coco-dataset FILE, the dataset file with its images")
        dataset = _load(src.coco_dataset, "--coco-dataset")
        _check_dataset(dataset, src.coco_dataset, "--coco-dataset")
        anns, what = doc, "detection"
        if src.images is None:  # images relative to the dataset file, not the results
            src.images = src.coco_dataset.parent
    else:
        _check_dataset(doc, path, "--prompts")
        dataset, what = doc, "annotation"
        anns = doc.get("annotations", [])
        if not isinstance(anns, list):
            raise PromptError(f"--prompts {path}: \"annotations\" must be a list")
    names = {c["id"]: c.get("name") for c in dataset.get("categories", [])
             if isinstance(c, dict) and _is_id(c.get("id"))}
    ids = {im["id"] for im in dataset["images"]}
    by_image: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    unknown: dict[object, int] = {}
    for k, a in enumerate(anns):
        image_id = a.get("image_id") if isinstance(a, dict) else None
        if _is_id(image_id) and image_id in ids:  # true is not image 1
            by_image[image_id].append((k, a))
        else:
            unknown.setdefault(image_id if isinstance(image_id, (int, str)) else repr(image_id), k)
    for im in dataset["images"]:
        objects, error = [], None
        for k, a in by_image.pop(im["id"], []):
            where = f"{path.name}, {what} {k}" + (f" (id {a['id']})" if "id" in a else "")
            try:
                bbox = a.get("bbox")
                if not isinstance(bbox, list) or len(bbox) != 4:
                    raise PromptError(f"{where}: bbox must be [x, y, width, height], got {bbox!r}")
                x, y, w, h = bbox
                cat = a.get("category_id")
                if cat is not None and not _is_id(cat):  # "1" is not category 1, nor a new one
                    raise PromptError(f"{where}: category_id must be an integer, got {cat!r}")
                objects.append(make_object(where=where, box=[x, y, x + w, y + h] if _numbers(bbox) else bbox,
                                           category=cat, category_name=names.get(cat), score=a.get("score"),
                                           object_id=a.get("id")))
            except (PromptError, TypeError) as e:
                error = e if isinstance(e, PromptError) else PromptError(f"{where}: {e}")
                break
        yield src.item(im["file_name"], [] if error else objects, where=f"{path.name}, image {im['id']}",
                       image_id=im["id"], error=error)
    for image_id, k in unknown.items():
        yield src.failed(f"{path.name}, {what} {k}", f"image_id {image_id} is not one of the dataset's images")


def _is_id(v: object) -> bool:
    """A COCO id: an integer, not a bool (JSON's true is not 1) nor a string or list."""
    return type(v) is int


def _numbers(v: list) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
