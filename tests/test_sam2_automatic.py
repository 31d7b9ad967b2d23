"""SAM 2.1's automatic mode against Meta's SAM2AutomaticMaskGenerator (sam2 1.1.0, the oracle)
over combinations of its settings drawn at random (seeded), as test_amg_settings_parity.py does
for SAM 1: thresholds drawn apart, crops on and off, one or three masks per point, the m2m
refinement on and off, the low-res hole and sprinkle clean-up on and off.

Meta's clean-up finds connected regions with a CUDA kernel (sam2._C), which a CPU build lacks;
the tests give the oracle a stand-in with the kernel's contract (per cell: its 8-connected
region's label, 0 outside the region, and the region's area), so the oracle runs its own
composition of it (which logits each half reads, ≤ the limit, ±10) on the CPU.

Each draw's settings are in its test id's draw number: `draw_settings(n)` gives them again."""

from __future__ import annotations

import random

import cv2
import numpy as np
import pytest
import sam2.automatic_mask_generator  # noqa: F401  (the oracle: a missing one fails, never skips)
import torch

from sam_cli import masks as M
from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
from sam_cli.io.images import read_image

from conftest import EXAMPLES
from reference import match

SEED = 5862
IMAGES = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg")
IN_CI = 4  # draws in every run; the rest under the slow marker
SLOW = 12


def draw_settings(n: int) -> tuple[str, dict]:
    """Draw n: an example photo and the generator's settings (SAM 2's names). Grids stay
    small so a draw costs seconds (those of every run smaller still); NMS off half the time, as
    a random model's image-sized masks leave about one after NMS (REFERENCE §8)."""
    rng = random.Random(SEED * 1000 + n)

    def nms() -> float:
        return 1.0 if rng.random() < 1 / 2 else round(rng.uniform(0.3, 0.99), 2)

    kw = dict(
        points_per_side=rng.randint(2, 6 if n < IN_CI else 9),
        points_per_batch=rng.choice([5, 16, 64]),
        # a random model's predicted IoUs sit within about 0.46–0.54: thresholds that keep some
        pred_iou_thresh=rng.choice([0.0, round(rng.uniform(0.47, 0.53), 3)]),
        stability_score_thresh=rng.choice([0.0, round(rng.uniform(0.3, 0.8), 3)]),
        stability_score_offset=round(rng.uniform(0.05, 1.0), 3),
        box_nms_thresh=nms(),
        crop_nms_thresh=nms(),
        crop_n_layers=rng.choice([0, 0, 0, 1]),
        crop_overlap_ratio=round(rng.uniform(0.1, 0.6), 3),
        crop_n_points_downscale_factor=rng.choice([1, 2]),
        min_mask_region_area=rng.choice([0, rng.randint(1, 60)]),
        multimask_output=rng.random() < 0.6,
        use_m2m=rng.random() < 0.4,
    )
    return rng.choice(IMAGES), kw


def ours_settings(kw: dict) -> AmgSettings:
    kw = dict(kw)
    kw["multimask"] = kw.pop("multimask_output")
    return AmgSettings(**kw)


def connected_components(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """sam2.utils.misc.get_connected_components's contract on the CPU: N×1×H×W bool → (labels,
    areas), each N×1×H×W int32: a cell's 8-connected region's label (0 outside the region) and
    that region's area (0 outside)."""
    labels = torch.zeros(mask.shape, dtype=torch.int32)
    areas = torch.zeros(mask.shape, dtype=torch.int32)
    for i, m in enumerate(mask[:, 0].cpu().numpy().astype(np.uint8)):
        _, lab, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        area = stats[:, cv2.CC_STAT_AREA].copy()
        area[0] = 0
        labels[i, 0] = torch.from_numpy(lab.astype(np.int32))
        areas[i, 0] = torch.from_numpy(area[lab].astype(np.int32))
    return labels, areas


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from sam_cli.checkpoints import load_model

    from reference import build_sam2_tiny

    ref, path = build_sam2_tiny(tmp_path_factory.mktemp("sam2amg") / "sam2.1_tiny_random.pt", seed=1)
    return ref, load_model(checkpoint=path), path


def compare(n: int, models, monkeypatch) -> None:
    import sam2.utils.misc
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    monkeypatch.setattr(sam2.utils.misc, "get_connected_components", connected_components)
    ref_model, ours_model, _ = models
    name, kw = draw_settings(n)
    image = read_image(EXAMPLES / name)
    ours = AutomaticMaskGenerator(ours_model, ours_settings(kw)).generate(image)
    with torch.no_grad():
        ref = SAM2AutomaticMaskGenerator(ref_model, output_mode="uncompressed_rle", **kw).generate(image)
    matched, pairs = match(ref, ours)
    # float32 rounding may move a pixel near the 0 logit, or a score near a threshold, to the
    # other side: at most 1 mask in 50 may differ
    most = max(len(ref), len(ours))
    assert matched >= most - most // 50, (name, kw, matched, len(ref), len(ours))
    for a, b in pairs:
        assert abs(a["predicted_iou"] - b.predicted_iou) <= 1e-4, (name, kw)
        assert abs(a["stability_score"] - b.stability_score) <= 1e-3, (name, kw)
        assert [int(v) for v in a["crop_box"]] == M.crop_xyxy_to_xywh(b.crop_box), (name, kw)
    print(f"draw {n}: {name} {kw}: reference {len(ref)} masks, sam {len(ours)}, matched {matched}")


# the draw with a crop layer (five encoder calls a side) and the two longest others under `heavy`,
# which CI runs after the default run
@pytest.mark.parametrize("n", [pytest.param(n, marks=pytest.mark.heavy)
                               if draw_settings(n)[1]["crop_n_layers"] or n in (1, 3) else n for n in range(IN_CI)])
def test_random_settings_match_sam2_generator(n, models, monkeypatch):
    compare(n, models, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("n", range(IN_CI, IN_CI + SLOW))
def test_more_random_settings_match_sam2_generator(n, models, monkeypatch):
    compare(n, models, monkeypatch)


def test_draws_cover_the_combinations():
    """The draws of every run hold m2m on and off, one and three masks, the clean-up on and off,
    crops on and off."""
    draws = [draw_settings(n)[1] for n in range(IN_CI)]
    assert {d["use_m2m"] for d in draws} == {True, False}
    assert {d["multimask_output"] for d in draws} == {True, False}
    assert {d["min_mask_region_area"] > 0 for d in draws} == {True, False}
    assert {d["crop_n_layers"] for d in draws} == {0, 1}


def test_clean_up_matches_the_references_composition():
    """Holes and sprinkles on built logits: the sprinkles are read from the logits before the
    holes are filled (a ring around a filled hole is a sprinkle when the ring alone is small),
    limits are inclusive, both halves move a cell 10 past the threshold."""
    import sam2.utils.misc
    from sam2.utils.transforms import SAM2Transforms

    rng = np.random.default_rng(0)
    low = torch.from_numpy(rng.normal(0, 1, (3, 64, 64)).astype(np.float32))
    low[0, 10:15, 10:15] = 2.0  # a 5×5 block with a 1-cell hole: the ring is 24 cells
    low[0, 12, 12] = -1.0
    orig = sam2.utils.misc.get_connected_components
    sam2.utils.misc.get_connected_components = connected_components
    try:
        for hole, sprinkle in [(1, 24), (1, 23), (7, 0), (30, 30)]:
            t = SAM2Transforms(resolution=1024, mask_threshold=0.0, max_hole_area=hole, max_sprinkle_area=sprinkle)
            want = t.postprocess_masks(low[:, None], (64, 64))[:, 0]  # 64 → 64: no resize
            got = M.fill_holes_and_sprinkles(low, 0.0, hole, sprinkle)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    finally:
        sam2.utils.misc.get_connected_components = orig


def test_sam_auto_runs_sam_2_with_its_own_defaults(models, tmp_path):
    """`sam auto` with a SAM 2.1 checkpoint: SAM 2's pred_iou_thresh (0.8) where none is given,
    which a random model's masks (IoU about 0.5) never pass, said in the run's note; with the
    filters off, masks in every format asked for, and the m2m and clean-up options taken."""
    from cli_helpers import lines, run_sam

    ckpt = models[2]
    img = EXAMPLES / "chelsea.jpg"
    p = run_sam("auto", img, "-o", tmp_path / "a", "-c", ckpt, "--points-per-side", "2")
    assert p.returncode == 0, p.stderr
    assert "below --pred-iou-thresh 0.8 " in p.stderr.decode()
    p = run_sam("auto", img, "-o", tmp_path / "b", "-c", ckpt, "--points-per-side", "3", "--pred-iou-thresh", "0",
                "--stability-score-thresh", "0", "--box-nms-thresh", "1", "--use-m2m", "--no-multimask",
                "--min-mask-region-area", "20", "-f", "coco", "-f", "coco-rle")
    assert p.returncode == 0, p.stderr
    rec = lines(p)[0]
    assert rec["status"] == "ok" and rec["masks"] == 9  # one mask per point, none filtered
    import json

    coco = json.loads((tmp_path / "b" / "coco.json").read_text())
    assert len(coco["annotations"]) == 9
