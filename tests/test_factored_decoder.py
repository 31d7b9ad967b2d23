"""The factored two-way transformer (sam_cli/models/sam1/factored.py), which runs a decoder call
of many prompts on one image without building each prompt's image tokens: the same function as
TwoWayTransformer to float32 rounding, for SAM 1's and SAM 2's token layouts and settings drawn
apart; through the predictors, batches of boxes give Meta's masks (segment-anything and sam2);
and it runs only where it applies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_cli.models.sam1.factored import SharedImage, factorable, factored_forward
from sam_cli.models.sam1.transformer import TwoWayTransformer


def random_transformer(dim: int, seed: int) -> TwoWayTransformer:
    """Random weights, the LayerNorms' scales and shifts too (their defaults, 1 and 0, would
    hide a missing γ or β)."""
    torch.manual_seed(seed)
    tr = TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2 * dim).eval()
    for m in tr.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.3)
    return tr


# (embedding dim, batch, tokens, out_tokens, grid): SAM 1's 7 tokens (IoU, 4 masks, a click and
# the padding point), SAM 2's 8 (the object score first) and a box with clicks
CASES = [
    (64, 9, 7, [0, 2, 3, 4], 16),
    (256, 8, 8, [1, 3, 4, 5], 12),
    (128, 3, 10, None, 8),
    (64, 12, 5, [0, 1], 10),
]


@pytest.mark.parametrize("dim,b,t,out_tokens,side", CASES)
def test_the_factored_transformer_is_the_plain_one(dim, b, t, out_tokens, side):
    tr = random_transformer(dim, seed=dim + b)
    g = torch.Generator().manual_seed(b)
    src = torch.randn(1, dim, side, side, generator=g) * 0.8 + 0.3  # rows with a mean, as SAM's have
    pe = torch.randn(1, dim, side, side, generator=g)
    tokens = torch.randn(b, t, dim, generator=g)
    with torch.inference_mode():
        assert factorable(tr, src)
        queries, keys = tr(src, pe, tokens, out_tokens=out_tokens)
        shared = SharedImage(tr, src, pe)
        fq, fk = factored_forward(tr, shared, tokens, out_tokens)
        torch.testing.assert_close(fq, queries, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fk.materialize(), keys, rtol=1e-4, atol=1e-4)
        # a consumer's projection, for some prompts and the top-left cells of the grid
        w, bias = torch.randn(dim, 32, generator=g), torch.randn(32, generator=g)
        gh, gw = side - 3, side - 1
        part = fk.select(torch.tensor([b - 1, 0])).grid(side, side, gh, gw).project("w", w, bias)
        want = keys.view(b, side, side, dim)[[b - 1, 0], :gh, :gw].reshape(2, -1, dim) @ w + bias
        torch.testing.assert_close(part, want, rtol=1e-4, atol=1e-3)


def test_sam_1_box_batches_match_segment_anything(tiny_reference, tiny_model, photo):
    """20 boxes (two decoder calls, both factored) against SamPredictor.predict_torch."""
    from segment_anything import SamPredictor

    from sam_cli.predictor import Predictor

    ref = SamPredictor(tiny_reference)
    ref.set_image(photo)
    ours = Predictor(tiny_model)
    ours.set_image(photo)
    g = np.random.default_rng(5)
    h, w = photo.shape[:2]
    xy = g.uniform([0, 0], [w * 0.6, h * 0.6], (20, 2))
    boxes = np.concatenate([xy, xy + g.uniform(20, [w * 0.4, h * 0.4], (20, 2))], 1)
    for multimask in (True, False):
        with torch.no_grad():
            tb = ref.transform.apply_boxes_torch(torch.as_tensor(boxes, dtype=torch.float32), photo.shape[:2])
            m, iou, low = ref.predict_torch(None, None, boxes=tb, multimask_output=multimask)
        got = ours.predict(boxes=boxes, multimask=multimask)
        assert np.abs(got.iou - iou.numpy()).max() <= 1e-4
        assert np.abs(got.low_res - low.numpy()).max() <= 1e-3
        assert (got.masks == m.numpy()).mean() >= 0.999
    assert any(k[0] == "factored" for k in ours.features.derived)


def test_sam_2_box_batches_match_sam2():
    """SAM 2.1 (Meta's tiny config, random weights): 12 boxes with a click each, one factored
    decoder call, against SAM2ImagePredictor.predict with the same batch."""
    from pathlib import Path
    from tempfile import TemporaryDirectory

    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    from conftest import EXAMPLES
    from reference import build_sam2_tiny

    with TemporaryDirectory() as d:
        ref_model, path = build_sam2_tiny(Path(d) / "sam2.1_tiny_random.pt")
        net = load_model(checkpoint=path)
    img = read_image(EXAMPLES / "coffee.jpg")
    ref = SAM2ImagePredictor(ref_model)
    ours = Predictor(net)
    with torch.no_grad():
        ref.set_image(img)
    ours.set_image(img)
    g = np.random.default_rng(7)
    xy = g.uniform([0, 0], [360, 240], (12, 2))
    boxes = np.concatenate([xy, xy + g.uniform(30, 240, (12, 2))], 1)
    clicks = (boxes[:, None, :2] + boxes[:, None, 2:]) / 2
    for multimask in (True, False):
        with torch.no_grad():
            m, iou, low = ref.predict(point_coords=clicks, point_labels=np.ones((12, 1)), box=boxes,
                                      multimask_output=multimask)
        got = _sam2_boxes_with_clicks(ours, boxes, clicks, multimask)
        assert np.abs(got[1] - iou).max() <= 1e-4
        assert np.abs(got[2] - low).max() <= 1e-3
        assert (got[0] == m.astype(bool)).mean() >= 0.999
    assert any(k[0] == "factored" for k in ours.features.derived)


def _sam2_boxes_with_clicks(pred, boxes, clicks, multimask):
    """Each box with its own click, in one decoder call: masks, IoU and low-res logits (the
    predictor's predict gives every box the same clicks)."""
    pts = torch.as_tensor(pred.to_input_frame(clicks), dtype=torch.float32)
    bx = torch.as_tensor(pred.to_input_frame(boxes.reshape(-1, 2, 2)).reshape(-1, 4), dtype=torch.float32)
    with torch.inference_mode():
        low, iou = pred.decode(pts, torch.ones(len(boxes), 1, dtype=torch.int64), bx, None, multimask)
        masks = pred.model.upscale(low, pred.input_hw, pred.orig_hw) > pred.model.mask_threshold
        low = pred.model.clamp_low_res(low)
    return masks.numpy(), iou.numpy(), low.numpy()


def test_it_runs_only_where_it_applies(tiny_model, photo):
    """Autograd, bfloat16, a compiled transformer, a mask prompt (each prompt its own image
    tokens) and small calls take the plain path; the per-image products live with the image's
    features, not in what the embedding cache saves or what to() copies."""
    from sam_cli.models.compiled import CompiledOrEager
    from sam_cli.predictor import Predictor

    tr = tiny_model.mask_decoder.transformer
    src = torch.zeros(1, tr.layers[0].norm4.weight.shape[0], 4, 4)
    with torch.inference_mode():
        assert factorable(tr, src)
        assert not factorable(tr, src.expand(2, -1, -1, -1))
        assert not factorable(tr, src.bfloat16())
    with torch.enable_grad():
        assert not factorable(tr, src)
    tr.__dict__["forward"] = CompiledOrEager("t", None, tr.forward, None)
    try:
        with torch.inference_mode():
            assert not factorable(tr, src)
    finally:
        del tr.__dict__["forward"]
    pred = Predictor(tiny_model)
    pred.set_image(photo)
    pts = torch.rand(4, 1, 2) * 600
    ones = torch.ones(4, 1, dtype=torch.int64)
    with torch.inference_mode():
        pred.decode(pts, ones, None, None, True)  # 4 prompts: below MIN_BATCH
        assert not pred.features.derived
        pred.decode(pts, ones, None, torch.zeros(4, 1, 256, 256), True)
        assert not pred.features.derived
        pred.decode(torch.rand(8, 1, 2) * 600, torch.ones(8, 1, dtype=torch.int64), None, None, True)
        assert len(pred.features.derived) == 1
        small, _ = pred.decode(pts, ones, None, None, True)  # made once: now every call uses it
    plain = Predictor(tiny_model)
    plain.set_image(photo)
    with torch.inference_mode():
        want, iou = plain.decode(pts, ones, None, None, True)
        none = plain.decode(pts, ones, None, None, True, image_part_only=True, min_iou=float(iou.max()))
    torch.testing.assert_close(small, want, rtol=1e-4, atol=1e-3)
    assert not plain.features.derived and none[0].shape[0] == 0  # the plain path, none kept
    assert not pred.features.to("cpu").derived


def test_sam_3_point_head_runs_factored_and_equals_the_plain_path(tmp_path, monkeypatch):
    """SAM 3's point-and-box head (SAM 2's decoder on SAM 3's features, a 72×72 grid at full
    size, 4×4 here): ten clicks in one call, factored, against the same call on the plain path."""
    import sam_cli.models.sam1.factored as factored
    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    from conftest import EXAMPLES
    from sam3_tiny import save_tiny_sam3

    net = load_model(checkpoint=save_tiny_sam3(tmp_path / "sam3_tiny.pt"))
    img = read_image(EXAMPLES / "coffee.jpg")
    fact, plain = Predictor(net), Predictor(net)
    fact.set_image(img)
    plain.set_image(img)
    pts = torch.rand(10, 1, 2, generator=torch.Generator().manual_seed(2)) * 500
    ones = torch.ones(10, 1, dtype=torch.int64)
    with torch.inference_mode():
        low, iou = fact.decode(pts, ones, None, None, True)
        assert [k[0] for k in fact.features.derived] == ["factored"]
        monkeypatch.setattr(factored, "factorable", lambda *_: False)
        want_low, want_iou = plain.decode(pts, ones, None, None, True)
    assert not plain.features.derived
    torch.testing.assert_close(iou, want_iou, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(low, want_low, rtol=1e-4, atol=1e-6 * float(want_low.abs().max()) + 1e-4)
    assert ((low > 0) == (want_low > 0)).float().mean() >= 0.999
