"""GPU checks (marker `gpu`, never in the default run): parity on CUDA and bf16 vs fp32.

Run on a machine with a CUDA device: python -m pytest -m gpu tests/test_gpu.py
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference import TINY, build_reference

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def rel(a, b):
    return float((a - b).norm() / a.norm())


@pytest.mark.parametrize("arch", ["tiny", "vit_b"])
def test_cuda_parity_with_reference(arch, tmp_path, photo):
    from segment_anything import SamPredictor

    from sam_cli.predictor import Predictor
    from sam_cli.registry import MODELS
    from sam_cli.weights import load_model

    if arch == "tiny":
        kw = TINY
    else:
        a = MODELS["vit_b"].arch
        kw = dict(embed_dim=a.embed_dim, depth=a.depth, num_heads=a.num_heads, global_attn_indexes=a.global_attn_indexes)
    ref_model = build_reference(**kw, seed=5)
    ck = tmp_path / "m.pth"
    torch.save(ref_model.state_dict(), ck)
    ref = SamPredictor(ref_model.cuda())
    ours = Predictor(load_model(checkpoint=ck, device="cuda"))
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    ref.set_image(photo)
    ours.set_image(photo)
    assert rel(ref.features, ours.features) <= 1e-4
    pts, lab = np.array([[220.0, 150.0], [40, 40]]), np.array([1, 0])
    m1, i1, l1 = ref.predict(point_coords=pts, point_labels=lab, multimask_output=True)
    p = ours.predict(point_coords=pts, point_labels=lab, multimask=True)
    assert np.linalg.norm(l1 - p.low_res[0]) / np.linalg.norm(l1) <= 1e-4
    assert np.abs(i1 - p.iou[0]).max() <= 1e-4
    assert (m1 == p.masks[0]).mean() >= 0.999


def test_bf16_encoder_masks_match_fp32(tmp_path, photo):
    """bf16 image encoder vs fp32: automatic-mode masks agree at mean IoU ≥ 0.99."""
    from sam_cli import masks as M
    from sam_cli.automatic import AmgSettings, AutomaticMaskGenerator
    from sam_cli.weights import load_model

    ref_model = build_reference(**TINY, seed=5)
    ck = tmp_path / "m.pth"
    torch.save(ref_model.state_dict(), ck)
    s = AmgSettings(points_per_side=16, pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=1.0)
    fp32 = AutomaticMaskGenerator(load_model(checkpoint=ck, device="cuda"), s).generate(photo)
    net = load_model(checkpoint=ck, device="cuda")
    net.image_encoder.to(torch.bfloat16)
    bf16 = AutomaticMaskGenerator(net, s).generate(photo)
    assert len(fp32) == len(bf16)
    ious = []
    for a, b in zip(fp32, bf16):
        ma, mb = M.rle_to_mask(a.rle), M.rle_to_mask(b.rle)
        ious.append((ma & mb).sum() / max((ma | mb).sum(), 1))
    assert np.mean(ious) >= 0.99
