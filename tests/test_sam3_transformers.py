"""SAM 3 against the second oracle, transformers' `Sam3Model` (5.25.0), at two small
configurations drawn apart. sam loads a tiny `sam3.pt` (Meta's layout) through its own loader;
transformers gets the same tensors under its own names (tests/sam3_hf.py). Compared: the
tokens (transformers' CLIP tokenizer built from the same vocabulary file), text features, the
three feature levels, each query's logit, the presence logit, boxes and mask logits, for a
phrase alone and with exemplar boxes; and what `sam segment --text` keeps per phrase against
transformers' own post-processing.

Two places where transformers departs from Meta's reference, which sam follows:
- its tokenizer does not apply ftfy's fix_text or unescape HTML entities, and does not read
  Meta's `<end_of_text>` spelled out in a phrase as the end token: compared on the text as
  Meta's tokenizer cleans it;
- with no boxes, `Sam3Model` leaves the geometry encoder out, so the prompt lacks the geometry
  CLS token that Meta's processor always adds (an empty geometric prompt): a phrase alone is
  given to it with one padding box (label -10), which keeps the CLS token and masks the box."""

from __future__ import annotations

import pytest
import torch

from sam3_hf import clip_tokenizer, transformers_model
from sam3_tiny import TINY, save_tiny_sam3

#: drawn apart from TINY: a 9×9 grid in 4×4 windows (padded) and a 3×3 position table tiled over
#: it, other widths and head counts, more decoder layers than encoder ones, one geometry layer more
OTHER = dict(vit=dict(img_size=126, dim=96, depth=3, heads=3, window=4, global_blocks=(0, 2), pretrain_size=42,
                      d_model=96),
             text=dict(width=192, layers=3, heads=3, d_model=96),
             dim=96, heads=3, ffn=80, encoder_layers=1, decoder_layers=3, geometry_layers=2, queries=7)

@pytest.fixture(scope="module", params=[("tiny", TINY, 3), ("other", OTHER, 11)], ids=lambda p: p[0])
def pair(request, tmp_path_factory):
    """(sam's network loaded from a sam3.pt file, transformers' Sam3Model with the same weights)."""
    from sam_cli.checkpoints import load

    _, sizes, seed = request.param
    loaded = load(checkpoint=save_tiny_sam3(tmp_path_factory.mktemp("sam3") / "sam3.pt", seed=seed, sizes=sizes))
    return loaded.net, transformers_model(loaded.net)


def _image(seed: int, hw=(90, 130)) -> torch.Tensor:
    return torch.randint(0, 256, (*hw, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


PHRASES = ["dog", "a red traffic light", "cat", "person on a bike"]


def _close(got: torch.Tensor, want: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal within rel of the tensor's largest magnitude (features of random weights run to tens)."""
    assert got.shape == want.shape
    scale = float(want.abs().max()) or 1.0
    err = float((got - want).abs().max())
    assert err <= rel * scale, f"largest difference {err:.3g} against magnitude {scale:.3g}"


def test_the_tokenizer_gives_transformers_clip_tokens_on_meta_s_cleaned_text():
    from test_sam3_parts import _phrases

    from sam_cli.models.sam3.tokenizer import CONTEXT, Tokenizer

    ours = Tokenizer()
    theirs = clip_tokenizer()

    def tokens(texts: list[str]) -> torch.Tensor:
        enc = theirs(texts, padding="max_length", max_length=CONTEXT, truncation=True, return_tensors="pt")
        return torch.where(enc.attention_mask.bool(), enc.input_ids, 0)  # Meta pads with 0

    phrases = [p for p in _phrases(300, seed=0) if "<end_of_text>" not in p]
    # where Meta's cleaning (ftfy, HTML entities) changes nothing, the raw phrase; everywhere, the cleaned one
    plain = [p for p in phrases if ours.clean(p) == " ".join(p.split()).lower()]
    assert len(plain) > 150 and len(phrases) - len(plain) > 50
    for texts, given in ((plain, plain), (phrases, [ours.clean(p) for p in phrases])):
        got, want = ours(texts), tokens(given)
        bad = [p for p, a, b in zip(texts, got, want) if not torch.equal(a, b)]
        assert not bad, bad[:5]
    assert (ours(phrases)[:, -1] != 0).any()  # some phrases were cut at 32 tokens


def test_text_and_image_features_are_transformers(pair):
    from sam_cli.models.sam3.model import preprocess
    from sam_cli.models.sam3.tokenizer import Tokenizer

    net, theirs = pair
    x = preprocess(_image(0), net.img_size)
    tokens = Tokenizer()(PHRASES)
    with torch.no_grad():
        pad, text = net.detector.encode_text(tokens)
        want = theirs.get_text_features(input_ids=tokens, attention_mask=(~pad).long()).pooler_output
        _close(text[~pad], want[~pad])  # padding positions are masked wherever they are read
        levels = net.pyramid(net.encode(x)["trunk"])
        fpn = theirs.get_vision_features(pixel_values=x).fpn_hidden_states
    assert len(levels) == 3
    for got, want in zip(levels, fpn[:3]):
        _close(got, want)


@pytest.mark.parametrize("exemplars", [False, True], ids=["phrase", "phrase+exemplars"])
def test_logits_presence_boxes_and_masks_are_transformers(pair, exemplars):
    from sam_cli.models.sam3.model import preprocess
    from sam_cli.models.sam3.tokenizer import Tokenizer

    net, theirs = pair
    x = preprocess(_image(1, (120, 70)), net.img_size)
    tokens = Tokenizer()(PHRASES)
    n = len(PHRASES)
    if exemplars:  # one positive and one negative box, cx, cy, w, h in [0, 1]
        boxes = torch.tensor([[[0.5, 0.4, 0.3, 0.2], [0.2, 0.7, 0.15, 0.3]]]).expand(n, -1, -1)
        labels = torch.tensor([[1, 0]]).expand(n, -1)
        kwargs = dict(boxes=boxes, box_labels=labels.float())
    else:  # the geometry CLS token alone: one padding box for transformers (see the module's note)
        boxes, labels, kwargs = torch.zeros(n, 1, 4), torch.full((n, 1), -10), {}
    with torch.no_grad():
        pad, text = net.detector.encode_text(tokens)
        levels = net.pyramid(net.encode(x)["trunk"])
        det = net.detector.detect([lv.expand(n, -1, -1, -1) for lv in levels], pad, text, **kwargs)
        out = theirs(pixel_values=x.expand(n, -1, -1, -1), input_ids=tokens, attention_mask=(~pad).long(),
                     input_boxes=boxes, input_boxes_labels=labels)
    torch.testing.assert_close(det.logits, out.pred_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(det.presence, out.presence_logits.flatten(), rtol=1e-5, atol=1e-5)
    cx, cy, w, h = det.boxes.unbind(-1)
    torch.testing.assert_close(torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), -1), out.pred_boxes,
                               rtol=1e-4, atol=1e-5)
    _close(det.masks, out.pred_masks)
    assert ((det.masks > 0) == (out.pred_masks > 0)).float().mean() >= 0.999
    assert det.logits.std() > 1e-3 and det.presence.std() > 1e-3  # the phrases and queries do differ


def test_what_the_command_keeps_is_what_transformers_post_processing_keeps(pair):
    """TextSegmenter (what `sam segment --text` runs) against Sam3ImageProcessor's
    post_process_instance_segmentation at a threshold between two of the scores: the same
    detections and scores; masks nearly all the same pixels (transformers takes the
    sigmoid before resizing the logits to the image, Meta after)."""
    from transformers import Sam3ImageProcessor

    from sam_cli import masks as M
    from sam_cli.models.sam3.model import preprocess
    from sam_cli.models.sam3.tokenizer import Tokenizer
    from sam_cli.text_prompts import TextSegmenter, TextSettings

    net, theirs = pair
    rgb = _image(2, (75, 110))
    image = rgb.numpy()
    with torch.no_grad():
        trunk = net.encode(net.prepare(rgb))["trunk"]
        scores = TextSegmenter(net, TextSettings(tuple(PHRASES), 0.0)).detect(image, trunk).scores
    s = scores.flatten().sort().values
    k = int((s[1:] - s[:-1])[len(s) // 4: 3 * len(s) // 4].argmax()) + len(s) // 4
    threshold = float(s[k] + s[k + 1]) / 2  # some kept, some not, none at the edge
    with torch.no_grad():
        records = TextSegmenter(net, TextSettings(tuple(PHRASES), threshold)).segment(image, trunk)
        tokens = Tokenizer()(PHRASES)
        n = len(PHRASES)
        out = theirs(pixel_values=preprocess(rgb, net.img_size).expand(n, -1, -1, -1), input_ids=tokens,
                     attention_mask=(tokens != 0).long(), input_boxes=torch.zeros(n, 1, 4),
                     input_boxes_labels=torch.full((n, 1), -10))
    want = Sam3ImageProcessor().post_process_instance_segmentation(out, threshold=threshold,
                                                                   target_sizes=[image.shape[:2]] * n)
    assert 0 < len(records) < scores.numel()
    for row, found in enumerate(want):
        mine = [r for r in records if r.object_index == row]
        assert len(mine) == len(found["scores"])
        if not mine:
            continue
        torch.testing.assert_close(torch.tensor([r.source["score"] for r in mine]), found["scores"], rtol=1e-4,
                                   atol=1e-5)
        masks = torch.stack([torch.from_numpy(M.rle_to_mask(r.rle)) for r in mine])
        # the two orders differ only at mask edges, and the speckled masks of random weights are mostly edge
        assert (masks == found["masks"].bool()).float().mean() >= 0.97
