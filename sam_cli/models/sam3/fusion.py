"""SAM 3's fusion encoder and the attention it is built of: the 72² image tokens attend to
each other (their sine position added to queries and keys) and to the prompt's tokens (text,
exemplar boxes), pre-norm, six layers. Meta's key names under `transformer.encoder.`:
`layers.N.{self_attn, cross_attn_image}.{in_proj_weight, in_proj_bias, out_proj}`,
`layers.N.{linear1, linear2, norm1, norm2, norm3}`.

Also the sine position encoding of a feature map (DETR's, normalised), which the neck's levels
and the decoder's reference boxes use.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with nn.MultiheadAttention's parameters (one packed input
    projection), batch first. key_padding: N×S, True where a key is left out; bias: an
    additive mask broadcast to N×heads×L×S; causal: each query sees the keys up to its own
    position (the text encoder's)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding: torch.Tensor | None = None,
                bias: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        n, length, c = q.shape
        w, b = self.in_proj_weight.chunk(3), self.in_proj_bias.chunk(3)
        q, k, v = (F.linear(x, wi, bi).view(n, -1, self.heads, c // self.heads).transpose(1, 2)
                   for x, wi, bi in zip((q, k, v), w, b))
        mask = bias
        if key_padding is not None:
            keep = torch.zeros(key_padding.shape, dtype=q.dtype, device=q.device).masked_fill(key_padding, -math.inf)
            mask = keep[:, None, None, :] if mask is None else mask + keep[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).reshape(n, length, c))


def sine(v: torch.Tensor, n: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's sine encoding of values already scaled to radians (…) → …×n: sines and cosines
    interleaved over n/2 frequencies."""
    t = torch.arange(n, dtype=torch.float32, device=v.device)
    t = temperature ** (2 * torch.div(t, 2, rounding_mode="floor") / n)
    p = v[..., None] / t
    return torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2)


def sine_position(h: int, w: int, dim: int, device=None) -> torch.Tensor:
    """DETR's normalised sine encoding of an h×w map: dim×h×w (y's half, then x's)."""
    half = dim // 2
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    py = sine(y / (y[-1:] + 1e-6) * 2 * math.pi, half)
    px = sine(x / (x[-1:] + 1e-6) * 2 * math.pi, half)
    return torch.cat((py[:, None, :].expand(h, w, half), px[None, :, :].expand(h, w, half)), dim=2).permute(2, 0, 1)


class PreNormLayer(nn.Module):
    """Self-attention, cross-attention to a memory, a ReLU feed-forward, each pre-norm with a
    residual: the layer of the fusion encoder and of the geometry encoder (Meta's one
    TransformerEncoderLayer, which adds positions where each asks)."""

    def __init__(self, dim: int, heads: int, ffn: int) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.cross_attn_image = Attention(dim, heads)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, *, pos: torch.Tensor | None = None,
                pad: torch.Tensor | None = None, memory_pos: torch.Tensor | None = None,
                memory_pad: torch.Tensor | None = None) -> torch.Tensor:
        """pos: added to the self-attention's queries and keys; memory_pos: to the memory's keys;
        pad, memory_pad: keys left out (True)."""
        y = self.norm1(x)
        qk = y if pos is None else y + pos
        x = x + self.self_attn(qk, qk, y, key_padding=pad)
        y = self.norm2(x)
        x = x + self.cross_attn_image(y, memory if memory_pos is None else memory + memory_pos, memory,
                                      key_padding=memory_pad)
        return x + self.linear2(F.relu(self.linear1(self.norm3(x))))


class FusionEncoder(nn.Module):
    """Image tokens (N×L×d, positions N×L×d) and the prompt (N×T×d, padding N×T) → the image
    tokens after the layers (N×L×d); the prompt is not changed."""

    def __init__(self, dim: int = 256, heads: int = 8, ffn: int = 2048, layers: int = 6) -> None:
        super().__init__()
        self.layers = nn.ModuleList(PreNormLayer(dim, heads, ffn) for _ in range(layers))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, prompt: torch.Tensor, prompt_pad: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, prompt, pos=pos, memory_pad=prompt_pad)
        return x
