"""Build Meta's reference SAM (the oracle, tests only) with fixed seeds and save checkpoints."""

from __future__ import annotations

import re
from pathlib import Path

import torch

TINY = dict(embed_dim=64, depth=4, num_heads=4, global_attn_indexes=(1, 3))


#: transformers' names for SAM's prompt encoder and mask decoder, which its SamModel and
#: Sam2Model name alike (scripts/peers_bench.py, tests/sam2_hf.py): (pattern, replacement), in order
HF_HEAD_RENAMES = [
    (r"\.norm(\d)\.", r".layer_norm\1."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
]


def hf_mlp_key(key: str, heads: str) -> str:
    """transformers' name for a key of one of the decoder's three-layer MLPs (`heads`, a regex
    alternation of their names under mask_decoder.): layers.0 → proj_in, layers.1 → layers.0,
    layers.2 → proj_out; any other key unchanged."""
    m = re.match(rf"^(mask_decoder\.(?:{heads}))\.layers\.(\d+)\.(.*)$", key)
    if not m:
        return key
    layer = {"0": "proj_in", "1": "layers.0", "2": "proj_out"}[m.group(2)]
    return f"{m.group(1)}.{layer}.{m.group(3)}"


def arch_kwargs(name: str) -> dict:
    """build_reference's architecture arguments for "tiny" or a model type (vit_b, …)."""
    if name == "tiny":
        return dict(TINY)
    from sam_cli.registry import MODELS

    a = MODELS[name].arch
    return dict(embed_dim=a.embed_dim, depth=a.depth, num_heads=a.num_heads,
                global_attn_indexes=a.global_attn_indexes)


def build_reference(
    *, embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...],
    seed: int = 0, device: str | None = None,
):
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(seed)
    if device == "meta":
        with torch.device("meta"):
            return _build_sam(embed_dim, depth, num_heads, list(global_attn_indexes))
    sam = _build_sam(embed_dim, depth, num_heads, list(global_attn_indexes))
    # Zero-initialised tensors (relative-position tables, positional embedding, biases) would
    # hide whole code paths: give every all-zero tensor some noise.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in sam.parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return sam.eval()


def build_shifted_tiny(seed: int = 0):
    """The tiny reference with its IoU head shifted so predicted IoUs sit near 0.45 (a random
    model predicts about 0, where the reference's `> 0` test would switch the filter off), so
    that masks pass lowered automatic-mode filters."""
    sam = build_reference(**TINY, seed=seed)
    with torch.no_grad():
        sam.mask_decoder.iou_prediction_head.layers[2].bias += 0.5
    return sam


def make_confident(sam, image, *, iou_pass: float = 0.25, stable: float = 0.75,
                   points_per_side: int = 16, device: str = "cpu"):
    """Make a random model's automatic mode keep masks, as a trained model's does, in place.

    A random model's mask logits sit within ±1, so every stability score is 0, and its
    predicted IoUs sit near 0: the default filters keep nothing and a benchmark would time
    none of the filter → upscale → NMS work of a real run. This scales the mask logits (the
    hypernetworks' last layer) and shifts the predicted IoUs (the IoU head's last bias) so
    that, over a grid of prompts on `image`, about `iou_pass` of the candidates pass the
    default IoU filter (0.88) and about `stable` of them the default stability filter
    (0.95, judged on the 256×256 logits). Calibrated on the model itself, since the
    offsets differ from one random draw to the next. Returns (logit_scale, iou_shift)."""
    from segment_anything import SamPredictor

    sam.to(device)
    pred = SamPredictor(sam)
    pred.set_image(image)
    h, w = image.shape[:2]
    c = (torch.arange(points_per_side, dtype=torch.float32) + 0.5) / points_per_side
    pts = torch.stack(torch.meshgrid(c * w, c * h, indexing="xy"), -1).reshape(-1, 1, 2)
    coords = pred.transform.apply_coords_torch(pts, (h, w)).to(device)
    ts = 2.0 ** -torch.arange(25, dtype=torch.float32, device=device)  # thresholds 1/scale
    ious, need = [], []
    with torch.no_grad():
        for i in range(0, len(coords), 64):
            cb = coords[i : i + 64]
            _, iou, low = pred.predict_torch(cb, torch.ones(cb.shape[:2], device=device),
                                             multimask_output=True)
            ious.append(iou.flatten())
            low = low.flatten(0, 1).flatten(1)  # masks × 256²
            inner = torch.stack([(low > t).sum(1) for t in ts], 1)
            outer = torch.stack([(low > -t).sum(1) for t in ts], 1)
            ok = inner >= 0.95 * outer  # masks × thresholds, stable once t is small enough
            first = torch.where(ok.any(1), ok.float().argmax(1), len(ts) - 1)
            need.append(ts[first])
        t = torch.quantile(torch.cat(need), 1 - stable).item()
        shift = 0.88 - torch.quantile(torch.cat(ious), 1 - iou_pass).item()
        dec = sam.mask_decoder
        for mlp in dec.output_hypernetworks_mlps:
            mlp.layers[-1].weight /= t
            mlp.layers[-1].bias /= t
        dec.iou_prediction_head.layers[-1].bias += shift
    sam.cpu()
    return 1 / t, shift


def make_coherent(sam):
    """Make a random model's masks coherent regions, as a trained model's are, in place.

    A random model's low-res masks are noise at the pixel level: each of the 2×2 positions
    of the decoder's two transposed convolutions (output_upscaling) has its own random
    kernel, so neighbouring low-res pixels take unrelated values and a mask's boundary runs
    everywhere (a third of neighbouring pixels differ in sign). Giving the four positions
    one shared kernel (their mean) makes each 64² embedding token one 4×4 block of the
    256² logits, so masks become regions that follow the photo's embedding, with
    boundaries between them. What runs is unchanged: same layers, same shapes, same cost."""
    with torch.no_grad():
        for layer in sam.mask_decoder.output_upscaling:
            if isinstance(layer, torch.nn.ConvTranspose2d):
                layer.weight.copy_(layer.weight.mean((2, 3), keepdim=True).expand_as(layer.weight))
    return sam


def save_checkpoint(sam, path: Path) -> Path:
    torch.save(sam.state_dict(), path)
    return path


def match(ref: list[dict], ours) -> tuple[int, list[tuple[dict, object]]]:
    """One-to-one matches at mask IoU ≥ 0.99 among masks prompted by the same point: the
    reference generator's records (`ref`, dicts) against sam's MaskRecords (`ours`)."""
    import numpy as np

    from sam_cli import masks as M

    by_point: dict[tuple, list[int]] = {}
    for j, r in enumerate(ours):
        by_point.setdefault(tuple(np.round(r.point, 3)), []).append(j)
    used: set[int] = set()
    pairs = []
    for a in ref:
        ma = M.rle_to_mask(a["segmentation"])
        best, best_iou = None, 0.0
        for j in by_point.get(tuple(np.round(a["point_coords"][0], 3)), []):
            if j in used:
                continue
            mb = M.rle_to_mask(ours[j].rle)
            union = (ma | mb).sum()
            iou = (ma & mb).sum() / union if union else 1.0
            if iou > best_iou:
                best, best_iou = j, iou
        if best is not None and best_iou >= 0.99:
            used.add(best)
            pairs.append((a, ours[best]))
    return len(pairs), pairs


def build_sam2_tiny(path: Path, seed: int = 0):
    """Meta's SAM 2.1 image model in the tiny config (sam2 1.1.0, built on the CPU) with random
    weights, saved at `path` in Meta's layout (under "model", with two video keys the image path
    never reads): (the reference model, path)."""
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine
    from sam2.modeling.sam2_base import SAM2Base

    torch.manual_seed(seed)
    trunk = Hiera(embed_dim=96, num_heads=1, stages=[1, 2, 7, 2], global_att_blocks=[5, 7, 9],
                  window_pos_embed_bkg_spatial_size=[7, 7])
    neck = FpnNeck(PositionEmbeddingSine(num_pos_feats=256, normalize=True, temperature=10000), d_model=256,
                   backbone_channel_list=[768, 384, 192, 96], fpn_top_down_levels=[2, 3], fpn_interp_model="nearest")
    ref = SAM2Base(image_encoder=ImageEncoder(trunk, neck, scalp=1), memory_attention=None, memory_encoder=None,
                   image_size=1024, directly_add_no_mem_embed=True, use_high_res_features_in_sam=True,
                   iou_prediction_use_sigmoid=True, pred_obj_scores=True, pred_obj_scores_mlp=True,
                   use_multimask_token_for_obj_ptr=True,
                   sam_mask_decoder_extra_args=dict(dynamic_multimask_via_stability=True,
                                                    dynamic_multimask_stability_delta=0.05,
                                                    dynamic_multimask_stability_thresh=0.98)).eval()
    with torch.no_grad():  # give what starts at zero values to test, and the masks some contrast
        for p in (ref.image_encoder.trunk.pos_embed, ref.image_encoder.trunk.pos_embed_window, ref.no_mem_embed):
            p.normal_(0, 0.3)
        for p in ref.sam_mask_decoder.output_hypernetworks_mlps.parameters():
            p.mul_(3.0)
    sd = {k: v for k, v in ref.state_dict().items() if not k.startswith(("maskmem_tpos_enc", "no_mem_pos_enc"))}
    sd["memory_encoder.fuser.layers.0.weight"] = torch.zeros(4)  # video keys, ignored by name
    sd["obj_ptr_proj.layers.0.weight"] = torch.zeros(2, 2)
    torch.save({"model": sd}, path)
    return ref, path
