"""Resize to the model's input frame and map coordinates into it.

The reference resizes with Pillow's antialiased bilinear filter on uint8. `resize_uint8`
reproduces that filter bit for bit (same coefficients, same 22-bit fixed point, same choice of pass order)
with numpy, so `sam` needs no Pillow and still feeds the encoder exactly the same pixels.
"""

from __future__ import annotations

import numpy as np

_PRECISION_BITS = 32 - 8 - 2


def target_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side equal to long_side, aspect kept."""
    scale = long_side * 1.0 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Fixed-point bilinear taps: (starts out_size, weights out_size×K int64)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    starts = np.zeros(out_size, dtype=np.int64)
    weights = np.zeros((out_size, ksize), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        x = np.arange(xmax, dtype=np.float64)
        wts = np.maximum(0.0, 1.0 - np.abs((x + xmin - center + 0.5) / filterscale))
        total = wts.sum()
        if total != 0.0:
            wts = wts / total
        weights[xx, :xmax] = wts
        starts[xx] = xmin
    scaled = weights * (1 << _PRECISION_BITS)
    fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int64)
    return starts, fixed


def _resample_axis(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    in_size = img.shape[axis]
    starts, fixed = _coefficients(in_size, out_size)
    k = fixed.shape[1]
    src = np.moveaxis(img, axis, 0).astype(np.int64)
    # Pad so every tap index is valid; padded taps carry weight 0.
    src = np.concatenate([src, np.zeros((k,) + src.shape[1:], dtype=np.int64)], axis=0)
    acc = np.full((out_size,) + src.shape[1:], 1 << (_PRECISION_BITS - 1), dtype=np.int64)
    shape = (out_size,) + (1,) * (src.ndim - 1)
    for j in range(k):
        acc += src[starts + j] * fixed[:, j].reshape(shape)
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return np.moveaxis(out, 0, axis)


def resize_uint8(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H×W×C uint8 → size (h, w), Pillow-identical antialiased bilinear (horizontal pass first)."""
    h, w = size
    dy, dx = img.shape[0] - h, img.shape[1] - w
    # Pillow runs the vertical pass first when it shrinks height much more than width.
    order = (0, 1) if dy > 0 and dy > 2 * dx else (1, 0)
    out = img
    for axis in order:
        if out.shape[axis] != size[axis]:
            out = _resample_axis(out, size[axis], axis)
    return np.ascontiguousarray(out)


def scale_coords(coords: np.ndarray, orig_hw: tuple[int, int], new_hw: tuple[int, int]) -> np.ndarray:
    """…×2 XY pixel coordinates in the original image → the resized frame (float64)."""
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * (new_hw[1] / orig_hw[1])
    out[..., 1] = out[..., 1] * (new_hw[0] / orig_hw[0])
    return out
