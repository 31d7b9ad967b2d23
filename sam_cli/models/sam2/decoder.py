"""SAM 2's prompt-to-mask decoder, key names as Meta's checkpoints (`sam_mask_decoder.*`).

The same two-way transformer as SAM 1 (its MLPs keyed layers.0/1), with what SAM 2 adds:
- an object-score token before the IoU and mask tokens (it takes part in the attention, so it
  changes the masks even where its own score is not used), and its head pred_obj_score_head;
- high-resolution features in the upscaling: conv_s1(level 1, 128×128) added after the first
  transposed conv, conv_s0(level 0, 256×256) after the second (the two 1×1 convs run once
  per image, in the encoder's step: Sam2Decoder.high_res);
- predicted IoUs through a sigmoid;
- a single mask that falls back to the most confident of the three ambiguity masks when its
  stability score, #(logit > 0.05) / #(logit > −0.05), is below 0.98 (dynamic multimask).

The prompt encoder is SAM 1's (sam1.prompt_encoder.PromptEncoder): SAM 2 passes a box as two
corner points (labels 2 and 3) before the clicks and always appends the padding point, which
is what that encoder does when given the corners as points and no box.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..sam1.common import MLP, Embedding, LayerNorm2d
from ..sam1.transformer import TwoWayTransformer
from .hiera import TwoLayerMLP

#: dynamic multimask: the single mask's stability is measured at ±DELTA logits; below THRESH
#: the best of the three ambiguity masks is returned instead (Meta's build_sam2 defaults)
STABILITY_DELTA = 0.05
STABILITY_THRESH = 0.98


def sam2_transformer(dim: int = 256) -> TwoWayTransformer:
    t = TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048)
    for layer in t.layers:
        layer.mlp = TwoLayerMLP(dim, 2048, F.relu)  # SAM 2's key names for SAM 1's MLP
    return t


class Sam2Decoder(nn.Module):
    def __init__(self, dim: int = 256, num_multimask_outputs: int = 3) -> None:
        super().__init__()
        self.transformer = sam2_transformer(dim)
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = Embedding(1, dim)
        self.mask_tokens = Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = Embedding(1, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2), LayerNorm2d(dim // 4), nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2), nn.GELU(),
        )
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, 256, self.num_mask_tokens, 3)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)

    def high_res(self, level0: torch.Tensor, level1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The encoder's two finer levels (B×256×256×256, B×256×128×128) → the decoder's
        high-resolution features (B×32×256×256, B×64×128×128)."""
        return self.conv_s0(level0), self.conv_s1(level1)

    def predict_masks(
        self, image_embed: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor,
        feat_s0: torch.Tensor, feat_s1: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """image_embed 1×C×64×64 (or B×…), image_pe 1×C×64×64, sparse B×T×C, dense B×C×64×64
        or 1×C×64×64, feat_s0 1×32×256×256, feat_s1 1×64×128×128 → all four masks' logits
        B×4×256×256, their IoUs B×4 (sigmoid) and the object-score logits B×1."""
        b = sparse.shape[0]
        tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([tokens[None].expand(b, -1, -1), sparse], dim=1)
        src = image_embed + dense
        if src.shape[0] != b:
            src = src.expand(b, -1, -1, -1)
        hs, keys = self.transformer(src, image_pe, tokens)
        c, h, w = src.shape[1:]
        src = keys.transpose(1, 2).reshape(b, c, h, w)
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        up = act1(ln1(dc1(src) + feat_s1))
        up = act2(dc2(up) + feat_s0)
        mask_out = hs[:, 2 : 2 + self.num_mask_tokens]
        hyper = torch.stack([mlp(mask_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1)
        bb, cc, hh, ww = up.shape
        masks = (hyper @ up.reshape(bb, cc, hh * ww)).reshape(bb, -1, hh, ww)
        iou = torch.sigmoid(self.iou_prediction_head(hs[:, 1]))
        return masks, iou, self.pred_obj_score_head(hs[:, 0])

    @staticmethod
    def choose(masks: torch.Tensor, iou: torch.Tensor, multimask: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The three ambiguity masks (tokens 1–3), or the single-mask token 0 unless it is
        unstable, then the most confident of the three (dynamic multimask)."""
        if multimask:
            return masks[:, 1:], iou[:, 1:]
        single, single_iou = masks[:, :1], iou[:, :1]
        best = iou[:, 1:].argmax(-1)
        rows = torch.arange(masks.shape[0], device=masks.device)
        alt, alt_iou = masks[rows, best + 1][:, None], iou[rows, best + 1][:, None]
        flat = single.flatten(-2)
        inner = (flat > STABILITY_DELTA).sum(-1).float()
        outer = (flat > -STABILITY_DELTA).sum(-1).float()
        stable = torch.where(outer > 0, inner / outer, torch.ones_like(outer)) >= STABILITY_THRESH  # B×1
        return (torch.where(stable[..., None, None], single, alt), torch.where(stable, single_iou, alt_iou))
