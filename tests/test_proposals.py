"""`sam auto --proposals`: the paper's object proposals, against the reference generator's
records with the same settings, ranked as the paper ranks them (mean of predicted IoU and
stability score), the best kept; masks matched one-to-one as the automatic-mode parity does."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cli_helpers import run_sam
from conftest import EXAMPLES

KEEP = 25


def decode(seg: dict) -> np.ndarray:
    from pycocotools import mask as coco_mask

    counts = seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]
    return coco_mask.decode({"size": seg["size"], "counts": counts}).astype(bool)



@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_proposals_match_the_reference_ranked(coherent_ckpt, tmp_path):
    from segment_anything import SamAutomaticMaskGenerator

    from sam_cli.io.images import read_image

    from reference import TINY, build_reference, make_coherent

    ref = make_coherent(build_reference(**TINY, seed=0))
    img = read_image(EXAMPLES / "coffee.jpg")
    # the preset's settings but for the grid (64×64 is a GPU's work) and NMS: a random model's
    # masks overlap so much that NMS 0.9 leaves one (REFERENCE §8); the NMS path itself is
    # tested against the reference in test_amg_parity.py
    gen = SamAutomaticMaskGenerator(ref, points_per_side=12, pred_iou_thresh=0.0, stability_score_thresh=0.0,
                                    box_nms_thresh=1.0, crop_n_layers=0, output_mode="coco_rle")
    theirs = gen.generate(img)
    assert len(theirs) > KEEP  # the ranking and the cut are both exercised
    theirs.sort(key=lambda r: -(r["predicted_iou"] + r["stability_score"]) / 2)
    theirs = theirs[:KEEP]

    out = tmp_path / "out"
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "coffee.jpg", src / "coffee.jpg")
    p = run_sam("auto", src, "-o", out, "-c", coherent_ckpt, "--proposals",
                "--points-per-side", "12", "--box-nms-thresh", "1", "--max-proposals", str(KEEP),
                "-f", "coco-rle", "-f", "coco")
    assert p.returncode == 0, p.stderr
    ours = json.loads((out / "coffee.jpg.json").read_text())["annotations"]
    assert len(ours) == KEEP
    scores = [a["score"] for a in ours]
    assert scores == sorted(scores, reverse=True)
    for a, b in zip(ours, theirs):  # rank by rank: the same mask, the same score
        ma, mb = decode(a["segmentation"]), decode(b["segmentation"])
        assert (ma & mb).sum() / (ma | mb).sum() >= 0.99
        assert abs(a["score"] - (b["predicted_iou"] + b["stability_score"]) / 2) <= 1e-4
        assert np.allclose(a["point_coords"], b["point_coords"], atol=1e-3)
    coco = json.loads((out / "coco.json").read_text())
    assert [x["score"] for x in coco["annotations"]] == scores  # COCO results, with that score
    record = json.loads((out / "sam-run.json").read_text())["settings"]
    assert (record["points_per_side"], record["box_nms_thresh"], record["pred_iou_thresh"],
            record["stability_score_thresh"], record["crop_n_layers"], record["proposals"]) == (12, 1.0, 0, 0, 0, KEEP)
    # a rerun keeping fewer is another run's settings: refused, not mixed
    p = run_sam("auto", src, "-o", out, "-c", coherent_ckpt, "--proposals",
                "--points-per-side", "12", "--box-nms-thresh", "1", "--max-proposals", "10", "-f", "coco-rle")
    assert p.returncode == 2 and "--proposals 25 there, 10 now" in p.stderr.decode(), p.stderr


def test_proposals_preset(tiny_ckpt, tmp_path):
    """The paper's settings where no option is given (64×64, no crops, filters off, NMS 0.9),
    as the run record says (a run over no images: written before any model work)."""
    (tmp_path / "empty").mkdir()
    p = run_sam("auto", tmp_path / "empty", "-o", tmp_path / "out", "-c", tiny_ckpt, "--proposals",
                "--stability-score-offset", "0.5", "-f", "coco-rle")
    assert p.returncode == 0, p.stderr
    record = json.loads((tmp_path / "out/sam-run.json").read_text())["settings"]
    assert {k: record[k] for k in ("points_per_side", "crop_n_layers", "pred_iou_thresh", "stability_score_thresh",
                                   "box_nms_thresh", "stability_score_offset", "proposals")} == \
        {"points_per_side": 64, "crop_n_layers": 0, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
         "box_nms_thresh": 0.9, "stability_score_offset": 0.5, "proposals": 1000}
