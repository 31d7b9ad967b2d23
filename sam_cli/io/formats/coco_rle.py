"""coco-rle: x.jpg.json, `{"image": {file_name, width, height[, id]}, "annotations": [...]}`
with the reference's coco_rle records (a prompted run's: records.annotation). The image's id
is the prompt file's, when it gives one."""

from __future__ import annotations

from pathlib import Path

from .. import writers
from . import ImageOutput


def outputs(base: Path) -> list[Path]:
    return [base.with_name(base.name + ".json")]


def count(base: Path) -> int | None:
    import json

    try:
        return len(json.loads(outputs(base)[0].read_text())["annotations"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(img: ImageOutput) -> None:
    h, w = img.image.shape[:2]
    image = {"file_name": img.file_name, "width": w, "height": h}
    if img.image_id is not None:
        image["id"] = img.image_id
    doc = {"image": image,
           "annotations": img.annotations}
    writers.write_json(outputs(img.base)[0], doc)
