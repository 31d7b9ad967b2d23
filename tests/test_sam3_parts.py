"""SAM 3's first parts against Meta's own modules (PyPI `sam3` 0.1.4, its image-path modules
imported without the package's builder, which needs CUDA and Triton): the tokenizer on a few
hundred phrases, the text encoder, the ViT trunk with its feature pyramid, the sine positions and
the fusion encoder, the DETR decoder, the scoring, the segmentation head and the geometry encoder, at small
configurations drawn apart (windows that divide the grid and windows that pad it), loaded
with the same random weights under Meta's key names."""

from __future__ import annotations

import importlib.util
import random
import sys
import types

import pytest
import torch


@pytest.fixture(scope="module")
def meta():
    """Meta's sam3.model package, its modules importable one by one: the `sam3` package
    itself (whose __init__ builds the whole model and imports Triton) is stood in for by an
    empty package over the same folder."""
    spec = importlib.util.find_spec("sam3")
    assert spec is not None, "the sam3 oracle is not installed (pip install --no-deps sam3==0.1.4)"
    saved = sys.modules.get("sam3")
    pkg = types.ModuleType("sam3")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["sam3"] = pkg
    try:
        import sam3.model.decoder as decoder
        import sam3.model.encoder as encoder
        import sam3.model.geometry_encoders as geometry
        import sam3.model.maskformer_segmentation as seg
        import sam3.model.model_misc as misc
        import sam3.model.necks as necks
        import sam3.model.position_encoding as position
        import sam3.model.sam3_image as image
        import sam3.model.sam3_image_processor as processor
        import sam3.model.text_encoder_ve as text
        import sam3.model.tokenizer_ve as tok
        import sam3.model.vitdet as vitdet
        import sam3.model.vl_combiner as vl

        yield types.SimpleNamespace(tok=tok, text=text, vitdet=vitdet, necks=necks, encoder=encoder, misc=misc,
                                    position=position, decoder=decoder, seg=seg, geometry=geometry, image=image,
                                    processor=processor, vl=vl)
    finally:
        if saved is not None:
            sys.modules["sam3"] = saved


def test_the_vocabulary_is_the_one_expected():
    import hashlib

    from sam_cli.models.sam3.tokenizer import VOCAB, VOCAB_SHA256

    assert hashlib.sha256(VOCAB.read_bytes()).hexdigest() == VOCAB_SHA256 == \
        "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"


WORDS = ["dog", "cat", "Traffic light", "fire hydrant", "person on a bike", "café", "naïve façade", "Ünïcödé",
         "电脑", "寿司", "кошка", "σκύλος", "🐶", "dog🐶cat", "&amp; co", "it's", "they're here", "you'll", "“quoted”",
         "ＦＵＬＬＷＩＤＴＨ", "ﬁsh", "x²", "1024", "3.14", "route 66", "e-mail", "C++", "a/b", "  spaced   out  ",
         "tab\there", "new\nline", "#hashtag", "@user", "<end_of_text>", "half-open door", "STOP sign", "Ⅻ", "٣٤",
         "over-the-counter", "ice cream cone", "the 1990s", "what?!", "(parenthesised)", "snake_case", "mañana",
         "straße", "İstanbul", "ǅemal", "\u00ad soft", "a\u0301"]


def _phrases(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = list(WORDS)
    while len(out) < n:
        k = rng.choice([1, 2, 3, 5, 20])  # 20 words: longer than 32 tokens, cut
        out.append(" ".join(rng.choice(WORDS) for _ in range(k)))
    return out


def test_the_tokenizer_gives_meta_s_tokens(meta):
    from sam_cli.models.sam3.tokenizer import CONTEXT, VOCAB, Tokenizer

    ours = Tokenizer()
    ref = meta.tok.SimpleTokenizer(bpe_path=str(VOCAB), context_length=CONTEXT)
    phrases = _phrases(300, seed=0)
    got, want = ours(phrases), ref(phrases, context_length=CONTEXT)
    bad = [p for p, a, b in zip(phrases, got, want) if not torch.equal(a, b)]
    assert not bad, bad[:5]
    assert (want[:, -1] != 0).any()  # some phrases were cut at 32 tokens, their last made the end token


def _randomised(module: torch.nn.Module, seed: int) -> dict:
    """Every parameter and float buffer of `module` drawn at random (Meta leaves some uninitialised)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.state_dict()


@pytest.mark.parametrize("width,heads,layers,d_model", [(64, 4, 2, 32), (48, 3, 3, 16)])
def test_the_text_encoder_gives_meta_s_features(meta, width, heads, layers, d_model):
    from sam_cli.models.sam3.text import TextArch, TextEncoder
    from sam_cli.models.sam3.tokenizer import VOCAB, Tokenizer

    ref = meta.text.VETextEncoder(d_model=d_model, tokenizer=meta.tok.SimpleTokenizer(bpe_path=str(VOCAB)),
                                  width=width, heads=heads, layers=layers, use_act_checkpoint=False).eval()
    sd = _randomised(ref, seed=width)
    ours = TextEncoder(TextArch(width=width, layers=layers, heads=heads, d_model=d_model)).eval()
    ours.load_state_dict(sd, strict=True)
    phrases = _phrases(12, seed=1)
    with torch.no_grad():
        want_pad, want, _ = ref(phrases, device="cpu")
        got_pad, got = ours(Tokenizer()(phrases))
    assert torch.equal(got_pad, want_pad)
    torch.testing.assert_close(got, want.transpose(0, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("img,window,globals_,pretrain", [(112, 4, (1, 3), 56), (126, 4, (0, 2), 42)])
def test_the_vit_and_its_pyramid_give_meta_s_features(meta, img, window, globals_, pretrain):
    """112 px: an 8×8 grid in 4×4 windows; 126 px: 9×9, padded to 12×12 windows, and a 3×3
    position grid tiled over 9×9."""
    from sam_cli.models.sam3.vit import VisionBackbone, VitArch

    depth = max(globals_) + 1
    trunk = meta.vitdet.ViT(img_size=img, pretrain_img_size=pretrain, patch_size=14, embed_dim=64, depth=depth,
                            num_heads=4, mlp_ratio=4.625, norm_layer="LayerNorm", qkv_bias=True, use_abs_pos=True,
                            tile_abs_pos=True, global_att_blocks=globals_, rel_pos_blocks=(), use_rope=True,
                            use_interp_rope=True, window_size=window, pretrain_use_cls_token=True,
                            retain_cls_token=False, ln_pre=True, ln_post=False, return_interm_layers=False,
                            bias_patch_embed=False, use_act_checkpoint=False)
    neck = meta.necks.Sam3DualViTDetNeck(trunk=trunk, position_encoding=lambda x: torch.zeros_like(x), d_model=32,
                                         scale_factors=(4.0, 2.0, 1.0, 0.5), add_sam2_neck=True).eval()
    sd = _randomised(neck, seed=img)
    arch = VitArch(img_size=img, dim=64, depth=depth, heads=4, window=window, global_blocks=globals_,
                   pretrain_size=pretrain, d_model=32)
    ours = VisionBackbone(arch, interactive=True).eval()
    ours.load_state_dict(sd, strict=True)
    for name, buf in ours.state_dict().items():  # the rotary tables sam computes are the file's
        if name.endswith("freqs_cis"):
            torch.testing.assert_close(buf, sd[name])
    x = torch.randn(2, 3, img, img, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, _, _, _ = neck(x)
        got = ours(x)
    assert len(got) == 4
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("h,w,dim", [(8, 8, 32), (9, 6, 64)])
def test_sine_positions_are_meta_s(meta, h, w, dim):
    from sam_cli.models.sam3.fusion import sine_position

    want = meta.position.PositionEmbeddingSine(num_pos_feats=dim, normalize=True)(torch.zeros(1, dim, h, w))[0]
    torch.testing.assert_close(sine_position(h, w, dim), want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dim,heads,ffn,layers,hw,prompt_len", [(32, 4, 64, 2, (6, 6), 7), (48, 6, 96, 3, (5, 8), 12)])
def test_the_fusion_encoder_gives_meta_s_memory(meta, dim, heads, ffn, layers, hw, prompt_len):
    """Image tokens against a prompt whose tail is padding (a short phrase in 32 slots)."""
    from sam_cli.models.sam3.fusion import FusionEncoder, sine_position

    MHA = meta.misc.MultiheadAttentionWrapper
    layer = meta.encoder.TransformerEncoderLayer(
        activation="relu", d_model=dim, dim_feedforward=ffn, dropout=0.1, pos_enc_at_attn=True,
        pos_enc_at_cross_attn_keys=False, pos_enc_at_cross_attn_queries=False, pre_norm=True,
        self_attention=MHA(num_heads=heads, dropout=0.1, embed_dim=dim, batch_first=True),
        cross_attention=MHA(num_heads=heads, dropout=0.1, embed_dim=dim, batch_first=True))
    ref = meta.encoder.TransformerEncoderFusion(layer=layer, num_layers=layers, d_model=dim, num_feature_levels=1,
                                                add_pooled_text_to_img_feat=False, pool_text_with_mask=True,
                                                use_act_checkpoint=False).eval()
    sd = _randomised(ref, seed=dim)
    ours = FusionEncoder(dim, heads, ffn, layers).eval()
    ours.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(2)
    n, (h, w) = 2, hw
    img = torch.randn(n, dim, h, w, generator=g)
    pos = sine_position(h, w, dim)[None].expand(n, -1, -1, -1)
    prompt = torch.randn(prompt_len, n, dim, generator=g)  # Meta's prompts are sequence first
    pad = torch.zeros(n, prompt_len, dtype=torch.bool)
    pad[0, 4:] = True
    pad[1, 9:] = True
    with torch.no_grad():
        want = ref(src=[img.flatten(2).permute(2, 0, 1)], prompt=prompt, src_pos=[pos.flatten(2).permute(2, 0, 1)],
                   prompt_key_padding_mask=pad, feat_sizes=[(h, w)])["memory"]
        got = ours(img.flatten(2).transpose(1, 2), pos.flatten(2).transpose(1, 2), prompt.transpose(0, 1), pad)
    torch.testing.assert_close(got, want.transpose(0, 1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dim,heads,ffn,layers,queries,hw,text_len", [(32, 4, 64, 2, 10, (6, 6), 7),
                                                                       (48, 6, 80, 3, 7, (5, 8), 12)])
def test_the_decoder_and_scoring_give_meta_s_boxes_scores_and_presence(meta, dim, heads, ffn, layers, queries, hw,
                                                                        text_len):
    """Queries, refined boxes, presence logit and dot-product scores of the last layer, with
    the box relative-position bias on a square and a non-square memory, and padded prompts."""
    from sam_cli.models.sam3.decoder import DetrDecoder, DotProductScoring, inverse_sigmoid
    from sam_cli.models.sam3.fusion import sine_position

    layer = meta.decoder.TransformerDecoderLayer(
        activation="relu", d_model=dim, dim_feedforward=ffn, dropout=0.1,
        cross_attention=meta.misc.MultiheadAttentionWrapper(num_heads=heads, dropout=0.1, embed_dim=dim),
        n_heads=heads, use_text_cross_attention=True)
    ref = meta.decoder.TransformerDecoder(
        layer=layer, num_layers=layers, num_queries=queries, return_intermediate=True, box_refine=True,
        num_o2m_queries=0, dac=True, boxRPB="log", d_model=dim, frozen=False, interaction_layer=None,
        dac_use_selfatt_ln=True, resolution=None, stride=None, use_act_checkpoint=False, presence_token=True).eval()
    scoring_ref = meta.misc.DotProductScoring(
        d_model=dim, d_proj=dim, prompt_mlp=meta.misc.MLP(dim, ffn, dim, 2, residual=True, out_norm=torch.nn.LayerNorm(dim)))
    sd = _randomised(ref, seed=dim)
    ssd = _randomised(scoring_ref, seed=dim + 1)
    ours, scoring = DetrDecoder(dim, heads, ffn, layers, queries).eval(), DotProductScoring(dim, ffn).eval()
    ours.load_state_dict(sd, strict=True)
    scoring.load_state_dict(ssd, strict=True)
    g = torch.Generator().manual_seed(3)
    n, (h, w) = 2, hw
    memory = torch.randn(h * w, n, dim, generator=g)
    pos = sine_position(h, w, dim).flatten(1).T[:, None].expand(-1, n, -1)
    text = torch.randn(text_len, n, dim, generator=g)
    pad = torch.zeros(n, text_len, dtype=torch.bool)
    pad[0, 3:] = True
    with torch.no_grad():
        hs, refs, presence, _ = ref(tgt=ref.query_embed.weight[:, None].repeat(1, n, 1), memory=memory, pos=pos,
                                    reference_boxes=None, level_start_index=torch.tensor([0]),
                                    spatial_shapes=torch.tensor([[h, w]]), valid_ratios=torch.ones(n, 1, 2),
                                    memory_text=text, text_attention_mask=pad, apply_dac=False)
        want_boxes = (inverse_sigmoid(refs[-1]) + ref.bbox_embed(hs[-1])).sigmoid().transpose(0, 1)
        want_scores = scoring_ref(hs.transpose(1, 2), text, pad)[-1, :, :, 0]
        got_q, got_boxes, got_presence = ours(memory.transpose(0, 1), pos.transpose(0, 1), (h, w),
                                              text.transpose(0, 1), pad)
        got_scores = scoring(got_q, text.transpose(0, 1), pad)
    torch.testing.assert_close(got_q, hs[-1].transpose(0, 1), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_boxes, want_boxes, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_presence, presence[-1, 0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_scores, want_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dim,heads,side,queries,text_len", [(32, 4, 6, 5, 7), (48, 6, 5, 9, 10)])
def test_the_segmentation_head_gives_meta_s_masks(meta, dim, heads, side, queries, text_len):
    """Three pyramid levels (4×, 2×, 1× the memory's side), the memory's tokens after the fusion
    encoder, queries of the decoder's last layer, a padded prompt."""
    from sam_cli.models.sam3.decoder import SegmentationHead

    ref = meta.seg.UniversalSegmentationHead(
        hidden_dim=dim, upsampling_stages=3, aux_masks=False, presence_head=False, dot_product_scorer=None,
        act_ckpt=False, cross_attend_prompt=meta.misc.MultiheadAttentionWrapper(num_heads=heads, dropout=0,
                                                                                embed_dim=dim),
        pixel_decoder=meta.seg.PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=dim)).eval()
    sd = _randomised(ref, seed=dim)
    ours = SegmentationHead(dim, heads).eval()
    ours.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(4)
    n = 2
    levels = [torch.randn(n, dim, side * k, side * k, generator=g) for k in (4, 2, 1)]
    memory = torch.randn(side * side, n, dim, generator=g)
    hs = torch.randn(3, n, queries, dim, generator=g)  # every layer's queries; the last is used
    prompt = torch.randn(text_len, n, dim, generator=g)
    pad = torch.zeros(n, text_len, dtype=torch.bool)
    pad[1, 4:] = True
    with torch.no_grad():
        want = ref(backbone_feats=levels, obj_queries=hs, image_ids=torch.arange(n), encoder_hidden_states=memory,
                   prompt=prompt, prompt_mask=pad)
        masks, semantic = ours(levels, memory.transpose(0, 1), hs[-1], prompt.transpose(0, 1), pad)
    assert masks.shape == (n, queries, 4 * side, 4 * side)
    torch.testing.assert_close(masks, want["pred_masks"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(semantic, want["semantic_seg"], rtol=1e-4, atol=1e-4)


def test_roi_align_is_torchvision_s():
    """Boxes inside, across the edge, smaller than a pixel and outside the map."""
    import torchvision

    from sam_cli.models.sam3.geometry import roi_align

    g = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 3, 9, 12, generator=g)
    boxes = [torch.tensor([[0.5, 0.5, 8.0, 6.0], [-2.0, 3.0, 4.0, 11.0], [5.2, 5.3, 5.4, 5.35]]),
             torch.tensor([[10.5, 7.0, 14.0, 12.0], [1.0, 1.0, 11.9, 8.9]])]
    want = torchvision.ops.roi_align(feats, boxes, 7)
    torch.testing.assert_close(roi_align(feats, boxes, 7), want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("points,boxes", [(0, 0), (2, 3), (0, 1)])
def test_the_geometry_encoder_gives_meta_s_tokens(meta, monkeypatch, points, boxes):
    """No exemplar (a text prompt: the CLS token alone), points and boxes with both labels, one box."""
    from sam_cli.models.sam3.fusion import sine_position
    from sam_cli.models.sam3.geometry import GeometryEncoder

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)  # Meta's CPU hazard (SAM2-SAM3 B0)
    dim, heads, ffn, (h, w), n = 32, 4, 64, (6, 7), 2
    layer = meta.encoder.TransformerEncoderLayer(
        activation="relu", d_model=dim, dim_feedforward=ffn, dropout=0.1, pos_enc_at_attn=False, pre_norm=True,
        self_attention=meta.misc.MultiheadAttentionWrapper(num_heads=heads, dropout=0.1, embed_dim=dim),
        pos_enc_at_cross_attn_queries=False, pos_enc_at_cross_attn_keys=True,
        cross_attention=meta.misc.MultiheadAttentionWrapper(num_heads=heads, dropout=0.1, embed_dim=dim))
    ref = meta.geometry.SequenceGeometryEncoder(
        pos_enc=meta.position.PositionEmbeddingSine(num_pos_feats=dim, normalize=True), encode_boxes_as_points=False,
        points_direct_project=True, points_pool=True, points_pos_enc=True, boxes_direct_project=True, boxes_pool=True,
        boxes_pos_enc=True, d_model=dim, num_layers=3, layer=layer, use_act_ckpt=False, add_cls=True,
        add_post_encode_proj=True).eval()
    sd = _randomised(ref, seed=points * 10 + boxes)
    ours = GeometryEncoder(dim, heads, ffn).eval()
    ours.load_state_dict(sd, strict=True)
    g = torch.Generator().manual_seed(6)
    image = torch.randn(h * w, n, dim, generator=g)
    pos = sine_position(h, w, dim).flatten(1).T[:, None].expand(-1, n, -1)
    pts = torch.rand(points, n, 2, generator=g)
    bxs = torch.cat([torch.rand(boxes, n, 2, generator=g) * 0.6 + 0.2, torch.rand(boxes, n, 2, generator=g) * 0.4 + 0.05], -1)
    plab = torch.randint(0, 2, (points, n), generator=g)
    blab = torch.randint(0, 2, (boxes, n), generator=g)
    prompt = meta.geometry.Prompt(box_embeddings=bxs, box_mask=torch.zeros(n, boxes, dtype=torch.bool),
                                  point_embeddings=pts, point_mask=torch.zeros(n, points, dtype=torch.bool),
                                  box_labels=blab, point_labels=plab)
    with torch.no_grad():
        want, want_pad = ref(prompt, img_feats=[image], img_sizes=[(h, w)], img_pos_embeds=[pos])
        got, got_pad = ours(image.transpose(0, 1), pos.transpose(0, 1), (h, w), pts.transpose(0, 1), plab.T,
                            bxs.transpose(0, 1), blab.T)
    assert got.shape == (n, points + boxes + 1, dim) and torch.equal(got_pad, want_pad)
    torch.testing.assert_close(got, want.transpose(0, 1), rtol=1e-4, atol=1e-4)


def _meta_sam3_image(meta, *, img, window, globals_, pretrain, vit_dim, dim, heads, ffn, text_width, queries,
                     vit_heads=4, text_heads=4, interactive=None, text_layers=2, encoder_layers=2, decoder_layers=2,
                     geometry_layers=1):
    """Meta's Sam3Image at a small size, built from its own parts as its model builder joins them."""
    m = meta
    MHA = m.misc.MultiheadAttentionWrapper
    trunk = m.vitdet.ViT(img_size=img, pretrain_img_size=pretrain, patch_size=14, embed_dim=vit_dim,
                         depth=max(globals_) + 1, num_heads=vit_heads, mlp_ratio=4.625, norm_layer="LayerNorm", qkv_bias=True,
                         use_abs_pos=True, tile_abs_pos=True, global_att_blocks=globals_, rel_pos_blocks=(),
                         use_rope=True, use_interp_rope=True, window_size=window, pretrain_use_cls_token=True,
                         retain_cls_token=False, ln_pre=True, ln_post=False, return_interm_layers=False,
                         bias_patch_embed=False, use_act_checkpoint=False)
    neck = m.necks.Sam3DualViTDetNeck(trunk=trunk, position_encoding=m.position.PositionEmbeddingSine(
        num_pos_feats=dim, normalize=True), d_model=dim, scale_factors=(4.0, 2.0, 1.0, 0.5), add_sam2_neck=True)
    text = m.text.VETextEncoder(d_model=dim, tokenizer=m.tok.SimpleTokenizer(bpe_path=str(_vocab())), width=text_width,
                                heads=text_heads, layers=text_layers, use_act_checkpoint=False)
    backbone = m.vl.SAM3VLBackbone(visual=neck, text=text, scalp=1)
    enc_layer = m.encoder.TransformerEncoderLayer(
        activation="relu", d_model=dim, dim_feedforward=ffn, dropout=0.1, pos_enc_at_attn=True,
        pos_enc_at_cross_attn_keys=False, pos_enc_at_cross_attn_queries=False, pre_norm=True,
        self_attention=MHA(num_heads=heads, dropout=0.1, embed_dim=dim, batch_first=True),
        cross_attention=MHA(num_heads=heads, dropout=0.1, embed_dim=dim, batch_first=True))
    encoder = m.encoder.TransformerEncoderFusion(layer=enc_layer, num_layers=encoder_layers, d_model=dim, num_feature_levels=1,
                                                 add_pooled_text_to_img_feat=False, pool_text_with_mask=True,
                                                 use_act_checkpoint=False)
    dec_layer = m.decoder.TransformerDecoderLayer(activation="relu", d_model=dim, dim_feedforward=ffn, dropout=0.1,
                                                  cross_attention=MHA(num_heads=heads, dropout=0.1, embed_dim=dim),
                                                  n_heads=heads, use_text_cross_attention=True)
    decoder = m.decoder.TransformerDecoder(
        layer=dec_layer, num_layers=decoder_layers, num_queries=queries, return_intermediate=True, box_refine=True,
        num_o2m_queries=0, dac=True, boxRPB="log", d_model=dim, frozen=False, interaction_layer=None,
        dac_use_selfatt_ln=True, resolution=None, stride=None, use_act_checkpoint=False, presence_token=True)
    geo_layer = m.encoder.TransformerEncoderLayer(
        activation="relu", d_model=dim, dim_feedforward=ffn, dropout=0.1, pos_enc_at_attn=False, pre_norm=True,
        self_attention=MHA(num_heads=heads, dropout=0.1, embed_dim=dim), pos_enc_at_cross_attn_queries=False,
        pos_enc_at_cross_attn_keys=True, cross_attention=MHA(num_heads=heads, dropout=0.1, embed_dim=dim))
    geometry = m.geometry.SequenceGeometryEncoder(
        pos_enc=m.position.PositionEmbeddingSine(num_pos_feats=dim, normalize=True), encode_boxes_as_points=False,
        points_direct_project=True, points_pool=True, points_pos_enc=True, boxes_direct_project=True, boxes_pool=True,
        boxes_pos_enc=True, d_model=dim, num_layers=geometry_layers, layer=geo_layer, use_act_ckpt=False, add_cls=True,
        add_post_encode_proj=True)
    seg = m.seg.UniversalSegmentationHead(
        hidden_dim=dim, upsampling_stages=3, aux_masks=False, presence_head=False, dot_product_scorer=None,
        act_ckpt=False, cross_attend_prompt=MHA(num_heads=heads, dropout=0, embed_dim=dim),
        pixel_decoder=m.seg.PixelDecoder(num_upsampling_stages=3, interpolation_mode="nearest", hidden_dim=dim))
    scoring = m.misc.DotProductScoring(d_model=dim, d_proj=dim, prompt_mlp=m.misc.MLP(
        dim, ffn, dim, 2, residual=True, out_norm=torch.nn.LayerNorm(dim)))
    return m.image.Sam3Image(backbone=backbone, transformer=m.misc.TransformerWrapper(encoder=encoder, decoder=decoder,
                                                                                      d_model=dim),
                             input_geometry_encoder=geometry, segmentation_head=seg, num_feature_levels=1,
                             o2m_mask_predict=True, dot_prod_scoring=scoring, use_instance_query=False,
                             multimask_output=True, inst_interactive_predictor=interactive, matcher=None).eval()


def _vocab():
    from sam_cli.models.sam3.tokenizer import VOCAB

    return VOCAB


@pytest.mark.parametrize("photo,phrase", [("chelsea.jpg", "cat"), ("coffee.jpg", "a cup of coffee on a saucer")])
def test_the_detector_finds_what_meta_s_processor_finds(meta, monkeypatch, photo, phrase):
    """Meta's Sam3Image and Sam3Processor at a small size (random weights, loaded unchanged into
    sam's detector): a photo and a phrase give the same scores, boxes and masks; at threshold 0
    every query, at a threshold between two middle scores the same half kept."""
    from PIL import Image

    from sam_cli.io.images import read_image
    from sam_cli.models.sam3.model import Sam3Arch, Sam3Detector, postprocess, preprocess
    from sam_cli.models.sam3.text import TextArch
    from sam_cli.models.sam3.tokenizer import Tokenizer
    from sam_cli.models.sam3.vit import VitArch

    from conftest import EXAMPLES

    cfg = dict(img=112, window=4, globals_=(1, 3), pretrain=56, vit_dim=64, dim=32, heads=4, ffn=64, text_width=64,
               queries=10)
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)  # Meta's CPU hazard (SAM2-SAM3 B0)
    ref = _meta_sam3_image(meta, **cfg)
    sd = _randomised(ref, seed=7)
    arch = Sam3Arch(vit=VitArch(img_size=112, dim=64, depth=4, heads=4, window=4, global_blocks=(1, 3), pretrain_size=56,
                                d_model=32),
                    text=TextArch(width=64, layers=2, heads=4, d_model=32), dim=32, heads=4, ffn=64, encoder_layers=2,
                    decoder_layers=2, geometry_layers=1, queries=10)
    ours = Sam3Detector(arch).eval()
    ours.load_state_dict(sd, strict=True)
    rgb = read_image(EXAMPLES / photo)
    with torch.no_grad():
        tokens = Tokenizer()([phrase])
        pad, text = ours.encode_text(tokens)
        det = ours.detect(ours.encode_image(preprocess(torch.from_numpy(rgb), 112)), pad, text)
    ranked = det.scores[0].sort().values
    middle = float(ranked[4] + ranked[5]) / 2  # between two scores: half the queries kept
    for threshold in (0.0, middle):
        proc = meta.processor.Sam3Processor(ref, resolution=112, device="cpu", confidence_threshold=threshold)
        with torch.no_grad():
            state = proc.set_text_prompt(phrase, proc.set_image(Image.fromarray(rgb)))  # the same pixels
        got = postprocess(det, 0, rgb.shape[:2], threshold)
        torch.testing.assert_close(got.scores, state["scores"], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got.boxes, state["boxes"], rtol=1e-4, atol=1e-3)
        assert got.masks.shape == state["masks"].shape[:1] + state["masks"].shape[2:]
        assert (got.masks == state["masks"][:, 0]).float().mean() >= 0.9999


def test_a_checkpoint_in_meta_s_layout_is_split_and_its_architecture_read_back(meta):
    """A detector saved under `detector.` beside `tracker.` keys: the detector's keys load into
    the architecture read back from the shapes (head counts from SAM 3's head widths); a key of
    neither kind is refused naming it."""
    from sam_cli.errors import CheckpointError
    from sam_cli.models.sam3.checkpoint import infer_arch, split
    from sam_cli.models.sam3.model import Sam3Detector

    cfg = dict(img=126, window=3, globals_=(1, 3), pretrain=42, vit_dim=128, dim=64, heads=2, ffn=96,
               text_width=128, queries=7, vit_heads=2, text_heads=2)  # SAM 3's head widths: 64, 64, 32
    ref = _meta_sam3_image(meta, **cfg)
    sd = _randomised(ref, seed=8)
    file_sd = {**{f"detector.{k}": v for k, v in sd.items()}, "tracker.sam_mask_decoder.iou_token.weight": torch.zeros(1, 4)}
    detector, tracker = split(file_sd, "sam3.pt")
    assert set(detector) == set(sd) and list(tracker) == ["tracker.sam_mask_decoder.iou_token.weight"]
    arch = infer_arch(detector, "sam3.pt")
    assert (arch.vit.img_size, arch.vit.window, arch.vit.global_blocks, arch.vit.pretrain_size, arch.vit.heads) == \
        (126, 3, (1, 3), 42, 2)
    assert (arch.text.width, arch.text.layers, arch.text.heads, arch.dim, arch.heads, arch.ffn, arch.queries) == \
        (128, 2, 2, 64, 2, 96, 7)
    assert (arch.encoder_layers, arch.decoder_layers, arch.geometry_layers, arch.interactive) == (2, 2, 1, True)
    Sam3Detector(arch).load_state_dict(detector, strict=True)
    with pytest.raises(CheckpointError, match="'image_encoder.x' is neither"):
        split({**file_sd, "image_encoder.x": torch.zeros(1)}, "sam3.pt")
    with pytest.raises(CheckpointError, match="no `detector.` tensors"):
        split({"tracker.a": torch.zeros(1)}, "sam3.pt")


def test_a_file_in_meta_s_layout_loads_and_detects_as_meta_s_model(meta, tmp_path, monkeypatch):
    """sam3.pt's layout saved with torch.save (a `model` dict, `detector.` and `tracker.` keys),
    read back without executing code (sam's loader: the sam3 family), gives the detections of
    the model it was saved from."""
    from sam_cli.checkpoints import load
    from sam_cli.models.sam3.model import preprocess
    from sam_cli.models.sam3.tokenizer import Tokenizer

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    cfg = dict(img=112, window=4, globals_=(1, 3), pretrain=56, vit_dim=128, dim=64, heads=2, ffn=96, text_width=128,
               queries=6, vit_heads=2, text_heads=2)
    ref = _meta_sam3_image(meta, **cfg)
    sd = _randomised(ref, seed=9)
    path = tmp_path / "sam3.pt"
    torch.save({"model": {**{f"detector.{k}": v for k, v in sd.items()}, "tracker.x": torch.zeros(2)}}, path)
    loaded = load(checkpoint=path)
    assert loaded.family == "sam3" and loaded.ignored == ("tracker.x",)
    net = loaded.net.detector
    rgb = torch.randint(0, 256, (90, 130, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    from PIL import Image

    proc = meta.processor.Sam3Processor(ref, resolution=112, device="cpu", confidence_threshold=0.0)
    with torch.no_grad():
        state = proc.set_text_prompt("red car", proc.set_image(Image.fromarray(rgb.numpy())))
        pad, text = net.encode_text(Tokenizer()(["red car"]))
        det = net.detect(net.encode_image(preprocess(rgb, 112)), pad, text)
    torch.testing.assert_close(det.scores[0], state["scores"], rtol=1e-4, atol=1e-5)


def test_several_phrases_on_one_image_are_each_what_meta_finds_for_it(meta, monkeypatch):
    """text_prompts.TextSegmenter, what `sam segment --text` runs: the image encoded once (the
    ViT's output, the pyramid made from it), the phrases' text once, the phrases decoded
    together, one row each (a phrase given twice, twice); each row's boxes, scores and masks
    what Meta's processor gives for that phrase alone."""
    from PIL import Image

    from sam_cli import masks as M
    from sam_cli.models.sam3.checkpoint import infer_arch
    from sam_cli.models.sam3.family import FAMILY
    from sam_cli.models.sam3.model import postprocess
    from sam_cli.text_prompts import TextSegmenter, TextSettings

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    cfg = dict(img=112, window=4, globals_=(1, 3), pretrain=56, vit_dim=128, dim=64, heads=2, ffn=96, text_width=128,
               queries=6, vit_heads=2, text_heads=2)
    ref = _meta_sam3_image(meta, **cfg)
    sd = _randomised(ref, seed=10)
    net = FAMILY.build(infer_arch(sd, "test")).eval()
    net.detector.load_state_dict(sd, strict=True)
    rgb = torch.randint(0, 256, (80, 100, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    phrases = ("dog", "a red fire hydrant", "dog")
    seg = TextSegmenter(net, TextSettings(phrases, 0.0))
    image = rgb.numpy()
    with torch.no_grad():
        trunk = net.encode(net.prepare(rgb))["trunk"]
        det = seg.detect(image, trunk)
        records = seg.segment(image, trunk)
    assert det.logits.shape[0] == 3 and {r.object_index for r in records} == {0, 1, 2}
    proc = meta.processor.Sam3Processor(ref, resolution=112, device="cpu", confidence_threshold=0.0)
    for row, phrase in enumerate(phrases):
        with torch.no_grad():
            state = proc.set_text_prompt(phrase, proc.set_image(Image.fromarray(image)))
        found = postprocess(det, row, image.shape[:2], 0.0)
        torch.testing.assert_close(found.boxes, state["boxes"], rtol=1e-4, atol=1e-3)
        mine = [r for r in records if r.object_index == row]
        torch.testing.assert_close(torch.tensor([r.source["score"] for r in mine]), state["scores"], rtol=1e-4,
                                   atol=1e-5)
        masks = torch.stack([torch.from_numpy(M.rle_to_mask(r.rle)) for r in mine])
        assert (masks == state["masks"][:, 0]).float().mean() >= 0.9999


def _meta_interactive(meta, img: int):
    """Meta's point-and-box predictor for a SAM 3 of img px: its tracker as build_tracker makes it
    (SAM 2's heads at 256 wide, dynamic multimask 0.05 / 0.98) without the video memory modules
    the image path never calls, in SAM3InteractiveImagePredictor, whose feature sizes are
    written for 1008 px (patched to img's)."""
    import sam3.model.sam1_task_predictor as task
    import sam3.model.sam3_tracker_base as base

    tracker = base.Sam3TrackerBase(
        backbone=None, transformer=types.SimpleNamespace(decoder=None, d_model=256),
        maskmem_backbone=types.SimpleNamespace(), image_size=img, backbone_stride=14,
        sam_mask_decoder_extra_args={"dynamic_multimask_via_stability": True,
                                     "dynamic_multimask_stability_delta": 0.05,
                                     "dynamic_multimask_stability_thresh": 0.98})
    pred = task.SAM3InteractiveImagePredictor(tracker)
    g = img // 14
    pred._bb_feat_sizes = [(4 * g, 4 * g), (2 * g, 2 * g), (g, g)]
    return pred


def test_points_and_boxes_give_meta_s_interactive_masks(meta, tmp_path, monkeypatch):
    """SAM 3's point-and-box head through sam's loader and predictor against Meta's
    Sam3Image.predict_inst (SAM3InteractiveImagePredictor): sam3.pt with the head's tracker keys
    and video ones beside them (left out by name); clicks, a box, a box with clicks, one and three
    masks, and the best mask fed back: the same masks (holes of up to 256 low-res cells filled),
    IoUs and low-res logits, on a photo whose square resize scales x and y apart."""
    import numpy as np
    from PIL import Image

    from sam_cli.checkpoints import load
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    from conftest import EXAMPLES

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    cfg = dict(img=112, window=4, globals_=(1, 3), pretrain=56, vit_dim=128, dim=256, heads=8, ffn=96,
               text_width=128, queries=5, vit_heads=2, text_heads=2)
    ref = _meta_sam3_image(meta, **cfg, interactive=_meta_interactive(meta, 112))
    _randomised(ref, seed=12)
    with torch.no_grad():  # mask logits of a few units, not hundreds: most of them short of the ±32 clamp
        for name, p in ref.named_parameters():
            if "output_hypernetworks_mlps" in name and name.endswith("layers.2.weight"):
                p.mul_(0.002)
    sd = ref.state_dict()
    head = "inst_interactive_predictor.model."
    file_sd = {**{f"detector.{k}": v for k, v in sd.items() if not k.startswith(head)},
               **{"tracker." + k[len(head):]: v for k, v in sd.items() if k.startswith(head)}}
    torch.save({"model": file_sd}, tmp_path / "sam3.pt")
    loaded = load(checkpoint=tmp_path / "sam3.pt")
    assert loaded.net.point_prompts and set(loaded.ignored) == {
        k for k in file_sd if k.startswith("tracker.") and not k.startswith(
            ("tracker.sam_prompt_encoder.", "tracker.sam_mask_decoder.", "tracker.no_mem_embed"))}
    assert "tracker.obj_ptr_proj.layers.0.weight" in loaded.ignored
    img = read_image(EXAMPLES / "coffee.jpg")  # 600×400
    proc = meta.processor.Sam3Processor(ref, resolution=112, device="cpu")
    with torch.no_grad():
        state = proc.set_image(Image.fromarray(img))
    ours = Predictor(loaded.net)
    ours.set_image(img)
    cases = [dict(point_coords=np.array([[320.0, 200.0]]), point_labels=np.array([1])),
             dict(point_coords=np.array([[320.0, 200.0], [100, 90]]), point_labels=np.array([1, 0])),
             dict(box=np.array([120.0, 60, 480, 350])),
             dict(box=np.array([40.0, 30, 300, 380]), point_coords=np.array([[150.0, 200.0]]), point_labels=np.array([0]))]
    filled = 0
    for kw in cases:
        for multimask in (True, False):
            with torch.no_grad():
                m, iou, low = ref.predict_inst(state, multimask_output=multimask, **kw)
            box = kw.get("box")
            rest = {k: v for k, v in kw.items() if k != "box"}
            got = ours.predict(boxes=None if box is None else box[None], multimask=multimask, **rest)
            assert np.abs(got.iou[0] - iou).max() <= 1e-4
            inside = np.abs(low) < 32  # both clamp at ±32
            assert inside.mean() > 0.05 and np.abs(got.low_res[0] - low)[inside].max() <= 2e-3
            assert (got.masks[0] == m.astype(bool)).mean() >= 0.999
            plain = torch.nn.functional.interpolate(torch.from_numpy(low)[None], img.shape[:2], mode="bilinear",
                                                    align_corners=False)[0].numpy() > 0
            filled += int((plain != m.astype(bool)).sum())  # holes filled before the resize
        k = int(iou.argmax())  # the best low-res mask fed back, with the same prompts
        with torch.no_grad():
            m2, iou2, _ = ref.predict_inst(state, mask_input=low[k : k + 1], multimask_output=False, **kw)
        got = ours.predict(boxes=None if box is None else box[None], mask_input=low[k : k + 1], multimask=False, **rest)
        assert np.abs(got.iou[0] - iou2).max() <= 1e-4
        assert (got.masks[0] == m2.astype(bool)).mean() >= 0.999
    assert filled > 0  # the hole filling took part


@pytest.mark.slow  # Meta's full-size SAM 3 and sam's, 3.4 GB of weights each: minutes and 14 GB on a CPU
def test_the_full_size_model_gives_meta_s_detections_and_interactive_masks(meta, tmp_path, monkeypatch):
    """Meta's SAM 3 at its real size (the 1008-px ViT of 32 blocks, the 24-layer text encoder, 6
    fusion and 6 decoder layers, 200 queries, the point-and-box head), random weights (normal, std
    0.02), saved as sam3.pt and loaded by sam: a phrase's scores, boxes and masks as Meta's
    processor gives them, and a click's masks and IoUs as its predict_inst gives them."""
    import numpy as np
    from PIL import Image

    from sam_cli import masks as M
    from sam_cli.checkpoints import load
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor
    from sam_cli.text_prompts import TextSegmenter, TextSettings

    from conftest import EXAMPLES

    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self, *a, **k: self)
    ref = _meta_sam3_image(meta, img=1008, window=24, globals_=(7, 15, 23, 31), pretrain=336, vit_dim=1024, dim=256,
                           heads=8, ffn=2048, text_width=1024, queries=200, vit_heads=16, text_heads=16,
                           interactive=_meta_interactive(meta, 1008), text_layers=24, encoder_layers=6,
                           decoder_layers=6, geometry_layers=3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    head = "inst_interactive_predictor.model."
    sd = ref.state_dict()
    torch.save({"model": {**{f"detector.{k}": v for k, v in sd.items() if not k.startswith(head)},
                          **{"tracker." + k[len(head):]: v for k, v in sd.items() if k.startswith(head)}}},
               tmp_path / "sam3.pt")
    del sd
    loaded = load(checkpoint=tmp_path / "sam3.pt")
    net = loaded.net
    assert net.arch.vit.depth == 32 and net.arch.text.layers == 24 and net.arch.queries == 200 and net.point_prompts
    rgb = read_image(EXAMPLES / "coffee.jpg")
    proc = meta.processor.Sam3Processor(ref, resolution=1008, device="cpu", confidence_threshold=0.0)
    with torch.no_grad():
        state = proc.set_text_prompt("cup", proc.set_image(Image.fromarray(rgb)))
        trunk = net.encode(net.prepare(torch.from_numpy(rgb)))["trunk"]
        records = TextSegmenter(net, TextSettings(("cup",), 0.0)).segment(rgb, trunk)
    assert len(records) == len(state["scores"]) > 0
    torch.testing.assert_close(torch.tensor([r.source["score"] for r in records]), state["scores"], rtol=1e-3,
                               atol=1e-4)
    masks = torch.stack([torch.from_numpy(M.rle_to_mask(r.rle)) for r in records])
    assert (masks == state["masks"][:, 0]).float().mean() >= 0.999
    with torch.no_grad():
        m, iou, _ = ref.predict_inst(state, point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1]),
                                     multimask_output=True)
    ours = Predictor(net)
    ours.set_image(rgb)
    got = ours.predict(point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1]), multimask=True)
    assert np.abs(got.iou[0] - iou).max() <= 1e-3
    assert (got.masks[0] == m.astype(bool)).mean() >= 0.999
