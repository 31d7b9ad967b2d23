"""yolo-seg: a dataset Ultralytics trains on as it is: images/a/x.jpg (a link to the image
read, or a copy: options.yolo_images), labels/a/x.txt beside it with a line per mask
`class x1 y1 … xn yn` (vertices normalised to 0..1 of the image's width and height), and
data.yaml with its train and val images and the classes' names. Labels
are written at the end of the run from the per-image coco-rle files (REQUIRES), when every
class of the run is known: classes are numbered 0, 1, … in the order of the categories' ids
(dataset.Categories: a prompt file's ids, then names as they first come, then
options.category for masks without one).

A line holds one polygon, traced through the boundary pixels' centres, which OpenCV's fillPoly
(what YOLO's data loaders rasterise with) fills back exactly; a mask's holes are joined to its
outline by zero-width corridors (polygons.single_polygon). A mask of several parts is one line
of them all joined the same way, a line per part, or its largest part (options.yolo_parts,
formats.YOLO_PARTS). Filled back, a corridor covers the pixels it runs along. The note says how
close the filled polygons come to the masks (mean IoU), and how many masks had several parts.

Two images whose label files would have one name (a/x.jpg and a/x.png) are a collision: the
second's labels are not written, and the run fails with both named."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import OutputError
from ...names import yaml_quoted
from .. import writers
from . import FormatOptions, ImageOutput
from .dataset import Categories, docs, iou_note, mask_of

REQUIRES = ("coco-rle",)
LABELS = "labels"
DATA_YAML = "data.yaml"


def label_path(root: Path, rel: str) -> Path:
    return root / LABELS / Path(rel).with_suffix(".txt")


IMAGES = "images"


def outputs(base: Path) -> list[Path]:
    return []  # per image, coco-rle's file (REQUIRES); the labels are written at the end


def write(img: ImageOutput) -> None:
    """The image into images/ (as Ultralytics finds labels: images/ → labels/)."""
    how = img.options.yolo_images
    if how == "none" or img.source is None:
        return
    root = img.base.parents[len(Path(img.file_name).parts) - 1]
    dest = root / IMAGES / img.file_name
    if how == "copy" or not isinstance(img.source, Path):  # a tar member has no file to link
        writers.atomic_write_bytes(dest, img.source.read_bytes())
    else:
        writers.atomic_link(dest, img.source)


def finish(root: Path, rels: list[str], options: FormatOptions | None = None) -> tuple[Path, str]:
    options = options or FormatOptions()
    _, cats = Categories.scan(root, rels, options, LABELS + "/")
    classes = list(cats.ids.values())
    ious: list[float] = []
    owner: dict[Path, str] = {}
    collisions = []
    several = dropped = duplicates = 0  # masks of several parts; parts left out; lines given twice
    # the labels/ folder whole or not at all: filled under a temporary name, renamed at the end
    with writers.atomic_dir(root / LABELS) as folder:
        for rel, doc in zip(rels, docs(root, rels, LABELS + "/")):
            path = label_path(root, rel)
            if owner.setdefault(path, rel) != rel:
                collisions.append(f"{rel} (its labels would be {path}, as {owner[path]}'s are)")
                continue
            lines, counts = _label_lines(doc, cats, options, ious)
            several, dropped, duplicates = several + counts[0], dropped + counts[1], duplicates + counts[2]
            dest = folder / Path(rel).with_suffix(".txt")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text("\n".join(lines) + "\n" if lines else "")
    # Ultralytics: `train` and `val` image folders of the dataset, whose labels it finds by
    # replacing images/ with labels/ (one set of images for both: split them for real training).
    # No `path`: Ultralytics then takes data.yaml's own folder as the dataset's, so the folder
    # can be moved or copied to another machine (an absolute path would not follow it)
    yaml = ["# a YOLO segmentation dataset written by sam (train and val are the same images)",
            f"train: {IMAGES}", f"val: {IMAGES}", f"nc: {len(classes)}", "names:"] + \
        [f"  {k}: {yaml_quoted(n)}" for k, n in enumerate(classes)]
    writers.atomic_write_bytes(root / DATA_YAML, ("\n".join(yaml) + "\n").encode())
    if collisions:
        raise OutputError(f"{root / LABELS}: label files of several images would have one name: "
                          + "; ".join(collisions))
    note = iou_note("polygons filled as YOLO loaders do", ious)
    if several:
        how = {"join": "joined into one line by corridors (--yolo-parts split: a line per part)",
               "split": "written as a line per part", "largest": "cut to their largest part"}
        note += f"; {several} masks of several parts {how[options.yolo_parts]}"
    if dropped:
        note += f"; {dropped} parts left out"
    if duplicates:
        note += f"; {duplicates} lines left out as the same class and polygon as another of their image's"
    if options.yolo_images == "none":
        note += f"; no {IMAGES}/ (--yolo-images none): put the images there to train"
    return root / LABELS, note


def _label_lines(doc: dict, cats: Categories, options: FormatOptions, ious: list[float]) -> tuple[list[str], tuple]:
    """One image's label lines, each mask's IoU with its filled polygons added to `ious`;
    with (masks of several parts, parts left out, lines left out as given twice)."""
    from ...masks import mask_crop
    from ...polygons import crop_outline, fill_polygon

    w, h = doc["image"]["width"], doc["image"]["height"]
    lines: list[str] = []
    seen: set[str] = set()
    several = dropped = duplicates = 0
    for a in doc["annotations"]:
        crop = mask_crop(mask_of(a))
        outline = crop_outline(crop, tolerance=options.tolerance, min_area=options.min_area, centres=True)
        several += len(outline.parts) > 1
        dropped += outline.dropped
        polys = line_polygons(outline, options.yolo_parts)
        dropped += len(outline.parts) - len(polys) if options.yolo_parts == "largest" else 0
        # the corridors join vertices, so each polygon stays inside the mask's box
        filled = np.zeros(crop.mask.shape, bool)
        for poly in polys:
            filled |= fill_polygon(poly - [crop.x0, crop.y0], crop.mask.shape)
            xy = np.clip(poly / [w, h], 0, 1)
            line = f"{cats.index_of(a)} " + " ".join(f"{v:.6f}" for v in xy.ravel())
            if line in seen:  # a part two masks share: a loader drops the second as a duplicate
                duplicates += 1
                continue
            seen.add(line)
            lines.append(line)
        union = int((filled | crop.mask).sum())
        ious.append(float((filled & crop.mask).sum() / union) if union else 1.0)
    return lines, (several, dropped, duplicates)


def line_polygons(outline, how: str) -> list[np.ndarray]:
    """The polygons (K×2, image pixels) of one mask's label lines: one (`join`, the parts and
    holes by polygons.single_polygon), one per part (`split`, each with its holes joined), or
    the largest part's (`largest`); none for an empty outline."""
    from ...polygons import Outline, single_polygon

    if not outline.parts:
        return []
    if how == "join":
        return [single_polygon(outline)]
    keep = range(len(outline.parts))
    if how == "largest":
        keep = [max(keep, key=lambda i: abs(_area(outline.parts[i])))]
    return [single_polygon(Outline([outline.parts[i]], [q for q, p in zip(outline.holes, outline.hole_parts) if p == i],
                                   [0] * outline.hole_parts.count(i))) for i in keep]


def _area(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
