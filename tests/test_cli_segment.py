"""`sam segment` as users run it: exit codes, exact error text, outputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from cli_helpers import run_sam
from conftest import EXAMPLES

IMG = EXAMPLES / "chelsea.jpg"  # 451×300


def records(proc):
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def test_point_to_png(tiny_ckpt, tmp_path, tiny_model, photo):
    out = tmp_path / "mask.png"
    p = run_sam("segment", IMG, "--point", "220,150", "-o", out, "-c", tiny_ckpt)
    assert p.returncode == 0, p.stderr
    m = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert m.shape == (300, 451) and m.dtype == np.uint8 and set(np.unique(m)) <= {0, 255}
    [rec] = records(p)
    assert rec["object_index"] == 0 and rec["mask_index"] == 0 and rec["file"] == str(out)
    assert rec["area"] == int((m > 0).sum())
    # the same mask as the library gives
    from sam_cli.predictor import Predictor

    pr = Predictor(tiny_model)
    pr.set_image(photo)
    lib = pr.predict(point_coords=[[220, 150]], point_labels=[1], multimask=False)
    assert np.array_equal(lib.masks[0, 0], m > 0)


def test_bf16_on_the_cpu(tiny_ckpt, tmp_path, tiny_model, photo):
    """--dtype bf16 runs on the CPU too; where the CPU emulates bfloat16 it says so in one
    line, and nothing else reaches stderr."""
    import torch

    from sam_cli.device import slow_bf16_note

    out = tmp_path / "mask.png"
    p = run_sam("segment", IMG, "--box", "100,50,350,280", "--dtype", "bf16", "-o", out,
                "-c", tiny_ckpt)
    assert p.returncode == 0, p.stderr
    note = slow_bf16_note(torch.device("cpu"))
    assert p.stderr.decode() == ("" if note is None else note + "\n")
    m = cv2.imread(str(out), cv2.IMREAD_UNCHANGED) > 0
    from sam_cli.predictor import Predictor

    pr = Predictor(tiny_model)
    pr.set_image(photo)
    fp32 = pr.predict(boxes=[[100, 50, 350, 280]], multimask=False).masks[0, 0]
    # bf16 rounding moves only pixels whose logit is near 0 (random weights: many)
    assert (m == fp32).mean() > 0.97  # 0.995 when written


def test_multimask_numbered_files_and_overlay(tiny_ckpt, tmp_path):
    out = tmp_path / "m.png"
    p = run_sam("segment", IMG, "-p", "220,150", "-n", "20,20", "--multimask", "-o", out,
                "--overlay", tmp_path / "look.jpg", "--save-logits", tmp_path / "low.npy", "-c", tiny_ckpt)
    assert p.returncode == 0, p.stderr
    assert [r["file"] for r in records(p)] == [str(tmp_path / f"m_{i}.png") for i in range(3)]
    assert [r["mask_index"] for r in records(p)] == [0, 1, 2]
    assert cv2.imread(str(tmp_path / "look.jpg")).shape == (300, 451, 3)
    low = np.load(tmp_path / "low.npy")
    assert low.shape == (1, 3, 256, 256)
    # feed one back as a mask prompt
    np.save(tmp_path / "one.npy", low[0, 1])
    p2 = run_sam("segment", IMG, "--mask-input", tmp_path / "one.npy", "-p", "220,150", "-o", tmp_path / "r.png", "-c", tiny_ckpt)
    assert p2.returncode == 0, p2.stderr


def test_boxes_to_json(tiny_ckpt, tmp_path):
    out = tmp_path / "m.json"
    p = run_sam("segment", IMG, "--box", "10,10,200,150", "--box", "150,100,450,299", "-o", out, "-c", tiny_ckpt)
    assert p.returncode == 0, p.stderr
    data = json.loads(out.read_text())
    assert [(d["object_index"], d["mask_index"]) for d in data] == [(0, 0), (1, 0)]
    for d in data:
        assert set(d) == {"segmentation", "predicted_iou", "area", "bbox", "object_index", "mask_index"}
        rle = {"size": d["segmentation"]["size"], "counts": d["segmentation"]["counts"].encode()}
        assert int(coco_mask.area(rle)) == d["area"]
        assert [int(v) for v in coco_mask.toBbox(rle)] == d["bbox"]


def test_png_mask_prompt(tiny_ckpt, tmp_path):
    m = np.zeros((300, 451), np.uint8)
    m[50:200, 100:300] = 255
    cv2.imwrite(str(tmp_path / "prompt.png"), m)
    p = run_sam("segment", IMG, "--mask-input", tmp_path / "prompt.png", "-o", tmp_path / "o.png", "-c", tiny_ckpt)
    assert p.returncode == 0, p.stderr


def test_png_to_stdout(tiny_ckpt):
    p = run_sam("segment", IMG, "-p", "220,150", "-o", "-", "-c", tiny_ckpt)
    assert p.returncode == 0
    m = cv2.imdecode(np.frombuffer(p.stdout, np.uint8), cv2.IMREAD_UNCHANGED)
    assert m.shape == (300, 451)


@pytest.mark.parametrize("args,code,text", [
    (["segment", "missing.jpg", "-p", "1,1", "-o", "o.png"], 3, "Error: missing.jpg: no such file\n"),
    (["segment", IMG, "-p", "1,a", "-o", "o.png"], 2, "Error: --point '1,a': X,Y must be numbers\n"),
    (["segment", IMG, "-p", "1", "-o", "o.png"], 2,
     "Error: --point '1': expected X,Y (2 numbers separated by commas)\n"),
    (["segment", IMG, "-p", "500,10", "-o", "o.png"], 2,
     f"Error: --point 500,10 is outside {IMG} (451×300 pixels)\n"),
    (["segment", IMG, "-b", "300,10,100,50", "-o", "o.png"], 2,
     "Error: --box '300,10,100,50': X1,Y1 must not be left of or above X0,Y0\n"),
    (["segment", IMG, "-b", "0,0,460,50", "-o", "o.png"], 2,
     f"Error: --box 0,0,460,50 is outside {IMG} (451×300 pixels)\n"),
    (["segment", IMG, "-o", "o.png"], 2,
     "Error: no prompt: give --point, --neg-point, --box or --mask-input\n"),
    (["segment", IMG, "-p", "1,1", "-o", "o.gif"], 2,
     "Error: --output o.gif: must end in .png or .json, or be - for stdout\n"),
])
def test_errors(tiny_ckpt, tmp_path, args, code, text):
    p = run_sam(*args, "-c", tiny_ckpt, cwd=tmp_path)
    assert p.returncode == code
    assert p.stderr.decode() == text
    assert p.stdout == b""


def test_unreadable_image(tiny_ckpt, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    p = run_sam("segment", bad, "-p", "1,1", "-o", tmp_path / "o.png", "-c", tiny_ckpt)
    assert p.returncode == 3
    assert p.stderr.decode() == f"Error: {bad}: cannot read image (unsupported format or corrupt file)\n"


def test_checkpoint_that_does_not_fit(tmp_path):
    import torch

    ck = tmp_path / "bad.pth"
    torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(8, 3, 16, 16)}, ck)
    p = run_sam("segment", IMG, "-p", "1,1", "-o", tmp_path / "o.png", "-c", ck)
    assert p.returncode == 4
    assert p.stderr.decode() == f"Error: {ck}: not a SAM checkpoint (missing key image_encoder.pos_embed)\n"


def test_no_network_download_error(tmp_path):
    p = run_sam("segment", IMG, "-p", "1,1", "-o", tmp_path / "o.png", "--model", "vit_b",
                env={"SAM_BASE_URL": "http://127.0.0.1:9/", "SAM_CACHE_DIR": str(tmp_path / "c")})
    assert p.returncode == 6
    err = p.stderr.decode()
    assert err.startswith("Error: download failed: http://127.0.0.1:9/sam_vit_b_01ec64.pth: ")
    assert "--checkpoint PATH" in err and err.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["segment", IMG, "-p", "1,1", "-o", "o.png", "--model", "vit_x"],
    ["auto", IMG, "-o", "out", "--model", "vit_x"],
    ["models", "download", "vit_x"],
    ["models", "verify", "vit_x"],
])
def test_unknown_model_is_a_usage_error_everywhere(tmp_path, args):
    p = run_sam(*args, cwd=tmp_path)
    assert p.returncode == 2
    assert "'vit_x': choose from vit_b, vit_l, vit_h" in p.stderr.decode()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("option, value, allowed", [
    ("--dtype", "fp16", "fp32, bf16"), ("--device", "tpu", "auto, cpu, cuda, mps")])
def test_bad_dtype_or_device_is_a_usage_error(tmp_path, option, value, allowed):
    for cmd in (["segment", IMG, "-p", "1,1", "-o", "o.png"], ["auto", IMG, "-o", "out"]):
        p = run_sam(*cmd, option, value, cwd=tmp_path)
        assert p.returncode == 2
        assert f"'{value}': choose from {allowed}" in p.stderr.decode()


def test_best_mask_and_refine_for_one_image(tiny_ckpt, tiny_reference, photo, tmp_path):
    """--refine and --best-mask on the single-image form: each box's mask is the reference's
    (refined: the first pass's most confident logits fed back with the box; then the most
    confident of three), and mask_index names which of the decoder's masks it is."""
    from segment_anything import SamPredictor

    boxes = [[60, 30, 380, 290], [10, 10, 200, 150]]
    out = tmp_path / "m.json"
    p = run_sam("segment", IMG, *[a for b in boxes for a in ("--box", ",".join(map(str, b)))],
                "--best-mask", "--refine", "-o", out, "-c", tiny_ckpt)
    assert p.returncode == 0, p.stderr
    recs = json.loads(out.read_text())
    ref = SamPredictor(tiny_reference)
    ref.set_image(photo)
    for rec, b in zip(recs, boxes, strict=True):
        _, s1, low = ref.predict(box=np.asarray(b, float), multimask_output=True)
        masks, s2, _ = ref.predict(box=np.asarray(b, float), mask_input=low[int(np.argmax(s1))][None],
                                   multimask_output=True)
        k = int(np.argmax(s2))
        ours = coco_mask.decode({"size": rec["segmentation"]["size"],
                                 "counts": rec["segmentation"]["counts"].encode()}).astype(bool)
        assert (ours == masks[k]).mean() >= 0.999
        assert rec["mask_index"] == k and abs(rec["predicted_iou"] - s2[k]) <= 1e-4
