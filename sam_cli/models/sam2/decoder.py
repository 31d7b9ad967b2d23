"""SAM 2's prompt-to-mask decoder, key names as Meta's checkpoints (`sam_mask_decoder.*`).

The same two-way transformer as SAM 1 (its MLPs keyed layers.0/1), with what SAM 2 adds:
- an object-score token before the IoU and mask tokens (it takes part in the attention, so it
  changes the masks even where its own score is not used), and its head pred_obj_score_head;
- high-resolution features in the upscaling: conv_s1(level 1, 128×128) added after the first
  transposed conv, conv_s0(level 0, 256×256) after the second (the two 1×1 convs run once
  per image, in the encoder's step, composed with the neck's: Sam2.encode);
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

from ..sam1.common import MLP, Embedding, LayerNorm2d, transposed_conv_matrix
from ..sam1.factored import FactoredKeys, run_transformer
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
        feat_s0: torch.Tensor, feat_s1: torch.Tensor, min_iou: float | None = None,
        masks: tuple[int, ...] = (0, 1, 2, 3), obj: bool = True, cache: dict | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """image_embed 1×C×64×64 (or B×…), image_pe 1×C×64×64, sparse B×T×C, dense B×C×64×64
        or 1×C×64×64, feat_s0 1×32×256×256, feat_s1 1×64×128×128 → the logits of the mask
        tokens in `masks` (all four by default; 0 is the single mask) B×M×256×256, their IoUs
        B×M (sigmoid) and the object-score logits B×1 (None unless obj). Only the IoU token,
        the wanted mask tokens and (with obj) the object-score token leave the transformer:
        the final attention's row of a token no output reads is skipped. With min_iou, only
        the K prompts with some IoU of `masks` above it are upscaled (the upscaling is most
        of a prompt's cost): logits K×M×…, IoU K×M, object scores K×1 and the K indices.
        cache: the image's ImageFeatures.derived, where the transformer may keep what it
        shares between calls on the image (factored.run_transformer)."""
        b = sparse.shape[0]
        tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        tokens = torch.cat([tokens[None].expand(b, -1, -1), sparse], dim=1)
        src = image_embed + dense  # batch 1 when every prompt shares the dense embedding
        first = 0 if obj else 1  # the object-score token is token 0, the IoU token 1, masks from 2
        hs, keys = run_transformer(self.transformer, src, image_pe, tokens,
                                   [*range(first, 2), *(2 + i for i in masks)], cache)
        c, h, w = src.shape[1:]
        at = 1 - first  # the IoU token's row in hs
        iou = torch.sigmoid(self.iou_prediction_head(hs[:, at]))[:, list(masks)]
        score = self.pred_obj_score_head(hs[:, 0]) if obj else None
        kept = None
        if min_iou is not None:
            kept = (iou > min_iou).any(1).nonzero()[:, 0]
            keys = keys.select(kept) if isinstance(keys, FactoredKeys) else keys.expand(b, -1, -1)[kept]
            hs, iou = hs[kept], iou[kept]
            score = None if score is None else score[kept]
        mlps = self.output_hypernetworks_mlps
        hyper = torch.stack([mlps[i](hs[:, at + 1 + j]) for j, i in enumerate(masks)], dim=1)
        if not isinstance(keys, FactoredKeys):
            keys = keys.expand(hyper.shape[0], -1, -1)
        logits = self._upscale_masks(keys, hyper, h, w, feat_s0, feat_s1)
        return (logits, iou, score) if kept is None else (logits, iou, score, kept)

    def _upscale_masks(self, keys: torch.Tensor | FactoredKeys, hyper: torch.Tensor, h: int, w: int,
                       feat_s0: torch.Tensor, feat_s1: torch.Tensor) -> torch.Tensor:
        """output_upscaling with the high-resolution features + the hypernetwork product,
        computed channels-last as SAM 1's decoder does (sam1.mask_decoder._upscale_masks): a
        2×2 stride-2 transposed conv is one matmul per pixel, so both stages run on the
        transformer's B×HW×C tokens, the high-resolution features laid out in the same pixel
        order, and pixels go back to image order only for the final masks. On the CPU one
        prompt at a time (its activations stay in cache); traced for ONNX, the whole batch.
        FactoredKeys go into the first conv as their projection (FactoredKeys.project)."""
        conv1, conv2 = self.output_upscaling[0], self.output_upscaling[3]
        c1, c2 = conv1.out_channels, conv2.out_channels
        if hyper.shape[0] == 0:
            return hyper.new_zeros(0, hyper.shape[1], 4 * h, 4 * w)
        # feat_s1[c, 2i+a, 2j+b] → row (i, j, a, b); feat_s0[c, 4i+2a+d, 4j+2b+e] → (i, j, a, b, d, e)
        s1 = feat_s1[0].reshape(c1, h, 2, w, 2).permute(1, 3, 2, 4, 0).reshape(-1, c1)
        s0 = feat_s0[0].reshape(c2, h, 2, 2, w, 2, 2).permute(1, 4, 2, 5, 3, 6, 0).reshape(-1, 4 * c2)
        b2 = s0 + conv2.bias.repeat(4)
        if isinstance(keys, FactoredKeys):
            w1, bias1 = transposed_conv_matrix(conv1)
            return torch.cat([self._upscale_rest(x.view(1, 4 * h * w, c1), hyper[i : i + 1], h, w, s1, b2)
                              for i, x in enumerate(keys.each_projection("sam2 upscaling", w1, bias1))])
        if keys.device.type == "cpu" and keys.shape[0] > 1 and not torch.jit.is_tracing():
            return torch.cat([self._upscale_batch(keys[i : i + 1], hyper[i : i + 1], h, w, s1, b2)
                              for i in range(keys.shape[0])])
        return self._upscale_batch(keys, hyper, h, w, s1, b2)

    def _upscale_batch(self, keys: torch.Tensor, hyper: torch.Tensor, h: int, w: int,
                       s1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
        """_upscale_masks for one batch, the high-resolution features already in pixel-row
        order (s1; b2: s0 plus the second conv's bias). Sam2.compile_parts compiles this, not
        the loop."""
        w1, bias1 = transposed_conv_matrix(self.output_upscaling[0])
        x = torch.addmm(bias1, keys.reshape(-1, keys.shape[-1]), w1)
        return self._upscale_rest(x.view(keys.shape[0], 4 * keys.shape[1], w1.shape[1] // 4), hyper, h, w, s1, b2)

    def _upscale_rest(self, x: torch.Tensor, hyper: torch.Tensor, h: int, w: int,
                      s1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
        """_upscale_batch after the first conv's matmul: x B×(HW·4)×C1."""
        _, ln, act1, conv2, act2 = self.output_upscaling
        c1, c2 = conv2.in_channels, conv2.out_channels
        w2 = conv2.weight.permute(0, 2, 3, 1).reshape(c1, 4 * c2)
        n = x.shape[0]
        x = x + s1
        x = act1(F.layer_norm(x, (c1,), ln.weight, ln.bias, ln.eps)).view(-1, c1)  # (B·HW·4)×C1
        x = act2((x @ w2).view(n, -1, 4 * c2) + b2)  # (B, HW·4, 4·C2): rows (i, j, a, b), cols (d, e, C2)
        m = torch.bmm(x.view(n, h * w * 16, c2), hyper.transpose(1, 2))  # B×(i, j, a, b, d, e)×M
        m = m.view(n, h, w, 2, 2, 2, 2, hyper.shape[1]).permute(0, 7, 1, 3, 5, 2, 4, 6)
        return m.reshape(n, hyper.shape[1], 4 * h, 4 * w)

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
