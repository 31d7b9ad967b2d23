"""`sam eval`: the paper's click protocol against an independent implementation in this test
driving Meta's SamPredictor (same weights, same ground truth), the click positions on shapes
whose centres are known, and box mode's mIoU and COCO mask AP."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from cli_helpers import run_sam
from conftest import EXAMPLES

CIRCLES = [(120, 100, 50), (300, 180, 70), (380, 60, 30)]  # x, y, radius on chelsea.jpg (451×300)


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    """A COCO dataset: three discs drawn on chelsea.jpg, as compressed RLE, plus a crowd region."""
    from pycocotools import mask as coco_mask

    root = tmp_path_factory.mktemp("gt")
    shutil.copy(EXAMPLES / "chelsea.jpg", root / "chelsea.jpg")
    h, w = cv2.imread(str(root / "chelsea.jpg")).shape[:2]
    anns = []
    for k, (x, y, r) in enumerate(CIRCLES, start=1):
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (x, y), r, 1, -1)
        rle = coco_mask.encode(np.asfortranarray(m))
        anns.append({"id": k, "image_id": 7, "category_id": 1, "iscrowd": 0, "area": int(m.sum()),
                     "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    anns.append({**anns[0], "id": 9, "iscrowd": 1})
    doc = {"images": [{"id": 7, "file_name": "chelsea.jpg", "width": w, "height": h}], "annotations": anns,
           "categories": [{"id": 1, "name": "disc"}]}
    (root / "gt.json").write_text(json.dumps(doc))
    return root / "gt.json"


def meta_clicks(predictor, gt: np.ndarray, clicks: int) -> tuple[list[float], list[list[int]]]:
    """The protocol, written again from the paper for Meta's SamPredictor."""
    def farthest(region):
        if not region.any():
            return None
        d = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        i = int(d.argmax())
        return i % d.shape[1], i // d.shape[1], d.flat[i]

    pts, labels, ious, low, pred = [], [], [], None, None
    for k in range(clicks):
        if k == 0:
            x, y, _ = farthest(gt)
            lab = 1
        else:
            a, b = farthest(gt & ~pred), farthest(pred & ~gt)
            if b is None or (a is not None and a[2] >= b[2]):
                x, y, lab = a[0], a[1], 1
            else:
                x, y, lab = b[0], b[1], 0
        pts.append([x, y])
        labels.append(lab)
        m, s, lows = predictor.predict(np.array(pts, float), np.array(labels), mask_input=low,
                                       multimask_output=k == 0)
        j = int(s.argmax()) if k == 0 else 0
        pred, low = m[j], lows[j : j + 1]
        ious.append(float((pred & gt).sum() / (pred | gt).sum()))
    return ious, pts


def test_clicks_match_an_independent_implementation_on_the_reference(coherent_ckpt, ground_truth, tmp_path):
    from segment_anything import SamPredictor

    from sam_cli.evaluate import gt_mask
    from sam_cli.io.images import read_image

    from reference import TINY, build_reference, make_coherent

    p = run_sam("eval", ground_truth, "-o", tmp_path / "r", "-c", coherent_ckpt, "--clicks", "1,2,3")
    assert p.returncode == 0, p.stderr
    (line,) = p.stdout.decode().splitlines()  # JSON Lines alone on stdout; the table on stderr
    assert json.loads(line)["status"] == "ok"
    lines = [x for x in p.stderr.decode().splitlines() if x[:1].isdigit() and " click" in x]
    assert lines[0].startswith("1 click (most confident, first click center): mIoU ") and lines[0].endswith("over 3 objects")
    assert lines[2].startswith("3 clicks")
    report = json.loads((tmp_path / "r/eval.json").read_text())
    assert report["summary"]["crowd_left_out"] == 1 and report["summary"]["objects"] == 3
    pred = SamPredictor(make_coherent(build_reference(**TINY, seed=0)))
    img = read_image(ground_truth.parent / "chelsea.jpg")
    pred.set_image(img)
    anns = json.loads(ground_truth.read_text())["annotations"]
    for obj, ann, (cx, cy, _) in zip(report["objects"], anns, CIRCLES):
        ious, pts = meta_clicks(pred, gt_mask(ann, *img.shape[:2]), 3)
        assert np.allclose(obj["ious"], ious, atol=1e-6), (obj["ious"], ious)
        assert [c[:2] for c in obj["clicks"]] == [[float(x), float(y)] for x, y in pts]
        assert abs(obj["clicks"][0][0] - cx) <= 1 and abs(obj["clicks"][0][1] - cy) <= 1  # the disc's centre
    assert report["summary"]["miou"]["2"] == pytest.approx(np.mean([o["ious"][1] for o in report["objects"]]))
    plot = cv2.imread(str(tmp_path / "r/eval.png"))
    assert plot.shape == (320, 480, 3)
    assert json.loads((tmp_path / "r/chelsea.jpg.eval.json").read_text())["image_id"] == 7
    # resumed: nothing to redo, the same table
    p2 = run_sam("eval", ground_truth, "-o", tmp_path / "r", "-c", coherent_ckpt, "--clicks", "1,2,3")
    assert [x for x in p2.stderr.decode().splitlines() if x[:1].isdigit() and " click" in x] == lines


def test_box_mode_miou_and_coco_ap(tiny_ckpt, ground_truth, tmp_path):
    p = run_sam("eval", ground_truth, "-o", tmp_path / "b", "-c", tiny_ckpt, "--box", "--refine")
    assert p.returncode == 0, p.stderr
    last = p.stderr.decode().splitlines()[-1]
    assert last.startswith("box + refine: mIoU ") and "mask AP" in last and last.endswith("over 3 objects")
    s = json.loads((tmp_path / "b/eval.json").read_text())["summary"]
    assert 0 <= s["ap"]["AP"] <= 1 and 0 <= s["miou"]["box"] <= 1


def test_bad_ground_truth(tiny_ckpt, tmp_path):
    (tmp_path / "gt.json").write_text('{"images": 3}')
    p = run_sam("eval", tmp_path / "gt.json", "-o", tmp_path / "o", "-c", tiny_ckpt)
    assert p.returncode == 3
    assert p.stderr.decode().strip() == (f"Error: {tmp_path / 'gt.json'}: not a COCO dataset (it needs 'images' and "
                                         "'annotations' lists)")
