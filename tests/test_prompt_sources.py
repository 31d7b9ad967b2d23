"""Prompt sources (io/sources): what each file kind yields per image, and how bad rows fail
their image with the file and line, before any model is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sam_cli.errors import PromptError
from sam_cli.io import sources
from sam_cli.io.sources.base import PromptSource
from sam_cli.prompts import ObjectPrompt


def read(path, **kw) -> list:
    src = sources.detect(PromptSource(str(path), **{k: v for k, v in kw.items() if k != "kind"}),
                         kw.get("kind"))
    return list(sources.read(src))


def errors(items) -> list[str]:
    return [str(it.error) for it in items if it.error is not None]


# ------------------------------------------------------------------------------ JSON Lines
def test_jsonl_objects_paths_and_ids(tmp_path):
    (tmp_path / "sub").mkdir()
    f = tmp_path / "sub" / "p.jsonl"
    f.write_text(
        '{"image": "a/x.jpg", "image_id": 4, "objects": [{"box": [1, 2, 30, 40], "category": "dog", '
        '"score": 0.5, "id": 7}, {"points": [[3, 4], [5, 6]], "point_labels": [1, 0], "mask": "m.npy"}]}\n'
        "\n"
        '{"image": "/abs/y.png", "objects": [{"points": [[1, 1]], "category": 3}]}\n')
    a, b = read(f)
    assert a.path == tmp_path / "sub" / "a" / "x.jpg" and a.rel == "a/x.jpg" and a.image_id == 4
    assert a.objects[0] == ObjectPrompt(box=(1, 2, 30, 40), category="dog", score=0.5, object_id=7,
                                        where=f"{f} line 1, object 0")
    assert a.objects[1].points == ((3, 4), (5, 6)) and a.objects[1].labels == (1, 0)
    assert a.objects[1].mask == tmp_path / "sub" / "m.npy"  # beside the prompt file
    assert b.path == Path("/abs/y.png") and b.rel == "abs/y.png" and b.objects[0].labels == (1,)
    assert b.objects[0].category_id == 3 and b.objects[0].category is None
    [c, _] = read(f, images=tmp_path / "imgs")
    assert c.path == tmp_path / "imgs" / "a" / "x.jpg"


@pytest.mark.parametrize("line,message", [
    ("not json", "line 1: not a JSON object"),
    ('{"objects": []}', 'line 1: each line needs "image"'),
    ('{"image": "x.jpg", "objects": [{}]}', "line 1, object 0: an object needs a box, a point or a mask"),
    ('{"image": "x.jpg", "objects": [{"box": [5, 5, 1, 9]}]}', "line 1, object 0: box [5, 5, 1, 9] has x1 < x0"),
    ('{"image": "x.jpg", "objects": [{"box": [1, 2, 3]}]}', "line 1, object 0: box must be [x0, y0, x1, y1]"),
    ('{"image": "x.jpg", "objects": [{"points": [[1, 2]], "point_labels": [1, 0]}]}',
     "point_labels must list one label per point (1)"),
    ('{"image": "x.jpg", "objects": [{"points": [[1, 2]], "point_labels": [2]}]}', "must be 1 (foreground) or 0"),
    ('{"image": "x.jpg", "objects": [{"points": [[1, NaN]]}]}', "y must be a finite number"),
    ('{"image": "x.jpg", "objects": [{"box": [1, 2, 3, 4], "colour": 1}]}', "unknown key 'colour'"),
    ('{"image": "x", "objects": [{"box": [1, 2, 3, 4]}]}', "image 'x' has no file extension"),
])
def test_jsonl_bad_lines_fail_their_image(tmp_path, line, message):
    f = tmp_path / "p.jsonl"
    f.write_text(line + '\n{"image": "ok.jpg", "objects": [{"box": [1, 2, 3, 4]}]}\n')
    bad, good = read(f)
    assert message in str(bad.error) and str(bad.error).startswith(f"{f} line 1")
    assert good.error is None and good.rel == "ok.jpg"


def test_jsonl_an_image_on_two_lines_fails_the_second(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"image": "x.jpg", "objects": [{"box": [1, 2, 3, 4]}]}\n'
                 '{"image": "./x.jpg", "objects": [{"box": [1, 2, 3, 4]}]}\n')
    first, second = read(f)
    assert first.error is None
    assert str(second.error) == (f"{f} line 2: ./x.jpg was named at {f} line 1 already; "
                                 "give all of an image's objects in one place")


# ------------------------------------------------------------------------------------ COCO
def _dataset(tmp_path) -> Path:
    doc = {"images": [{"id": 10, "file_name": "a.jpg", "width": 9, "height": 9},
                      {"id": 11, "file_name": "b.jpg", "width": 9, "height": 9},
                      {"id": 12, "file_name": "c.jpg", "width": 9, "height": 9}],
           "annotations": [{"id": 100, "image_id": 11, "category_id": 2, "bbox": [1, 2, 3, 4]},
                           {"id": 101, "image_id": 10, "category_id": 1, "bbox": [0, 0, 5, 5]},
                           {"id": 102, "image_id": 11, "category_id": 1, "bbox": [2, 2, 1, 1]}],
           "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}
    (tmp_path / "ann").mkdir(exist_ok=True)
    path = tmp_path / "ann" / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_dataset_gives_every_image_with_its_boxes(tmp_path):
    items = read(_dataset(tmp_path), images=tmp_path / "imgs")
    assert [(it.rel, it.image_id) for it in items] == [("a.jpg", 10), ("b.jpg", 11), ("c.jpg", 12)]
    assert items[0].path == tmp_path / "imgs" / "a.jpg"
    b = items[1].objects
    assert [o.box for o in b] == [(1, 2, 4, 6), (2, 2, 3, 3)]  # XYWH → XYXY
    assert [(o.category_id, o.category, o.object_id) for o in b] == [(2, "dog", 100), (1, "cat", 102)]
    assert items[2].objects == () and errors(items) == []


def test_coco_results_need_the_dataset_and_keep_scores(tmp_path):
    ds = _dataset(tmp_path)
    res = tmp_path / "dets.json"
    res.write_text(json.dumps([
        {"image_id": 12, "category_id": 2, "bbox": [1, 1, 2, 2], "score": 0.9},
        {"image_id": 12, "category_id": 1, "bbox": [3, 3, 2, 2], "score": 0.2},
        {"image_id": 99, "category_id": 1, "bbox": [3, 3, 2, 2], "score": 0.7}]))
    with pytest.raises(PromptError, match="a COCO results list names images only by id"):
        read(res)
    items = read(res, coco_dataset=ds, min_score=0.5)
    assert items[0].path == tmp_path / "ann" / "a.jpg"  # relative to the dataset file
    assert [it.objects for it in items[:2]] == [(), ()]
    [o] = items[2].objects
    assert o.box == (1, 1, 3, 3) and o.score == 0.9 and o.category == "dog"
    assert errors(items) == ["dets.json, detection 2: image_id 99 is not one of the dataset's images"]


def test_coco_bad_box_fails_its_image(tmp_path):
    ds = tmp_path / "d.json"
    ds.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                              "annotations": [{"id": 5, "image_id": 1, "bbox": [1, 2, -3, 4]}]}))
    [it] = read(ds)
    assert str(it.error).startswith("d.json, annotation 0 (id 5): box [1, 2, -2, 6] has x1 < x0")


# ------------------------------------------------------------------------------------ YOLO
@pytest.mark.parametrize("names_text,expected", [
    ("path: .\nnames: [cat, 'dog']\n", "dog"),
    ("names:\n  0: cat\n  1: dog  # a comment\nnc: 2\n", "dog"),
    ("names:\n- cat\n- \"dog\"\n", "dog"),
])
def test_yolo_labels_folder(tmp_path, names_text, expected):
    imgs, labels = tmp_path / "images", tmp_path / "labels"
    (imgs / "s").mkdir(parents=True)
    (labels / "s").mkdir(parents=True)
    for n in ("s/a.jpg", "b.png"):
        (imgs / n).write_bytes(b"")
    (labels / "s" / "a.txt").write_text("1 0.5 0.5 0.2 0.4 0.8\n0 0.1 0.1 0.1 0.1\n")
    (tmp_path / "data.yaml").write_text(names_text)
    b, a = read(labels, images=imgs, names=tmp_path / "data.yaml")
    assert (b.rel, b.objects) == ("b.png", ())  # no label file: a background image
    assert a.rel == "s/a.jpg" and a.path == imgs / "s" / "a.jpg"
    o = a.objects[0]
    assert np.allclose(o.box, (0.4, 0.3, 0.6, 0.7)) and o.normalized and o.score == 0.8
    assert (o.category_id, o.category) == (1, expected)
    assert a.objects[1].score is None and a.objects[1].category == "cat"


def test_yolo_bad_lines_and_missing_images_folder(tmp_path):
    imgs, labels = tmp_path / "images", tmp_path / "labels"
    imgs.mkdir()
    labels.mkdir()
    (imgs / "a.jpg").write_bytes(b"")
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.1 0.1 0.2 0.3 0.5\n")
    [a] = read(labels, images=imgs)
    assert str(a.error).startswith(f"{labels / 'a.txt'} line 2: 8 values; a YOLO detection label is")
    with pytest.raises(PromptError, match="YOLO labels need --images"):
        read(labels)
    (tmp_path / "names.txt").write_text("cat\n")
    (labels / "a.txt").write_text("3 0.5 0.5 0.2 0.4\n")
    [a] = read(labels, images=imgs, names=tmp_path / "names.txt")
    assert "class 3 has no name in the names file" in str(a.error)


# ------------------------------------------------------------------------------------- CSV
def test_csv_boxes_and_grouped_points(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("image,x0,y0,x1,y1,x,y,label,object,category,score\n"
                 "a.jpg,1,2,30,40,,,,,dog,0.5\n"
                 "a.jpg,,,,,5,6,1,k,,\n"
                 "a.jpg,,,,,7,8,0,k,,\n"
                 "a.jpg,3,3,9,9,4,4,,m,\"cat, small\",\n"
                 "b.jpg,1,1,2,2,,,,,,\n")
    a, b = read(f)
    assert [o.box for o in a.objects] == [(1, 2, 30, 40), None, (3, 3, 9, 9)]
    assert a.objects[0].category == "dog" and a.objects[0].score == 0.5
    assert a.objects[1].points == ((5, 6), (7, 8)) and a.objects[1].labels == (1, 0)
    assert a.objects[2].points == ((4, 4),) and a.objects[2].category == "cat, small"
    assert a.objects[1].where == f"{f} line 3"
    assert b.rel == "b.jpg" and len(b.objects) == 1


def test_csv_errors_name_the_line(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("image,x,y,label\na.jpg,1,2,1\nb.jpg,1,zz,1\nc.jpg,1,2,1\na.jpg,3,3,1\n")
    a, b, c, a2 = read(f)
    assert a.error is None and c.error is None
    assert str(b.error) == f"{f} line 3: y must be a number, got 'zz'"
    assert str(a2.error).startswith(f"{f} line 5: rows for a.jpg also came before line 5 (first on line 2)")
    g = tmp_path / "q.csv"
    g.write_text("file,x0,y0,x1,y1\n")
    with pytest.raises(PromptError, match="must be a header naming an `image` column"):
        read(g)


# ---------------------------------------------------------------------------- detection
def test_detect_kinds(tmp_path):
    for name, text, kind in [("p.jsonl", "{}\n", "jsonl"), ("p.csv", "image,x,y\n", "csv"),
                             ("p.json", '{"images": []}', "coco"), ("q.json", '{"image": "a.jpg"}\n{}\n', "jsonl")]:
        (tmp_path / name).write_text(text)
        assert sources.detect(PromptSource(str(tmp_path / name))).kind == kind
    assert sources.detect(PromptSource(str(tmp_path))).kind == "yolo"
    assert sources.detect(PromptSource("-")).kind == "jsonl"
    with pytest.raises(PromptError, match="no such file or folder"):
        sources.detect(PromptSource(str(tmp_path / "nope.jsonl")))
    (tmp_path / "p.txt").write_text("")
    with pytest.raises(PromptError, match="cannot tell its format from the name"):
        sources.detect(PromptSource(str(tmp_path / "p.txt")))


def test_identity_changes_with_the_prompts(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"image": "a.jpg", "objects": []}\n')
    one = sources.identity(PromptSource(str(f)))
    f.write_text('{"image": "a.jpg", "objects": [{"box": [1, 2, 3, 4]}]}\n')
    assert sources.identity(PromptSource(str(f))) != one
    assert sources.identity(PromptSource(str(f), min_score=0.3)).endswith("min-score 0.3")


# ----------------------------------------------------------------- against the image size
def test_boxes_overshooting_by_a_pixel_are_clipped_points_outside_fail():
    o = ObjectPrompt(box=(-1.5, 0, 101.5, 50), where="p line 1")
    assert o.in_pixels((50, 100), "x.jpg").box.tolist() == [0, 0, 100, 50]
    with pytest.raises(PromptError, match=r"p line 1: box -5,0,101,50 is outside x.jpg \(100×50 pixels\)"):
        ObjectPrompt(box=(-5, 0, 101, 50), where="p line 1").in_pixels((50, 100), "x.jpg")
    with pytest.raises(PromptError, match="point 100.5,3 is outside"):
        ObjectPrompt(points=((100.5, 3),), labels=(1,), where="p").in_pixels((50, 100), "x.jpg")
    n = ObjectPrompt(box=(0.25, 0.5, 0.5, 1.0), points=((0.5, 0.5),), labels=(1,), normalized=True)
    r = n.in_pixels((50, 100), "x.jpg")
    assert r.box.tolist() == [25, 25, 50, 50] and r.points.tolist() == [[50, 25]]
