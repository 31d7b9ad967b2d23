"""A mask's full-resolution stability, box and RLE from its low-res logits, upscaling only the
tiles near its boundary.

An upscaled logit is a weighted mean of a few low-res logits: bilinear weights are
non-negative and sum to 1 (`upscale.axis_resize_matrix`). So when every low-res logit that a
tile of output pixels reads lies clearly above a threshold (by more than float32 rounding can
move a weighted mean), every pixel of the tile does too, and likewise below. Only the other
tiles, along the mask's boundaries, are upscaled, with the same matrices as
`upscale.upscale_logits`. The rest of each output comes from tile counts: a stability score
is a ratio of pixel counts, a box the extent of the pixels, and an uncompressed RLE the
positions where the column-major pixel sequence changes value, which inside a uniform tile it
never does.

On a 12 MP photo a mask of a few regions with crisp edges needs ~200 of the photo's ~3000
tiles of 64² pixels upscaled, so this skips most of the work of `upscale_logits` + threshold
+ count + boxes + RLE (9x less time in `scripts/cpu_profile.py --masks`), and never holds a
full-resolution float mask. The outputs are the reference's two-pass upscaling's, to float32
rounding at pixels within ~1e-4 of a threshold (tests/test_masks.py).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..masks import RunEdges, count_true
from ..upscale import axis_resize_matrix, resize_bands

#: Output pixels per tile side. Smaller tiles hug a boundary closer (fewer pixels upscaled) but
#: cost more bookkeeping per pixel; 64 was the fastest of 32 / 64 / 128 for 12 MP masks
#: (`scripts/cpu_profile.py --masks --tiles 32,64,128`).
TILE = 64

#: A tile is decided without upscaling when its low-res logits clear the threshold by this
#: fraction of their largest magnitude. The upscaled value is a weighted mean of ≤ 3 logits per
#: axis (weights ≥ 0 whose sum is within 3e-8 of 1, for photos from 1 to 12000 pixels a side)
#: computed in float32: rounding moves it by less than ~1e-6 of that magnitude, so 1e-4 leaves
#: a wide safety factor.
MARGIN = 1e-4


@dataclass(frozen=True)
class _Axis:
    """One axis of the resize, cut into tiles of `tile` output pixels."""

    start: torch.Tensor  # nT int64: first low-res index a tile reads
    weights: torch.Tensor  # nT×tile×span float32: the resize matrix's rows of the tile
    origin: torch.Tensor  # nT int64: the tile's first output pixel
    size: torch.Tensor  # nT int64: output pixels in the tile (the last one may be short)
    span: int  # low-res samples read per tile (padded to the widest tile)


@functools.lru_cache(maxsize=32)
def _axis(n_low: int, img_size: int, keep: int, n_out: int, n_avail: int, tile: int) -> _Axis:
    """Tiles of the n_out×n_low resize matrix (`axis_resize_matrix`), whose non-zeros all lie
    in the first n_avail columns (the low-res samples the caller has)."""
    r = axis_resize_matrix(n_low, img_size, keep, n_out)
    if r[:, n_avail:].any():
        raise ValueError(f"{n_avail} low-res samples miss some that {n_out} pixels read")
    bands = resize_bands(n_low, img_size, keep, n_out, rows_per_band=tile)  # (j0, j1, k0, k1)
    span = min(n_avail, max(k1 - k0 for _, _, k0, k1 in bands))
    n_t = len(bands)
    start = torch.tensor([min(k0, n_avail - span) for _, _, k0, _ in bands], dtype=torch.long)
    weights = torch.zeros(n_t, tile, span)
    for t, (j0, j1, _, _) in enumerate(bands):
        k0 = int(start[t])
        weights[t, : j1 - j0] = r[j0:j1, k0 : k0 + span]
    size = torch.tensor([j1 - j0 for j0, j1, _, _ in bands], dtype=torch.long)
    return _Axis(start, weights, torch.arange(n_t) * tile, size, span)


class TiledMasks:
    """n masks' low-res logits (n×lh×lw, the leading rows and columns of the low_size² logits
    as `upscale_logits` takes them) → their full-resolution stability scores, boxes and RLEs
    in an out_hw frame, binarised at threshold (stability at threshold ± offset).

    Construction only sorts the tiles (`undecided`: the share that needs upscaling); the first
    use of `stability` (n float32) or `boxes` (n×4 XYXY inclusive in the out_hw frame,
    [0, 0, 0, 0] for an empty mask, as `masks.masks_to_boxes`) upscales the undecided tiles.
    `run_edges()` gives the RLEs of any subset, placed in a larger image."""

    def __init__(
        self, low: torch.Tensor, input_hw: tuple[int, int], out_hw: tuple[int, int],
        img_size: int, threshold: float, offset: float, *, low_size: int | None = None,
        tile: int = TILE,
    ) -> None:
        low = low.float()
        n, lh, lw = low.shape
        low_size = low_size or img_size // 4
        self.ah = ah = _axis(low_size, img_size, input_hw[0], out_hw[0], lh, tile)
        self.aw = aw = _axis(low_size, img_size, input_hw[1], out_hw[1], lw, tile)
        self.out_hw, self.tile, self.n = out_hw, tile, n
        taus = (threshold - offset, threshold, threshold + offset)

        # each tile's low-res block: min, max and the margin that decides it
        rows = low[:, ah.start[:, None] + torch.arange(ah.span)]  # n×nA×sh×lw
        rmin, rmax = rows.amin(2), rows.amax(2)  # n×nA×lw
        cols = aw.start[:, None] + torch.arange(aw.span)  # nB×sw
        mn, mx = rmin[:, :, cols].amin(-1), rmax[:, :, cols].amax(-1)  # n×nA×nB
        margin = torch.maximum(mn.abs(), mx.abs()) * MARGIN
        above = [mn - margin > t for t in taus]  # every pixel > t
        below = [mx + margin < t for t in taus]  # every pixel ≤ t
        decided = (above[0] | below[0]) & (above[1] | below[1]) & (above[2] | below[2])
        self.ones = above[1] & decided  # n×nA×nB: uniform tiles of ones at the threshold
        self.km, self.ka, self.kb = (~decided).nonzero(as_tuple=True)  # the K other tiles
        #: the share of tiles that must be upscaled: 0.05–0.2 for masks of a few crisp regions
        #: on a 12 MP photo, 1.0 for the noise a random model gives (callers then go dense)
        self.undecided = len(self.km) / max(1, decided.numel())
        self._low, self._taus, self._uniform = low, taus, [a & decided for a in above]

    @functools.cached_property
    def _tiles(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The undecided tiles upscaled, in one pass of cache-sized batches: (binary K×tile×tile
        bool at the threshold, column-major (K×cols×rows), pixels past the image edge False;
        K×3 pixel counts above threshold − offset, threshold, threshold + offset; K×tile bool:
        columns with a pixel; K×tile bool: rows with a pixel)."""
        ah, aw, tile, low = self.ah, self.aw, self.tile, self._low
        km, ka, kb = self.km, self.ka, self.kb
        k_all = len(km)
        binary = torch.empty(k_all, tile, tile, dtype=torch.bool)
        counts = torch.empty(k_all, 3, dtype=torch.long)
        has_c = torch.empty(k_all, tile, dtype=torch.bool)
        has_r = torch.empty(k_all, tile, dtype=torch.bool)
        ri, ci, ti = torch.arange(ah.span), torch.arange(aw.span), torch.arange(tile)
        short = (ah.size[ka] < tile) | (aw.size[kb] < tile)  # tiles cut by the image edge
        step = 256  # tiles per batch: 4 MB of float32 logits at 64², near the caches
        scratch = torch.empty(step, tile, tile, dtype=torch.bool)
        for a in range(0, k_all, step):
            s = slice(a, a + step)
            m, ta, tb = km[s], ka[s], kb[s]
            blk = low[m[:, None, None], (ah.start[ta][:, None] + ri)[:, :, None],
                      (aw.start[tb][:, None] + ci)[:, None, :]]  # k×sh×sw
            rows = torch.bmm(ah.weights[ta], blk)  # k×tile(rows)×sw
            x = torch.bmm(aw.weights[tb], rows.transpose(1, 2))  # k×tile(cols)×tile(rows)
            cut = short[s].nonzero(as_tuple=True)[0]
            if len(cut):  # pixels past the image edge: below any threshold
                outside = (ti[None, :, None] >= aw.size[tb[cut]][:, None, None]) | (
                    ti[None, None, :] >= ah.size[ta[cut]][:, None, None])
                x[cut] = x[cut].masked_fill_(outside, float("-inf"))
            b = binary[s]
            torch.gt(x, self._taus[1], out=b)
            counts[s, 1] = count_true(b)
            for i in (0, 2):
                sc = scratch[: len(m)]
                counts[s, i] = count_true(torch.gt(x, self._taus[i], out=sc))
            u8 = b.view(torch.uint8)  # uint8 maxima: faster than bool any() on a CPU
            torch.amax(u8, 2, out=has_c[s].view(torch.uint8))
            torch.amax(u8, 1, out=has_r[s].view(torch.uint8))
        return binary, counts, has_c, has_r

    @functools.cached_property
    def stability(self) -> torch.Tensor:
        """n float32: IoU of the masks at threshold + offset and threshold − offset."""
        area = self.ah.size[:, None] * self.aw.size[None, :]  # nA×nB
        tile_counts = self._tiles[1]
        inter, union = (
            (self._uniform[i] * area).sum((1, 2)).index_add(0, self.km, tile_counts[:, i])
            for i in (2, 0)
        )
        return inter.float() / union.float()

    @functools.cached_property
    def boxes(self) -> torch.Tensor:
        """n×4 XYXY inclusive of the pixels above the threshold."""
        ah, aw, n = self.ah, self.aw, self.n
        h, w = self.out_hw
        # uniform tiles of ones: their extents
        m, a, b = self.ones.nonzero(as_tuple=True)
        x0, y0 = aw.origin[b], ah.origin[a]
        x1, y1 = x0 + aw.size[b] - 1, y0 + ah.size[a] - 1
        # upscaled tiles: the first and last row and column with a pixel
        _, _, has_c, has_r = self._tiles  # K×cols, K×rows
        any_px = has_c.any(1)
        idx = torch.arange(self.tile)
        big = self.tile
        first_c = torch.where(has_c, idx, big).amin(1)
        last_c = torch.where(has_c, idx, -1).amax(1)
        first_r = torch.where(has_r, idx, big).amin(1)
        last_r = torch.where(has_r, idx, -1).amax(1)
        sel = any_px.nonzero(as_tuple=True)[0]
        km, ka, kb = self.km[sel], self.ka[sel], self.kb[sel]
        ms = torch.cat([m, km])
        lefts = torch.cat([x0, aw.origin[kb] + first_c[sel]])
        tops = torch.cat([y0, ah.origin[ka] + first_r[sel]])
        rights = torch.cat([x1, aw.origin[kb] + last_c[sel]])
        bottoms = torch.cat([y1, ah.origin[ka] + last_r[sel]])
        left = torch.full((n,), w, dtype=torch.long).scatter_reduce(0, ms, lefts, "amin")
        top = torch.full((n,), h, dtype=torch.long).scatter_reduce(0, ms, tops, "amin")
        right = torch.full((n,), -1, dtype=torch.long).scatter_reduce(0, ms, rights, "amax")
        bottom = torch.full((n,), -1, dtype=torch.long).scatter_reduce(0, ms, bottoms, "amax")
        boxes = torch.stack([left, top, right, bottom], 1)
        empty = right < 0
        return boxes * (~empty)[:, None]

    def run_edges(
        self, keep: torch.Tensor, offset_xy: tuple[int, int] = (0, 0),
        image_hw: tuple[int, int] | None = None,
    ) -> list[RunEdges]:
        """RunEdges of masks `keep` (indices), placed at offset_xy in an image_hw frame whose
        other pixels are 0 (a crop's masks in the whole photo), as `masks.masks_to_run_edges`
        of the padded binary masks would give them."""
        keep = torch.as_tensor(keep, dtype=torch.long).reshape(-1)
        ah, aw, tile = self.ah, self.aw, self.tile
        ch, cw = self.out_hw
        ox, oy = offset_xy
        big_h, big_w = image_hw or self.out_hw
        n_k = len(keep)
        if n_k == 0:
            return []
        # which kept mask (0..n_k-1) each of the n masks is, -1 for the others
        slot = torch.full((self.n,), -1, dtype=torch.long)
        slot[keep] = torch.arange(n_k)
        sel = (slot[self.km] >= 0).nonzero(as_tuple=True)[0]
        km, ka, kb = slot[self.km[sel]], self.ka[sel], self.kb[sel]
        bt = self._tiles[0][sel]  # K×cols×rows

        # each row band's first and last pixel row, per column: n_k×nA×(nB·tile) uint8
        band = self.ones[keep].to(torch.uint8)  # n_k×nA×nB
        first = band.repeat_interleave(tile, dim=2)
        last = first.clone()
        colx = aw.origin[kb][:, None] + torch.arange(tile)  # K×tile
        last_row = (ah.size[ka] - 1)[:, None].expand(-1, tile)
        first[km[:, None], ka[:, None], colx] = bt[:, :, 0].to(torch.uint8)
        last[km[:, None], ka[:, None], colx] = bt.gather(2, last_row[:, :, None])[..., 0].to(torch.uint8)
        first, last = first[..., :cw], last[..., :cw]

        keys, hw_big = [], big_h * big_w
        # 1. inside upscaled tiles: a pixel differs from the one above it
        inner = bt[:, :, 1:] != bt[:, :, :-1]  # K×cols×(rows-1): row r+1 vs r
        inner &= torch.arange(1, tile)[None, None, :] < ah.size[ka][:, None, None]
        k, c, r = inner.nonzero(as_tuple=True)
        x = ox + aw.origin[kb[k]] + c
        y = oy + ah.origin[ka[k]] + r + 1
        keys.append(km[k] * hw_big + x * big_h + y)
        # 2. between row bands: a band's first row against the last row of the band above
        m, a, c = (first[:, 1:] != last[:, :-1]).nonzero(as_tuple=True)
        keys.append(m * hw_big + (ox + c) * big_h + oy + ah.origin[a + 1])
        # 3. the crop's own top and bottom edges inside a taller image (0 outside the crop)
        if oy > 0:
            m, c = first[:, 0].nonzero(as_tuple=True)
            keys.append(m * hw_big + (ox + c) * big_h + oy)
        if oy + ch < big_h:
            m, c = last[:, -1].nonzero(as_tuple=True)
            keys.append(m * hw_big + (ox + c) * big_h + oy + ch)
        # 4. a column's first pixel against the previous column's last
        top = torch.zeros(n_k, big_w, dtype=torch.uint8)
        bottom = torch.zeros(n_k, big_w, dtype=torch.uint8)
        if oy == 0:
            top[:, ox : ox + cw] = first[:, 0]
        if oy + ch == big_h:
            bottom[:, ox : ox + cw] = last[:, -1]
        m, xs = (top[:, 1:] != bottom[:, :-1]).nonzero(as_tuple=True)
        keys.append(m * hw_big + (xs + 1) * big_h)

        key = torch.cat(keys).sort().values.numpy()
        mask_of = key // hw_big
        pos = (key - mask_of * hw_big).astype(np.int32)
        bounds = np.searchsorted(mask_of, np.arange(n_k + 1))
        starts = top[:, 0].numpy()
        return [
            RunEdges((big_h, big_w), bool(starts[i]), pos[bounds[i] : bounds[i + 1]])
            for i in range(n_k)
        ]
