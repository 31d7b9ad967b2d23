"""The datasets sam writes, opened by the tools that train or label with them (the `bench`
extra: Ultralytics; Label Studio's own parser is in the default run, test_polygon_formats.py):
the `yolo-seg` output is a dataset Ultralytics checks and loads as it is written.

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
