"""label-map: x.jpg.labels.png, 16-bit; each pixel is 1 + the index of the smallest mask
covering it, 0 where none."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ... import masks as M
from .. import writers
from . import ImageOutput


def outputs(base: Path) -> list[Path]:
    return [base.with_name(base.name + ".labels.png")]


def label_map(records: list[M.MaskRecord], hw: tuple[int, int]) -> np.ndarray:
    """H×W uint16: each pixel is 1 + the index of the smallest mask covering it, else 0."""
    out = np.zeros(hw, dtype=np.uint16)
    order = sorted(range(len(records)), key=lambda i: -records[i].area)
    for i in order:  # largest first, so smaller masks paint over them
        crop = M.rle_to_crop(records[i].rle)  # only the mask's box is decoded and painted
        out[crop.window][crop.mask] = min(i + 1, 65535)
    return out


def write(img: ImageOutput) -> None:
    lm = label_map(img.records, img.image.shape[:2])
    writers.atomic_write_bytes(outputs(img.base)[0], writers.encode_png(lm))
