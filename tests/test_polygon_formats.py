"""The annotation formats read back by independent readers: coco.json (RLE and --polygons) by
pycocotools, Label Studio's tasks by label-studio-converter's own brush decoder, CVAT's XML as
CVAT's importer reads it, and yolo-seg's labels as a YOLO data loader does (coordinates
scaled, cut to whole pixels, cv2.fillPoly); categories, collisions, and what is said about
holes. tests/test_interop.py reads coco and cvat with datumaro too (its own environment)."""

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
from sam_cli.masks import PromptedMask
from sam_cli.polygons import Outline, crop_outline, outline_to_mask

from shapes import H, W, auto_records, iou, objects, write_one


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
    assert note.endswith("; 1 masks of several parts joined into one line by corridors (--yolo-parts split: "
                         "a line per part)")
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
    assert (tmp_path / "data.yaml").read_text().splitlines()[1:] == [
        "train: images", "val: images", "nc: 1", "names:", '  0: "object"']


@pytest.mark.parametrize("how", ["split", "largest"])
def test_yolo_seg_masks_of_several_parts_split_or_largest(tmp_path, how):
    """--yolo-parts split: a line per part, which together fill the mask back exactly at
    tolerance 0 (no corridor); largest: the larger disc alone, the other counted. Each says so
    in the run's note."""
    masks = objects()
    layout = OutputLayout(tmp_path, ("yolo-seg",), options=FormatOptions(yolo_parts=how, tolerance=0))
    layout.write("a.jpg", np.zeros((H, W, 3), np.uint8), auto_records(masks))
    [(_, note)] = layout.finish(["a.jpg"])
    got = [m for _, m in read_yolo(tmp_path / "labels/a.txt", W, H)]
    if how == "split":
        assert len(got) == 6 and note.endswith("; 1 masks of several parts written as a line per part")
        two = got[3] | got[4]
        assert np.array_equal(two, masks[3]) and not (got[3] & got[4]).any()
        assert np.array_equal(got[5], masks[4])
    else:
        assert len(got) == 5 and note.endswith("; 1 masks of several parts cut to their largest part; 1 parts left out")
        disc = np.zeros((H, W), np.uint8)
        cv2.circle(disc, (20, 20), 10, 1, -1)
        assert np.array_equal(got[3], disc.astype(bool))
    assert iou(got[0], masks[0]) >= 0.98 and not got[0][60, 50]  # the hole kept either way


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
    assert (tmp_path / "data.yaml").read_text().splitlines()[5:] == ['  0: "cat"', '  1: "cup"', '  2: "dog"']
    assert json.loads((tmp_path / "y.jpg.json").read_text())["annotations"][2]["category"] == "dog"


# ------------------------------------------------------------------ CVAT and Label Studio
def read_cvat(path) -> dict[str, list[dict]]:
    """CVAT for images 1.1 as CVAT's importers read it (datumaro's CVAT reader, which
    CVAT uses: a mask's rle counts runs over its box, row by row, from a run of 0s): per image
    name, its shapes as {kind, label, group, z, mask (H×W bool, masks only), points}."""
    import xml.etree.ElementTree as ET

    root = ET.parse(path).getroot()
    assert root.findtext("version") == "1.1"
    labels = [lab.findtext("name") for lab in root.iter("label")]
    out = {}
    for im in root.iter("image"):
        w, h = int(im.get("width")), int(im.get("height"))
        shapes = []
        for el in im:
            assert el.get("label") in labels
            s = {"kind": el.tag, "label": el.get("label"), "group": int(el.get("group_id", 0)),
                 "z": int(el.get("z_order")), "score": float(el.findtext("attribute[@name='score']"))}
            if el.tag == "mask":
                left, top, mw, mh = (int(el.get(k)) for k in ("left", "top", "width", "height"))
                counts = [int(c) for c in el.get("rle").split(",")]
                flat = np.repeat(np.arange(len(counts)) % 2 == 1, counts)
                m = np.zeros((h, w), bool)
                m[top : top + mh, left : left + mw] = flat.reshape(mh, mw)
                s["mask"] = m
            else:
                s["points"] = [tuple(map(float, p.split(","))) for p in el.get("points").split(";")]
            shapes.append(s)
        out[im.get("name")] = shapes
    return out


def test_cvat_masks_read_back(tmp_path):
    masks, path, _ = write_one(tmp_path, "cvat", category="thing")
    got = read_cvat(path)
    assert list(got) == ["s/a.jpg", "z.png"] and got["z.png"] == []  # in output-key order
    shapes = got["s/a.jpg"]
    assert [s["kind"] for s in shapes] == ["mask"] * 5 and {s["label"] for s in shapes} == {"thing"}
    for s, m in zip(shapes, masks):
        assert np.array_equal(s["mask"], m) and s["score"] == pytest.approx(0.9)
    areas = [int(m.sum()) for m in masks]
    assert sorted(range(5), key=lambda i: shapes[i]["z"]) == sorted(range(5), key=lambda i: -areas[i])


def test_cvat_polygons_keep_masks_with_holes(tmp_path):
    masks, path, note = write_one(tmp_path, "cvat", polygons=True)
    assert note == "1 masks with holes kept as masks"
    shapes = read_cvat(path)["s/a.jpg"]
    assert [s["kind"] for s in shapes] == ["mask"] + ["polygon"] * 5  # the disc with a hole stays a mask
    assert np.array_equal(shapes[0]["mask"], masks[0])
    grouped = [s for s in shapes if s["group"]]
    assert len(grouped) == 2 and grouped[0]["group"] == grouped[1]["group"]  # two discs, one mask
    from pycocotools import mask as coco_mask

    square = coco_mask.decode(coco_mask.frPyObjects([np.ravel(shapes[1]["points"]).tolist()], H, W)[0])
    assert iou(square.astype(bool), masks[1]) >= 0.99


@pytest.mark.parametrize("fmt", ["cvat", "labelstudio"])
def test_polygon_min_area_in_cvat_and_labelstudio(tmp_path, fmt):
    """Parts under --polygon-min-area are left out of the polygons and counted: the small
    disc (≈200 px) of the two-disc mask; the larger (≈310 px) stays, alone, ungrouped; the bar
    (240 px) stays."""
    masks, path, note = write_one(tmp_path, fmt, polygons=True, min_area=230)
    kept_as = "masks" if fmt == "cvat" else "brush masks"
    config = "; its labelling config in labelstudio-config.xml" if fmt == "labelstudio" else ""
    assert note == f"1 masks with holes or only parts under --polygon-min-area kept as {kept_as}; " \
                   "1 parts under --polygon-min-area left out" + config
    if fmt == "cvat":
        shapes = read_cvat(path)["s/a.jpg"]
        assert [s["kind"] for s in shapes] == ["mask"] + ["polygon"] * 4 and not any(s["group"] for s in shapes)
        xs = [x for x, _ in shapes[3]["points"]]
    else:
        results = json.loads(path.read_text())[0]["predictions"][0]["result"]
        assert [r["type"] for r in results] == ["brushlabels"] + ["polygonlabels"] * 4
        xs = [x * W / 100 for x, _ in results[3]["value"]["points"]]
    assert 9 < min(xs) and max(xs) < 31  # the disc at x 10..30


def test_labelstudio_brush_masks_read_back_by_its_converter(tmp_path):
    """label-studio-converter's own brush decoder reads every mask back, pixel for pixel."""
    from label_studio_converter.brush import decode_rle

    masks, path, _ = write_one(tmp_path, "labelstudio", image_root="/data/local-files/?d=")
    tasks = json.loads(path.read_text())
    assert [t["data"]["image"] for t in tasks] == ["/data/local-files/?d=s/a.jpg", "/data/local-files/?d=z.png"]
    [pred] = tasks[0]["predictions"]
    assert pred["model_version"].startswith("sam ") and len(pred["result"]) == 5
    for r, m in zip(pred["result"], masks):
        assert r["type"] == "brushlabels" and r["value"]["brushlabels"] == ["object"]
        assert (r["original_width"], r["original_height"]) == (W, H)
        back = np.reshape(decode_rle(r["value"]["rle"]), [H, W, 4])[:, :, 3] > 0
        assert np.array_equal(back, m)
    assert tasks[1]["predictions"][0]["result"] == []


def test_labelstudio_polygons_in_percent(tmp_path):
    masks, path, note = write_one(tmp_path, "labelstudio", polygons=True)
    assert note == "1 masks with holes kept as brush masks; its labelling config in labelstudio-config.xml"
    results = json.loads(path.read_text())[0]["predictions"][0]["result"]
    assert [r["type"] for r in results] == ["brushlabels"] + ["polygonlabels"] * 5
    square = results[1]["value"]["points"]  # the square 100..150 × 10..50
    xs, ys = [p[0] for p in square], [p[1] for p in square]
    assert min(xs) == pytest.approx(100.25 / W * 100, abs=0.01) and max(ys) == pytest.approx(50.75 / H * 100, abs=0.01)


def test_example_photos_in_every_format_read_back(coherent_ckpt, tmp_path):
    """`sam segment --prompts` on the example photos, written as coco (polygons), cvat,
    labelstudio and yolo-seg, each read back by an independent reader and compared with the
    run's own masks (its coco-rle files): RLE encodings exactly, polygons closely."""
    from label_studio_converter.brush import decode_rle
    from pycocotools import mask as coco_mask
    from pycocotools.coco import COCO

    from cli_helpers import run_sam
    from conftest import EXAMPLES

    names = sorted(p.name for p in EXAMPLES.glob("*.jpg"))
    lines = []
    for n in names:
        h, w = cv2.imread(str(EXAMPLES / n)).shape[:2]
        boxes = [[10, 10, w // 2, h // 2], [w // 3, h // 3, w - 5, h - 5], [w // 4, 5, w - 20, h // 2]]
        lines.append(json.dumps({"image": n, "objects": [{"box": b, "category": c}
                                                         for b, c in zip(boxes, ["a", "b", "a"])]}))
    (tmp_path / "p.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out"
    p = run_sam("segment", "--prompts", tmp_path / "p.jsonl", "--images", EXAMPLES, "-o", out, "-c", coherent_ckpt,
                "-f", "coco", "-f", "cvat", "-f", "labelstudio", "-f", "yolo-seg", "--polygons", "--multimask")
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode()
    assert f"wrote {out / 'coco.json'} (polygons: mean IoU" in err and f"wrote {out / 'labels'} (polygons filled" in err
    ours = {}  # (image, mask index) → the run's own mask
    for n in names:
        for k, a in enumerate(json.loads((out / f"{n}.json").read_text())["annotations"]):
            seg = a["segmentation"]
            ours[n, k] = coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool)
    assert len(ours) == 4 * 9
    coco = COCO(str(out / "coco.json"))
    files = {i["id"]: i["file_name"] for i in coco.dataset["images"]}
    seen: dict[str, int] = {}
    ious = []
    for a in coco.dataset["annotations"]:
        n = files[a["image_id"]]
        k = seen[n] = seen.get(n, -1) + 1
        # COCO polygons cannot hold holes: compare with the mask whose holes are filled, and
        # check that each annotation counts the holes it filled
        exact = crop_outline(M.mask_crop(ours[n, k]), tolerance=0)
        filled = outline_to_mask(Outline(parts=exact.parts), ours[n, k].shape)
        assert a.get("polygon_holes", 0) == len(exact.holes)
        ious.append(iou(coco.annToMask(a).astype(bool), filled))
    assert len(ious) == 36 and np.mean(ious) >= 0.98, np.mean(ious)
    # CVAT: with --polygons a mask with holes stays a mask, exact
    masks_seen = 0
    for n, shapes in read_cvat(out / "annotations.xml").items():
        for sh in shapes:
            if sh["kind"] == "mask":
                assert any(np.array_equal(sh["mask"], ours[n, k]) for k in range(9))
                masks_seen += 1
    assert masks_seen > 0
    # Label Studio: brush masks exactly, through its own decoder
    for task in json.loads((out / "labelstudio.json").read_text()):
        n = task["data"]["image"]
        for r in task["predictions"][0]["result"]:
            if r["type"] == "brushlabels":
                h, w = r["original_height"], r["original_width"]
                m = np.reshape(decode_rle(r["value"]["rle"]), [h, w, 4])[:, :, 3] > 0
                assert any(np.array_equal(m, ours[n, k]) for k in range(9))
    # YOLO-seg, as a loader reads it: one polygon per mask, close where the masks are whole
    ious = []
    for n in names:
        h, w = cv2.imread(str(EXAMPLES / n)).shape[:2]
        got = read_yolo(out / "labels" / n.replace(".jpg", ".txt"), w, h)
        # a mask given twice (two of a click's three masks can be one) is one line: loaders drop
        # the second as a duplicate, so sam leaves it out and says so
        assert 1 <= len(got) <= 9 and {c for c, _ in got} <= {0, 1}
        ious += [max(iou(m, ours[n, k]) for k in range(9)) for _, m in got]
    assert np.median(ious) >= 0.95, np.round(ious, 3)
    # --yolo-parts split, the same run's masks: a line per part, each object's lines in a row,
    # which together fill the masks back (the bar: mean IoU ≥ 0.98 at the default tolerance)
    from sam_cli.io.formats import yolo_seg

    _, note = yolo_seg.finish(out, names, FormatOptions(yolo_parts="split"))
    assert "masks of several parts written as a line per part" in note
    ious = []
    for n in names:
        h, w = cv2.imread(str(EXAMPLES / n)).shape[:2]
        got = [m for _, m in read_yolo(out / "labels" / n.replace(".jpg", ".txt"), w, h)]
        for k in range(9):  # a mask: the lines of its parts (a part two masks share is written once)
            inside = [m for m in got if (m & ours[n, k]).sum() >= 0.9 * m.sum()]
            ious.append(iou(np.logical_or.reduce(inside), ours[n, k]) if inside else 0.0)
    assert np.mean(ious) >= 0.98, (np.mean(ious), np.round(ious, 3))


def test_yolo_seg_leaves_out_a_line_two_masks_share(tmp_path):
    """--yolo-parts split: two masks with one part in common would give two equal lines, which
    a YOLO loader drops as duplicates; the second is left out and counted."""
    a, b = np.zeros((2, H, W), bool)
    a[10:30, 10:30] = b[10:30, 10:30] = True  # the shared part
    a[60:90, 60:90] = True
    b[60:90, 100:130] = True
    masks = np.stack([a, b])
    layout = OutputLayout(tmp_path, ("yolo-seg",), options=FormatOptions(yolo_parts="split"))
    layout.write("x.jpg", np.zeros((H, W, 3), np.uint8), auto_records(masks))
    [(_, note)] = layout.finish(["x.jpg"])
    text = (tmp_path / "labels/x.txt").read_text().splitlines()
    assert len(text) == 3 and len(set(text)) == 3
    assert note.endswith("; 1 lines left out as the same class and polygon as another of their image's")


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_yolo_seg_is_a_dataset_with_its_images(tmp_path, tiny_ckpt):
    """images/ beside labels/ (links, or copies), as Ultralytics looks for them; data.yaml names
    the dataset's path and its train and val images (tests/test_peers_bench.py loads it with
    Ultralytics itself)."""
    from cli_helpers import run_sam
    from conftest import EXAMPLES

    for how in ("link", "copy", "none"):
        out = tmp_path / how
        p = run_sam("auto", EXAMPLES / "chelsea.jpg", EXAMPLES / "coffee.jpg", "-o", out, "-f", "yolo-seg",
                    "--yolo-images", how, "-c", tiny_ckpt, "--points-per-side", "2", "--pred-iou-thresh", "0",
                    "--stability-score-thresh", "0", cwd=EXAMPLES)
        assert p.returncode == 0, p.stderr
        got = sorted(q.name for q in (out / "images").iterdir()) if (out / "images").exists() else []
        if how == "none":
            assert got == [] and "--yolo-images none" in p.stderr.decode()
            continue
        assert got == ["chelsea.jpg", "coffee.jpg"]
        assert ((out / "images/chelsea.jpg").is_symlink()) == (how == "link")
        assert (out / "images/coffee.jpg").read_bytes() == (EXAMPLES / "coffee.jpg").read_bytes()
        assert (out / "labels/chelsea.txt").is_file()


def test_label_studio_scores_are_0_to_1_and_the_config_is_written(tmp_path):
    from label_studio_converter import Converter

    masks = objects()
    recs = auto_records(masks)
    recs[0].predicted_iou, recs[1].predicted_iou = -0.3, 1.2  # a random model's IoU head strays
    layout = OutputLayout(tmp_path, ("labelstudio",), options=FormatOptions(polygons=True, category='a "b" <c>'))
    layout.write("x.jpg", np.zeros((H, W, 3), np.uint8), recs)
    [(_, note)] = layout.finish(["x.jpg"])
    assert note.endswith("its labelling config in labelstudio-config.xml")
    scores = [r["score"] for r in json.loads((tmp_path / "labelstudio.json").read_text())[0]["predictions"][0]["result"]]
    assert min(scores) == 0.0 and max(scores) == 1.0
    config = (tmp_path / "labelstudio-config.xml").read_text()
    parsed = Converter(config=config, project_dir=str(tmp_path))._schema  # Label Studio's own parser
    assert parsed["label"]["type"] == "BrushLabels" and parsed["polygon"]["type"] == "PolygonLabels"
    assert parsed["label"]["labels"] == ['a "b" <c>'] and parsed["label"]["to_name"] == ["image"]
