"""What the run-level formats share (coco, yolo-seg, cvat, labelstudio): reading back the
per-image coco-rle files of a run one at a time, and the run's categories, known only once
every image has been read.

Categories: a prompt file's ids and names; names without an id get the next free ids in order
of appearance; masks with neither (all of automatic mode's) are options.category. `ids` maps
each category id to its name; formats that number classes 0, 1, … (YOLO) use `index`, the
position in id order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import OutputError
from . import FormatOptions, coco_rle


def docs(root: Path, rels: list[str], what: str) -> Iterator[dict]:
    """Each image's coco-rle document ({"image": …, "annotations": […]}), read one at a time;
    OutputError naming the file (and `what` needed it) if one cannot be read back."""
    for rel in rels:
        src = coco_rle.outputs(root / rel)[0]
        try:
            yield json.loads(src.read_text())
        except (OSError, ValueError) as e:
            raise OutputError(f"{src}: cannot read it back for {what} ({e})") from None


@dataclass
class Categories:
    ids: dict[int, str] = field(default_factory=dict)  # category id → name, sorted by id
    by_name: dict[str, int] = field(default_factory=dict)
    default: int | None = None  # the id of options.category, when some mask has no category
    index: dict[int, int] = field(default_factory=dict)  # category id → 0, 1, … in id order (YOLO)

    @classmethod
    def scan(cls, root: Path, rels: list[str], options: FormatOptions, what: str) -> tuple[list[dict], Categories]:
        """One pass over the run's files: each image's {file_name, width, height[, id]}, and
        the run's categories."""
        named: dict[int, str | None] = {i: n for i, n in enumerate(options.categories, 1)}
        names: list[str] = []
        unnamed = False
        images = []
        for doc in docs(root, rels, what):
            images.append(doc["image"])
            for a in doc["annotations"]:
                if "category_id" in a:
                    named.setdefault(a["category_id"], a.get("category"))
                elif "category" in a:
                    names.append(a["category"])
                else:
                    unnamed = True
        c = cls({i: str(i) if n is None else n for i, n in named.items()},
                {n: i for i, n in named.items() if n is not None})
        next_id = max(named, default=0) + 1
        for n in dict.fromkeys(names):
            if n not in c.by_name:
                c.by_name[n], c.ids[next_id] = next_id, n
                next_id += 1
        if unnamed or not c.ids:
            c.default = c.by_name.get(options.category, next_id if c.ids else 1)
            c.ids[c.default] = options.category
            c.by_name.setdefault(options.category, c.default)
        c.ids = dict(sorted(c.ids.items()))
        c.index = {i: k for k, i in enumerate(c.ids)}
        return images, c

    def id_of(self, ann: dict) -> int:
        if "category_id" in ann:
            return ann["category_id"]
        return self.by_name[ann["category"]] if "category" in ann else self.default

    def name_of(self, ann: dict) -> str:
        return self.ids[self.id_of(ann)]

    def index_of(self, ann: dict) -> int:
        """0, 1, … in id order (YOLO's class numbers)."""
        return self.index[self.id_of(ann)]


def mask_of(ann: dict) -> np.ndarray:
    """H×W bool: an annotation's mask, decoded from its COCO RLE segmentation."""
    from pycocotools import mask as coco_mask

    seg = ann["segmentation"]
    return coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)


def polygon_parts(crop, options: FormatOptions) -> tuple[list[np.ndarray] | None, int]:
    """A mask's parts as polygons (polygons.crop_outline, parts under options.min_area left
    out), or None where polygons cannot hold it (it has holes, or no part is left): cvat and
    labelstudio then keep it as a mask. With the number of parts left out."""
    from ...polygons import crop_outline

    outline = crop_outline(crop, tolerance=options.tolerance, min_area=options.min_area)
    if outline.parts and not outline.holes:
        return outline.parts, outline.dropped
    return None, 0


def polygon_note(kept_masks: int, dropped: int, kept_as: str, options: FormatOptions) -> str:
    """cvat's and labelstudio's note on their polygons: masks kept as masks, parts left out."""
    why = "with holes or only parts under --polygon-min-area" if options.min_area else "with holes"
    said = [f"{kept_masks} masks {why} kept as {kept_as}"] if kept_masks else []
    said += [f"{dropped} parts under --polygon-min-area left out"] if dropped else []
    return "; ".join(said)


def iou_note(what: str, ious: list[float]) -> str:
    """'<what>: mean IoU … with the masks over N masks, lowest …' for a run-level output."""
    if not ious:
        return "no masks to outline"
    return (f"{what}: mean IoU {sum(ious) / len(ious):.4f} with the masks over {len(ious)} masks, "
            f"lowest {min(ious):.4f}")
