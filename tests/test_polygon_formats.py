"""Formats that write polygons: coco.json with --coco-polygons read back by pycocotools, and
yolo-seg's labels read back as a YOLO data loader does (coordinates scaled, cut to whole
pixels, cv2.fillPoly); categories, collisions, and what is said about holes."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from sam_cli import masks as M
from sam_cli.errors import OutputError
from sam_cli.io.formats import FormatOptions
from sam_cli.io.outputs import OutputLayout
from sam_cli.masks import MaskRecord, PromptedMask

H, W = 120, 160


def objects() -> np.ndarray:
    """Five masks: a disc with a hole, a square, an ellipse, two blobs apart, a thin bar."""
    ms = np.zeros((5, H, W), np.uint8)
    cv2.circle(ms[0], (50, 60), 40, 1, -1)
    cv2.circle(ms[0], (50, 60), 12, 0, -1)
    cv2.rectangle(ms[1], (100, 10), (150, 50), 1, -1)
    cv2.ellipse(ms[2], (120, 90), (30, 15), 20, 0, 360, 1, -1)
    cv2.circle(ms[3], (20, 20), 10, 1, -1)
    cv2.circle(ms[3], (60, 110), 8, 1, -1)
    ms[4, 100:104, 90:150] = 1
    return ms.astype(bool)


def auto_records(masks):
    rles = M.masks_to_rle(torch.from_numpy(masks))
    return [MaskRecord(r, [0, 0, 0, 0], 0.9, [1.0, 2.0], 0.95, [0, 0, W, H]) for r in rles]


def iou(a, b) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_coco_polygons_read_back_by_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    masks = objects()
    layout = OutputLayout(tmp_path, ("coco",), options=FormatOptions(category="thing", polygons=True))
    layout.write("a.jpg", np.zeros((H, W, 3), np.uint8), auto_records(masks))
    [(path, note)] = layout.finish(["a.jpg"])
    assert note.startswith("polygons: mean IoU ") and "over 5 masks" in note
    coco = COCO(str(path))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["thing"]
    anns = coco.loadAnns(coco.getAnnIds())
    assert all(isinstance(a["segmentation"], list) for a in anns)
    back = [coco.annToMask(a).astype(bool) for a in anns]
    # the hole cannot be held by COCO polygons: it is filled, and the annotation says so
    assert anns[0]["polygon_holes"] == 1 and "polygon_holes" not in anns[1]
    filled = masks[0].copy()
    cv2.circle(filled.view(np.uint8), (50, 60), 12, 1, -1)
    assert iou(back[0], filled) >= 0.98
    assert len(anns[3]["segmentation"]) == 2  # two parts, two polygons of one annotation
    assert np.mean([iou(b, m) for b, m in zip(back[1:], masks[1:])]) >= 0.98
    assert [a["area"] for a in anns] == [int(m.sum()) for m in masks]  # the mask's, not the polygons'


def test_coco_polygons_exact_at_tolerance_zero_and_small_parts_counted(tmp_path):
    from pycocotools.coco import COCO

    masks = objects()[1:]
    layout = OutputLayout(tmp_path, ("coco",), options=FormatOptions(polygons=True, tolerance=0, min_area=300))
    layout.write("a.jpg", np.zeros((H, W, 3), np.uint8), auto_records(masks))
    [(path, _)] = layout.finish(["a.jpg"])
    coco = COCO(str(path))
    anns = coco.loadAnns(coco.getAnnIds())
    assert np.array_equal(coco.annToMask(anns[0]).astype(bool), masks[0])
    assert anns[2]["polygon_parts_dropped"] == 1 and len(anns[2]["segmentation"]) == 1  # the small disc
    assert "polygon_parts_dropped" not in anns[0]


def read_yolo(path, w, h) -> list[tuple[int, np.ndarray]]:
    """As a YOLO data loader: class and vertices scaled to pixels, cut to ints, filled."""
    out = []
    for line in path.read_text().splitlines():
        cls, *xy = line.split()
        pts = (np.array(xy, float).reshape(-1, 2) * [w, h]).astype(np.int32)
        m = np.zeros((h, w), np.uint8)
        cv2.fillPoly(m, [pts], 1)
        out.append((int(cls), m.astype(bool)))
    return out


def test_yolo_seg_labels_read_back_as_a_loader_does(tmp_path):
    masks = objects()
    layout = OutputLayout(tmp_path, ("yolo-seg",))
    img = np.zeros((H, W, 3), np.uint8)
    layout.write("s/a.jpg", img, auto_records(masks))
    layout.write("b.png", img, [])
    [(path, note)] = layout.finish(["s/a.jpg", "b.png"])
    assert path == tmp_path / "labels" and note.startswith("polygons filled as YOLO loaders do: mean IoU")
    assert (tmp_path / "labels/b.txt").read_text() == ""
    got = read_yolo(tmp_path / "labels/s/a.txt", W, H)
    assert [c for c, _ in got] == [0] * 5
    ious = [iou(b, m) for (_, b), m in zip(got, masks)]
    assert ious[0] >= 0.98  # the hole kept, joined to its disc by a corridor of one pixel's width
    assert not got[0][1][60, 50]  # the hole's centre stays empty
    assert min(ious[1:3]) >= 0.99 and ious[4] >= 0.99
    # two discs 95 pixels apart: the corridor joining them fills its line of pixels (YOLO-seg
    # holds one polygon per object), so the IoU drops, as the run's note reports
    assert 0.8 <= ious[3] < 0.9 and got[3][1][20, 20] and got[3][1][110, 60]
    assert (tmp_path / "data.yaml").read_text().splitlines()[1:] == ["nc: 1", "names:", '  0: "object"']


def test_yolo_seg_classes_from_prompts_and_collisions(tmp_path):
    masks = objects()[:3]
    rles = M.masks_to_rle(torch.from_numpy(masks))
    cats = [{"category_id": 47, "category": "cup"}, {"category_id": 17, "category": "cat"}, {"category": "dog"}]
    recs = [PromptedMask(r, [0, 0, 0, 0], 0.9, i, 0, {}, c) for i, (r, c) in enumerate(zip(rles, cats))]
    layout = OutputLayout(tmp_path, ("yolo-seg",), prompted=True)
    img = np.zeros((H, W, 3), np.uint8)
    for rel in ("a/x.jpg", "a/x.png", "y.jpg"):
        layout.write(rel, img, recs)
    with pytest.raises(OutputError, match=r"label files of several images would have one name: a/x.png \(its labels "
                                          r"would be .*labels/a/x.txt, as a/x.jpg's are\)"):
        layout.finish(["a/x.jpg", "a/x.png", "y.jpg"])
    assert [c for c, _ in read_yolo(tmp_path / "labels/y.txt", W, H)] == [1, 0, 2]  # ids 17, 47, then names
    assert (tmp_path / "data.yaml").read_text().splitlines()[3:] == ['  0: "cat"', '  1: "cup"', '  2: "dog"']
    assert json.loads((tmp_path / "y.jpg.json").read_text())["annotations"][2]["category"] == "dog"


# ------------------------------------------------------------------ CVAT and Label Studio
def _run(tmp_path, fmt: str, **options):
    for name in ("s/a.jpg", "b.png"):  # datumaro's CVAT reader wants the images beside the XML
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "images" / name).write_bytes(b"")
    masks = objects()
    layout = OutputLayout(tmp_path, (fmt,), options=FormatOptions(**options))
    layout.write("s/a.jpg", np.zeros((H, W, 3), np.uint8), auto_records(masks))
    layout.write("b.png", np.zeros((H, W, 3), np.uint8), [])
    [(path, note)] = layout.finish(["s/a.jpg", "b.png"])
    return masks, path, note


def test_cvat_masks_read_back_by_datumaro(tmp_path):
    """datumaro's CVAT importer (as CVAT itself imports) reads every mask back, pixel for pixel."""
    import datumaro as dm

    masks, path, _ = _run(tmp_path, "cvat", category="thing")
    ds = dm.Dataset.import_from(str(path), "cvat")
    items = {it.id: it for it in ds}
    assert set(items) == {"s/a", "b"} and items["b"].annotations == []
    labels = ds.categories()[dm.AnnotationType.label]
    anns = items["s/a"].annotations
    assert [labels[a.label].name for a in anns] == ["thing"] * 5
    assert all(a.type == dm.AnnotationType.mask for a in anns)
    for a, m in zip(anns, masks):
        assert np.array_equal(a.image.astype(bool), m)
    assert len({a.z_order for a in anns}) == 5


def test_cvat_polygons_keep_masks_with_holes(tmp_path):
    import datumaro as dm

    masks, path, note = _run(tmp_path, "cvat", polygons=True)
    assert note == "1 masks with holes kept as masks"
    anns = {it.id: it for it in dm.Dataset.import_from(str(path), "cvat")}["s/a"].annotations
    kinds = [a.type for a in anns]
    assert kinds.count(dm.AnnotationType.mask) == 1 and kinds.count(dm.AnnotationType.polygon) == 5
    [hole] = [a for a in anns if a.type == dm.AnnotationType.mask]
    assert np.array_equal(hole.image.astype(bool), masks[0])
    two = [a for a in anns if a.type == dm.AnnotationType.polygon and a.group]
    assert len(two) == 2 and two[0].group == two[1].group  # the two discs of one mask, grouped
    for a in anns:
        if a.type == dm.AnnotationType.polygon and not a.group:
            back = a.as_polygon() if hasattr(a, "as_polygon") else a.points
            assert len(back) >= 6


def test_labelstudio_brush_masks_read_back_by_its_converter(tmp_path):
    """label-studio-converter's own brush decoder reads every mask back, pixel for pixel."""
    from label_studio_converter.brush import decode_rle

    masks, path, _ = _run(tmp_path, "labelstudio", image_root="/data/local-files/?d=")
    tasks = json.loads(path.read_text())
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=s/a.jpg", "/data/local-files/?d=b.png"]
    [pred] = tasks[0]["predictions"]
    assert pred["model_version"].startswith("sam ") and len(pred["result"]) == 5
    for r, m in zip(pred["result"], masks):
        assert r["type"] == "brushlabels" and r["value"]["brushlabels"] == ["object"]
        assert (r["original_width"], r["original_height"]) == (W, H)
        back = np.reshape(decode_rle(r["value"]["rle"]), [H, W, 4])[:, :, 3] > 0
        assert np.array_equal(back, m)
    assert tasks[1]["predictions"][0]["result"] == []


def test_labelstudio_polygons_in_percent(tmp_path):
    masks, path, note = _run(tmp_path, "labelstudio", polygons=True)
    assert note == "1 masks with holes kept as brush masks"
    results = json.loads(path.read_text())[0]["predictions"][0]["result"]
    assert [r["type"] for r in results] == ["brushlabels"] + ["polygonlabels"] * 5
    square = results[1]["value"]["points"]  # the square 100..150 × 10..50
    xs, ys = [p[0] for p in square], [p[1] for p in square]
    assert min(xs) == pytest.approx(100.25 / W * 100, abs=0.01) and max(ys) == pytest.approx(50.75 / H * 100, abs=0.01)


@pytest.mark.parametrize("polygons", [False, True], ids=["rle", "polygons"])
def test_coco_read_back_by_datumaro(tmp_path, polygons):
    """datumaro's COCO importer reads coco.json back: RLE masks exactly, polygons close."""
    import shutil

    import datumaro as dm
    from pycocotools import mask as coco_mask

    masks = objects()
    layout = OutputLayout(tmp_path / "out", ("coco",), options=FormatOptions(polygons=polygons))
    layout.write("s/a.jpg", np.zeros((H, W, 3), np.uint8), auto_records(masks))
    [(path, _)] = layout.finish(["s/a.jpg"])
    (tmp_path / "ds/annotations").mkdir(parents=True)  # the layout datumaro expects
    (tmp_path / "ds/images/default").mkdir(parents=True)
    shutil.copy(path, tmp_path / "ds/annotations/instances_default.json")
    [item] = dm.Dataset.import_from(str(tmp_path / "ds"), "coco_instances")
    by_id: dict[int, np.ndarray] = {}
    for a in item.annotations:
        if a.type == dm.AnnotationType.mask:
            by_id[a.id] = a.image.astype(bool)
        elif a.type == dm.AnnotationType.polygon:  # one per part: their union is the mask
            m = coco_mask.decode(coco_mask.frPyObjects([a.points], H, W)[0]).astype(bool)
            by_id[a.id] = by_id.get(a.id, np.zeros((H, W), bool)) | m
    assert sorted(by_id) == [1, 2, 3, 4, 5]
    for k, m in enumerate(masks, start=1):
        if polygons:
            assert iou(by_id[k], m) >= (0.9 if k == 1 else 0.98)  # the first has a hole, filled
        else:
            assert np.array_equal(by_id[k], m)
