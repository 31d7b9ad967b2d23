"""SAM 3 against the second oracle, transformers' `Sam3Model` (5.25.0), at two small
configurations drawn apart. sam loads a tiny `sam3.pt` (Meta's layout) through its own loader;
transformers gets the same tensors under its own names (the renaming below, written from the
key names of transformers' converter: packed q/k/v split, the position table's CLS row dropped,
the CLIP text projection transposed). Compared: the tokens (transformers' CLIP tokenizer built
from the same vocabulary file), text features, the three feature levels, each query's logit,
the presence logit, boxes and mask logits, for a phrase alone and with exemplar boxes; and what
`sam segment --text` keeps per phrase against transformers' own post-processing.

Two places where transformers departs from Meta's reference, which sam follows:
- its tokenizer does not apply ftfy's fix_text or unescape HTML entities, and does not read
  Meta's `<end_of_text>` spelled out in a phrase as the end token: compared on the text as
  Meta's tokenizer cleans it;
- with no boxes, `Sam3Model` leaves the geometry encoder out, so the prompt lacks the geometry
  CLS token that Meta's processor always adds (an empty geometric prompt): a phrase alone is
  given to it with one padding box (label -10), which keeps the CLS token and masks the box."""

from __future__ import annotations

import re

import pytest
import torch

from sam3_tiny import TINY, save_tiny_sam3

#: drawn apart from TINY: a 9×9 grid in 4×4 windows (padded) and a 3×3 position table tiled over
#: it, other widths and head counts, more decoder layers than encoder ones, one geometry layer more
OTHER = dict(vit=dict(img_size=126, dim=96, depth=3, heads=3, window=4, global_blocks=(0, 2), pretrain_size=42,
                      d_model=96),
             text=dict(width=192, layers=3, heads=3, d_model=96),
             dim=96, heads=3, ffn=80, encoder_layers=1, decoder_layers=3, geometry_layers=2, queries=7)

#: Meta's detector key (`detector.` taken off) → transformers' `Sam3Model` key, first match wins
_RENAME = [
    (r"^backbone\.vision_backbone\.trunk\.pos_embed$", "vision_encoder.backbone.embeddings.position_embeddings"),
    (r"^backbone\.vision_backbone\.trunk\.patch_embed\.proj\.",
     "vision_encoder.backbone.embeddings.patch_embeddings.projection."),
    (r"^backbone\.vision_backbone\.trunk\.ln_pre\.", "vision_encoder.backbone.layer_norm."),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.norm(\d)\.", r"vision_encoder.backbone.layers.\1.layer_norm\2."),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.proj\.", r"vision_encoder.backbone.layers.\1.attention.o_proj."),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.attn\.", r"vision_encoder.backbone.layers.\1.attention."),
    (r"^backbone\.vision_backbone\.trunk\.blocks\.(\d+)\.mlp\.", r"vision_encoder.backbone.layers.\1.mlp."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.(dconv_2x2_0|dconv_2x2|maxpool_2x2)\.",
     r"vision_encoder.neck.fpn_layers.\1.scale_layers.0."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.dconv_2x2_1\.", r"vision_encoder.neck.fpn_layers.\1.scale_layers.2."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_1x1\.", r"vision_encoder.neck.fpn_layers.\1.proj1."),
    (r"^backbone\.vision_backbone\.convs\.(\d+)\.conv_3x3\.", r"vision_encoder.neck.fpn_layers.\1.proj2."),
    (r"^backbone\.language_backbone\.encoder\.token_embedding\.", "text_encoder.text_model.embeddings.token_embedding."),
    (r"^backbone\.language_backbone\.encoder\.positional_embedding$",
     "text_encoder.text_model.embeddings.position_embedding.weight"),
    (r"^backbone\.language_backbone\.encoder\.ln_final\.", "text_encoder.text_model.final_layer_norm."),
    (r"^backbone\.language_backbone\.encoder\.text_projection$", "text_encoder.text_projection.weight"),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.attn\.",
     r"text_encoder.text_model.encoder.layers.\1.self_attn."),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.ln_(\d)\.",
     r"text_encoder.text_model.encoder.layers.\1.layer_norm\2."),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_fc\.",
     r"text_encoder.text_model.encoder.layers.\1.mlp.fc1."),
    (r"^backbone\.language_backbone\.encoder\.transformer\.resblocks\.(\d+)\.mlp\.c_proj\.",
     r"text_encoder.text_model.encoder.layers.\1.mlp.fc2."),
    (r"^backbone\.language_backbone\.resizer\.", "text_projection."),
    (r"^geometry_encoder\.encode\.(\d+)\.cross_attn_image\.", r"geometry_encoder.layers.\1.cross_attn."),
    (r"^geometry_encoder\.encode\.(\d+)\.linear(\d)\.", r"geometry_encoder.layers.\1.mlp.fc\2."),
    (r"^geometry_encoder\.encode\.(\d+)\.norm(\d)\.", r"geometry_encoder.layers.\1.layer_norm\2."),
    (r"^geometry_encoder\.encode\.(\d+)\.", r"geometry_encoder.layers.\1."),
    (r"^geometry_encoder\.img_pre_norm\.", "geometry_encoder.vision_layer_norm."),
    (r"^geometry_encoder\.norm\.", "geometry_encoder.prompt_layer_norm."),
    (r"^geometry_encoder\.encode_norm\.", "geometry_encoder.output_layer_norm."),
    (r"^transformer\.encoder\.layers\.(\d+)\.cross_attn_image\.", r"detr_encoder.layers.\1.cross_attn."),
    (r"^transformer\.encoder\.layers\.(\d+)\.linear(\d)\.", r"detr_encoder.layers.\1.mlp.fc\2."),
    (r"^transformer\.encoder\.layers\.(\d+)\.norm(\d)\.", r"detr_encoder.layers.\1.layer_norm\2."),
    (r"^transformer\.encoder\.", "detr_encoder."),
    (r"^transformer\.decoder\.presence_token_head\.layers\.(\d)\.",
     lambda m: f"detr_decoder.presence_head.layer{int(m[1]) + 1}."),
    (r"^transformer\.decoder\.presence_token_out_norm\.", "detr_decoder.presence_layer_norm."),
    (r"^transformer\.decoder\.norm\.", "detr_decoder.output_layer_norm."),
    (r"^transformer\.decoder\.bbox_embed\.layers\.(\d)\.", lambda m: f"detr_decoder.box_head.layer{int(m[1]) + 1}."),
    (r"^transformer\.decoder\.ref_point_head\.layers\.(\d)\.",
     lambda m: f"detr_decoder.ref_point_head.layer{int(m[1]) + 1}."),
    (r"^transformer\.decoder\.boxRPB_embed_(x|y)\.layers\.(\d)\.",
     lambda m: f"detr_decoder.box_rpb_embed_{m[1]}.layer{int(m[2]) + 1}."),
    (r"^transformer\.decoder\.layers\.(\d+)\.ca_text\.", r"detr_decoder.layers.\1.text_cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.cross_attn\.", r"detr_decoder.layers.\1.vision_cross_attn."),
    (r"^transformer\.decoder\.layers\.(\d+)\.linear(\d)\.", r"detr_decoder.layers.\1.mlp.fc\2."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm1\.", r"detr_decoder.layers.\1.vision_cross_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.catext_norm\.", r"detr_decoder.layers.\1.text_cross_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm2\.", r"detr_decoder.layers.\1.self_attn_layer_norm."),
    (r"^transformer\.decoder\.layers\.(\d+)\.norm3\.", r"detr_decoder.layers.\1.mlp_layer_norm."),
    (r"^transformer\.decoder\.", "detr_decoder."),
    (r"^dot_prod_scoring\.prompt_mlp\.layers\.(\d)\.", lambda m: f"dot_product_scoring.text_mlp.layer{int(m[1]) + 1}."),
    (r"^dot_prod_scoring\.prompt_mlp\.out_norm\.", "dot_product_scoring.text_mlp_out_norm."),
    (r"^dot_prod_scoring\.prompt_proj\.", "dot_product_scoring.text_proj."),
    (r"^dot_prod_scoring\.hs_proj\.", "dot_product_scoring.query_proj."),
    (r"^segmentation_head\.pixel_decoder\.", "mask_decoder.pixel_decoder."),
    (r"^segmentation_head\.mask_predictor\.mask_embed\.", "mask_decoder.mask_embedder."),
    (r"^segmentation_head\.instance_seg_head\.", "mask_decoder.instance_projection."),
    (r"^segmentation_head\.semantic_seg_head\.", "mask_decoder.semantic_projection."),
    (r"^segmentation_head\.cross_attend_prompt\.", "mask_decoder.prompt_cross_attn."),
    (r"^segmentation_head\.cross_attn_norm\.", "mask_decoder.prompt_cross_attn_norm."),
]
#: Meta's tensors transformers has no place for: the rotary tables (it computes them), the
#: interactive head's pyramid, the point-prompt projections (its geometry encoder takes boxes only)
_NOT_IN_TRANSFORMERS = re.compile(r"\.attn\.freqs_cis$|^backbone\.vision_backbone\.sam2_convs\.|"
                                  r"^geometry_encoder\.points_")


def to_transformers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, t in sd.items():
        if _NOT_IN_TRANSFORMERS.search(key):
            continue
        name = next((re.sub(p, r, key) for p, r in _RENAME if re.search(p, key)), key)
        if name.endswith("embeddings.position_embeddings"):
            t = t[:, 1:]  # Meta's table has a CLS row the ViT never reads
        if name == "text_encoder.text_projection.weight":
            t = t.T
        if not name.startswith("text_encoder."):
            name = name.replace(".out_proj.", ".o_proj.")
        packed = re.match(r"(.*)\.(?:qkv\.|in_proj_)(weight|bias)$", name)
        if packed:
            for which, part in zip("qkv", t.chunk(3)):
                out[f"{packed[1]}.{which}_proj.{packed[2]}"] = part
        else:
            out[name] = t
    return out


def transformers_config(s: dict):
    from transformers import Sam3Config
    from transformers.models.sam3.configuration_sam3 import Sam3ViTConfig

    vit, text = s["vit"], s["text"]
    trunk = Sam3ViTConfig(hidden_size=vit["dim"], intermediate_size=int(vit["dim"] * 4.625),
                          num_hidden_layers=vit["depth"], num_attention_heads=vit["heads"], image_size=vit["img_size"],
                          patch_size=14, window_size=vit["window"], global_attn_indexes=list(vit["global_blocks"]),
                          pretrain_image_size=vit["pretrain_size"], layer_norm_eps=1e-5)
    g = vit["img_size"] // 14
    d, h, f = s["dim"], s["heads"], s["ffn"]
    return Sam3Config(
        vision_config=dict(backbone_config=trunk, fpn_hidden_size=vit["d_model"],
                           backbone_feature_sizes=[[4 * g] * 2, [2 * g] * 2, [g] * 2]),
        text_config=dict(hidden_size=text["width"], intermediate_size=4 * text["width"], num_hidden_layers=text["layers"],
                         num_attention_heads=text["heads"], max_position_embeddings=32, projection_dim=512,
                         hidden_act="gelu", layer_norm_eps=1e-5),
        geometry_encoder_config=dict(hidden_size=d, num_layers=s["geometry_layers"], num_attention_heads=h,
                                     intermediate_size=f),
        detr_encoder_config=dict(hidden_size=d, num_layers=s["encoder_layers"], num_attention_heads=h,
                                 intermediate_size=f),
        detr_decoder_config=dict(hidden_size=d, num_layers=s["decoder_layers"], num_attention_heads=h,
                                 intermediate_size=f, num_queries=s["queries"]),
        mask_decoder_config=dict(hidden_size=d, num_attention_heads=h),
    )


@pytest.fixture(scope="module", params=[("tiny", TINY, 3), ("other", OTHER, 11)], ids=lambda p: p[0])
def pair(request, tmp_path_factory):
    """(sam's network loaded from a sam3.pt file, transformers' Sam3Model with the same weights)."""
    from transformers import Sam3Model

    from sam_cli.checkpoints import load

    _, sizes, seed = request.param
    path = save_tiny_sam3(tmp_path_factory.mktemp("sam3") / "sam3.pt", seed=seed, sizes=sizes)
    loaded = load(checkpoint=path)
    theirs = Sam3Model(transformers_config(sizes)).eval()
    theirs.load_state_dict(to_transformers(loaded.net.detector.state_dict()), strict=True)
    return loaded.net, theirs


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
    from transformers import CLIPTokenizer

    from sam_cli.models.sam3.tokenizer import CONTEXT, Tokenizer, byte_chars, read_merges

    ours = Tokenizer()
    merges = read_merges()
    chars = list(byte_chars().values())
    symbols = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    theirs = CLIPTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[tuple(m) for m in merges])

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
