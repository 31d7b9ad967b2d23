"""overlay: x.jpg.overlay.jpg, the masks in colour over the photo, for people to look at; a
prompted run's with its prompts drawn too (boxes, and points green or red)."""

from __future__ import annotations

from pathlib import Path

from ... import masks as M
from .. import writers
from . import ImageOutput


def outputs(base: Path) -> list[Path]:
    return [base.with_name(base.name + ".overlay.jpg")]


def write(img: ImageOutput) -> None:
    crops = [M.rle_to_crop(r.rle) for r in img.records]
    picture = writers.overlay_crops(img.image, crops)
    if img.prompted:
        points, labels, boxes, seen = [], [], [], set()
        for r in img.records:
            if r.object_index in seen:  # an object's three masks share its prompts
                continue
            seen.add(r.object_index)
            boxes += [r.prompt["box"]] if "box" in r.prompt else []
            points += r.prompt.get("points", [])
            labels += r.prompt.get("point_labels", [])
        writers.draw_prompts(picture, points, labels, boxes)
    writers.write_image(outputs(img.base)[0], picture)
