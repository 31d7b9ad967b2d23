"""The annotation formats read by datumaro (CVAT's own importer, and a COCO importer), an
independent reader that cannot share the default test environment: datumaro 1.13 pins
Pillow 12, whose resize rounds differently from the Pillow the reference's preprocessing
and sam's Pillow-exact resize are tested against. Run in an environment of its own:

    python3 -m venv .venv-interop && .venv-interop/bin/pip install -e '.[test,interop]'
    .venv-interop/bin/python -m pytest -m interop

(CI does so after the default run.)
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from shapes import H, W, auto_records, iou, objects, write_one

pytestmark = pytest.mark.interop


def _cvat(tmp_path, **options):
    masks, path, note = write_one(tmp_path, "cvat", **options)
    (tmp_path / "images/s").mkdir(parents=True)  # datumaro wants the images beside the XML
    for name in ("s/a.jpg", "z.png"):
        (tmp_path / "images" / name).write_bytes(b"")
    import datumaro as dm

    return masks, {it.id: it for it in dm.Dataset.import_from(str(path), "cvat")}, note


def test_cvat_masks_read_back_by_datumaro(tmp_path):
    import datumaro as dm

    masks, items, _ = _cvat(tmp_path, category="thing")
    assert set(items) == {"s/a", "z"} and items["z"].annotations == []
    anns = items["s/a"].annotations
    assert all(a.type == dm.AnnotationType.mask for a in anns) and len(anns) == 5
    for a, m in zip(anns, masks):
        assert np.array_equal(a.image.astype(bool), m)
    assert len({a.z_order for a in anns}) == 5


def test_cvat_polygons_read_back_by_datumaro(tmp_path):
    import datumaro as dm

    masks, items, note = _cvat(tmp_path, polygons=True)
    anns = items["s/a"].annotations
    kinds = [a.type for a in anns]
    assert kinds.count(dm.AnnotationType.mask) == 1 and kinds.count(dm.AnnotationType.polygon) == 5
    [hole] = [a for a in anns if a.type == dm.AnnotationType.mask]
    assert np.array_equal(hole.image.astype(bool), masks[0])
    two = [a for a in anns if a.type == dm.AnnotationType.polygon and a.group]
    assert len(two) == 2 and two[0].group == two[1].group


@pytest.mark.parametrize("polygons", [False, True], ids=["rle", "polygons"])
def test_coco_read_back_by_datumaro(tmp_path, polygons):
    import datumaro as dm
    from pycocotools import mask as coco_mask

    from sam_cli.io.formats import FormatOptions
    from sam_cli.io.outputs import OutputLayout

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


def test_example_photos_read_back_by_datumaro(coherent_ckpt, tmp_path):
    """`sam auto` on the example photos (the tiny model with region masks), written as cvat
    (--polygons) and coco (RLE), each opened by datumaro as a user would: coco's masks exactly the
    run's own (its coco-rle files), CVAT's <mask>s exactly, its polygons (a mask's parts share
    a group) at mean IoU ≥ 0.98."""
    import json

    import datumaro as dm
    from pycocotools import mask as coco_mask

    from cli_helpers import run_sam
    from conftest import EXAMPLES

    out = tmp_path / "out"
    settings = ("-c", coherent_ckpt, "--points-per-side", "8", "--pred-iou-thresh", "0", "--stability-score-thresh", "0")
    p = run_sam("auto", EXAMPLES, "-o", out, *settings, "-f", "coco", "-f", "cvat", "--polygons")
    assert p.returncode == 0, p.stderr
    names = sorted(x.name for x in EXAMPLES.glob("*.jpg"))
    ours: dict[str, list[np.ndarray]] = {}
    for n in names:
        for a in json.loads((out / f"{n}.json").read_text())["annotations"]:
            seg = a["segmentation"]
            ours.setdefault(n[:-4], []).append(
                coco_mask.decode({"size": seg["size"], "counts": seg["counts"].encode()}).astype(bool))
    (out / "images").mkdir()  # the layout datumaro expects: the images beside the XML
    for n in names:
        shutil.copy(EXAMPLES / n, out / "images" / n)
    items = {it.id: it for it in dm.Dataset.import_from(str(out / "annotations.xml"), "cvat")}
    assert sorted(items) == sorted(ours)
    ious, exact = [], 0
    for k, item in items.items():
        h, w = ours[k][0].shape
        groups: dict[int, np.ndarray] = {}
        for j, a in enumerate(item.annotations):
            if a.type == dm.AnnotationType.mask:
                assert any(np.array_equal(a.image.astype(bool), m) for m in ours[k])
                exact += 1
                continue
            assert a.type == dm.AnnotationType.polygon
            key = a.group or -1 - j  # a mask's parts share a group; a polygon alone is a mask
            part = coco_mask.decode(coco_mask.frPyObjects([a.points], h, w)[0]).astype(bool)
            groups[key] = groups.get(key, np.zeros((h, w), bool)) | part
        ious += [max(iou(g, m) for m in ours[k]) for g in groups.values()]
    assert exact + len(ious) == sum(map(len, ours.values()))
    assert not ious or np.mean(ious) >= 0.98, np.mean(ious)
    # coco.json (RLE: the run again without --polygons) in datumaro's COCO layout
    p = run_sam("auto", EXAMPLES, "-o", tmp_path / "rle", *settings, "-f", "coco")
    assert p.returncode == 0, p.stderr
    (tmp_path / "ds/annotations").mkdir(parents=True)
    (tmp_path / "ds/images/default").mkdir(parents=True)
    shutil.copy(tmp_path / "rle/coco.json", tmp_path / "ds/annotations/instances_default.json")
    got = {it.id: [a.image.astype(bool) for a in it.annotations if a.type == dm.AnnotationType.mask]
           for it in dm.Dataset.import_from(str(tmp_path / "ds"), "coco_instances")}
    assert sorted(got) == sorted(ours)
    for k, ms in got.items():
        key = lambda m: m.tobytes()  # noqa: E731 (datumaro orders a COCO image's masks its own way)
        assert sorted(map(key, ms)) == sorted(map(key, ours[k]))
