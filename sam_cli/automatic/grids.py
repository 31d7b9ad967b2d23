"""Point grids and crop boxes for automatic mode."""

from __future__ import annotations

import math
from itertools import product

import numpy as np


def point_grid(n_per_side: int) -> np.ndarray:
    """n²×2 cell-centre points in [0, 1] (x varies fastest)."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(n_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """Crop layer i uses n_per_side / downscale**i points per side."""
    return [point_grid(int(n_per_side / (downscale**i))) for i in range(n_layers + 1)]


def crop_boxes(
    hw: tuple[int, int], n_layers: int, overlap_ratio: float
) -> list[tuple[list[int], int]]:
    """[(XYXY half-open crop box, layer index)]; crop 0 is the whole image, layer i cuts it
    into 2^i × 2^i overlapping crops."""
    h, w = hw
    out: list[tuple[list[int], int]] = [([0, 0, w, h], 0)]
    short = min(h, w)

    def crop_len(orig: int, n: int, overlap: int) -> int:
        return int(math.ceil((overlap * (n - 1) + orig) / n))

    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * (2 / n))
        cw, ch = crop_len(w, n, overlap), crop_len(h, n, overlap)
        x0s = [int((cw - overlap) * i) for i in range(n)]
        y0s = [int((ch - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            out.append(([x0, y0, min(x0 + cw, w), min(y0 + ch, h)], layer))
    return out
