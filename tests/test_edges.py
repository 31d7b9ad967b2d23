"""`sam edges`: the paper's edge maps. With a model whose masks follow the shapes of a synthetic
image (a stand-in predictor: each grid point's three masks are the shape under it, as SAM's
low-res logits), the edges lie on the shapes' boundaries; the CLI's maps have the image's size
and orientation and resume like every run."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from sam_cli.edges import boundary_strength, edge_map, thin

from cli_helpers import run_sam
from conftest import EXAMPLES

H, W = 150, 200


def shapes() -> list[np.ndarray]:
    """A disc, a rectangle and a triangle, as H×W bool masks."""
    ms = [np.zeros((H, W), np.uint8) for _ in range(3)]
    cv2.circle(ms[0], (60, 70), 35, 1, -1)
    cv2.rectangle(ms[1], (120, 20), (185, 80), 1, -1)
    cv2.fillPoly(ms[2], [np.array([[110, 140], [190, 140], [150, 95]])], 1)
    return [m.astype(bool) for m in ms]


def signed_distance(m: np.ndarray) -> np.ndarray:
    inside = cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5)
    outside = cv2.distanceTransform((~m).astype(np.uint8), cv2.DIST_L2, 5)
    return (inside - outside).astype(np.float32)


class ShapePredictor:
    """The Predictor interface edge_map uses, for a model whose masks are the shapes: a point
    on a shape gets that shape's mask three times, a point off them the background's, as
    low-res logits (the signed distance, resized into the 1024 frame and down to 256)."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = masks
        s = 1024 / max(H, W)
        self.input_hw = (int(H * s + 0.5), int(W * s + 0.5))
        from sam_cli.upscale import upscale_logits

        self.model = type("M", (), {"device": torch.device("cpu"), "img_size": 1024, "mask_threshold": 0.0,
                                    "upscale": staticmethod(lambda low, ihw, ohw: upscale_logits(low, ihw, ohw, 1024))})()
        bg = ~np.logical_or.reduce(masks)
        self.low = [self._low(signed_distance(m)) for m in [*masks, bg]]

    def _low(self, sd: np.ndarray) -> torch.Tensor:
        big = np.full((1024, 1024), -50.0, np.float32)
        big[: self.input_hw[0], : self.input_hw[1]] = cv2.resize(sd, self.input_hw[::-1], interpolation=cv2.INTER_LINEAR)
        return torch.from_numpy(cv2.resize(big, (256, 256), interpolation=cv2.INTER_AREA))

    def set_image(self, image: np.ndarray) -> None:
        assert image.shape[:2] == (H, W)

    def decode(self, points, labels, boxes, mask_input, multimask):
        assert boxes is None and mask_input is None and multimask
        out = []
        for x, y in (points[:, 0] * torch.tensor([W / self.input_hw[1], H / self.input_hw[0]])).tolist():
            k = next((i for i, m in enumerate(self.masks) if m[int(y), int(x)]), len(self.masks))
            out.append(self.low[k])
        low = torch.stack(out)[:, None].expand(-1, 3, -1, -1)
        return low, torch.full(low.shape[:2], 0.9)


def boundaries(masks: list[np.ndarray]) -> np.ndarray:
    out = np.zeros((H, W), bool)
    for m in masks:
        u8 = m.astype(np.uint8)
        out |= (cv2.dilate(u8, np.ones((3, 3), np.uint8)) != cv2.erode(u8, np.ones((3, 3), np.uint8)))
    return out


def precision_recall(edges: np.ndarray, truth: np.ndarray, tol: int = 2) -> tuple[float, float]:
    k = np.ones((2 * tol + 1, 2 * tol + 1), np.uint8)
    near_truth = cv2.dilate(truth.astype(np.uint8), k).astype(bool)
    near_edges = cv2.dilate(edges.astype(np.uint8), k).astype(bool)
    return float((edges & near_truth).sum() / edges.sum()), float((truth & near_edges).sum() / truth.sum())


def test_edges_lie_on_the_shapes_boundaries():
    masks = shapes()
    em = edge_map(ShapePredictor(masks), np.zeros((H, W, 3), np.uint8))
    assert em.edges.shape == (H, W) and em.edges.dtype == np.float32
    assert em.edges.max() == pytest.approx(1.0) and em.edges.min() >= 0
    assert em.masks == 4  # 768 masks, duplicates of the three shapes and the background removed
    p, r = precision_recall(em.edges > 0.1, boundaries(masks))
    assert p >= 0.9 and r >= 0.9, (p, r)


def test_thinning_leaves_one_pixel_wide_edges():
    """A blurred line: edge NMS keeps its ridge alone."""
    e = np.zeros((40, 60), np.float32)
    e[:, 30] = 1.0
    e = cv2.GaussianBlur(e, (0, 0), 2)
    t = thin(e / e.max())
    assert (t[5:-5] > 0).sum(axis=1).max() == 1 and (t[5:-5, 30] > 0).all()


def test_strength_only_on_a_mask_boundary():
    sd = torch.from_numpy(signed_distance(shapes()[0]))[None]
    s = boundary_strength(sd * 4)
    on = boundaries(shapes()[:1])
    assert s[torch.from_numpy(~on)].max() == 0 and s[torch.from_numpy(on)].max() > 0


def test_cli_edges_size_orientation_and_resume(tiny_ckpt, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    img = cv2.imread(str(EXAMPLES / "coffee.jpg"))
    cv2.imwrite(str(src / "tall.png"), cv2.rotate(img, cv2.ROTATE_90_CLOCKWISE))  # 600×400: portrait
    p = run_sam("edges", src, "-o", tmp_path / "out", "-c", tiny_ckpt, "--grid", "4", "--npy")
    assert p.returncode == 0, p.stderr
    [line] = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert line["status"] == "ok"
    png = cv2.imread(str(tmp_path / "out/tall.png.edges.png"), cv2.IMREAD_UNCHANGED)
    npy = np.load(tmp_path / "out/tall.png.edges.npy", allow_pickle=False)
    assert png.dtype == np.uint16 and png.shape == npy.shape == (600, 400)
    assert np.array_equal(png, np.round(npy * 65535).astype(np.uint16)) and png.max() == 65535
    p = run_sam("edges", src, "-o", tmp_path / "out", "-c", tiny_ckpt, "--grid", "4", "--npy")
    assert [json.loads(x)["status"] for x in p.stdout.decode().splitlines()] == ["skipped"]
    p = run_sam("edges", src, "-o", tmp_path / "out", "-c", tiny_ckpt, "--grid", "5")
    assert p.returncode == 2 and "--grid 4 there, 5 now" in p.stderr.decode()
    # the line counts the masks whose boundaries made the map: with NMS off, all 4x4x3
    p = run_sam("edges", src, "-o", tmp_path / "all", "-c", tiny_ckpt, "--grid", "4", "--nms", "1.0")
    assert [json.loads(x)["masks"] for x in p.stdout.decode().splitlines()] == [48]
