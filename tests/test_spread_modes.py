"""Spreading is below the commands (spread/): `sam edges` and `sam eval` run in shards then
`sam merge`, over a worker per device and on Ray, and give a plain run's files byte for byte,
as `sam auto` does (tests/test_shards.py). Every process on one thread: a CPU's float sums
follow its thread count."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_helpers import run_sam, same_trees
from conftest import EXAMPLES

ONE = {"SAM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0"}


def spread_the_same(args: list, tmp_path: Path, n_images: int, *, ray: bool) -> None:
    """`sam *args` plain, as two shards then merged, over --devices cpu,cpu and (ray) on a
    local Ray: the same files."""
    plain = tmp_path / "plain"
    p = run_sam(*args, "-o", plain, env=ONE)
    assert p.returncode == 0, p.stderr
    assert len(p.stdout.decode().splitlines()) == n_images
    split = tmp_path / "split"
    seen = []
    for i in range(2):
        p = run_sam(*args, "-o", split, "--shard", f"{i}/2", env=ONE)
        assert p.returncode == 0, p.stderr
        assert f"shard {i}/2: wrote {split / 'sam-shards' / f'{i}-of-2.json'}" in p.stderr.decode()
        seen += p.stdout.decode().splitlines()
    assert len(seen) == n_images
    p = run_sam("merge", split)
    assert p.returncode == 0, p.stderr
    assert f"merged 2 shards: {n_images} images" in p.stderr.decode()
    assert same_trees(plain, split) == []
    ways = [("workers", ["--devices", "cpu,cpu"])] + ([("ray", ["--ray", "local"])] if ray else [])
    for name, flags in ways:
        p = run_sam(*args, "-o", tmp_path / name, *flags, env=ONE)
        assert p.returncode == 0, p.stderr
        assert len(p.stdout.decode().splitlines()) == n_images
        assert same_trees(plain, tmp_path / name) == [], name


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_edges_spread_like_a_plain_run(tiny_ckpt, tmp_path):
    spread_the_same(["edges", EXAMPLES, "-c", tiny_ckpt, "--grid", "4", "--npy"], tmp_path, 4, ray=False)
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == sorted(
        [f"{p.name}.edges.png" for p in EXAMPLES.glob("*.jpg")] + [f"{p.name}.edges.npy" for p in EXAMPLES.glob("*.jpg")]
        + ["sam-run.json"])


@pytest.fixture()
def ground_truth(tmp_path) -> Path:
    """A COCO dataset of four images (copies of chelsea.jpg under four names), a disc each."""
    from pycocotools import mask as coco_mask

    root = tmp_path / "gt"
    root.mkdir()
    h, w = 300, 451
    images, anns = [], []
    for k in range(4):
        shutil.copy(EXAMPLES / "chelsea.jpg", root / f"c{k}.jpg")
        images.append({"id": 10 + k, "file_name": f"c{k}.jpg", "width": w, "height": h})
        m = np.zeros((h, w), np.uint8)
        cv2.circle(m, (100 + 60 * k, 150), 40, 1, -1)
        rle = coco_mask.encode(np.asfortranarray(m))
        anns.append({"id": k + 1, "image_id": 10 + k, "category_id": 1, "iscrowd": 0, "area": int(m.sum()),
                     "bbox": [float(v) for v in coco_mask.toBbox(rle)],
                     "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}})
    doc = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "disc"}]}
    (root / "gt.json").write_text(json.dumps(doc))
    return root / "gt.json"


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_eval_spreads_like_a_plain_run(tiny_ckpt, ground_truth, tmp_path):
    spread_the_same(["eval", ground_truth, "-c", tiny_ckpt, "--clicks", "1,2"], tmp_path / "clicks", 4, ray=False)
    report = json.loads((tmp_path / "clicks" / "split" / "eval.json").read_text())
    assert report["summary"]["objects"] == 4 and report["ground_truth"] == str(ground_truth)
    spread_the_same(["eval", ground_truth, "-c", tiny_ckpt, "--box"], tmp_path / "box", 4, ray=False)


@pytest.mark.heavy  # a local Ray started twice: CI runs it after the default run
def test_edges_and_eval_on_ray_like_a_plain_run(tiny_ckpt, ground_truth, tmp_path):
    spread_the_same(["edges", EXAMPLES, "-c", tiny_ckpt, "--grid", "4"], tmp_path / "edges", 4, ray=True)
    spread_the_same(["eval", ground_truth, "-c", tiny_ckpt, "--clicks", "1,2"], tmp_path / "eval", 4, ray=True)
