"""Upscaling SAM's low-res mask logits to an image's pixels, as the reference does in two
bilinear interpolations (256² → the padded 1024² input frame, crop the padding, → the
original size), done as one small matrix per axis instead: each is linear and separable, so
the map is Rh · logits · Rwᵀ (`axis_resize_matrix`), and a row of R has at most three
non-zeros, so the matmuls run band by band (`resize_bands`, `banded_matmul`).

Used by the predictor (`sam segment`), the automatic generator's dense path, and its tiled
path (`automatic/tiled.py`), which reads the same matrices tile by tile.
"""

from __future__ import annotations

import functools

import torch
from torch.nn import functional as F


@functools.lru_cache(maxsize=64)
def linear_resize_weights(n_in: int, n_out: int) -> torch.Tensor:
    """n_in×n_out float32 weights of PyTorch's linear resize (half-pixel centres, no
    antialias), read off its own kernel applied to identity rows."""
    return F.interpolate(torch.eye(n_in)[None], size=n_out, mode="linear", align_corners=False)[0]


@functools.lru_cache(maxsize=64)
def axis_resize_matrix(n_low: int, n_mid: int, keep: int, n_out: int) -> torch.Tensor:
    """n_out×n_low matrix of one axis of: linear resize n_low → n_mid, keep the first `keep`
    samples, linear resize keep → n_out (half-pixel centres, no antialias).

    The weights are read off float32 interpolations of identity rows, so they are exactly the
    ones PyTorch's kernels use; the two stages are composed in float64. Each row has at most
    three non-zeros.
    """
    first = linear_resize_weights(n_low, n_mid)[:, :keep]
    second = linear_resize_weights(keep, n_out)
    return (first.double() @ second.double()).t().float().contiguous()


@functools.lru_cache(maxsize=64)
def low_res_needed(n_low: int, n_mid: int, keep: int) -> int:
    """How many leading low-res samples the first `keep` of n_mid resized ones depend on."""
    used = linear_resize_weights(n_low, n_mid)[:, :keep].abs().sum(1).nonzero()
    return int(used.max()) + 1


@functools.lru_cache(maxsize=64)
def resize_bands(
    n_low: int, n_mid: int, keep: int, n_out: int, rows_per_band: int = 256
) -> tuple[tuple[int, int, int, int], ...]:
    """(j0, j1, k0, k1) per band of rows_per_band output rows of `axis_resize_matrix`'s
    matrix r: every non-zero of rows j0:j1 lies in columns k0:k1."""
    r = axis_resize_matrix(n_low, n_mid, keep, n_out)
    nz = r != 0
    out = []
    for j0 in range(0, r.shape[0], rows_per_band):
        j1 = min(r.shape[0], j0 + rows_per_band)
        cols = nz[j0:j1].any(0).nonzero()
        out.append((j0, j1, int(cols[0]), int(cols[-1]) + 1) if len(cols) else (j0, j1, 0, 1))
    return tuple(out)


def banded_matmul(r: torch.Tensor, bands, x: torch.Tensor) -> torch.Tensor:
    """r @ x for a resize matrix r (n_out×n_in, a few non-zeros per row, in `bands`) and
    x B×n_in×m → B×n_out×m, multiplying only each band's columns: upscaling 256 low-res
    samples to 4000 pixels reads ~18 of them per band of 256 pixels, 1/14 of a dense matmul's
    work. The terms left out are exact zeros."""
    out = x.new_empty(x.shape[0], r.shape[0], x.shape[2])
    for j0, j1, k0, k1 in bands:
        torch.matmul(r[j0:j1, k0:k1], x[:, k0:k1], out=out[:, j0:j1])
    return out


def upscale_logits(
    low_res: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int], img_size: int,
    low_size: int | None = None,
) -> torch.Tensor:
    """…×256×256 logits → …×H×W: to the padded input frame, crop the padding, to the original.
    low_res may also hold only the leading rows and columns of the low_size×low_size logits
    (Predictor.decode with image_part_only): the missing ones have weight 0 here. low_size
    defaults to img_size / 4, SAM's low-res mask size.

    The reference runs this as two bilinear interpolations through a 1024×1024 intermediate.
    Both are linear and separable, so the same map is Rh · logits · Rwᵀ with one small matrix
    per axis (`axis_resize_matrix`): two banded matmuls (`banded_matmul`), no intermediate,
    and no work on the padding.
    The result is a transposed view of W×H (column-major) storage: that order makes the second
    matmul 1.7x faster on a CPU, and it is the order COCO RLE reads pixels in, so encoding
    needs no transpose. Call .contiguous() where row-major memory matters.
    Results agree with the two-pass version to float32 rounding (max |Δ| ≈ 2e-6 on logits of
    magnitude 10, and no pixel changes side of the threshold: tests/test_masks.py).
    """
    lead = low_res.shape[:-2]
    lh, lw = low_res.shape[-2:]
    low_size = low_size or img_size // 4
    ah = (low_size, img_size, input_hw[0], orig_hw[0])
    aw = (low_size, img_size, input_hw[1], orig_hw[1])
    rh, rw = axis_resize_matrix(*ah), axis_resize_matrix(*aw)
    if rh[:, lh:].any() or rw[:, lw:].any():
        raise ValueError(f"low-res logits {lh}×{lw} miss rows or columns this image needs")
    bh, bw = resize_bands(*ah), resize_bands(*aw)  # all non-zeros are in the first lh, lw columns
    rh = rh[:, :lh].to(device=low_res.device, dtype=low_res.dtype)
    rw = rw[:, :lw].to(device=low_res.device, dtype=low_res.dtype)
    rows = banded_matmul(rh, bh, low_res.reshape(-1, lh, lw))  # …×H×lw
    x = banded_matmul(rw, bw, rows.transpose(-1, -2))  # …×W×H
    return x.reshape(*lead, orig_hw[1], orig_hw[0]).transpose(-1, -2)


def upscale_in_frame(
    net, low: torch.Tensor, input_hw: tuple[int, int], out_hw: tuple[int, int]
) -> torch.Tensor:
    """A network's low-res logits (whole, or their leading rows and columns) → …×out_hw, through
    the frame its upscale_frame(input_hw) names (models/__init__.py): every family's upscale."""
    size, keep_hw = net.upscale_frame(input_hw)
    return upscale_logits(low, keep_hw, out_hw, size, low_size=net.low_res_hw[0])
