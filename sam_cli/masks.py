"""Mask utilities: run-length encoding, boxes, stability, NMS, small-region cleanup.

Conventions: masks are N×H×W bool tensors; boxes XYXY with inclusive right/bottom pixel
indices (as the reference computes them) unless a name says XYWH.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pycocotools import mask as coco_mask

# ------------------------------------------------------------------ run-length encoding


@dataclass(frozen=True)
class RunEdges:
    """A mask's uncompressed RLE before its counts list is built: the column-major positions
    where the value changes. Cheap to keep for masks that NMS may still drop; `to_rle()`
    builds the counts only for those that stay."""

    size: tuple[int, int]
    starts_with_one: bool
    edges: np.ndarray  # int32 positions p where pixel p differs from pixel p − 1

    def to_rle(self) -> dict:
        h, w = self.size
        bounds = np.concatenate([[0], self.edges, [h * w]])
        runs = np.diff(bounds).tolist()
        return {"size": [h, w], "counts": ([0] + runs) if self.starts_with_one else runs}


def masks_to_run_edges(masks: torch.Tensor) -> list[RunEdges]:
    """N×H×W bool (any device) → RunEdges per mask, with one device→host transfer."""
    n, h, w = masks.shape
    if n == 0:
        return []
    flat = masks.transpose(1, 2).reshape(n, h * w)  # free for column-major storage
    change = (flat[:, 1:] != flat[:, :-1]).nonzero()  # K×2 (mask, position), row-major sorted
    first = flat[:, 0].cpu().numpy()
    # int32 halves the one device→host copy (positions < H·W < 2³¹)
    change = change.to(torch.int32).cpu().numpy()
    bounds = np.searchsorted(change[:, 0], np.arange(n + 1))
    return [
        RunEdges((h, w), bool(first[i]), change[bounds[i] : bounds[i + 1], 1] + 1)
        for i in range(n)
    ]


def masks_to_rle(masks: torch.Tensor) -> list[dict]:
    """N×H×W bool (any device) → uncompressed RLEs {size: [h, w], counts: [...]},
    column-major, starting with a run of zeros. One device→host transfer for the batch."""
    return [r.to_rle() for r in masks_to_run_edges(masks)]


def rle_to_mask(rle: dict) -> np.ndarray:
    """Uncompressed RLE → H×W bool. One np.repeat over the runs, not a Python loop: a
    speckled 451×300 mask has ~68k runs (0.5 ms instead of 13)."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    if counts.sum() != h * w:
        raise ValueError(f"RLE counts sum to {counts.sum()}, not {h}×{w} = {h * w} pixels")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate, starting with zeros
    return np.repeat(values, counts).reshape(w, h).T


@dataclass(frozen=True)
class MaskCrop:
    """A mask as the pixels of its tight bounding box: `mask` (h'×w' bool) has its top-left
    pixel at (y0, x0) of the image; 0×0 for an empty mask."""

    y0: int
    x0: int
    mask: np.ndarray

    @property
    def window(self) -> tuple[slice, slice]:
        """The crop's rows and columns in the image: image[crop.window] is crop-sized."""
        h, w = self.mask.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)


def mask_crop(mask: np.ndarray) -> MaskCrop:
    """H×W bool → its MaskCrop (the tight box of its pixels)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return MaskCrop(0, 0, np.zeros((0, 0), dtype=bool))
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    return MaskCrop(y0, x0, np.ascontiguousarray(mask[y0 : y1 + 1, x0 : x1 + 1]))


def rle_to_crop(rle: dict) -> MaskCrop:
    """Uncompressed RLE → MaskCrop, decoding only the columns from the mask's first pixel to
    its last (the RLE is column-major): for an object that covers a small part of a 12 MP
    photo, a small fraction of rle_to_mask's work and memory."""
    h, w = rle["size"]
    counts = np.asarray(rle["counts"], dtype=np.int64)
    ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    if total != h * w:
        raise ValueError(f"RLE counts sum to {total}, not {h}×{w} = {h * w} pixels")
    starts = ends - counts
    ones = np.flatnonzero(counts[1::2]) * 2 + 1  # the runs of ones that hold a pixel
    if ones.size == 0:
        return MaskCrop(0, 0, np.zeros((0, 0), dtype=bool))
    c0, c1 = int(starts[ones[0]]) // h, int(ends[ones[-1]] - 1) // h
    lo, hi = c0 * h, (c1 + 1) * h
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    cols = np.repeat(values, np.clip(ends, lo, hi) - np.clip(starts, lo, hi)).reshape(-1, h)
    rows = np.flatnonzero(cols.any(axis=0))
    r0, r1 = int(rows[0]), int(rows[-1])
    # OpenCV's transpose: several times faster than numpy's copy of a transposed bool view
    return MaskCrop(r0, c0, cv2.transpose(cols[:, r0 : r1 + 1].view(np.uint8)).view(bool))


def crop_to_rle(crop: MaskCrop, hw: tuple[int, int]) -> dict:
    """MaskCrop → the whole H×W mask's uncompressed RLE, as masks_to_rle gives it, from the
    crop's pixels alone: each column's changes, with zeros above and below the crop, placed
    in the image's column-major order. Where a column's run of ones ends at the image's last
    row and the next column's starts at its first, the two changes fall on one position and
    cancel."""
    h, w = (int(v) for v in hw)
    m = crop.mask
    pad = np.zeros((m.shape[0] + 2, m.shape[1]), dtype=np.int8)
    pad[1:-1] = m
    rows, cols = np.nonzero(np.diff(pad, axis=0))  # a change just before crop row `rows`
    pos = (crop.x0 + cols.astype(np.int64)) * h + crop.y0 + rows
    pos, n = np.unique(pos, return_counts=True)
    pos = pos[(n % 2 == 1) & (pos < h * w)]  # h·w: the end of the last pixel, not a change
    first = bool(pos.size and pos[0] == 0)
    return RunEdges((h, w), first, pos[1:] if first else pos).to_rle()


def crop_box(crop: MaskCrop) -> list[int]:
    """Inclusive XYXY box of a MaskCrop's pixels (as masks_to_boxes; [0, 0, 0, 0] if empty)."""
    tight = mask_crop(crop.mask)
    if tight.mask.size == 0:
        return [0, 0, 0, 0]
    x0, y0 = crop.x0 + tight.x0, crop.y0 + tight.y0
    return [x0, y0, x0 + tight.mask.shape[1] - 1, y0 + tight.mask.shape[0] - 1]


def rle_area(rle: dict) -> int:
    return int(sum(rle["counts"][1::2]))


@dataclass
class MaskRecord:
    """One mask of automatic mode, as the writers take it."""

    rle: dict  # uncompressed RLE in the full image frame
    box: list[int]  # XYXY inclusive
    predicted_iou: float
    point: list[float]  # XY the mask was prompted with
    stability_score: float
    crop_box: list[int]  # XYXY half-open
    score: float | None = None  # a proposal's rank score (automatic/proposals.py), else none

    @property
    def area(self) -> int:
        return rle_area(self.rle)


@dataclass
class PromptedMask:
    """One mask of a prompted object (`sam segment --prompts`), as the writers take it."""

    rle: dict  # uncompressed RLE in the full image frame
    box: list[int]  # XYXY inclusive
    predicted_iou: float
    object_index: int  # the object's position among its image's prompts
    mask_index: int  # which of the decoder's masks (0 the single-mask output; 0..2 multimask)
    prompt: dict  # the prompts used, image pixels: box XYXY, points XY, point_labels
    source: dict  # what the prompt file said of the object: category, category_id, score, object_id

    @property
    def area(self) -> int:
        return rle_area(self.rle)


def rle_to_coco(rle: dict) -> dict:
    """Uncompressed RLE → COCO compressed RLE with str counts (JSON-ready)."""
    h, w = rle["size"]
    enc = coco_mask.frPyObjects(rle, h, w)
    return {"size": [int(h), int(w)], "counts": enc["counts"].decode("utf-8")}


def mask_to_coco(mask: np.ndarray) -> dict:
    """H×W bool → COCO compressed RLE with str counts (JSON-ready), as rle_to_coco gives it."""
    enc = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in enc["size"]], "counts": enc["counts"].decode("utf-8")}


def mask_xywh_coco(mask: np.ndarray) -> list[int]:
    """H×W bool → its COCO XYWH box (width and height count pixels); [0, 0, 0, 0] if empty."""
    crop = mask_crop(mask)
    return xyxy_to_xywh_coco(crop_box(crop), int(crop.mask.sum()))


# ------------------------------------------------------------------------------- boxes


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """…×H×W bool → …×4 XYXY (inclusive); an empty mask gives [0, 0, 0, 0]."""
    if masks.numel() == 0:
        return torch.zeros(*masks.shape[:-2], 4, device=masks.device, dtype=torch.long)
    h, w = masks.shape[-2:]
    # max over uint8, not any() over bool: several times faster on a CPU for column-major
    # 12 MP masks (`scripts/cpu_profile.py --masks`); tests/test_masks.py checks they agree
    as_u8 = masks.view(torch.uint8)
    rows = as_u8.amax(dim=-1).bool()  # …×H
    cols = as_u8.amax(dim=-2).bool()  # …×W
    ys = torch.arange(h, device=masks.device)
    xs = torch.arange(w, device=masks.device)
    bottom = torch.where(rows, ys, -1).amax(dim=-1)
    top = torch.where(rows, ys, h).amin(dim=-1)
    right = torch.where(cols, xs, -1).amax(dim=-1)
    left = torch.where(cols, xs, w).amin(dim=-1)
    boxes = torch.stack([left, top, right, bottom], dim=-1)
    empty = (right < left) | (bottom < top)
    return boxes * (~empty).unsqueeze(-1)


def xyxy_to_xywh_coco(box, area: int) -> list[int]:
    """Inclusive XYXY → COCO XYWH, whose width and height count pixels (x1 − x0 + 1).
    An empty mask (area 0) gets [0, 0, 0, 0]."""
    if area == 0:
        return [0, 0, 0, 0]
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0 + 1, y1 - y0 + 1]


def crop_xyxy_to_xywh(box) -> list[int]:
    """Crop boxes are half-open XYXY: width is x1 − x0."""
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]


def box_near_crop_edge(
    boxes: torch.Tensor, crop_box: list[int], orig_box: list[int], atol: float = 20.0
) -> torch.Tensor:
    """N×4 XYXY boxes in crop coordinates → N bool: touches a crop edge that is not an image edge."""
    crop = torch.as_tensor(crop_box, dtype=torch.float, device=boxes.device)
    orig = torch.as_tensor(orig_box, dtype=torch.float, device=boxes.device)
    offset = torch.as_tensor(
        [crop_box[0], crop_box[1], crop_box[0], crop_box[1]], device=boxes.device
    )
    b = (boxes + offset).float()
    near_crop = (b - crop).abs() <= atol
    near_image = (b - orig).abs() <= atol
    return (near_crop & ~near_image).any(dim=1)


# --------------------------------------------------------------------------- stability


def count_true(masks: torch.Tensor) -> torch.Tensor:
    """…×H×W bool → … int32 number of True pixels.

    Sums the bytes in runs of 255 as uint8 (255 ones fit, so nothing overflows), then the
    run sums as int32: no int32 copy of the masks, which `.sum(dtype=torch.int32)` makes
    (several times faster on a CPU for 12 MP masks: `scripts/cpu_profile.py --masks`). Works
    on row- or column-major masks alike."""
    lead = masks.shape[:-2]
    if not masks.is_contiguous() and masks.transpose(-1, -2).is_contiguous():
        masks = masks.transpose(-1, -2)  # column-major storage: count it in that order
    n = masks.shape[-1] * masks.shape[-2]
    flat = masks.reshape(*lead, n).view(torch.uint8)
    k = n - n % 255
    runs = flat[..., :k].reshape(*lead, k // 255, 255).sum(-1, dtype=torch.uint8)
    return runs.sum(-1, dtype=torch.int32) + flat[..., k:].sum(-1, dtype=torch.int32)


def stability_score(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU between the masks binarised at threshold ± offset: …×H×W → …"""
    inter = count_true(logits > threshold + offset)
    union = count_true(logits > threshold - offset)
    return inter.float() / union.float()


# ---------------------------------------------------------------------------------- NMS


def box_nms(
    boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, *, chunk: int = 1024
) -> torch.Tensor:
    """Greedy NMS over N×4 float XYXY boxes; returns kept indices (CPU) by descending score.

    Ties keep their input order (a stable sort), as torchvision's kernel does. A box is
    suppressed when its IoU with a kept box is > iou_threshold. The pairwise "overlaps too
    much" matrix is computed on the boxes' device in row chunks; only the greedy pass, a
    row-OR per kept box, runs on the host.
    """
    n = boxes.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(scores.float(), descending=True, stable=True).indices.to(boxes.device)
    b = boxes.float()[order]
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    rows = []
    for a in range(0, n, chunk):
        bb = b[a : a + chunk, None, :]
        wh = (torch.minimum(bb[..., 2:], b[None, :, 2:]) - torch.maximum(bb[..., :2], b[None, :, :2])).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        iou = inter / (area[a : a + chunk, None] + area[None, :] - inter)
        rows.append((iou > iou_threshold).cpu())
    over = torch.cat(rows).numpy()
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for i in range(n):
        if not suppressed[i]:
            keep.append(i)
            suppressed |= over[i]
    return order.cpu()[torch.as_tensor(keep, dtype=torch.long)]


# ------------------------------------------------------------------ small-region cleanup


def fill_holes_and_sprinkles(
    low: torch.Tensor, threshold: float, max_hole_area: float, max_sprinkle_area: float
) -> torch.Tensor:
    """SAM 2's clean-up of low-res logits K×h×w before they are upscaled: background regions
    (logit ≤ threshold) of at most max_hole_area cells become foreground (threshold + 10), and
    foreground regions of at most max_sprinkle_area cells become background (threshold − 10);
    8-connected, both read from the logits as given (SAM2Transforms.postprocess_masks). A
    limit of 0 turns its half off. Runs on the CPU (OpenCV); returns logits on low's device."""
    if max_hole_area <= 0 and max_sprinkle_area <= 0:
        return low
    x = low.detach().float().cpu().numpy()
    out = x.copy()
    for k in range(x.shape[0]):
        for limit, region, value in ((max_hole_area, x[k] <= threshold, threshold + 10.0),
                                     (max_sprinkle_area, x[k] > threshold, threshold - 10.0)):
            if limit <= 0:
                continue
            n, labels, stats, _ = cv2.connectedComponentsWithStats(region.view(np.uint8), connectivity=8)
            small = stats[:, cv2.CC_STAT_AREA] <= limit
            small[0] = False  # label 0: the cells outside the region
            if small.any():
                out[k][small[labels]] = value
    return torch.from_numpy(out).to(device=low.device, dtype=low.dtype)


def remove_small_regions_crop(
    crop: MaskCrop, hw: tuple[int, int], area_thresh: float, mode: str
) -> tuple[MaskCrop, bool] | None:
    """remove_small_regions on a MaskCrop, touching only the mask's box: the same result as on
    the whole H×W mask, or None where only the whole mask gives it, for the caller to do that:
    where the result reaches outside the box (a small stretch of background between the box
    and the image's edge), or where every island is small and several tie for the largest.

    Islands lie inside the box. Background inside the box that touches a side of it with image
    beyond joins the background outside: the box is padded by one background pixel on those
    sides, and each component that reaches the padding is given the outside's true area (the
    outside is one region when it has room both beside and above or below the box, otherwise
    one region per side), not the padding's."""
    holes = mode == "holes"
    m = crop.mask
    if m.size == 0:  # all background: one region, filled if small
        return None if holes and hw[0] * hw[1] < area_thresh else (crop, False)
    if not holes:
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m.view(np.uint8), connectivity=8)
        sizes = stats[1:, cv2.CC_STAT_AREA]
        small = sizes < area_thresh
        if not small.any():
            return crop, False
        keep = np.flatnonzero(~small) + 1
        if keep.size == 0:  # all small: the largest stays
            if np.count_nonzero(sizes == sizes.max()) > 1:
                # a tie goes to OpenCV's first label, whose order depends on where the
                # labelling starts: only the whole mask gives the same one
                return None
            keep = np.array([int(np.argmax(sizes)) + 1])
        return MaskCrop(crop.y0, crop.x0, np.isin(labels, keep)), True
    h, w = (int(v) for v in hw)
    bh, bw = m.shape
    top, left = int(crop.y0 > 0), int(crop.x0 > 0)
    bottom, right = int(crop.y0 + bh < h), int(crop.x0 + bw < w)
    work = np.ones((bh + top + bottom, bw + left + right), dtype=np.uint8)
    work[top : top + bh, left : left + bw] = ~m
    n, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    area = stats[:, cv2.CC_STAT_AREA].astype(np.int64)
    # each side of the padding: its pixels' labels and the true area of the outside beyond it
    sides = [(top, labels[0, :], w * crop.y0),
             (bottom, labels[-1, :], w * (h - crop.y0 - bh)),
             (left, labels[:, 0], h * crop.x0),
             (right, labels[:, -1], h * (w - crop.x0 - bw))]
    one_region = (top or bottom) and (left or right)
    outside = h * w - bh * bw
    ring = np.ones(work.shape, dtype=bool)  # the padding: all but the box
    ring[top : top + bh, left : left + bw] = False
    area -= np.bincount(labels[ring], minlength=n)  # the padding is not image
    counted: set[int] = set()
    for present, line, side_area in sides:
        if not present:
            continue
        label = int(line[line > 0][0])  # a side's padding is one component
        if one_region:
            if label not in counted:
                area[label] += outside
                counted.add(label)
        else:
            area[label] += side_area
    small = np.flatnonzero(area[1:] < area_thresh) + 1
    if small.size == 0:
        return crop, False
    if np.isin(labels[ring], small).any():
        return None  # background outside the box would be filled
    inner = labels[top : top + bh, left : left + bw]
    return MaskCrop(crop.y0, crop.x0, m | np.isin(inner, small)), True


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (mode "holes") or drop islands ("islands") smaller than area_thresh pixels
    (8-connectivity). If every island is small, the largest is kept. Returns (mask, changed)."""
    holes = mode == "holes"
    work = (holes ^ mask).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0] + small
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill]
        if not fill:
            fill = [int(np.argmax(sizes)) + 1]
    return np.isin(labels, fill), True
