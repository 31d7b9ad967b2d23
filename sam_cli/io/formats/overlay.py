"""overlay: x.jpg.overlay.jpg, the masks in colour over the photo, for people to look at."""

from __future__ import annotations

from pathlib import Path

from ... import masks as M
from .. import writers
from . import ImageOutput


def outputs(base: Path) -> list[Path]:
    return [base.with_name(base.name + ".overlay.jpg")]


def write(img: ImageOutput) -> None:
    crops = [M.rle_to_crop(r.rle) for r in img.records]
    writers.write_image(outputs(img.base)[0], writers.overlay_crops(img.image, crops))
