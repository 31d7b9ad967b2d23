"""transformers' Sam2Model as SAM 2.1's second oracle: the same random tiny-config weights (Meta's
file, renamed to transformers' keys by tests/sam2_hf.py and loaded strictly), the same photo and
prompts. Compared: the pixels each tool feeds its encoder, the three feature levels, and the masks
and IoUs of clicks, a box with a click and both mask choices, at the photo's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers  # noqa: F401  (the oracle: a missing one fails, never skips)

from conftest import EXAMPLES  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from transformers import Sam2ImageProcessor, Sam2Processor

    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    from reference import build_sam2_tiny
    from sam2_hf import transformers_model

    _, path = build_sam2_tiny(tmp_path_factory.mktemp("sam2hf") / "sam2.1_tiny_random.pt", seed=3)
    ours = load_model(checkpoint=path)
    theirs = transformers_model(ours.arch, torch.load(path, weights_only=True)["model"])
    proc = Sam2Processor(image_processor=Sam2ImageProcessor())  # what from_pretrained gives
    img = read_image(EXAMPLES / "coffee.jpg")  # 600×400: the square resize scales x and y apart
    pred = Predictor(ours)
    pred.set_image(img)
    with torch.no_grad():
        px = proc(images=img, return_tensors="pt")["pixel_values"]
        # the models compared on the same input: sam's pixels (the resizes differ by a grey level)
        feats = theirs.get_image_embeddings(ours.preprocess(pred.prepare(img)[0]))
    return pred, theirs, proc, img, px, feats


def test_both_feed_the_encoder_the_same_pixels(setup):
    pred, _, _, img, px, _ = setup
    ours = pred.model.preprocess(pred.prepare(img)[0])
    # The same squash to 1024² (bilinear, antialiased) and ImageNet statistics. sam resizes the
    # float image as Meta's sam2 does; transformers' processor resizes the uint8 image, so its
    # pixels are sam's rounded to whole grey levels (a quarter of a level apart on average). The
    # models below are compared on sam's pixels.
    grey = 1.0 / 255 / pred.model.pixel_std.min()
    assert ours.shape == px.shape and (ours - px).abs().max() <= 1.01 * grey
    assert (ours - px).abs().mean() <= 0.35 * grey


def test_the_three_feature_levels_agree(setup):
    pred, _, _, _, _, feats = setup
    for key, theirs in zip(("feat_s0", "feat_s1", "image_embed"), feats):
        ours = pred.features[key]
        assert ours.shape == theirs.shape, key
        err = (ours - theirs).abs().max() / theirs.abs().max()
        assert err <= 1e-5, (key, float(err))


@pytest.mark.parametrize("multimask", [True, False])
def test_masks_and_ious_agree(setup, multimask):
    pred, theirs, proc, img, _, feats = setup
    cases = [dict(points=[[320.0, 200.0], [100.0, 90.0]], labels=[1, 0], box=None),
             dict(points=[[300.0, 200.0]], labels=[1], box=[120.0, 60.0, 480.0, 350.0])]
    for case in cases:
        kw = dict(input_points=[[case["points"]]], input_labels=[[case["labels"]]])
        if case["box"] is not None:
            kw["input_boxes"] = [[case["box"]]]
        inputs = proc(images=img, return_tensors="pt", **kw)
        with torch.no_grad():
            out = theirs(image_embeddings=feats, input_points=inputs["input_points"],
                         input_labels=inputs["input_labels"], input_boxes=inputs.get("input_boxes"),
                         multimask_output=multimask)
        masks = proc.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0].numpy().astype(bool)
        box = None if case["box"] is None else np.array([case["box"]])
        got = pred.predict(point_coords=np.array(case["points"]), point_labels=np.array(case["labels"]),
                           boxes=box, multimask=multimask)
        assert got.masks[0].shape == masks.shape and 0.05 < masks.mean() < 0.95  # masks with edges
        assert np.abs(got.iou[0] - out.iou_scores[0, 0].numpy()).max() <= 1e-4
        assert np.abs(got.low_res[0] - out.pred_masks[0, 0].numpy()).max() <= 1e-3
        assert (got.masks[0] == masks).mean() >= 0.999
