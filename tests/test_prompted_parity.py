"""`sam segment --prompts` against the reference's SamPredictor (the oracle, tests only): for
boxes, points, box + points, mask prompts, --best-mask, --multimask and --refine, each object's
mask equals what SamPredictor.predict gives for the same prompts on the same image, with
images batched together in one encoder call and objects decoded in groups."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from cli_helpers import run_sam
from conftest import EXAMPLES

IMAGES = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg"]
PIXELS = 0.999  # share of full-resolution pixels that must agree
IOU_TOL = 1e-4


def _objects(w: int, h: int, rng: np.random.Generator) -> list[dict]:
    def pt():
        return [round(float(rng.uniform(0, w)), 1), round(float(rng.uniform(0, h)), 1)]

    def box():
        x0, x1 = sorted(rng.uniform(0, w, 2))
        y0, y1 = sorted(rng.uniform(0, h, 2))
        return [round(float(v), 1) for v in (x0, y0, x1, y1)]

    return [
        {"box": box()}, {"box": box(), "category": "a", "score": 0.5}, {"box": box()},
        {"points": [pt()]}, {"points": [pt()], "id": 3},
        {"points": [pt(), pt()], "point_labels": [1, 0]},
        {"box": box(), "points": [pt()], "point_labels": [1]},
        {"box": box(), "points": [pt()], "point_labels": [0]},
        {"mask": "m.npy"}, {"mask": "m.npy", "box": box()},
    ]


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    from sam_cli.io.images import read_image

    root = tmp_path_factory.mktemp("prompted")
    rng = np.random.default_rng(2026)
    np.save(root / "m.npy", (rng.normal(size=(256, 256)) * 4).astype(np.float32))
    lines, images = [], {}
    for name in IMAGES:
        img = read_image(EXAMPLES / name)
        images[name] = img
        objs = _objects(img.shape[1], img.shape[0], rng)
        lines.append(json.dumps({"image": str(EXAMPLES / name), "objects": objs}))
    (root / "p.jsonl").write_text("\n".join(lines) + "\n")
    return root, images, [json.loads(x)["objects"] for x in lines]


@pytest.fixture(scope="module")
def ref_predictors(tiny_reference, prompt_file):
    from segment_anything import SamPredictor

    _, images, _ = prompt_file
    out = {}
    for name, img in images.items():
        p = SamPredictor(tiny_reference)
        p.set_image(img)
        out[name] = p
    return out


def _reference(pred, obj: dict, root, choice: str, refine: bool) -> list[tuple[np.ndarray, float, int]]:
    """(mask, predicted IoU, mask index) per mask the reference gives for one object."""
    kw = {}
    if "box" in obj:
        kw["box"] = np.asarray(obj["box"], float)
    if "points" in obj:
        kw["point_coords"] = np.asarray(obj["points"], float)
        kw["point_labels"] = np.asarray(obj.get("point_labels", [1] * len(obj["points"])))
    if "mask" in obj:
        kw["mask_input"] = np.load(root / obj["mask"])[None]
    if refine:
        _, scores, logits = pred.predict(**kw, multimask_output=True)
        kw["mask_input"] = logits[int(np.argmax(scores))][None]
    masks, scores, _ = pred.predict(**kw, multimask_output=choice != "first")
    if choice == "best":
        k = int(np.argmax(scores))
        return [(masks[k], float(scores[k]), k)]
    return [(m, float(s), k) for k, (m, s) in enumerate(zip(masks, scores))]


@pytest.mark.parametrize("choice,refine", [("first", False), ("best", False),
                                           pytest.param("all", True, marks=pytest.mark.heavy),
                                           pytest.param("first", True, marks=pytest.mark.heavy)])
def test_prompted_masks_match_the_reference(tiny_ckpt, prompt_file, ref_predictors, tmp_path, choice, refine):
    root, images, objects = prompt_file
    args = ["segment", "--prompts", root / "p.jsonl", "-o", tmp_path / "out", "-c", tiny_ckpt,
            "-f", "coco-rle", "--batch-size", "3"]
    args += {"first": [], "best": ["--best-mask"], "all": ["--multimask"]}[choice]
    args += ["--refine"] if refine else []
    p = run_sam(*args)
    assert p.returncode == 0, p.stderr
    lines = [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert [x["status"] for x in lines] == ["ok"] * len(IMAGES)
    per_mask = 3 if choice == "all" else 1
    for name, objs in zip(IMAGES, objects):
        doc = json.loads((tmp_path / "out" / f"{str(EXAMPLES / name).lstrip('/')}.json").read_text())
        anns = doc["annotations"]
        assert [a["object_index"] for a in anns] == [i for i in range(len(objs)) for _ in range(per_mask)]
        for i, obj in enumerate(objs):
            ref = _reference(ref_predictors[name], obj, root, choice, refine)
            ours = anns[i * per_mask : (i + 1) * per_mask]
            for a, (m, score, k) in zip(ours, ref):
                mine = coco_mask.decode({"size": a["segmentation"]["size"],
                                         "counts": a["segmentation"]["counts"].encode()}).astype(bool)
                assert (mine == m).mean() >= PIXELS, (name, i)
                assert abs(a["predicted_iou"] - score) <= IOU_TOL, (name, i)
                assert a["mask_index"] == k
                assert a["area"] == int(mine.sum())
        assert anns[per_mask]["category"] == "a" and anns[per_mask]["score"] == 0.5
