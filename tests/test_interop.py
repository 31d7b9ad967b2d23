"""The annotation formats read by datumaro (CVAT's own importer, and a COCO importer), an
independent reader that cannot share the default test environment: datumaro 1.13 pins
Pillow 12, whose resize rounds differently from the Pillow the reference's preprocessing
and sam's Pillow-exact resize are tested against. Run in an environment of its own:

    python3 -m venv .venv-interop && .venv-interop/bin/pip install -e '.[test]' datumaro==1.13.12
    .venv-interop/bin/python -m pytest -m interop tests/test_interop.py
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_polygon_formats import H, W, _run, auto_records, iou, objects

pytestmark = pytest.mark.interop


def _cvat(tmp_path, **options):
    masks, path, note = _run(tmp_path, "cvat", **options)
    (tmp_path / "images/s").mkdir(parents=True)  # datumaro wants the images beside the XML
    for name in ("s/a.jpg", "b.png"):
        (tmp_path / "images" / name).write_bytes(b"")
    import datumaro as dm

    return masks, {it.id: it for it in dm.Dataset.import_from(str(path), "cvat")}, note


def test_cvat_masks_read_back_by_datumaro(tmp_path):
    import datumaro as dm

    masks, items, _ = _cvat(tmp_path, category="thing")
    assert set(items) == {"s/a", "b"} and items["b"].annotations == []
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
