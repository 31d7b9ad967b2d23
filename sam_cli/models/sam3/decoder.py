"""SAM 3's detector head: the DETR decoder (200 learned queries with reference boxes refined
layer by layer, a presence token, text and image cross-attention with a box relative-position
bias) and the dot-product scoring of each query against the prompt.

Meta's key names: `transformer.decoder.{query_embed, reference_points, presence_token,
presence_token_head.layers.N, presence_token_out_norm, norm, bbox_embed.layers.N,
ref_point_head.layers.N, boxRPB_embed_{x,y}.layers.N, layers.N.{self_attn, ca_text, cross_attn
(in_proj_*, out_proj), catext_norm, norm1, norm2, norm3, linear1, linear2}}` and
`dot_prod_scoring.{prompt_mlp.layers.N, prompt_mlp.out_norm, prompt_proj, hs_proj}`.

At inference only the last layer's queries count (Meta's training-time duplicate queries, DAC,
are off): boxes are the last refinement's (cx, cy, w, h in [0, 1]), scores the last layer's
logits, and presence the presence token's logit after the last layer. Meta means to clamp the
presence logit to ±10 but does not (an out-of-place clamp whose result is dropped): not here
either.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import Attention, sine


class Mlp(nn.Module):
    """Linear layers with ReLU between them (`layers.N`); optionally the input added back and a
    LayerNorm after (`out_norm`), as Meta's MLP."""

    def __init__(self, dims: list[int], residual: bool = False, out_norm: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:]))
        self.residual = residual
        self.out_norm = nn.LayerNorm(dims[-1]) if out_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        for i, layer in enumerate(self.layers):
            y = layer(y) if i == len(self.layers) - 1 else F.relu(layer(y))
        if self.residual:
            y = y + x
        return self.out_norm(y) if self.out_norm is not None else y


def box_sine(boxes: torch.Tensor, dim: int) -> torch.Tensor:
    """cx, cy, w, h in [0, 1] (…×4) → …×2·dim: each coordinate's sine encoding (dim/2 each), in the
    order y, x, w, h."""
    return torch.cat([sine(boxes[..., i] * 2 * math.pi, dim // 2) for i in (1, 0, 2, 3)], dim=-1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def _log_scaled(d: torch.Tensor) -> torch.Tensor:
    d = d * 8
    return torch.sign(d) * torch.log2(d.abs() + 1.0) / math.log2(8)


class _DecoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.ca_text = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.catext_norm = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, text: torch.Tensor, text_pad: torch.Tensor,
                memory: torch.Tensor, memory_pos: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """x: N×(1+Q)×d, the presence token first (its position zero); bias: N×heads×(1+Q)×L."""
        q = x + pos
        x = self.norm2(x + self.self_attn(q, q, x))
        x = self.catext_norm(x + self.ca_text(x + pos, text, text, key_padding=text_pad))
        x = self.norm1(x + self.cross_attn(x + pos, memory + memory_pos, memory, bias=bias))
        return self.norm3(x + self.linear2(F.relu(self.linear1(x))))


class DetrDecoder(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8, ffn: int = 2048, layers: int = 6, queries: int = 200) -> None:
        super().__init__()
        self.dim, self.heads = dim, heads
        self.layers = nn.ModuleList(_DecoderLayer(dim, heads, ffn) for _ in range(layers))
        self.query_embed = nn.Embedding(queries, dim)
        self.reference_points = nn.Embedding(queries, 4)
        self.presence_token = nn.Embedding(1, dim)
        self.presence_token_head = Mlp([dim, dim, dim, 1])
        self.presence_token_out_norm = nn.LayerNorm(dim)
        self.norm = nn.LayerNorm(dim)
        self.bbox_embed = Mlp([dim, dim, dim, 4])
        self.ref_point_head = Mlp([2 * dim, dim, dim])
        self.boxRPB_embed_x = Mlp([2, dim, heads])
        self.boxRPB_embed_y = Mlp([2, dim, heads])

    def _box_bias(self, boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The relative-position bias of each query's box over the h×w memory: N×heads×Q×(h·w)."""
        x0, y0 = boxes[..., 0] - boxes[..., 2] / 2, boxes[..., 1] - boxes[..., 3] / 2
        x1, y1 = boxes[..., 0] + boxes[..., 2] / 2, boxes[..., 1] + boxes[..., 3] / 2
        cy = torch.arange(h, dtype=torch.float32, device=boxes.device) / h
        cx = torch.arange(w, dtype=torch.float32, device=boxes.device) / w
        dy = _log_scaled(cy[None, None, :, None] - torch.stack((y0, y1), -1)[:, :, None, :])  # N×Q×h×2
        dx = _log_scaled(cx[None, None, :, None] - torch.stack((x0, x1), -1)[:, :, None, :])  # N×Q×w×2
        b = self.boxRPB_embed_y(dy)[:, :, :, None, :] + self.boxRPB_embed_x(dx)[:, :, None, :, :]  # N×Q×h×w×heads
        return b.flatten(2, 3).permute(0, 3, 1, 2)

    def forward(self, memory: torch.Tensor, memory_pos: torch.Tensor, hw: tuple[int, int], text: torch.Tensor,
                text_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """memory, memory_pos: N×L×d (L = h·w); text: N×T×d, text_pad N×T (True: padding) →
        (queries N×Q×d, the last layer's normed output; boxes N×Q×4 cx, cy, w, h in [0, 1];
        presence logit N)."""
        n = memory.shape[0]
        x = self.query_embed.weight[None].expand(n, -1, -1)
        boxes = self.reference_points.weight.sigmoid()[None].expand(n, -1, -1)
        presence = self.presence_token.weight[None].expand(n, -1, -1)
        zero = torch.zeros_like(presence)
        for layer in self.layers:
            pos = self.ref_point_head(box_sine(boxes, self.dim))
            bias = self._box_bias(boxes, *hw)
            bias = torch.cat((torch.zeros_like(bias[:, :, :1]), bias), dim=2)  # the presence token's row
            y = layer(torch.cat((presence, x), 1), torch.cat((zero, pos), 1), text, text_pad, memory, memory_pos, bias)
            presence, x = y[:, :1], y[:, 1:]
            out = self.norm(x)
            boxes = (inverse_sigmoid(boxes) + self.bbox_embed(out)).sigmoid()
        logit = self.presence_token_head(self.presence_token_out_norm(presence))[:, 0, 0]
        return out, boxes, logit


class DotProductScoring(nn.Module):
    """Each query's logit against the prompt: the prompt's tokens through an MLP, mean-pooled
    over the tokens that are not padding, projected; dot product with the projected query over
    √d, clamped to ±12."""

    def __init__(self, dim: int = 256, ffn: int = 2048) -> None:
        super().__init__()
        self.prompt_mlp = Mlp([dim, ffn, dim], residual=True, out_norm=True)
        self.prompt_proj = nn.Linear(dim, dim)
        self.hs_proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, prompt: torch.Tensor, prompt_pad: torch.Tensor) -> torch.Tensor:
        """queries N×Q×d, prompt N×T×d, prompt_pad N×T → logits N×Q."""
        p = self.prompt_mlp(prompt)
        keep = (~prompt_pad).float()[..., None]
        pooled = (p * keep).sum(1) / keep.sum(1).clamp(min=1.0)
        scores = (self.hs_proj(queries) @ self.prompt_proj(pooled)[..., None])[..., 0] / math.sqrt(queries.shape[-1])
        return scores.clamp(-12.0, 12.0)


class _PixelDecoder(nn.Module):
    def __init__(self, dim: int, stages: int) -> None:
        super().__init__()
        self.conv_layers = nn.ModuleList(nn.Conv2d(dim, dim, 3, 1, 1) for _ in range(stages))
        self.norms = nn.ModuleList(nn.GroupNorm(8, dim) for _ in range(stages))

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Coarsest last: upsampled (nearest) onto each finer level, added, conv, GroupNorm, ReLU."""
        x = levels[-1]
        for i, finer in enumerate(reversed(levels[:-1])):
            x = finer + F.interpolate(x, size=finer.shape[-2:], mode="nearest")
            x = F.relu(self.norms[i](self.conv_layers[i](x)))
        return x


class _MaskPredictor(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mask_embed = Mlp([dim, dim, dim, dim])


class SegmentationHead(nn.Module):
    """Each query's mask logits at the finest pyramid level (288² for a 1008² input): the fused
    image tokens attend once more to the prompt, replace the coarsest level, and a pixel decoder
    climbs the pyramid; a mask is its query's embedding dotted with the pixels' embeddings.
    Meta's key names under `segmentation_head.`: `pixel_decoder.{conv_layers, norms}.N,
    cross_attend_prompt, cross_attn_norm, instance_seg_head, semantic_seg_head,
    mask_predictor.mask_embed.layers.N`."""

    def __init__(self, dim: int = 256, heads: int = 8, stages: int = 3) -> None:
        super().__init__()
        self.pixel_decoder = _PixelDecoder(dim, stages)
        self.cross_attend_prompt = Attention(dim, heads)
        self.cross_attn_norm = nn.LayerNorm(dim)
        self.instance_seg_head = nn.Conv2d(dim, dim, 1)
        self.semantic_seg_head = nn.Conv2d(dim, 1, 1)
        self.mask_predictor = _MaskPredictor(dim)

    def forward(self, levels: list[torch.Tensor], memory: torch.Tensor, queries: torch.Tensor, prompt: torch.Tensor,
                prompt_pad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """levels: the pyramid's maps, finest first, the last the size of the memory; memory N×L×d
        (the fusion encoder's output); queries N×Q×d → (mask logits N×Q×H×W at the finest
        level, the semantic map N×1×H×W)."""
        pixels = self.decoded_pixels(levels, memory, prompt, prompt_pad)
        return self.masks(queries, self.instance_seg_head(pixels)), self.semantic_seg_head(pixels)

    def decoded_pixels(self, levels: list[torch.Tensor], memory: torch.Tensor, prompt: torch.Tensor,
                       prompt_pad: torch.Tensor) -> torch.Tensor:
        """The pixel decoder's output N×d×H×W at the finest level (one per prompt row: the memory
        it climbs from is the row's)."""
        memory = memory + self.cross_attend_prompt(self.cross_attn_norm(memory), prompt, prompt, key_padding=prompt_pad)
        n, d, h, w = levels[-1].shape
        return self.pixel_decoder([*levels[:-1], memory.transpose(1, 2).reshape(n, d, h, w)])

    def masks(self, queries: torch.Tensor, pixel_embeddings: torch.Tensor) -> torch.Tensor:
        """Queries N×Q×d and instance_seg_head's pixel embeddings N×d×H×W → mask logits N×Q×H×W."""
        return torch.einsum("nqc,nchw->nqhw", self.mask_predictor.mask_embed(queries), pixel_embeddings)
