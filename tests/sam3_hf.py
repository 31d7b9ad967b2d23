"""transformers' Sam3Model with the weights of a SAM 3 checkpoint in Meta's layout, for the
second oracle (tests/test_sam3_transformers.py) and the peers' benchmark (scripts/sam3_bench.py):
the renaming below, written from the key names of transformers' converter (packed q/k/v split,
the position table's CLS row dropped, the CLIP text projection transposed), and a config of the
same architecture."""

from __future__ import annotations

import re

import torch

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


def transformers_config(arch):
    """transformers' Sam3Config of a sam_cli.models.sam3.model.Sam3Arch."""
    from transformers import Sam3Config
    from transformers.models.sam3.configuration_sam3 import Sam3ViTConfig

    vit, text = arch.vit, arch.text
    trunk = Sam3ViTConfig(hidden_size=vit.dim, intermediate_size=int(vit.dim * vit.mlp_ratio),
                          num_hidden_layers=vit.depth, num_attention_heads=vit.heads, image_size=vit.img_size,
                          patch_size=vit.patch, window_size=vit.window, global_attn_indexes=list(vit.global_blocks),
                          pretrain_image_size=vit.pretrain_size, layer_norm_eps=1e-5)
    g = vit.grid
    d, h, f = arch.dim, arch.heads, arch.ffn
    return Sam3Config(
        vision_config=dict(backbone_config=trunk, fpn_hidden_size=vit.d_model,
                           backbone_feature_sizes=[[4 * g] * 2, [2 * g] * 2, [g] * 2]),
        text_config=dict(hidden_size=text.width, intermediate_size=4 * text.width, num_hidden_layers=text.layers,
                         num_attention_heads=text.heads, max_position_embeddings=text.context,
                         projection_dim=text.projection, hidden_act="gelu", layer_norm_eps=1e-5),
        geometry_encoder_config=dict(hidden_size=d, num_layers=arch.geometry_layers, num_attention_heads=h,
                                     intermediate_size=f),
        detr_encoder_config=dict(hidden_size=d, num_layers=arch.encoder_layers, num_attention_heads=h,
                                 intermediate_size=f),
        detr_decoder_config=dict(hidden_size=d, num_layers=arch.decoder_layers, num_attention_heads=h,
                                 intermediate_size=f, num_queries=arch.queries),
        mask_decoder_config=dict(hidden_size=d, num_attention_heads=h),
    )


def clip_tokenizer():
    """transformers' CLIPTokenizer over the vocabulary file sam ships (the one SAM 3 reads)."""
    from transformers import CLIPTokenizer

    from sam_cli.models.sam3.tokenizer import byte_chars, read_merges

    merges = read_merges()
    chars = list(byte_chars().values())
    symbols = [*chars, *(c + "</w>" for c in chars), *("".join(m) for m in merges), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={s: i for i, s in enumerate(symbols)}, merges=[tuple(m) for m in merges])


def transformers_model(net):
    """transformers' Sam3Model holding the weights of sam's SAM 3 network `net` (strict)."""
    from transformers import Sam3Model

    theirs = Sam3Model(transformers_config(net.arch)).eval()
    theirs.load_state_dict(to_transformers(net.detector.state_dict()), strict=True)
    return theirs
