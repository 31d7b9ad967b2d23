"""Parity with Meta's reference implementation (the oracle): same weights, same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam_cli.checkpoints import build_from_arch, infer_arch, load_model
from sam_cli.predictor import Predictor

from reference import arch_kwargs, build_reference

REL_L2 = 1e-4
IOU_TOL = 1e-4
PIXELS = 0.999


def rel_l2(a, b) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(a))


def run_both(ref_pred, ours: Predictor, *, points=None, labels=None, box=None, mask=None, multimask):
    m1, i1, l1 = ref_pred.predict(
        point_coords=None if points is None else np.asarray(points, float),
        point_labels=None if labels is None else np.asarray(labels),
        box=None if box is None else np.asarray(box, float),
        mask_input=mask, multimask_output=multimask,
    )
    p = ours.predict(
        point_coords=points, point_labels=labels,
        boxes=None if box is None else [box], mask_input=mask, multimask=multimask,
    )
    return (m1, i1, l1), (p.masks[0], p.iou[0], p.low_res[0])


def assert_close(ref, ours):
    (m1, i1, l1), (m2, i2, l2) = ref, ours
    assert l1.shape == l2.shape and m1.shape == m2.shape
    assert rel_l2(l1, l2) <= REL_L2
    assert np.abs(i1 - i2).max() <= IOU_TOL
    assert (m1 == m2).mean() >= PIXELS


@pytest.fixture(scope="module")
def tiny_pair(tiny_reference, tiny_model, photo):
    from segment_anything import SamPredictor

    ref = SamPredictor(tiny_reference)
    ref.set_image(photo)
    ours = Predictor(tiny_model)
    ours.set_image(photo)
    return ref, ours


def test_image_embedding_matches(tiny_pair):
    ref, ours = tiny_pair
    a, b = ref.features.numpy(), ours.features["image_embed"].numpy()
    assert a.shape == b.shape == (1, 256, 64, 64)
    assert rel_l2(a, b) <= REL_L2


def test_preprocessed_input_is_identical(tiny_reference, tiny_model, photo):
    """Our Pillow-exact resize feeds the encoder exactly the reference's pixels."""
    from segment_anything.utils.transforms import ResizeLongestSide

    ref = ResizeLongestSide(1024).apply_image(photo)
    ours, hw = Predictor(tiny_model).prepare(photo)
    assert hw == ref.shape[:2]
    assert np.array_equal(ours[0].permute(1, 2, 0).byte().numpy(), ref)


rng = np.random.default_rng(7)
MASK = rng.normal(size=(1, 256, 256)).astype(np.float32) * 3

CASES = {
    "one point": dict(points=[[220, 150]], labels=[1]),
    "edge point": dict(points=[[0, 299]], labels=[1]),
    "fg and bg points": dict(points=[[220, 150], [40, 40], [400, 250]], labels=[1, 0, 1]),
    "only background": dict(points=[[100, 100]], labels=[0]),
    "box": dict(box=[60, 30, 380, 290]),
    "box and points": dict(box=[60, 30, 380, 290], points=[[220, 150], [70, 40]], labels=[1, 0]),
    "mask alone": dict(mask=MASK),
    "mask and point": dict(mask=MASK, points=[[220, 150]], labels=[1]),
    "mask, box, points": dict(mask=MASK, box=[10, 10, 300, 200], points=[[50, 60]], labels=[1]),
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_tiny_prompt_parity(tiny_pair, case, multimask):
    ref, ours = tiny_pair
    assert_close(*run_both(ref, ours, multimask=multimask, **CASES[case]))


def test_many_boxes_are_one_batch_and_match_one_by_one(tiny_pair):
    """Several boxes go through the decoder together; each equals the reference's single-box answer."""
    ref, ours = tiny_pair
    boxes = [[10, 10, 200, 150], [150, 100, 450, 299], [0, 0, 451, 300]]
    p = ours.predict(boxes=boxes, multimask=False)
    assert p.masks.shape == (3, 1, 300, 451)
    for k, b in enumerate(boxes):
        m1, i1, l1 = ref.predict(box=np.asarray(b, float), multimask_output=False)
        assert rel_l2(l1, p.low_res[k]) <= REL_L2
        assert np.abs(i1 - p.iou[k]).max() <= IOU_TOL
        assert (m1 == p.masks[k]).mean() >= PIXELS


@pytest.mark.parametrize("layout", ["accelerator", "one-row bands"])
def test_other_device_layouts_match_on_the_cpu(tiny_pair, tiny_model, photo, monkeypatch, layout):
    """The layouts sam picks on GPUs (encoder attention with every head in one call and one
    band; image → token logits heads-outermost; the upscaling batched), and the smallest mask
    bands, run here on the CPU and still match the reference."""
    from sam_cli.models.sam1 import image_encoder, mask_decoder, transformer

    if layout == "accelerator":
        monkeypatch.setattr(image_encoder.Attention, "CPU_HEADS", 1 << 10)
        monkeypatch.setattr(image_encoder.Attention, "CPU_MASK_BYTES", 1 << 30)
        monkeypatch.setattr(transformer.Attention, "IMAGE_INNER_ON", ())
        monkeypatch.setattr(mask_decoder.MaskDecoder, "UPSCALE_ONE_BY_ONE_ON", ())
    else:
        monkeypatch.setattr(image_encoder.Attention, "CPU_MASK_BYTES", 1)
    ref, _ = tiny_pair
    ours = Predictor(tiny_model)
    ours.set_image(photo)
    assert rel_l2(ref.features.numpy(), ours.features["image_embed"].numpy()) <= REL_L2
    boxes = [[10, 10, 200, 150], [150, 100, 450, 299], [0, 0, 451, 300]]
    p = ours.predict(boxes=boxes, multimask=True)
    for k, b in enumerate(boxes):
        m1, i1, l1 = ref.predict(box=np.asarray(b, float), multimask_output=True)
        assert rel_l2(l1, p.low_res[k]) <= REL_L2
        assert np.abs(i1 - p.iou[k]).max() <= IOU_TOL
        assert (m1 == p.masks[k]).mean() >= PIXELS


@pytest.mark.heavy  # among the default run's longest (a CPU is not what --compile is for): CI runs it after the default run
@pytest.mark.parametrize("layout", ["cpu", "accelerator"])
def test_compiled_parts_are_traced_whole_and_match(tiny_pair, tiny_model, photo, monkeypatch, layout):
    """Sam.compile_parts (`sam auto --compile`): TorchDynamo traces the encoder, the decoder's
    transformer and the upscaling into graphs, and those graphs still match the reference.
    The backend here runs each traced graph as it is (no code generation, which needs a C
    compiler and minutes on this CPU); tests/test_gpu.py runs Inductor itself."""
    import copy

    from sam_cli.models.sam1 import mask_decoder

    if layout == "accelerator":
        monkeypatch.setattr(mask_decoder.MaskDecoder, "UPSCALE_ONE_BY_ONE_ON", ())
    torch._dynamo.reset()
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    net = copy.deepcopy(tiny_model).compile_parts(backend=record)
    ours = Predictor(net)
    ours.set_image(photo)
    n_encoder = len(graphs)
    ref, _ = tiny_pair
    assert n_encoder == 1  # the whole encoder, one graph
    assert rel_l2(ref.features.numpy(), ours.features["image_embed"].numpy()) <= REL_L2
    boxes = [[10, 10, 200, 150], [150, 100, 450, 299], [0, 0, 451, 300]]
    p = ours.predict(boxes=boxes, multimask=True)
    # one graph each for the transformer and the upscaling: a graph break would make more
    assert len(graphs) == 3
    for k, b in enumerate(boxes):
        m1, i1, l1 = ref.predict(box=np.asarray(b, float), multimask_output=True)
        assert rel_l2(l1, p.low_res[k]) <= REL_L2
        assert np.abs(i1 - p.iou[k]).max() <= IOU_TOL
        assert (m1 == p.masks[k]).mean() >= PIXELS
    assert all(sum(n.op == "call_function" for n in g.graph.nodes) >= 6 for g in graphs)
    torch._dynamo.reset()


@pytest.mark.heavy  # among the default run's longest (a CPU is not what --compile is for): CI runs it after the default run
def test_compiled_bf16_parts_are_traced_whole_and_match_eager(tiny_ckpt, photo):
    """`sam auto --compile --dtype bf16`: with float32 and bfloat16 mixed inside each part
    (the encoder's residual stream, the decoder's prompt tokens), TorchDynamo still traces
    the three parts whole, and the graphs give the eager bf16 model's outputs."""
    import copy

    torch._dynamo.reset()
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    eager = load_model(checkpoint=tiny_ckpt, dtype="bf16")
    boxes = [[10, 10, 200, 150], [150, 100, 450, 299], [0, 0, 451, 300]]
    outs = []
    for net in (eager, copy.deepcopy(eager).compile_parts(backend=record)):
        p = Predictor(net)
        p.set_image(photo)
        outs.append((p.features["image_embed"], p.predict(boxes=boxes, multimask=True)))
    torch._dynamo.reset()
    assert len(graphs) == 3  # encoder, transformer, upscaling: no graph breaks
    (fa, a), (fb, b) = outs
    torch.testing.assert_close(fa, fb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.low_res, b.low_res, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a.iou, b.iou, rtol=1e-5, atol=1e-5)


@pytest.mark.heavy  # among the default run's longest (a CPU is not what --compile is for): CI runs it after the default run
def test_a_part_whose_compilation_fails_runs_uncompiled(tiny_pair, tiny_model, photo):
    """compile_parts: when the compiler fails (Inductor without a C compiler, say), each part
    says so once through on_failure and runs eagerly: the same outputs, no exception."""
    import copy

    torch._dynamo.reset()

    def broken(gm, example_inputs):
        raise RuntimeError("no C compiler")

    failures = []
    net = copy.deepcopy(tiny_model).compile_parts(
        backend=broken, on_failure=lambda part, err: failures.append((part, str(err))))
    ours = Predictor(net)
    ours.set_image(photo)
    ref, _ = tiny_pair
    assert rel_l2(ref.features.numpy(), ours.features["image_embed"].numpy()) <= REL_L2
    for _ in range(2):  # the second call goes straight to the eager parts
        p = ours.predict(boxes=[[10, 10, 200, 150]], multimask=True)
    m1, i1, l1 = ref.predict(box=np.asarray([10, 10, 200, 150], float), multimask_output=True)
    assert rel_l2(l1, p.low_res[0]) <= REL_L2 and np.abs(i1 - p.iou[0]).max() <= IOU_TOL
    assert failures == [(part, "no C compiler") for part in
                        ("image encoder", "decoder transformer", "decoder upscaling")]
    torch._dynamo.reset()


def test_many_boxes_in_several_decoder_calls_equal_one_call(tiny_pair, monkeypatch):
    """On the CPU, predict() splits many prompts into decoder calls of CPU_DECODER_BATCH: the
    masks, IoUs and logits are those of a single call."""
    from sam_cli import predictor as P

    _, ours = tiny_pair
    g = np.random.default_rng(3)
    xy = g.uniform(0, 300, (19, 2))
    boxes = np.concatenate([xy, xy + g.uniform(20, 150, (19, 2))], 1).clip(0, [450, 299, 450, 299])
    split = ours.predict(boxes=boxes, multimask=True)
    monkeypatch.setattr(P, "CPU_DECODER_BATCH", 1000)
    whole = ours.predict(boxes=boxes, multimask=True)
    assert split.masks.shape == whole.masks.shape == (19, 3, 300, 451)
    np.testing.assert_allclose(split.iou, whole.iou, atol=1e-5)
    np.testing.assert_allclose(split.low_res, whole.low_res, atol=1e-4)
    assert (split.masks == whole.masks).mean() >= 0.9999


def test_other_tiny_architecture_and_odd_image(tmp_path):
    """A different depth / width / head count / global blocks, on a tall image."""
    from segment_anything import SamPredictor

    ref_model = build_reference(embed_dim=96, depth=3, num_heads=6, global_attn_indexes=(0,), seed=3)
    ck = tmp_path / "other.pth"
    torch.save(ref_model.state_dict(), ck)
    ours = Predictor(load_model(checkpoint=ck))
    img = np.random.default_rng(1).integers(0, 256, (700, 90, 3), dtype=np.uint8)
    ref = SamPredictor(ref_model)
    ref.set_image(img)
    ours.set_image(img)
    assert_close(*run_both(ref, ours, points=[[45, 350]], labels=[1], multimask=True))


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_full_size_vit_b_parity(tmp_path, photo):
    """One full-size vit_b, random weights, through our loader: encoder and decoder match."""
    from segment_anything import SamPredictor

    from sam_cli.registry import MODELS

    ref_model = build_reference(**arch_kwargs("vit_b"), seed=11)
    ck = tmp_path / "vit_b.pth"
    torch.save(ref_model.state_dict(), ck)
    net = load_model(checkpoint=ck)
    assert infer_arch(torch.load(ck, weights_only=True)) == MODELS["vit_b"].arch
    ref, ours = SamPredictor(ref_model), Predictor(net)
    ref.set_image(photo)
    ours.set_image(photo)
    assert rel_l2(ref.features.numpy(), ours.features["image_embed"].numpy()) <= REL_L2
    for case in ("one point", "box and points"):
        assert_close(*run_both(ref, ours, multimask=True, **CASES[case]))


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_state_dict_keys_and_shapes_match_reference(name):
    """vit_l and vit_h are too big to run here: compare keys and shapes on the meta device."""
    from sam_cli.registry import MODELS

    ref = build_reference(**arch_kwargs(name), device="meta").state_dict()
    ours_model = build_from_arch(MODELS[name].arch, "meta")
    ours = ours_model.state_dict()
    assert list(ours) == list(ref)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    assert infer_arch(ref) == MODELS[name].arch
    n = sum(p.numel() for p in ours_model.parameters()) / 1e6
    assert n == pytest.approx(MODELS[name].params_m, rel=0.01)


@pytest.mark.parametrize("hw", [(300, 451), (451, 300)])
def test_image_part_only_decode_gives_the_same_masks(tiny_model, photo, hw):
    """Decoding only the unpadded grid cells (automatic mode's path) and upscaling gives the
    masks of the full 256×256 logits, for landscape and portrait images."""
    import cv2
    import torch

    from sam_cli.upscale import upscale_logits

    img = cv2.resize(photo, hw[::-1])
    p = Predictor(tiny_model)
    p.set_image(img)
    pts = torch.tensor([[[100.0, 200.0]], [[600.0, 50.0]]])
    labels = torch.ones(2, 1, dtype=torch.int64)
    full, iou_full = p.decode(pts, labels, None, None, True)
    part, iou_part = p.decode(pts, labels, None, None, True, image_part_only=True)
    assert part.shape[-2] < 256 or part.shape[-1] < 256
    torch.testing.assert_close(iou_part, iou_full)
    torch.testing.assert_close(part, full[..., : part.shape[-2], : part.shape[-1]])
    size = tiny_model.img_size
    a = upscale_logits(full, p.input_hw, p.orig_hw, size) > 0
    b = upscale_logits(part, p.input_hw, p.orig_hw, size) > 0
    assert (a == b).float().mean() >= 0.9999
    # predict(low_res=False), what `sam segment` runs without --save-logits, takes this path
    boxes = [[10, 20, 200, 150], [0, 0, hw[1], hw[0]]]
    with_low = p.predict(boxes=boxes, multimask=True)
    without = p.predict(boxes=boxes, multimask=True, low_res=False)
    assert without.low_res is None and with_low.low_res.shape[-2:] == (256, 256)
    np.testing.assert_allclose(without.iou, with_low.iou, atol=1e-6)
    assert (without.masks == with_low.masks).mean() >= 0.9999


def test_decode_with_min_iou_upscales_only_the_prompts_the_filter_keeps(tiny_pair):
    """min_iou (automatic mode's IoU filter moved before the upscaling) returns the logits of
    exactly the prompts with a predicted IoU above it, equal to the full decode's, and an
    empty result when none is above."""
    _, p = tiny_pair
    g = torch.Generator().manual_seed(3)
    pts = torch.rand(24, 1, 2, generator=g) * torch.tensor([1024.0, 680.0])
    labels = torch.ones(24, 1, dtype=torch.int64)
    low, iou = p.decode(pts, labels, None, None, True, image_part_only=True)
    thr = float(iou.max(dim=1).values.median())
    sub, sub_iou, kept = p.decode(pts, labels, None, None, True, image_part_only=True, min_iou=thr)
    expect = (iou > thr).any(dim=1).nonzero().squeeze(1)
    assert 0 < len(kept) < 24
    assert kept.tolist() == expect.tolist()
    torch.testing.assert_close(sub_iou, iou[kept])
    torch.testing.assert_close(sub, low[kept])
    none = p.decode(pts, labels, None, None, True, image_part_only=True, min_iou=float(iou.max()))
    assert none[0].shape[0] == none[1].shape[0] == none[2].shape[0] == 0
    assert none[0].shape[1:] == low.shape[1:]


def test_bf16_precision_runs_the_heavy_parts_in_bfloat16(tiny_ckpt, tiny_pair, photo):
    """--dtype bf16 on the CPU path (GPUs: tests/test_gpu.py): the encoder's attention and
    MLPs, the image side of the decoder transformer and the upscaling in bfloat16; the
    encoder's residual stream and neck, prompts, prompt tokens and heads in float32; float32
    logits and IoU out, and the masks agree with float32 wherever the float32 logit is clearly
    away from the threshold (this random model's logits are small: "clearly" is twice their
    mean magnitude)."""
    _, f32 = tiny_pair
    net = load_model(checkpoint=tiny_ckpt, dtype="bf16")
    dec = net.mask_decoder
    enc = net.image_encoder  # attention and MLPs bfloat16; residual stream, norms, neck float32
    assert enc.patch_embed.proj.weight.dtype == torch.bfloat16
    for block in enc.blocks:
        assert {p.dtype for p in [*block.attn.parameters(), *block.mlp.parameters()]} == {torch.bfloat16}
        assert {p.dtype for p in [*block.norm1.parameters(), *block.norm2.parameters()]} == {torch.float32}
    assert enc.pos_embed.dtype == torch.float32
    assert {p.dtype for p in enc.neck.parameters()} == {torch.float32}
    tr = dec.transformer
    assert tr.image_dtype == torch.bfloat16 and tr.token_dtype == torch.float32
    for layer in tr.layers:  # image side bfloat16, prompt tokens float32
        assert next(layer.cross_attn_image_to_token.parameters()).dtype == torch.bfloat16
        assert next(layer.cross_attn_token_to_image.parameters()).dtype == torch.bfloat16
        assert layer.norm4.weight.dtype == torch.bfloat16
        for m in (layer.self_attn, layer.mlp, layer.norm1, layer.norm2, layer.norm3):
            assert all(p.dtype == torch.float32 for p in m.parameters())
    assert next(dec.output_upscaling.parameters()).dtype == torch.bfloat16
    assert dec.iou_prediction_head.layers[0].weight.dtype == torch.float32
    assert next(net.prompt_encoder.parameters()).dtype == torch.float32
    ours = Predictor(net)
    ours.set_image(photo)
    assert ours.features["image_embed"].dtype == torch.float32
    assert rel_l2(f32.features["image_embed"].numpy(), ours.features["image_embed"].numpy()) <= 3e-2
    boxes = [[10, 10, 200, 150], [150, 100, 450, 299], [100, 50, 300, 250]]
    a = f32.predict(boxes=boxes, point_coords=[[220, 150]], point_labels=[1], multimask=True)
    b = ours.predict(boxes=boxes, point_coords=[[220, 150]], point_labels=[1], multimask=True)
    assert b.low_res.dtype == np.float32 and b.iou.dtype == np.float32
    confident = np.abs(a.low_res) >= 2 * np.abs(a.low_res).mean()
    assert confident.mean() > 0.05
    assert ((a.low_res > 0) == (b.low_res > 0))[confident].mean() >= 0.999
    assert np.abs(a.iou - b.iou).max() <= 2e-2


def test_a_one_pixel_strip_is_segmented(tiny_model):
    """A 1×3000 image: the short side would round to 0 pixels (where the reference's resize
    fails); it gets 1, and a click gives a mask of the image's size."""
    from sam_cli.transforms import target_size

    assert target_size(1, 3000, 1024) == (1, 1024)
    img = np.random.default_rng(0).integers(0, 256, (1, 3000, 3), dtype=np.uint8)
    p = Predictor(tiny_model)
    p.set_image(img)
    out = p.predict(point_coords=[[10, 0]], point_labels=[1], multimask=True)
    assert out.masks.shape == (1, 3, 1, 3000)
