"""Hostile input on the newer surfaces: shard records are untrusted, output names that nest
never replace each other's files, and the Label Studio encoder stays linear."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_helpers import lines, run_sam
from conftest import EXAMPLES

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture()
def sharded(tiny_ckpt, tmp_path):
    """A folder with one finished shard of two (the other to be forged)."""
    out = tmp_path / "out"
    p = run_sam("auto", EXAMPLES, "-o", out, "-c", tiny_ckpt, *FAST, "-f", "coco", "-f", "yolo-seg",
                "--shard", "1/2", cwd=EXAMPLES)
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.parametrize("record, why", [
    ({}, "shard None is not [I, N]"),
    ([], "a JSON list, not an object"),
    ("x", "a JSON str, not an object"),
    ({"shard": "0/2"}, "shard '0/2' is not [I, N]"),
    ({"shard": [0, 2], "record": None, "formats": ["coco"], "options": None, "job": None,
      "images": ["../../evil.jpg"], "failed": []}, "image '../../evil.jpg' in images: not a normalised relative path"),
    ({"shard": [0, 2], "record": None, "formats": ["coco"], "options": None, "job": None,
      "images": ["/etc/passwd"], "failed": []}, "image '/etc/passwd' in images: not a relative path"),
    ({"shard": [0, 2], "record": None, "formats": ["coco"], "options": None, "job": None,
      "images": ["a/./b.jpg"], "failed": []}, "not a normalised relative path"),
    ({"shard": [0, 2], "record": None, "formats": "coco", "options": None, "job": None,
      "images": [], "failed": []}, "formats is not a list of names"),
])
def test_merge_refuses_forged_or_malformed_shard_records(sharded, record, why):
    path = sharded / "sam-shards" / "0-of-2.json"
    path.write_text(json.dumps(record))
    p = run_sam("merge", sharded)
    assert p.returncode == 2
    err = p.stderr.decode()
    assert err.startswith(f"Error: {path}: not a shard record sam wrote (") and why in err and err.count("\n") == 1
    assert not (sharded / "coco.json").exists() and not (sharded.parent / "evil.txt").exists()


def test_merge_of_a_record_that_is_not_json_text(sharded):
    path = sharded / "sam-shards" / "0-of-2.json"
    path.write_bytes(b"\xff\xfe{not json")
    p = run_sam("merge", sharded)
    assert p.returncode == 7 and p.stderr.decode().startswith(f"Error: {path}: cannot read this shard record")


def test_output_names_that_nest_never_replace_another_image_s(tiny_ckpt, tmp_path):
    """x.png's png outputs are the folder x.png.masks/; an image called x.png.masks/0.png would
    write inside it (and the other's folder replace would remove it). The second is refused,
    whichever order they come in, and the first's files are whole."""
    src = tmp_path / "in"
    (src / "a.png.masks").mkdir(parents=True)
    photo = cv2.imread(str(EXAMPLES / "chelsea.jpg"))
    cv2.imwrite(str(src / "a.png"), photo)
    cv2.imwrite(str(src / "a.png.masks" / "0.png"), photo)
    for order in ([src / "a.png", src / "a.png.masks" / "0.png"], [src / "a.png.masks" / "0.png", src / "a.png"]):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        p = run_sam("auto", *order, "-o", out, "-c", tiny_ckpt, *FAST, cwd=src)
        assert p.returncode == 5
        got = lines(p)
        assert [r["status"] for r in got] == ["ok", "failed"]
        assert "would lie inside those of" in got[1]["error"] or "would hold those of" in got[1]["error"]
        folder = Path(got[0]["outputs"][0])  # the first image's png folder, whole
        assert (folder / "metadata.csv").is_file() and (folder / "0.png").is_file()
        assert not (folder / "0.png.masks").exists()


def test_brush_rle_is_linear_and_exact_on_a_noisy_mask():
    """800×800 pixel noise: 320,000 runs (the encoder was quadratic in them: 74 s); decoded
    back by Label Studio's own decoder."""
    from label_studio_converter.brush import decode_rle

    from sam_cli.io.formats.labelstudio import brush_rle

    mask = np.random.default_rng(0).random((800, 800)) < 0.5
    got = np.reshape(decode_rle(brush_rle(mask)), (800, 800, 4))[:, :, 3] > 0
    assert np.array_equal(got, mask)
