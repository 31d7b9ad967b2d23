"""transformers' Sam2Model with the weights of a SAM 2 checkpoint in Meta's layout, for the
second oracle (tests/test_sam2_transformers.py) and the peers' benchmark (scripts/sam2_bench.py):
the renaming below (transformers' names for the same modules) and a config of the same trunk."""

from __future__ import annotations

import re

import torch

from reference import HF_HEAD_RENAMES, hf_mlp_key


def to_transformers(meta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Meta's SAM 2 state dict under transformers' Sam2Model names: its image path only (the
    video modules are not in Sam2Model), `nn.Sequential` indices as named layers, "norm" as
    "layer_norm", out_proj as o_proj, the three-layer MLPs' first and last layers as proj_in and
    proj_out, the four point embeddings as one table, and the prompt encoder's Fourier matrix
    also the model's shared image positional embedding. Loaded strictly, so a name missed fails."""
    seq = [
        (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
        (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
        (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
        (r"^sam_prompt_encoder\.", "prompt_encoder."),
        (r"^sam_mask_decoder\.", "mask_decoder."),
        (r"^no_mem_embed$", "no_memory_embedding"),
        *HF_HEAD_RENAMES,
        (r"\.out_proj\.", ".o_proj."),
        (r"\.mlp\.layers\.0\.", ".mlp.proj_in."),
        (r"\.mlp\.layers\.1\.", ".mlp.proj_out."),
    ]
    out, points = {}, {}
    for k, v in meta.items():
        if not k.startswith(("image_encoder.", "sam_prompt_encoder.", "sam_mask_decoder.", "no_mem_embed")):
            continue
        m = re.match(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$", k)
        if m:
            points[int(m.group(1))] = v
            continue
        for pat, rep in seq:
            k = re.sub(pat, rep, k)
        out[hf_mlp_key(k, r"iou_prediction_head|pred_obj_score_head|output_hypernetworks_mlps\.\d+")] = v
    out["prompt_encoder.point_embed.weight"] = torch.cat([points[i] for i in sorted(points)])
    out["shared_image_embedding.positional_embedding"] = out["prompt_encoder.shared_embedding.positional_embedding"]
    return out

def transformers_config(arch):
    """transformers' Sam2Config of a SAM 2 trunk (sam_cli.registry.Sam2Arch)."""
    from transformers import Sam2Config, Sam2HieraDetConfig, Sam2VisionConfig
    dims = [arch.embed_dim * 2**i for i in range(4)]
    backbone = Sam2HieraDetConfig(
        hidden_size=arch.embed_dim, num_attention_heads=arch.num_heads, blocks_per_stage=list(arch.stages),
        embed_dim_per_stage=dims, num_attention_heads_per_stage=[arch.num_heads * 2**i for i in range(4)],
        global_attention_blocks=list(arch.global_blocks), window_size_per_stage=list(arch.window_spec),
        window_positional_embedding_background_size=list(arch.pos_bkg))
    return Sam2Config(vision_config=Sam2VisionConfig(backbone_config=backbone, backbone_channel_list=dims[::-1]))


def transformers_model(arch, meta: dict[str, torch.Tensor]):
    """transformers' Sam2Model of this trunk (sam_cli.registry.Sam2Arch) with Meta's tensors,
    loaded strictly."""
    from transformers import Sam2Model

    net = Sam2Model(transformers_config(arch))
    net.load_state_dict(to_transformers(meta), strict=True)
    return net.eval()
