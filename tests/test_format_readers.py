"""The datasets sam writes, opened by the tools that train or label with them (the `bench`
extra: Ultralytics; the `labelstudio` extra and marker: label-studio-sdk; Label Studio's converter is in the default run,
test_polygon_formats.py): the `yolo-seg` output is a dataset Ultralytics checks and loads as it
is written; the `labelstudio` config and predictions validate in label-studio-sdk.

    pip install -e '.[test,bench]' && python -m pytest -m bench
"""

from __future__ import annotations

import numpy as np
import pytest

from cli_helpers import run_sam
from conftest import EXAMPLES

pytestmark = pytest.mark.bench


@pytest.mark.parametrize("images", ["link", "copy"])
def test_ultralytics_checks_and_loads_the_yolo_seg_dataset(coherent_ckpt, tmp_path, images, monkeypatch):
    pytest.importorskip("ultralytics")
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    out = tmp_path / "out"
    p = run_sam("auto", EXAMPLES, "-o", out, "-c", coherent_ckpt, "--points-per-side", "4", "--pred-iou-thresh", "0",
                "--stability-score-thresh", "0", "-f", "yolo-seg", "--yolo-parts", "split", "--yolo-images", images,
                "--category", "thing", cwd=EXAMPLES)
    assert p.returncode == 0, p.stderr
    monkeypatch.chdir(tmp_path)  # Ultralytics may write its settings and caches beside it
    data = check_det_dataset(str(out / "data.yaml"))  # raises on a missing train/val or path
    assert data["nc"] == 1 and data["names"] == {0: "thing"}
    ds = YOLODataset(img_path=data["train"], data=data, task="segment", augment=False, imgsz=320, cache=False)
    assert len(ds.labels) == 4  # every image, with its labels found beside it
    n_lines = sum(len((out / "labels" / f"{p.stem}.txt").read_text().splitlines()) for p in EXAMPLES.glob("*.jpg"))
    assert sum(len(lb["cls"]) for lb in ds.labels) == n_lines  # no line dropped as a duplicate
    assert all(len(lb["segments"]) == len(lb["cls"]) for lb in ds.labels)
    item = ds[0]
    assert item["masks"].shape[0] >= 1 and np.isfinite(item["img"].float().numpy()).all()


@pytest.mark.labelstudio
@pytest.mark.parametrize("polygons", [False, True])
def test_label_studio_s_sdk_accepts_the_config_and_every_prediction(coherent_ckpt, tmp_path, polygons):
    """The labelling config written beside the tasks parses in label-studio-sdk's LabelInterface,
    and every task's predictions validate against it (brush masks, or polygons), each score in
    [0, 1] (the model's predicted IoU can be below 0 or above 1 unclamped)."""
    import json

    from label_studio_sdk.label_interface import LabelInterface

    out = tmp_path / "out"
    p = run_sam("auto", EXAMPLES, "-o", out, "-c", coherent_ckpt, "--points-per-side", "4", "--pred-iou-thresh", "0",
                "--stability-score-thresh", "0", "-f", "labelstudio", "--category", "thing",
                *(["--polygons"] if polygons else []), cwd=EXAMPLES)
    assert p.returncode == 0, p.stderr
    li = LabelInterface((out / "labelstudio-config.xml").read_text())
    tasks = json.loads((out / "labelstudio.json").read_text())
    assert len(tasks) == 4
    regions = 0
    for task in tasks:
        for pred in task["predictions"]:
            assert li.validate_prediction(pred, return_errors=True) == [], pred
            regions += len(pred["result"])
            assert all(0 <= r["score"] <= 1 for r in pred["result"] if "score" in r)
    assert regions > 0
    kinds = {r["type"] for t in tasks for pr in t["predictions"] for r in pr["result"]}
    assert ("polygonlabels" in kinds) if polygons else kinds == {"brushlabels"}, kinds  # a mask with holes stays a brush
