"""`sam eval`'s ground truth: a COCO dataset file, read and checked whole before any model
work. Every annotation's segmentation is checked against its image's size (a polygon of at
least three points, an RLE whose counts cover the image exactly) before pycocotools sees it:
pycocotools' C code loops for ever on an RLE whose counts do not sum to H×W."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import InputError


@dataclass
class GroundTruth:
    """A COCO dataset's images and their objects' annotations (crowd regions left out)."""

    path: str
    images: dict[int, dict]  # id → image entry
    objects: dict[int, list[dict]]  # image id → its annotations with a segmentation
    crowd: int  # iscrowd annotations left out
    categories: dict[int, str] = field(default_factory=dict)  # id → name, as the file lists them


def read_ground_truth(path, *, boxes: bool = False, data: bytes | None = None) -> GroundTruth:
    """The COCO file at `path` (its bytes `data`, when the caller has read them already);
    InputError naming it (and the annotation) when it cannot be read, is not COCO, or holds a
    segmentation that does not fit its image. boxes: each object also needs a unique integer
    id, a category_id and a bbox (--box)."""
    import json

    try:
        doc = json.loads(open(path, "rb").read() if data is None else data)
    except (OSError, ValueError, MemoryError) as e:
        raise InputError(f"{path}: cannot read the ground truth ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) or \
            not isinstance(doc.get("annotations"), list):
        raise InputError(f"{path}: not a COCO dataset (it needs 'images' and 'annotations' lists)")
    images: dict[int, dict] = {}
    for im in doc["images"]:
        try:
            entry = {"id": _int(im["id"]), "file_name": str(im["file_name"]), "height": _int(im["height"]),
                     "width": _int(im["width"])}
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: an image entry without id, file_name, width and height: {im!r:.80}") from None
        if entry["id"] in images:
            raise InputError(f"{path}: image id {entry['id']} is given twice")
        if entry["height"] < 1 or entry["width"] < 1:
            raise InputError(f"{path}: image {entry['id']} is {entry['width']}x{entry['height']} pixels")
        images[entry["id"]] = entry
    objects: dict[int, list[dict]] = {}
    crowd = 0
    ids: set[int] = set()
    for k, a in enumerate(doc["annotations"]):
        where = f"{path}: annotation {a.get('id', f'#{k}') if isinstance(a, dict) else f'#{k}'}"
        if not isinstance(a, dict):
            raise InputError(f"{where}: not an object")
        image_id = a.get("image_id")
        if type(image_id) is not int or image_id not in images or "segmentation" not in a:
            raise InputError(f"{where}: has no segmentation or no image")
        im = images[image_id]
        if bad := segmentation_problem(a["segmentation"], im["height"], im["width"]):
            raise InputError(f"{where}: {bad}")
        if boxes and (bad := _box_problem(a, ids)):  # pycocotools' AP needs them, crowd regions too
            raise InputError(f"{where}: {bad}")
        if a.get("iscrowd"):
            crowd += 1
            continue
        objects.setdefault(image_id, []).append(a)
    cats: dict[int, str] = {}
    for c in doc.get("categories") or []:
        if isinstance(c, dict) and type(c.get("id")) is int and isinstance(c.get("name"), str):
            cats[c["id"]] = c["name"]
    return GroundTruth(str(path), images, objects, crowd, cats)


def _int(v) -> int:
    if type(v) is not int:
        raise TypeError(v)
    return v


def _box_problem(a: dict, ids: set[int]) -> str | None:
    if type(a.get("id")) is not int:
        return "needs an integer id (--box scores COCO AP, which names objects by id)"
    if a["id"] in ids:
        return f"id {a['id']} is given twice"
    ids.add(a["id"])
    if type(a.get("category_id")) is not int:
        return "needs an integer category_id"
    b = a.get("bbox")
    if not (isinstance(b, list) and len(b) == 4 and all(_number(v) for v in b) and b[2] >= 0 and b[3] >= 0):
        return f"bbox must be [x, y, width, height], got {b!r:.60}"
    return None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def segmentation_problem(seg, h: int, w: int) -> str | None:
    """What keeps a COCO segmentation from being this h×w image's mask, or None."""
    if isinstance(seg, list):
        if not seg:
            return "its segmentation is an empty list"
        for poly in seg:
            if not (isinstance(poly, list) and all(_number(v) for v in poly)):
                return "a polygon of its segmentation is not a list of numbers"
            if len(poly) < 6 or len(poly) % 2:
                return f"a polygon of its segmentation has {len(poly)} values (x, y pairs, at least 3 points)"
        return None
    if not isinstance(seg, dict):
        return f"its segmentation is neither polygons nor RLE: {seg!r:.60}"
    size = seg.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int for v in size)):
        return f"its RLE's size must be [height, width], got {size!r:.40}"
    if size != [h, w]:
        return f"its RLE is {size[1]}x{size[0]}, the image {w}x{h}"
    counts = seg.get("counts")
    if isinstance(counts, str):
        try:
            counts = rle_string_counts(counts)
        except ValueError as e:
            return f"its RLE string is not COCO's compressed RLE ({e})"
    elif not (isinstance(counts, list) and all(type(v) is int for v in counts)):
        return "its RLE counts are neither a string nor a list of whole numbers"
    if any(c < 0 for c in counts):
        return "its RLE counts hold a negative run"
    if sum(counts) != h * w:
        return f"its RLE counts cover {sum(counts)} pixels, the image has {h * w}"
    return None


def rle_string_counts(s: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (pycocotools' rleFrString, in Python:
    6-bit groups offset by 48, 5 value bits and a continuation bit, the last group's sign
    extended, each count after the second a difference from the one two before)."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                raise ValueError("it ends inside a number")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {s[p]!r} at {p}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def gt_mask(ann: dict, h: int, w: int) -> np.ndarray:
    """H×W bool of a COCO annotation's segmentation (polygons, RLE or compressed RLE), checked
    by read_ground_truth."""
    from pycocotools import mask as coco_mask

    seg = ann["segmentation"]
    if isinstance(seg, list):
        rle = coco_mask.merge(coco_mask.frPyObjects(seg, h, w))
    elif isinstance(seg.get("counts"), list):
        rle = coco_mask.frPyObjects(seg, h, w)
    else:
        rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
    return coco_mask.decode(rle).astype(bool)
