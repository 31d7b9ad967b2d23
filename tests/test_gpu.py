"""GPU checks (marker `gpu`, never in the default run): parity on CUDA and bf16 vs fp32.

Run on a machine with a CUDA device: python -m pytest -m gpu tests/test_gpu.py

SAM_GPU_TESTS_DEVICE=cpu runs the same tests on the CPU, on the tiny model only, so that the
tests themselves are checked without a GPU (tests/test_scripts.py does that in every run).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from reference import arch_kwargs, build_reference, build_shifted_tiny, save_checkpoint

DEV = os.environ.get("SAM_GPU_TESTS_DEVICE", "cuda")
DRY = DEV == "cpu"  # the tests' own dry run: tiny models only

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEV == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def archs(*names: str) -> list[str]:
    return [n for n in names if n == "tiny"] if DRY else list(names)


def rel(a, b):
    return float((a - b).norm() / a.norm())


@pytest.mark.parametrize("arch", archs("tiny", "vit_b"))
def test_cuda_parity_with_reference(arch, tmp_path, photo):
    from segment_anything import SamPredictor

    from sam_cli.checkpoints import load_model
    from sam_cli.predictor import Predictor

    ref_model = build_reference(**arch_kwargs(arch), seed=5)
    ck = tmp_path / "m.pth"
    torch.save(ref_model.state_dict(), ck)
    ref = SamPredictor(ref_model.to(DEV))
    ours = Predictor(load_model(checkpoint=ck, device=DEV))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref.set_image(photo)
    ours.set_image(photo)
    assert rel(ref.features, ours.features["image_embed"]) <= 1e-4
    pts, lab = np.array([[220.0, 150.0], [40, 40]]), np.array([1, 0])
    m1, i1, l1 = ref.predict(point_coords=pts, point_labels=lab, multimask_output=True)
    p = ours.predict(point_coords=pts, point_labels=lab, multimask=True)
    assert np.linalg.norm(l1 - p.low_res[0]) / np.linalg.norm(l1) <= 1e-4
    assert np.abs(i1 - p.iou[0]).max() <= 1e-4
    assert (m1 == p.masks[0]).mean() >= 0.999


@pytest.mark.parametrize("arch", archs("tiny", "vit_h"))
def test_bf16_agrees_with_fp32_where_the_model_is_confident(arch, tmp_path, photo):
    """--dtype bf16 (encoder, the decoder transformer's image side and upscaling in bfloat16)
    vs fp32. A random model's logits sit near the 0 threshold almost everywhere, so
    whole-mask IoU measures noise (0.79 mean on an H200, 2026-11-27); the check is on pixels
    whose fp32 logit is clearly away from the threshold (twice the mean magnitude: a random
    model's logits are small), and on the predicted IoU."""
    from sam_cli.checkpoints import load_model
    from sam_cli.predictor import Predictor

    ck = tmp_path / "m.pth"
    torch.save(build_reference(**arch_kwargs(arch), seed=5).state_dict(), ck)
    boxes = [[10, 10, 200, 150], [150, 100, 450, 299], [0, 0, 451, 300], [100, 50, 300, 250]]
    fp32 = Predictor(load_model(checkpoint=ck, device=DEV))
    bf16 = Predictor(load_model(checkpoint=ck, device=DEV, dtype="bf16"))
    assert bf16.model.mask_decoder.transformer.image_dtype == torch.bfloat16
    fp32.set_image(photo)
    bf16.set_image(photo)
    assert rel(fp32.features["image_embed"], bf16.features["image_embed"]) <= 3e-2
    a = fp32.predict(boxes=boxes, multimask=True)
    b = bf16.predict(boxes=boxes, multimask=True)
    assert b.low_res.dtype == np.float32 and b.iou.dtype == np.float32
    confident = np.abs(a.low_res) >= 2 * np.abs(a.low_res).mean()
    assert confident.mean() > 0.05
    agree = ((a.low_res > 0) == (b.low_res > 0))[confident].mean()
    print(f"{arch}: bf16 agrees with fp32 on {agree:.5f} of confident pixels, "
          f"max IoU diff {np.abs(a.iou - b.iou).max():.4f}")
    assert agree >= 0.999
    assert np.abs(a.iou - b.iou).max() <= 2e-2


def test_resize_on_the_gpu_equals_the_cpu():
    from sam_cli.transforms import resize_uint8

    g = np.random.default_rng(0)
    for h, w, oh, ow in [(300, 451, 681, 1024), (3000, 4000, 768, 1024), (2000, 123, 1024, 63)]:
        img = g.integers(0, 256, (h, w, 3), dtype=np.uint8)
        cpu = resize_uint8(img, (oh, ow))
        gpu = resize_uint8(torch.from_numpy(img).to(DEV), (oh, ow)).cpu().numpy()
        assert np.array_equal(cpu, gpu)


@pytest.fixture
def shifted_tiny(tmp_path):
    """The tiny reference with its IoU head shifted (reference.build_shifted_tiny, as in
    test_amg_parity.py), and its checkpoint."""
    ref = build_shifted_tiny()
    return ref, save_checkpoint(ref, tmp_path / "tiny_shifted.pth")


@pytest.mark.parametrize("crop_layers", [0, 1])
def test_cuda_automatic_mode_matches_reference(shifted_tiny, crop_layers):
    """Automatic mode on the GPU (device-side grouping and IoU filter, the GPU layouts, resize
    on the device) against the reference generator on the same GPU."""
    from segment_anything import SamAutomaticMaskGenerator

    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image

    from conftest import EXAMPLES
    from reference import match

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref_model, ck = shifted_tiny
    kw = dict(points_per_side=8, pred_iou_thresh=0.44, stability_score_thresh=0.08,
              stability_score_offset=0.05, box_nms_thresh=1.0, crop_n_layers=crop_layers,
              crop_n_points_downscale_factor=2, crop_nms_thresh=1.0)
    image = read_image(EXAMPLES / "chelsea.jpg")
    ref = SamAutomaticMaskGenerator(ref_model.to(DEV), output_mode="uncompressed_rle", **kw).generate(image)
    ours = AutomaticMaskGenerator(load_model(checkpoint=ck, device=DEV), AmgSettings(**kw)).generate(image)
    assert len(ref) > 20
    n, pairs = match(ref, ours)
    assert n >= 0.99 * max(len(ref), len(ours)), (n, len(ref), len(ours))
    for a, b in pairs:
        assert abs(a["predicted_iou"] - b.predicted_iou) <= 1e-3
        assert abs(a["stability_score"] - b.stability_score) <= 1e-3


def test_sam_auto_on_cuda_gives_the_cpu_masks(shifted_tiny, tmp_path):
    """`sam auto` over a folder on the GPU (batched encoder, read-ahead, device-side filters)
    writes the masks the CPU run writes."""
    import json

    from cli_helpers import run_sam
    from conftest import EXAMPLES

    _, ck = shifted_tiny
    args = ["auto", EXAMPLES, "-c", ck, "--points-per-side", "6", "--pred-iou-thresh", "0.44",
            "--stability-score-thresh", "0.08", "--stability-score-offset", "0.05",
            "--box-nms-thresh", "1.0", "-f", "coco-rle", "-q"]
    outs = {}
    for name, dev in (("gpu", DEV), ("cpu", "cpu")):
        p = run_sam(*args, "-o", tmp_path / name, "--device", dev)
        assert p.returncode == 0, p.stderr
        outs[name] = sorted((tmp_path / name).glob("*.jpg.json"))  # not sam-run.json
    assert [f.name for f in outs["gpu"]] == [f.name for f in outs["cpu"]] and outs["cpu"]
    from pycocotools import mask as coco_mask

    for fg, fc in zip(outs["gpu"], outs["cpu"]):
        ag, ac = (json.loads(f.read_text())["annotations"] for f in (fg, fc))
        assert len(ag) == len(ac) > 0, fg.name
        for a, b in zip(ag, ac):
            ma, mb = (coco_mask.decode({"size": x["segmentation"]["size"],
                                        "counts": x["segmentation"]["counts"].encode()})
                      for x in (a, b))
            union = (ma | mb).sum()
            assert union == 0 or (ma & mb).sum() / union >= 0.99, fg.name
            assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-3


def test_compiled_model_gives_the_eager_masks(shifted_tiny):
    """Sam.compile_parts (`sam auto --compile`) with Inductor on the GPU: automatic mode gives
    the masks of the eager model. (The CPU dry run uses the aot_eager backend: Inductor's code
    generation takes minutes on a small CPU; test_model_parity checks the traced graphs there.)"""
    import copy

    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image

    from conftest import EXAMPLES
    from reference import match

    _, ck = shifted_tiny
    eager = load_model(checkpoint=ck, device=DEV)
    torch._dynamo.reset()
    compiled = copy.deepcopy(eager).compile_parts(backend="aot_eager" if DRY else "inductor")
    kw = dict(points_per_side=8, pred_iou_thresh=0.44, stability_score_thresh=0.08,
              stability_score_offset=0.05, box_nms_thresh=1.0)
    image = read_image(EXAMPLES / "chelsea.jpg")
    a = AutomaticMaskGenerator(eager, AmgSettings(**kw)).generate(image)
    b = AutomaticMaskGenerator(compiled, AmgSettings(**kw)).generate(image)
    torch._dynamo.reset()
    assert len(a) > 20
    as_ref = [{"segmentation": r.rle, "point_coords": [r.point], "predicted_iou": r.predicted_iou}
              for r in a]
    n, pairs = match(as_ref, b)
    assert n >= 0.99 * max(len(a), len(b)), (n, len(a), len(b))
    for x, y in pairs:
        assert abs(x["predicted_iou"] - y.predicted_iou) <= 1e-3
