"""`sam segment --prompts` as users run it: each prompt source end to end, resume, refusals,
bad rows and missing images failing alone, coco.json scored with pycocotools, stdin."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from cli_helpers import lines, run_sam
from conftest import EXAMPLES

NAMES = ["chelsea.jpg", "coffee.jpg", "rocket.jpg"]  # 451×300, 600×400, 640×427


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for n in NAMES:
        shutil.copy(EXAMPLES / n, d / n)
    return d


def _coco(tmp_path, photos):
    ds = {"images": [{"id": 30 + k, "file_name": n, "width": w, "height": h}
                     for k, (n, (w, h)) in enumerate(zip(NAMES, [(451, 300), (600, 400), (640, 427)]))],
          "annotations": [{"id": 1, "image_id": 30, "category_id": 17, "bbox": [60, 30, 300, 250],
                           "area": 75000, "iscrowd": 0, "segmentation": [[60, 30, 360, 30, 360, 280, 60, 280]]},
                          {"id": 2, "image_id": 31, "category_id": 47, "bbox": [100, 50, 200, 200],
                           "area": 40000, "iscrowd": 0, "segmentation": [[100, 50, 300, 50, 300, 250, 100, 250]]}],
          "categories": [{"id": 17, "name": "cat"}, {"id": 47, "name": "cup"}]}
    dets = [{"image_id": 30, "category_id": 17, "bbox": [58, 28, 305, 254], "score": 0.93},
            {"image_id": 30, "category_id": 47, "bbox": [0, 0, 40, 40], "score": 0.05},
            {"image_id": 31, "category_id": 47, "bbox": [95, 45, 210, 205], "score": 0.81},
            {"image_id": 32, "category_id": 17, "bbox": [1, 1, 639.9, 426.5], "score": 0.6}]
    (tmp_path / "instances.json").write_text(json.dumps(ds))
    (tmp_path / "dets.json").write_text(json.dumps(dets))
    return tmp_path / "instances.json", tmp_path / "dets.json"


def test_coco_detections_to_a_dataset_pycocotools_scores(tiny_ckpt, tmp_path, photos):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    ds, dets = _coco(tmp_path, photos)
    out = tmp_path / "out"
    p = run_sam("segment", "--prompts", dets, "--coco-dataset", ds, "--images", photos, "--min-score", "0.1",
                "-o", out, "-f", "coco", "-c", tiny_ckpt, "--refine")
    assert p.returncode == 0, p.stderr
    assert [(x["input"], x["status"], x["masks"]) for x in lines(p)] == [
        (str(photos / n), "ok", m) for n, m in zip(NAMES, [1, 1, 1])]
    doc = json.loads((out / "coco.json").read_text())
    assert [(im["id"], im["file_name"]) for im in doc["images"]] == [(30, NAMES[0]), (31, NAMES[1]), (32, NAMES[2])]
    assert {(c["id"], c["name"]) for c in doc["categories"]} == {(17, "cat"), (47, "cup")}
    anns = doc["annotations"]
    assert [(a["image_id"], a["category_id"], a["score"]) for a in anns] == [(30, 17, 0.93), (31, 47, 0.81), (32, 17, 0.6)]
    assert anns[2]["prompt"]["box"] == [1.0, 1.0, 640.0, 427.0]  # a detector's overshoot, clipped
    gt = COCO(str(ds))
    ev = COCOeval(gt, gt.loadRes(anns), "segm")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats.shape == (12,) and np.isfinite(ev.stats[0])
    # a rerun skips every image; other prompts into the same folder are refused, not skipped
    p = run_sam("segment", "--prompts", dets, "--coco-dataset", ds, "--images", photos, "--min-score", "0.1",
                "-o", out, "-f", "coco", "-c", tiny_ckpt, "--refine")
    assert p.returncode == 0 and [x["status"] for x in lines(p)] == ["skipped"] * 3
    p = run_sam("segment", "--prompts", dets, "--coco-dataset", ds, "--images", photos,
                "-o", out, "-f", "coco", "-c", tiny_ckpt, "--refine")
    assert p.returncode == 2
    assert "its outputs were made by another run (--prompts " in p.stderr.decode()
    assert "add --overwrite" in p.stderr.decode()


def test_jsonl_on_stdin_relative_to_the_working_folder(tiny_ckpt, tmp_path, photos):
    jl = "".join(json.dumps({"image": f"photos/{n}", "objects": [{"points": [[50, 60]], "category": "x"}]}) + "\n"
                 for n in NAMES)
    p = run_sam("segment", "--prompts", "-", "-o", "out", "-c", tiny_ckpt, "-f", "png", "-f", "label-map",
                "-f", "overlay", "--best-mask", input=jl.encode(), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    recs = lines(p)
    assert [r["input"] for r in recs] == [f"photos/{n}" for n in NAMES]
    meta = (tmp_path / "out/photos/chelsea.jpg.masks/metadata.csv").read_text().splitlines()
    assert meta[0] == ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,object_index,mask_index,predicted_iou,"
                       "category_id,category,score,object_id,prompt")
    import csv

    row = next(csv.reader(meta[1:]))
    assert len(meta) == 2 and row[6] == "0" and row[7] in "012" and row[10] == "x"
    assert json.loads(row[13]) == {"points": [[50.0, 60.0]], "point_labels": [1]}  # the prompt it came from
    m = cv2.imread(str(tmp_path / "out/photos/chelsea.jpg.masks/0.png"), cv2.IMREAD_UNCHANGED)
    assert int(row[1]) == int((m > 0).sum())
    lm = cv2.imread(str(tmp_path / "out/photos/chelsea.jpg.labels.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(lm > 0, m > 0)
    assert (tmp_path / "out/photos/rocket.jpg.overlay.jpg").is_file()


def test_bad_rows_and_missing_images_fail_alone(tiny_ckpt, tmp_path, photos):
    f = tmp_path / "p.csv"
    f.write_text("image,x0,y0,x1,y1,category,score\n"
                 f"{NAMES[0]},10,10,200,200,cat,0.9\n"
                 f"{NAMES[0]},20,20,100,100,cat,0.8\n"
                 f"{NAMES[1]},10,10,2000,200,cup,0.9\n"
                 "gone.jpg,1,1,5,5,,\n"
                 f"{NAMES[2]},1,1,5,x,,\n")
    p = run_sam("segment", "--prompts", f, "--images", photos, "-o", tmp_path / "out", "-c", tiny_ckpt)
    assert p.returncode == 5, p.stderr
    st = [(x["status"], x.get("masks")) for x in lines(p)]
    assert st == [("ok", 2), ("failed", None), ("failed", None), ("failed", None)]
    err = p.stderr.decode()
    assert f"Error: {f} line 4: box 10,10,2000,200 is outside {photos / NAMES[1]} (600×400 pixels)" in err
    assert f"Error: {f} line 5: {photos / 'gone.jpg'}: no such file" in err
    assert f"Error: {f} line 6: y1 must be a number, got 'x'" in err
    assert "1 done, 0 skipped (already done), 3 failed" in err


def test_yolo_labels_with_names(tiny_ckpt, tmp_path, photos):
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "chelsea.txt").write_text("0 0.5 0.5 0.6 0.8 0.7\n1 0.2 0.2 0.1 0.1\n")
    (labels / "coffee.txt").write_text("1 0.5 0.5 0.3 0.3\n")
    (tmp_path / "data.yaml").write_text("names: [cat, cup]\n")
    p = run_sam("segment", "--prompts", labels, "--images", photos, "--names", tmp_path / "data.yaml",
                "-o", tmp_path / "out", "-c", tiny_ckpt, "-f", "coco", "-f", "overlay")
    assert p.returncode == 0, p.stderr
    assert [(x["input"], x["masks"]) for x in lines(p)] == [
        (str(photos / n), m) for n, m in zip(NAMES, [2, 1, 0])]
    doc = json.loads((tmp_path / "out/coco.json").read_text())
    assert sorted((c["id"], c["name"]) for c in doc["categories"]) == [(0, "cat"), (1, "cup")]
    assert [a["category_id"] for a in doc["annotations"]] == [0, 1, 1]
    assert doc["annotations"][0]["prompt"]["box"] == pytest.approx([90.2, 30, 360.8, 270])
    # the overlay draws the prompt boxes: white along the box's top edge, not beside it
    ov = cv2.imread(str(tmp_path / "out/chelsea.jpg.overlay.jpg")).astype(float)
    assert ov[30, 100:350].min(axis=1).mean() > ov[36, 100:350].min(axis=1).mean() + 60


@pytest.mark.parametrize("args,message", [
    (["x.jpg", "--prompts", "p.jsonl"], "IMAGE is for one image; with --prompts the prompt file names"),
    (["--prompts", "p.jsonl", "--box", "1,2,3,4"], "--box is for one image"),
    (["x.jpg", "--images", "d", "--box", "1,2,3,4"], "--images works with --prompts FILE (many images)"),
    (["--prompts", "nope.jsonl"], "--prompts nope.jsonl: no such file or folder"),
    (["--prompts", "p.jsonl", "--prompt-format", "xml"], "'xml': choose from jsonl, coco, yolo, csv"),
    (["x.jpg", "--point", "1,1", "--best-mask", "--multimask"], "--best-mask and --multimask ask for different"),
])
def test_usage_errors(tmp_path, args, message):
    (tmp_path / "p.jsonl").write_text("")
    p = run_sam("segment", *args, "-o", "out", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    assert message in p.stderr.decode()
    assert "Traceback" not in p.stderr.decode()


def test_an_empty_prompt_file_is_said(tmp_path):
    (tmp_path / "p.jsonl").write_text("\n")
    p = run_sam("segment", "--prompts", "p.jsonl", "-o", "out", cwd=tmp_path)
    assert p.returncode == 0 and p.stderr.decode().strip().endswith("no images in p.jsonl")


def test_embedding_cache_and_overwrite(tiny_ckpt, tmp_path, photos):
    """--embedding-cache serves a prompted run as it serves sam auto: a rerun with --overwrite
    (or other prompts into a new folder) reads every embedding back, and the masks are equal."""
    f = tmp_path / "p.jsonl"
    f.write_text("".join(json.dumps({"image": n, "objects": [{"box": [10, 10, 200, 200]}]}) + "\n" for n in NAMES))
    args = ["segment", "--prompts", f, "--images", photos, "-o", tmp_path / "out", "-c", tiny_ckpt,
            "-f", "coco-rle", "--embedding-cache", tmp_path / "emb"]
    p = run_sam(*args)
    assert p.returncode == 0, p.stderr
    first = [(tmp_path / "out" / f"{n}.json").read_text() for n in NAMES]
    assert "embedding cache: 0 of 3 embeddings read" in p.stderr.decode()
    p = run_sam(*args, "--overwrite")
    assert p.returncode == 0, p.stderr
    assert "embedding cache: 3 of 3 embeddings read" in p.stderr.decode()
    assert [x["status"] for x in lines(p)] == ["ok"] * 3
    assert [(tmp_path / "out" / f"{n}.json").read_text() for n in NAMES] == first
