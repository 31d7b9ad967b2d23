"""Resize to the model's input frame and map coordinates into it.

The reference resizes with Pillow's antialiased bilinear filter on uint8. `resize_uint8`
reproduces that filter bit for bit (same coefficients, same 22-bit fixed point, same choice of
pass order), so `sam` needs no Pillow and still feeds the encoder exactly the same pixels.
The sums run in int32 torch arithmetic, exact on every device: on a GPU the image is resized
where the encoder reads it, and on the CPU torch's threads share the work.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

_PRECISION_BITS = 32 - 8 - 2


def target_size(h: int, w: int, long_side: int) -> tuple[int, int]:
    """(new_h, new_w) with the longest side equal to long_side, aspect kept. A side that
    would round to 0 pixels (a 1×3000 strip) gets 1, where the reference's resize fails."""
    scale = long_side * 1.0 / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


@functools.lru_cache(maxsize=32)
def _coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's fixed-point bilinear taps for one axis: (first input index per output,
    out_size int64; weights out_size×K int32, taps past the edge weighted 0).

    All outputs at once, in the same float64 operations and order as Pillow's per-output C
    loop (its weight sum is sequential, and so is this one)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale
    ksize = int(np.ceil(support)) * 2 + 1
    center = (np.arange(out_size, dtype=np.float64) + 0.5) * scale
    xmin = np.maximum((center - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((center + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)[None, :]
    wts = np.maximum(0.0, 1.0 - np.abs((taps + xmin[:, None] - center[:, None] + 0.5) / filterscale))
    wts[taps >= xmax[:, None]] = 0.0
    total = np.zeros(out_size, dtype=np.float64)
    for j in range(ksize):  # sequential, as Pillow sums (the trailing zeros change nothing)
        total = total + wts[:, j]
    wts = np.where(total[:, None] != 0.0, wts / np.where(total == 0.0, 1.0, total)[:, None], wts)
    scaled = wts * (1 << _PRECISION_BITS)
    fixed = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5)).astype(np.int32)
    return xmin, fixed


def _resample_axis(img: torch.Tensor, out_size: int, axis: int) -> torch.Tensor:
    """One pass over H×W×C uint8 along `axis` (0: rows, 1: columns) → uint8."""
    in_size = img.shape[axis]
    starts, fixed = _coefficients(in_size, out_size)
    dev = img.device
    src = img.to(torch.int32)
    out_shape = list(img.shape)
    out_shape[axis] = out_size
    acc = torch.full(out_shape, 1 << (_PRECISION_BITS - 1), dtype=torch.int32, device=dev)
    wshape = [1] * img.dim()
    wshape[axis] = out_size
    starts_t = torch.from_numpy(starts).to(dev)
    weights = torch.from_numpy(fixed).to(dev)
    for j in range(fixed.shape[1]):
        idx = (starts_t + j).clamp_(max=in_size - 1)  # a clamped tap has weight 0
        acc.addcmul_(src.index_select(axis, idx), weights[:, j].view(wshape))
    return acc.bitwise_right_shift_(_PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


def resize_uint8(
    img: np.ndarray | torch.Tensor, size: tuple[int, int],
) -> np.ndarray | torch.Tensor:
    """H×W×C uint8 → size (h, w), Pillow-identical antialiased bilinear. A numpy array gives
    a numpy array (resized on the CPU); a tensor is resized on its device and stays there."""
    as_numpy = isinstance(img, np.ndarray)
    t = torch.from_numpy(np.ascontiguousarray(img)) if as_numpy else img
    h, w = size
    dy, dx = t.shape[0] - h, t.shape[1] - w
    # Pillow runs the vertical pass first when it shrinks height much more than width.
    order = (0, 1) if dy > 0 and dy > 2 * dx else (1, 0)
    out = t
    for axis in order:
        if out.shape[axis] != size[axis]:
            out = _resample_axis(out, size[axis], axis)
    out = out.contiguous()
    return out.numpy() if as_numpy else out


def scale_coords(coords: np.ndarray, orig_hw: tuple[int, int], new_hw: tuple[int, int]) -> np.ndarray:
    """…×2 XY pixel coordinates in the original image → the resized frame (float64)."""
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * (new_hw[1] / orig_hw[1])
    out[..., 1] = out[..., 1] * (new_hw[0] / orig_hw[0])
    return out
