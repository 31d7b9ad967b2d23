"""cvat: annotations.xml, one CVAT for images 1.1 file for the run, to import into a CVAT
task (Actions → Upload annotations → CVAT 1.1) over the same images. Written at the end from
the per-image coco-rle files (REQUIRES), when every label is known.

Each mask is a `<mask>` element: CVAT's RLE, the run lengths of the mask's box (left, top,
width, height) in row-major order, starting with a run of background, as CVAT exports masks
and datumaro reads them. With options.polygons, a mask without holes is `<polygon>` elements
instead, one per part, grouped (group_id) when there are several; a mask with holes, which a
CVAT polygon cannot hold, stays a `<mask>`. Masks are layered by size (z_order: the smallest
on top), and each carries its score (the detector's, else the predicted IoU, held to 0..1 as
the label's attribute declares) as an attribute."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from .. import writers
from . import FormatOptions, ImageOutput
from .dataset import Categories, docs, mask_of, polygon_note, polygon_parts

REQUIRES = ("coco-rle",)
CVAT_FILE = "annotations.xml"


def outputs(base: Path) -> list[Path]:
    return []  # per image, coco-rle's file (REQUIRES)


def write(img: ImageOutput) -> None:
    pass


def crop_rle(mask: np.ndarray) -> list[int]:
    """h×w bool → CVAT's run lengths, row-major, starting with a (possibly empty) run of 0s."""
    flat = mask.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return [0, *runs] if flat.size and flat[0] else runs


def finish(root: Path, rels: list[str], options: FormatOptions | None = None) -> tuple[Path, str]:
    from ...masks import mask_crop

    options = options or FormatOptions()
    images, cats = Categories.scan(root, rels, options, CVAT_FILE)
    path = root / CVAT_FILE
    kept_masks = dropped = 0
    with writers.atomic_open(path) as f:
        def put(text: str) -> None:
            f.write(text.encode())

        put('<?xml version="1.0" encoding="utf-8"?>\n<annotations>\n  <version>1.1</version>\n  <meta>\n'
            f"    <task>\n      <name>sam</name>\n      <size>{len(images)}</size>\n"
            "      <mode>annotation</mode>\n      <labels>\n")
        for name in cats.ids.values():
            put(f"        <label>\n          <name>{escape(name)}</name>\n          <attributes>\n"
                "            <attribute>\n              <name>score</name>\n              <mutable>False</mutable>\n"
                "              <input_type>number</input_type>\n              <default_value>0</default_value>\n"
                "              <values>0;1;0.000001</values>\n            </attribute>\n          </attributes>\n"
                "        </label>\n")
        put("      </labels>\n    </task>\n  </meta>\n")
        group = 0
        for k, (im, doc) in enumerate(zip(images, docs(root, rels, CVAT_FILE))):
            put(f'  <image id="{k}" name={quoteattr(im["file_name"])} width="{im["width"]}" height="{im["height"]}">\n')
            anns = doc["annotations"]
            order = sorted(range(len(anns)), key=lambda i: -anns[i]["area"])  # z: smallest on top
            z = {i: rank for rank, i in enumerate(order)}
            for i, a in enumerate(anns):
                crop = mask_crop(mask_of(a))
                if crop.mask.size == 0:
                    continue  # CVAT has no empty mask
                common = (f'label={quoteattr(cats.name_of(a))} source="auto" occluded="0" z_order="{z[i]}"')
                score = min(1.0, max(0.0, a.get("score", a["predicted_iou"])))  # the range declared
                attr = f'      <attribute name="score">{score:.6g}</attribute>\n'
                parts, left_out = polygon_parts(crop, options) if options.polygons else (None, 0)
                dropped += left_out
                if parts is not None:
                    grouped = ""
                    if len(parts) > 1:
                        group += 1
                        grouped = f' group_id="{group}"'
                    for part in parts:
                        pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in part)
                        put(f'    <polygon {common}{grouped} points="{pts}">\n{attr}    </polygon>\n')
                    continue
                kept_masks += options.polygons
                h, w = crop.mask.shape
                rle = ",".join(map(str, crop_rle(crop.mask)))
                put(f'    <mask {common} rle="{rle}" left="{crop.x0}" top="{crop.y0}" width="{w}" height="{h}">\n'
                    f"{attr}    </mask>\n")
            put("  </image>\n")
        put("</annotations>\n")
    note = polygon_note(kept_masks, dropped, "masks", options)
    return path, note
