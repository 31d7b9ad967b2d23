"""Resize to the model's input frame and map coordinates into it.

The reference resizes with Pillow's antialiased bilinear filter on uint8. `resize_uint8`
reproduces that filter bit for bit (same coefficients, same 22-bit fixed point, same choice of
pass order), so `sam` needs no Pillow and still feeds the encoder exactly the same pixels.
The sums run in int32 arithmetic, exact on every device. On a GPU the image is resized where
the encoder reads it (torch). On the CPU numpy resizes it in bands of rows (or columns) on
torch's thread count: each band's int32 sums stay in cache, where the torch way's whole-image
int32 tensors made a 12 MP photo's resize 2.3x slower than the reference's Pillow
(`scripts/benchmark.py --rows resize-12mp`, README).
"""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

_PRECISION_BITS = 32 - 8 - 2
#: rows (or columns) per band of the CPU resize: ~3 MB of int32 sums for a 1024-wide output
_BAND = 128


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
    """One pass over an H×W×C uint8 tensor along `axis` (0: rows, 1: columns) → uint8, on its
    device."""
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


@functools.lru_cache(maxsize=32)
def _band_taps(
    in_size: int, out_size: int, axis: int, channels: int,
) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """The CPU pass's taps, once per pass rather than per band: (source indices, weights) for
    each tap some output reaches (the trailing ones may reach none; an index clamped at the
    edge has weight 0). Along axis 1 they index the bytes of a row (W·C), gathered singly,
    which is faster than C-byte pixels."""
    starts, fixed = _coefficients(in_size, out_size)
    if axis == 1:
        starts = (starts[:, None] * channels + np.arange(channels)).ravel()
        fixed, step, wshape = np.repeat(fixed, channels, axis=0), channels, (1, -1)
    else:
        step, wshape = 1, (-1, 1, 1)
    last = in_size * step - 1
    return tuple(
        (np.minimum(starts + j * step, last), fixed[:, j].reshape(wshape))
        for j in range(fixed.shape[1]) if fixed[:, j].any()
    )


def _resample_band(src: np.ndarray, out: np.ndarray, axis: int, taps) -> None:
    """One pass of one band: src H×W×C uint8 → out (the same band resized along axis; for
    axis 1 both are whole rows, so contiguous) with _band_taps' taps."""
    if axis == 1:
        src, out = src.reshape(src.shape[0], -1), out.reshape(out.shape[0], -1)
    acc = np.full(out.shape, 1 << (_PRECISION_BITS - 1), dtype=np.int32)
    term = np.empty(out.shape, dtype=np.int32)
    for idx, weights in taps:
        np.multiply(np.take(src, idx, axis), weights, out=term)
        acc += term
    acc >>= _PRECISION_BITS
    np.clip(acc, 0, 255, out=out, casting="unsafe")


@functools.lru_cache(maxsize=4)
def _band_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sam-resize")


def _resample_axis_numpy(img: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One pass over H×W×C uint8 along `axis`, in bands across the other axis, on as many
    threads as torch uses (numpy's loops release the GIL)."""
    across = 1 - axis
    shape = list(img.shape)
    shape[axis] = out_size
    out = np.empty(shape, dtype=np.uint8)
    taps = _band_taps(img.shape[axis], out_size, axis, img.shape[2])

    def band(start: int) -> None:
        sl = [slice(None)] * img.ndim
        sl[across] = slice(start, start + _BAND)
        _resample_band(img[tuple(sl)], out[tuple(sl)], axis, taps)

    starts = range(0, img.shape[across], _BAND)
    threads = min(torch.get_num_threads(), len(starts))
    if threads > 1:
        list(_band_pool(threads).map(band, starts))
    else:
        for start in starts:
            band(start)
    return out


def _two_passes(img, size: tuple[int, int], resample):
    """Both passes of the resize, in Pillow's order (the vertical one first when it shrinks
    height much more than width), each by resample(img, out_size, axis); a side already at
    its size is not resampled."""
    dy, dx = img.shape[0] - size[0], img.shape[1] - size[1]
    out = img
    for axis in (0, 1) if dy > 0 and dy > 2 * dx else (1, 0):
        if out.shape[axis] != size[axis]:
            out = resample(out, size[axis], axis)
    return out


def resize_uint8_torch(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """resize_uint8 in torch, on the tensor's device (the way for accelerators)."""
    return _two_passes(img, size, _resample_axis).contiguous()


def resize_uint8(
    img: np.ndarray | torch.Tensor, size: tuple[int, int],
) -> np.ndarray | torch.Tensor:
    """H×W×C uint8 → size (h, w), Pillow-identical antialiased bilinear. A numpy array gives
    a numpy array; a tensor gives a tensor on its own device (an accelerator's resized there,
    a CPU tensor's by the numpy bands)."""
    if isinstance(img, torch.Tensor) and img.device.type != "cpu":
        return resize_uint8_torch(img, size)
    as_numpy = isinstance(img, np.ndarray)
    src = np.ascontiguousarray(img if as_numpy else img.numpy())
    out = np.ascontiguousarray(_two_passes(src, size, _resample_axis_numpy))
    return out if as_numpy else torch.from_numpy(out)


def scale_coords(coords: np.ndarray, orig_hw: tuple[int, int], new_hw: tuple[int, int]) -> np.ndarray:
    """…×2 XY pixel coordinates in the original image → the resized frame (float64)."""
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] = out[..., 0] * (new_hw[1] / orig_hw[1])
    out[..., 1] = out[..., 1] * (new_hw[0] / orig_hw[0])
    return out
