"""Mask utilities against the reference's own helpers and torchvision, on inputs built to
exercise them (overlapping boxes, ties, masks at crop edges, holes and islands)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pycocotools import mask as coco_mask
from segment_anything.utils import amg as ref_amg
from torchvision.ops import batched_nms

from sam_cli import masks as M
from sam_cli.automatic.grids import crop_boxes, layer_point_grids, point_grid


def random_masks(n=12, h=37, w=53, seed=0):
    rng = np.random.default_rng(seed)
    m = rng.random((n, h, w)) > 0.6
    m[0] = False  # empty
    m[1] = True  # full
    m[2] = False
    m[2, 5:9, 7:20] = True  # a rectangle
    m[3, :, :] = False
    m[3, 0, 0] = True  # one corner pixel
    return torch.from_numpy(m)


def test_rle_matches_reference_and_roundtrips():
    masks = random_masks()
    ours = M.masks_to_rle(masks)
    ref = ref_amg.mask_to_rle_pytorch(masks)
    assert ours == ref
    for m, r in zip(masks, ours):
        assert np.array_equal(M.rle_to_mask(r), m.numpy())
        assert M.rle_area(r) == int(m.sum())


def test_rle_to_mask_edge_cases():
    """Masks that start with ones (a leading 0-run), all ones, all zeros, and
    counts that do not add up to the image (refused, not reshaped into garbage)."""
    for m in (np.ones((3, 4), bool), np.zeros((3, 4), bool),
              np.eye(4, dtype=bool), ~np.eye(4, dtype=bool)):
        r = M.masks_to_rle(torch.from_numpy(m)[None])[0]
        assert np.array_equal(M.rle_to_mask(r), m) and M.rle_area(r) == int(m.sum())
    assert M.masks_to_rle(torch.ones(1, 2, 2, dtype=torch.bool))[0]["counts"] == [0, 4]
    with pytest.raises(ValueError, match="sum to 5, not 2×3 = 6"):
        M.rle_to_mask({"size": [2, 3], "counts": [2, 3]})


def test_rle_to_crop_is_the_mask_in_its_bounding_box():
    """rle_to_crop decodes only the mask's columns: pasted into an empty image it is the
    whole mask, and its window is the mask's tight box (an empty mask: 0×0)."""
    masks = list(random_masks().numpy())
    for m in (np.ones((3, 4), bool), np.eye(4, dtype=bool), ~np.eye(4, dtype=bool)):
        masks.append(m)
    edge = np.zeros((40, 30), bool)
    edge[39, 0] = edge[0, 29] = True  # first and last pixel of two columns far apart
    masks.append(edge)
    for m in masks:
        crop = M.rle_to_crop(M.masks_to_rle(torch.from_numpy(m)[None])[0])
        if not m.any():
            assert crop.mask.shape == (0, 0)
            continue
        ys, xs = np.nonzero(m)
        assert (crop.y0, crop.x0) == (ys.min(), xs.min())
        assert crop.mask.shape == (ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
        assert crop.mask.flags.c_contiguous
        pasted = np.zeros_like(m)
        pasted[crop.window] = crop.mask
        assert np.array_equal(pasted, m)
    with pytest.raises(ValueError, match="sum to 5, not 2×3 = 6"):
        M.rle_to_crop({"size": [2, 3], "counts": [2, 3]})


def test_coco_rle_decodes_with_pycocotools():
    masks = random_masks()
    for m, r in zip(masks, M.masks_to_rle(masks)):
        c = M.rle_to_coco(r)
        assert isinstance(c["counts"], str)
        assert c == {"size": [37, 53], "counts": ref_amg.coco_encode_rle(r)["counts"]}
        dec = coco_mask.decode({"size": c["size"], "counts": c["counts"].encode()})
        assert np.array_equal(dec.astype(bool), m.numpy())


def test_boxes_match_reference():
    masks = random_masks()
    assert torch.equal(M.masks_to_boxes(masks), ref_amg.batched_mask_to_box(masks))


def test_coco_bbox_counts_pixels():
    m = torch.zeros(1, 10, 10, dtype=torch.bool)
    m[0, 2:5, 3:9] = True  # rows 2..4, cols 3..8
    box = M.masks_to_boxes(m)[0].tolist()
    assert M.xyxy_to_xywh_coco(box, int(m.sum())) == [3, 2, 6, 3]
    assert pycoco_bbox(m[0]) == [3, 2, 6, 3]
    assert M.xyxy_to_xywh_coco([0, 0, 0, 0], 0) == [0, 0, 0, 0]


def pycoco_bbox(m):
    rle = coco_mask.encode(np.asfortranarray(m.numpy().astype(np.uint8)))
    return [int(v) for v in coco_mask.toBbox(rle)]


def test_stability_matches_reference():
    logits = torch.randn(6, 40, 30) * 3
    ours = M.stability_score(logits, 0.0, 1.0)
    ref = ref_amg.calculate_stability_score(logits, 0.0, 1.0)
    assert torch.allclose(ours, ref)
    # column-major logits, as upscale_logits returns them, and more than 255 pixels a mask
    wide = (torch.randn(5, 301, 47) * 3).transpose(1, 2)
    assert torch.allclose(M.stability_score(wide, 0.0, 1.0),
                          ref_amg.calculate_stability_score(wide.contiguous(), 0.0, 1.0))


@pytest.mark.parametrize("shape", [(3, 5, 51), (4, 17, 15), (2, 37, 53), (3, 1, 1), (0, 9, 9)])
@pytest.mark.parametrize("layout", ["row-major", "column-major", "strided"])
def test_count_true_counts_every_layout(shape, layout):
    """count_true's uint8 runs of 255 against a plain int64 sum: sizes on and off a multiple
    of 255 (5·51 = 255, 17·15 = 255), all-True masks (a run of 255 ones), empty batches."""
    g = torch.Generator().manual_seed(3)
    n, h, w = shape
    m = torch.rand(n, h * 2, w * 2, generator=g) > 0.5
    if n:
        m[0] = True
    if layout == "row-major":
        m = m[:, :h, :w].contiguous()
    elif layout == "column-major":
        m = m[:, :h, :w].transpose(1, 2).contiguous().transpose(1, 2)
    else:
        m = m[:, ::2, ::2]
    assert torch.equal(M.count_true(m), m.sum(dim=(-1, -2)).to(torch.int32))


def test_boxes_of_column_major_masks():
    masks = random_masks()
    cm = masks.transpose(1, 2).contiguous().transpose(1, 2)
    assert torch.equal(M.masks_to_boxes(cm), ref_amg.batched_mask_to_box(masks))


@pytest.mark.parametrize("thresh", [0.0, 0.3, 0.7, 1.0])
def test_nms_matches_torchvision_with_ties(thresh):
    g = torch.Generator().manual_seed(1)
    xy = torch.randint(0, 80, (400, 2), generator=g).float()
    wh = torch.randint(1, 40, (400, 2), generator=g).float()
    boxes = torch.cat([xy, xy + wh], 1)
    boxes[10] = boxes[11]  # identical boxes
    scores = torch.randint(0, 4, (400,), generator=g).float()  # many ties
    ref = batched_nms(boxes, scores, torch.zeros(400), thresh)
    assert torch.equal(M.box_nms(boxes, scores, thresh), ref)


def test_crop_edge_filter_matches_reference():
    crop = [100, 50, 300, 250]
    orig = [0, 0, 300, 400]
    boxes = torch.tensor([[0, 0, 50, 50], [5, 30, 150, 190], [30, 30, 199, 150],
                          [25, 25, 150, 150], [0, 100, 200, 199], [21, 21, 179, 179]])
    ours = M.box_near_crop_edge(boxes, crop, orig)
    ref = ref_amg.is_box_near_crop_edge(boxes, crop, orig)
    assert torch.equal(ours, ref)
    assert ours.any() and not ours.all()


@pytest.mark.parametrize("mode", ["holes", "islands"])
@pytest.mark.parametrize("area", [1, 5, 30, 500])
def test_small_regions_match_reference(mode, area):
    m = np.zeros((60, 80), bool)
    m[5:40, 5:50] = True
    m[10:13, 10:13] = False  # small hole
    m[20:30, 20:35] = False  # bigger hole
    m[50:52, 60:62] = True  # small island
    m[45:58, 65:78] = True  # bigger island
    m[0, 79] = True  # one-pixel island at a corner
    ours, ch1 = M.remove_small_regions(m.copy(), area, mode)
    ref, ch2 = ref_amg.remove_small_regions(m.copy(), area, mode)
    assert ch1 == ch2
    assert np.array_equal(ours, ref)


def blobby_masks(seed: int, n: int = 40):
    """Masks of blobs with holes and islands of many sizes, some boxes at the image's edges,
    some leaving a thin strip of background between the box and an edge."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        h, w = int(rng.integers(8, 70)), int(rng.integers(8, 70))
        m = rng.random((h, w)) < rng.uniform(0.2, 0.8)
        m = cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 2), np.uint8)).astype(bool)
        if rng.random() < 0.5:  # a thin margin on some sides
            top, bottom, left, right = rng.integers(0, 3, 4)
            m[:top] = False
            m[h - bottom :] = False
            m[:, :left] = False
            m[:, w - right :] = False
        yield m


@pytest.mark.parametrize("seed", range(4))
def test_small_regions_in_the_box_match_the_whole_mask(seed):
    """remove_small_regions_crop gives what the reference gives on the whole mask, or None
    (then the caller does the whole mask) exactly where the result leaves the box or islands
    tie; islands after holes as the generator runs them; crop_to_rle and crop_box as on the
    whole mask."""
    rng = np.random.default_rng(100 + seed)
    nones = 0
    for m in blobby_masks(seed):
        hw = m.shape
        for area in (1, 3, 10, 40, int(rng.integers(1, 300))):
            crop = M.mask_crop(m)
            ref, ch = ref_amg.remove_small_regions(m.copy(), area, "holes")
            got = M.remove_small_regions_crop(crop, hw, area, "holes")
            outside = ref[~box_of(m)].any()
            if got is None:
                assert outside, (area, m.shape)
                nones += 1
                continue
            assert not outside
            c, ch_ours = got
            assert ch_ours == ch and np.array_equal(paste(c, hw), ref), (area, m.shape)
            ref2, ch2 = ref_amg.remove_small_regions(ref.copy(), area, "islands")
            got = M.remove_small_regions_crop(c, hw, area, "islands")
            if got is None:  # every island small, several the largest: a tie for OpenCV
                n, _, stats, _ = cv2.connectedComponentsWithStats(ref.astype(np.uint8), connectivity=8)
                sizes = stats[1:, cv2.CC_STAT_AREA]
                assert (sizes < area).all() and (sizes == sizes.max()).sum() > 1
                nones += 1
                continue
            c2, ch2_ours = got
            assert ch2_ours == ch2 and np.array_equal(paste(c2, hw), ref2), (area, m.shape)
            assert M.crop_to_rle(c2, hw) == M.masks_to_rle(torch.from_numpy(ref2)[None])[0]
            assert M.crop_box(c2) == M.masks_to_boxes(torch.from_numpy(ref2)[None])[0].tolist()
    assert nones < 50  # the fallback is the exception


def box_of(m: np.ndarray) -> np.ndarray:
    c = M.mask_crop(m)
    inside = np.zeros_like(m)
    inside[c.window] = True
    return inside


def paste(crop, hw) -> np.ndarray:
    out = np.zeros(hw, bool)
    out[crop.window] = crop.mask
    return out


def test_crop_to_rle_joins_runs_across_columns():
    """A run of ones down the last row of one column and on at the top of the next is one
    run in the column-major RLE (the crop spans every row)."""
    m = np.zeros((4, 5), bool)
    m[2:, 1] = True
    m[:3, 2] = True
    m[:, 3] = True
    for crop in (M.mask_crop(m), M.MaskCrop(0, 0, m)):
        assert M.crop_to_rle(crop, m.shape) == M.masks_to_rle(torch.from_numpy(m)[None])[0]
    full = np.ones((3, 3), bool)
    assert M.crop_to_rle(M.mask_crop(full), (3, 3)) == {"size": [3, 3], "counts": [0, 9]}
    empty = M.mask_crop(np.zeros((3, 3), bool))
    assert M.crop_to_rle(empty, (3, 3)) == {"size": [3, 3], "counts": [9]}


def test_all_islands_small_keeps_largest():
    m = np.zeros((20, 20), bool)
    m[1:3, 1:3] = True
    m[10:13, 10:13] = True
    out, changed = M.remove_small_regions(m, 100, "islands")
    ref, _ = ref_amg.remove_small_regions(m, 100, "islands")
    assert changed and np.array_equal(out, ref) and out.sum() == 9


@pytest.mark.parametrize("hw", [(300, 451), (1000, 700), (64, 64)])
@pytest.mark.parametrize("layers", [0, 1, 2])
def test_crop_boxes_match_reference(hw, layers):
    ours = crop_boxes(hw, layers, 512 / 1500)
    boxes, idx = ref_amg.generate_crop_boxes(hw, layers, 512 / 1500)
    assert [b for b, _ in ours] == boxes
    assert [i for _, i in ours] == idx


def test_point_grids_match_reference():
    assert np.allclose(point_grid(5), ref_amg.build_point_grid(5))
    for a, b in zip(layer_point_grids(32, 2, 2), ref_amg.build_all_layer_point_grids(32, 2, 2)):
        assert np.allclose(a, b)


@pytest.mark.parametrize(
    "input_hw, orig_hw",
    [((681, 1024), (300, 451)), ((1024, 1024), (1024, 1024)), ((1024, 17), (900, 15)),
     ((768, 1024), (1500, 2000))],
)
def test_upscale_logits_matches_two_pass_interpolation(input_hw, orig_hw):
    """The one-step separable resize equals the reference's two bilinear passes (to 1024²,
    crop, to the original size) up to float32 rounding, and no pixel changes side of 0."""
    from torch.nn import functional as F

    from sam_cli.upscale import upscale_logits

    torch.manual_seed(0)
    low = torch.randn(6, 256, 256) * 10
    mid = F.interpolate(low[:, None], (1024, 1024), mode="bilinear", align_corners=False)
    ref = F.interpolate(mid[..., : input_hw[0], : input_hw[1]], orig_hw, mode="bilinear",
                        align_corners=False)[:, 0]
    ours = upscale_logits(low, input_hw, orig_hw, 1024)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() <= 1e-4
    assert torch.equal(ours > 0, ref > 0)


def test_resize_bands_hold_every_weight():
    """The bands of upscale_logits' matmuls (256 output pixels each) hold every non-zero
    weight, and for a large photo they read a small part of the 256 low-res samples."""
    from sam_cli.upscale import axis_resize_matrix as _axis_resize_matrix
    from sam_cli.upscale import resize_bands as _bands

    for args in [(256, 1024, 1024, 4000), (256, 1024, 681, 300), (256, 1024, 17, 15)]:
        r = _axis_resize_matrix(*args)
        bands = _bands(*args)
        assert [b[0] for b in bands] == list(range(0, r.shape[0], 256))
        assert bands[-1][1] == r.shape[0]
        for j0, j1, k0, k1 in bands:
            assert not r[j0:j1, :k0].any() and not r[j0:j1, k1:].any()
    assert max(k1 - k0 for _, _, k0, k1 in _bands(256, 1024, 1024, 4000)) < 24


def _test_logits(kind: str, n: int, seed: int) -> torch.Tensor:
    """n×256×256 low-res logits: "crisp" blobs (a trained model's sharp object edges),
    "soft" blobs (wide ramps across the thresholds) or "noise" (a random model's masks);
    mask 0 is all ones, mask 1 empty."""
    from torch.nn import functional as F

    g = torch.Generator().manual_seed(seed)
    if kind == "noise":
        low = torch.randn(n, 256, 256, generator=g) * 10
    else:
        base = torch.randn(n, 1, 4, 5, generator=g)
        low = F.interpolate(base, size=(256, 256), mode="bicubic", align_corners=False)[:, 0]
        low = 20 * torch.tanh(8 * low) if kind == "crisp" else 10 * low
    low[0], low[1] = 7.0, -7.0
    return low


@pytest.mark.parametrize("kind", ["crisp", "soft", "noise"])
@pytest.mark.parametrize(
    "input_hw, crop_hw, crop_box, image_hw",
    [((681, 1024), (300, 451), None, None),
     ((768, 1024), (1500, 2000), None, None),
     ((1024, 17), (900, 15), None, None),
     ((1024, 768), (1333, 1000), [200, 100, 1200, 1433], (1600, 1300)),  # inside a larger image
     ((768, 1024), (600, 800), [0, 0, 800, 600], (900, 800)),  # at the top, full width
     ((768, 1024), (600, 800), [0, 300, 800, 900], (900, 800))],  # at the bottom, full width
)
def test_tiled_masks_match_reference_upscaling(kind, input_hw, crop_hw, crop_box, image_hw):
    """TiledMasks (full-resolution outputs upscaling only the tiles near a threshold) against the
    reference's two bilinear passes over every pixel: the same RLE, box and stability score,
    except at pixels whose reference logit lies within float32 rounding (1e-4) of a threshold,
    where the two sums may round to different sides."""
    from torch.nn import functional as F

    from sam_cli.automatic.tiled import TiledMasks

    n, thr, off = 6, 0.0, 1.0
    low = _test_logits(kind, n, seed=len(kind) + crop_hw[0])
    mid = F.interpolate(low[:, None], (1024, 1024), mode="bilinear", align_corners=False)
    ref = F.interpolate(mid[..., : input_hw[0], : input_hw[1]], crop_hw, mode="bilinear",
                        align_corners=False)[:, 0]
    tm = TiledMasks(low, input_hw, crop_hw, 1024, thr, off)
    x0, y0 = (crop_box or [0, 0])[:2]
    edges = tm.run_edges(torch.arange(n), (x0, y0), image_hw)
    ch, cw = crop_hw
    for i in range(n):
        full = M.rle_to_mask(edges[i].to_rle())
        assert full.shape == (image_hw or crop_hw)
        ours = full[y0 : y0 + ch, x0 : x0 + cw]
        outside = full.copy()
        outside[y0 : y0 + ch, x0 : x0 + cw] = False
        assert not outside.any()
        near = (ref[i] - thr).abs() <= 1e-4
        assert not ((torch.from_numpy(ours) != (ref[i] > thr)) & ~near).any()
        assert tm.boxes[i].tolist() == M.masks_to_boxes(torch.from_numpy(ours)[None])[0].tolist()
        inter, union = int((ref[i] > thr + off).sum()), int((ref[i] > thr - off).sum())
        slack = int(((ref[i] - thr - off).abs() <= 1e-4).sum() + ((ref[i] - thr + off).abs() <= 1e-4).sum())
        if union == 0:
            assert torch.isnan(tm.stability[i])
        else:
            assert abs(float(tm.stability[i]) - inter / union) <= slack / union + 1e-6
    assert tm.boxes[0].tolist() == [0, 0, cw - 1, ch - 1] and tm.boxes[1].tolist() == [0, 0, 0, 0]
    assert edges[1].edges.size == 0 and not edges[1].starts_with_one
    if kind == "noise":
        # boundaries everywhere: every tile of the noise masks is upscaled, none of masks 0, 1
        assert tm.undecided == pytest.approx((n - 2) / n, abs=0.02)
    elif kind == "crisp" and ch * cw > 10**6:
        assert tm.undecided < 0.25  # most of a large photo's tiles are never upscaled


def test_tiled_masks_subsets_and_margin():
    """run_edges of a subset gives those masks' RLEs; a logit just past a threshold (by less
    than the margin) sends its tiles to the exact path instead of deciding them."""
    from sam_cli.automatic.tiled import TiledMasks

    low = _test_logits("crisp", 5, seed=3)
    frame = ((768, 1024), (600, 800), 1024)
    tm = TiledMasks(low, *frame, 0.0, 1.0)
    all_edges = tm.run_edges(torch.arange(5))
    some = tm.run_edges(torch.tensor([4, 2]))
    assert [e.to_rle() for e in some] == [all_edges[4].to_rle(), all_edges[2].to_rle()]
    assert tm.run_edges(torch.tensor([], dtype=torch.long)) == []
    flat = torch.full((1, 256, 256), 1.0 + 1e-7)  # above t + offset by less than the margin
    edge = TiledMasks(flat, *frame, 0.0, 1.0)
    assert edge.undecided == 1.0
    assert float(edge.stability[0]) == 1.0 and edge.boxes[0].tolist() == [0, 0, 799, 599]


@pytest.mark.parametrize("side", [1, 15, 300, 451, 1000, 1024, 3000, 4000, 12000])
def test_resize_weights_are_a_weighted_mean(side):
    """What TiledMasks' decided tiles rest on: each upscaled pixel is a weighted mean of at most
    three low-res logits per axis, weights ≥ 0 summing to 1 within float32 rounding."""
    from sam_cli.transforms import target_size
    from sam_cli.upscale import axis_resize_matrix as _axis_resize_matrix

    for other in (side, 17, 3000):
        for keep, out in zip(target_size(side, other, 1024), (side, other)):
            r = _axis_resize_matrix(256, 1024, keep, out)
            assert (r >= 0).all() and (r != 0).sum(1).max() <= 3
            assert (r.double().sum(1) - 1).abs().max() < 1e-6
