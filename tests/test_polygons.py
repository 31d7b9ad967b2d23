"""Masks to polygons (sam_cli/polygons.py): exact at tolerance 0 when rasterised back by an
independent reader (pycocotools), close at the default tolerance, with holes and small parts
accounted for."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from sam_cli.masks import mask_crop
from sam_cli.polygons import crop_outline, outline_to_mask


def shapes(h: int = 160, w: int = 200) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.circle(m, (70, 80), 50, 1, -1)
    cv2.circle(m, (70, 80), 20, 0, -1)  # a hole
    cv2.circle(m, (70, 80), 6, 1, -1)  # an island in the hole
    cv2.rectangle(m, (140, 10), (190, 60), 1, -1)
    m[120:122, 150:190] = 1  # a thin line
    m[150, 10] = 1  # a single pixel
    m[0:3, 197:200] = 1  # touching the image's corner
    return m.astype(bool)


def random_blobs(seed: int, h: int = 96, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.normal(size=(h, w)).astype(np.float32), (0, 0), 3)
    return noise > 0.05


@pytest.mark.parametrize("mask", [shapes(), random_blobs(0), random_blobs(1)], ids=["shapes", "blobs0", "blobs1"])
def test_exact_at_tolerance_zero(mask):
    o = crop_outline(mask_crop(mask), tolerance=0)
    back = outline_to_mask(o, mask.shape)
    assert np.array_equal(back, mask)


def test_parts_holes_and_small_parts_counted():
    m = shapes()
    o = crop_outline(mask_crop(m), tolerance=0)
    assert len(o.parts) == 6 and len(o.holes) == 1 and o.dropped == 0
    o = crop_outline(mask_crop(m), tolerance=0, min_area=10)
    assert len(o.parts) == 4 and o.dropped == 2 and o.dropped_area == 1 + 9
    assert all(p.shape[1] == 2 and len(p) >= 3 for p in o.parts + o.holes)


def test_default_tolerance_is_close_and_shorter():
    m = random_blobs(2)
    exact = crop_outline(mask_crop(m), tolerance=0)
    simple = crop_outline(mask_crop(m))
    back = outline_to_mask(simple, m.shape)
    iou = (back & m).sum() / (back | m).sum()
    assert iou >= 0.98
    assert sum(map(len, simple.parts)) < sum(map(len, exact.parts)) / 2


def test_offset_crop_keeps_image_coordinates():
    m = np.zeros((50, 60), bool)
    m[10:20, 30:45] = True
    [p] = crop_outline(mask_crop(m), tolerance=0).parts
    assert p[:, 0].min() == pytest.approx(30.25) and p[:, 0].max() == pytest.approx(44.75)
    assert p[:, 1].min() == pytest.approx(10.25) and p[:, 1].max() == pytest.approx(19.75)


def test_single_polygon_keeps_holes_and_joins_each_hole_at_its_nearest_vertex():
    """YOLO-seg's one polygon per mask: filled as its loaders fill it, the holes stay empty;
    each hole's corridor starts at the part's vertex nearest to it (the windowed search
    agrees with comparing every pair)."""
    from sam_cli.polygons import _nearest, _nearest_near, fill_polygon, single_polygon

    m = np.random.default_rng(5).random((120, 160)) < 0.7  # a few large parts, many holes
    o = crop_outline(mask_crop(m), tolerance=0, centres=True)
    assert len(o.holes) > 100
    for h, part in enumerate(o.hole_parts):
        a, b = o.parts[part], o.holes[h]
        span = float((a.max(0) - a.min(0)).max())
        i, j = _nearest_near(a, np.argsort(a[:, 0], kind="stable"), span, b)
        assert ((a[i] - b[j]) ** 2).sum() == pytest.approx(_nearest(a, b)[2])
    s = shapes()
    filled = fill_polygon(single_polygon(crop_outline(mask_crop(s), tolerance=0, centres=True)), s.shape)
    assert not filled[80, 70 - 13] and filled[80, 70]  # inside the hole: empty; the island: filled
    assert (filled & ~s).sum() < 0.03 * s.sum() and not (s & ~filled).any()  # corridors only add


def test_parts_joined_along_the_shortest_tree():
    """single_polygon's corridors follow a minimum spanning tree over the parts' boxes,
    whatever order the parts come in: five squares in a row, given shuffled, are joined each
    to its neighbours, and the corridors fill fewer pixels than joining each part to the
    first would."""
    from sam_cli.polygons import _part_tree, fill_polygon, single_polygon

    order = [3, 0, 4, 1, 2]
    parts = [np.array([[x, 10], [x + 8, 10], [x + 8, 18], [x, 18]], float) for x in (10 + 30 * k for k in order)]
    edges = _part_tree(parts)
    assert len(edges) == 4
    assert sorted(tuple(sorted((order[a], order[b]))) for a, b in edges) == [(0, 1), (1, 2), (2, 3), (3, 4)]
    m = np.zeros((30, 160), bool)
    for p in parts:
        m[10:19, int(p[0, 0]):int(p[0, 0]) + 9] = True
    filled = fill_polygon(single_polygon(crop_outline(mask_crop(m), tolerance=0, centres=True)), m.shape)
    assert not (m & ~filled).any() and (filled & ~m).sum() == 4 * 21  # four gaps of 21 pixels, one row
