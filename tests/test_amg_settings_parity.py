"""Automatic mode against the reference over combinations of its eleven settings, drawn at
random (seeded), not a few chosen points: thresholds unequal, crops on and off, cleanup on
and off, odd grid sizes. A bug that lives between two settings (the small-region cleanup's
NMS threshold is the larger of --box-nms-thresh and --crop-nms-thresh) hides from a test
whose settings are all equal.

The model is the tiny random one (tests/reference.build_shifted_tiny): its masks are speckled
and as large as the image (REFERENCE §8), so an NMS below 1 leaves about one mask. The draws
therefore compare whole runs; test_cleanup_nms_threshold_is_the_references compares the
cleanup's NMS on built masks, where the two thresholds give different answers.

Each draw's settings are in its test id's draw number: `draw_settings(n)` gives them again."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from sam_cli import masks as M
from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
from sam_cli.automatic.generator import CropMasks
from sam_cli.io.images import read_image

from conftest import EXAMPLES
from reference import match

SEED = 2026
IMAGES = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")
IN_CI = 5  # draws in every run; the rest under the slow marker
SLOW = 23


def draw_settings(n: int) -> tuple[str, dict]:
    """Draw n: an example photo and all eleven settings. Grids stay small (2–9 points a side)
    so that a draw costs seconds; NMS thresholds are drawn apart, 1.0 (off) a third of the time
    so that runs keep many masks; crops, cleanup and the filters are each on about half the time."""
    rng = random.Random(SEED * 1000 + n)

    def nms() -> float:
        return 1.0 if rng.random() < 1 / 3 else round(rng.uniform(0.3, 0.99), 2)

    kw = dict(
        points_per_side=rng.randint(2, 9),
        points_per_batch=rng.choice([5, 16, 64]),
        pred_iou_thresh=rng.choice([0.0, round(rng.uniform(0.3, 0.5), 3)]),
        # a random model's logits sit within about ±1: offsets and thresholds that keep masks
        stability_score_thresh=rng.choice([0.0, round(rng.uniform(0.02, 0.12), 3)]),
        stability_score_offset=round(rng.uniform(0.01, 0.3), 3),
        box_nms_thresh=nms(),
        crop_nms_thresh=nms(),
        crop_n_layers=rng.choice([0, 0, 1]),
        crop_overlap_ratio=round(rng.uniform(0.1, 0.6), 3),
        crop_n_points_downscale_factor=rng.choice([1, 2, 3]),
        min_mask_region_area=rng.choice([0, rng.randint(5, 3000)]),
    )
    return rng.choice(IMAGES), kw


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from sam_cli.checkpoints import load_model

    from reference import build_shifted_tiny, save_checkpoint

    ref = build_shifted_tiny()
    path = save_checkpoint(ref, tmp_path_factory.mktemp("amg") / "tiny_shifted.pth")
    return ref, load_model(checkpoint=path)


def compare(n: int, models) -> None:
    from segment_anything import SamAutomaticMaskGenerator

    ref_model, ours_model = models
    name, kw = draw_settings(n)
    image = read_image(EXAMPLES / name)
    ours = AutomaticMaskGenerator(ours_model, AmgSettings(**kw)).generate(image)
    try:
        ref = SamAutomaticMaskGenerator(ref_model, output_mode="uncompressed_rle", **kw).generate(image)
    except IndexError:
        # The reference fails where crop layers leave no mask in any crop (its crop NMS takes
        # box_area of an empty 1-D tensor); sam gives no masks there.
        assert kw["crop_n_layers"] > 0 and ours == [], (name, kw, len(ours))
        print(f"draw {n}: {name} {kw}: reference fails on no masks, sam 0")
        return
    matched, pairs = match(ref, ours)
    # Pixel tolerance: float32 rounding may move a pixel within ~1e-5 of the 0 logit to the
    # other side, or a score to the other side of a threshold; at most 1 mask in 50 may differ.
    assert matched >= max(len(ref), len(ours)) - max(len(ref), len(ours)) // 50, (
        name, kw, matched, len(ref), len(ours))
    for a, b in pairs:
        assert abs(a["predicted_iou"] - b.predicted_iou) <= 1e-3, (name, kw)
        assert abs(a["stability_score"] - b.stability_score) <= 1e-3, (name, kw)
        assert [int(v) for v in a["crop_box"]] == M.crop_xyxy_to_xywh(b.crop_box), (name, kw)
    print(f"draw {n}: {name} {kw}: reference {len(ref)} masks, sam {len(ours)}, matched {matched}")


#: the three longest of the draws in every run go to `heavy` (CI runs them after the default run)
HEAVY_DRAWS = (0, 1, 3)


@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.heavy) if n in HEAVY_DRAWS else n for n in range(IN_CI)])
def test_random_settings_match_reference(n, models):
    compare(n, models)


@pytest.mark.slow
@pytest.mark.parametrize("n", range(IN_CI, IN_CI + SLOW))
def test_more_random_settings_match_reference(n, models):
    compare(n, models)


def test_draws_cover_the_combinations():
    """The draws run in every CI run include unequal NMS thresholds with cleanup on, crops on
    and off, and filters on and off (and the slow ones more of each)."""
    draws = [draw_settings(n)[1] for n in range(IN_CI)]
    assert any(d["min_mask_region_area"] > 0 and d["box_nms_thresh"] != d["crop_nms_thresh"] for d in draws)
    assert {d["crop_n_layers"] for d in draws} == {0, 1}
    assert {d["min_mask_region_area"] > 0 for d in draws} == {True, False}
    assert {d["pred_iou_thresh"] > 0 for d in draws + [draw_settings(n)[1] for n in range(IN_CI, IN_CI + SLOW)]} == {True, False}


def _rect(hw, y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros(hw, bool)
    m[y0:y1, x0:x1] = True
    return m


@pytest.mark.parametrize("box_nms, crop_nms", [(0.7, 0.9), (0.9, 0.7), (0.5, 1.0), (1.0, 0.5)])
def test_cleanup_nms_threshold_is_the_references(box_nms, crop_nms, models, monkeypatch):
    """--min-mask-region-area removes islands and fills holes, then runs NMS again with the
    changed masks scored 0. Built so that after the cleanup two pairs of boxes overlap at IoU
    0.8, between the two thresholds: which masks survive depends on the threshold."""
    from segment_anything import SamAutomaticMaskGenerator
    from segment_anything.utils.amg import MaskData, batched_mask_to_box, mask_to_rle_pytorch

    hw = (100, 120)
    a = _rect(hw, 10, 50, 10, 60)
    b = _rect(hw, 12, 52, 14, 64)
    b[90:93, 110:113] = True  # a small island far away: the box is large until cleanup
    c = _rect(hw, 60, 96, 20, 50)
    d = _rect(hw, 63, 96, 23, 50)
    d[70:73, 30:33] = False  # a small hole: changed by the cleanup, its box stays
    e = _rect(hw, 2, 8, 80, 118)  # overlaps nothing
    masks = torch.from_numpy(np.stack([a, b, c, d, e]))
    n = len(masks)
    iou = torch.tensor([0.91, 0.95, 0.93, 0.97, 0.9])
    points = torch.tensor([[30.0, 30.0], [40.0, 30.0], [30.0, 80.0], [35.0, 80.0], [100.0, 5.0]])
    boxes = batched_mask_to_box(masks)

    def built(self, image):
        return MaskData(rles=mask_to_rle_pytorch(masks), boxes=boxes.float(), iou_preds=iou,
                        points=points, stability_score=torch.full((n,), 0.96),
                        crop_boxes=torch.tensor([[0, 0, hw[1], hw[0]]] * n))

    monkeypatch.setattr(SamAutomaticMaskGenerator, "_generate_masks", built)
    kw = dict(box_nms_thresh=box_nms, crop_nms_thresh=crop_nms, min_mask_region_area=30)
    ref_model, ours_model = models
    ref = SamAutomaticMaskGenerator(ref_model, output_mode="uncompressed_rle", **kw).generate(
        np.zeros((*hw, 3), np.uint8))

    gen = AutomaticMaskGenerator(ours_model, AmgSettings(**kw))
    crop = CropMasks([0, 0, hw[1], hw[0]], rles=M.masks_to_rle(masks), boxes=list(boxes.numpy()),
                     iou=iou.tolist(), stability=[0.96] * n, points=list(points.numpy()))
    ours = gen.finalize([crop], hw)
    assert [r["point_coords"][0] for r in ref] == [o.point for o in ours]
    assert [r["segmentation"] for r in ref] == [o.rle for o in ours]
    # the thresholds decide: 0.8 overlaps go at 0.7 and stay at 0.9
    assert len(ours) == (3 if max(box_nms, crop_nms) < 0.8 else 5)
