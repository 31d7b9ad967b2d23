"""SAM 3's text encoder: a CLIP-style causal transformer over the phrase's tokens, every token's
features kept (no pooling), then resized to the detector's width. Meta's key names under
`backbone.language_backbone.`: `encoder.{token_embedding, positional_embedding,
transformer.resblocks.N.{ln_1, attn.in_proj_*, attn.out_proj, ln_2, mlp.c_fc, mlp.c_proj},
ln_final, text_projection}` and `resizer`. (`text_projection` is the pooled output's
projection, which SAM 3 does not use: kept to load the file as it is.)"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from .fusion import Attention


@dataclass(frozen=True)
class TextArch:
    width: int = 1024
    layers: int = 24
    heads: int = 16
    context: int = 32
    vocab: int = 49408
    projection: int = 512  # text_projection's output (unused)
    d_model: int = 256  # the detector's width: what `resizer` gives


class _Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict([
            ("c_fc", nn.Linear(width, 4 * width)), ("gelu", nn.GELU()), ("c_proj", nn.Linear(4 * width, width))]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, causal=True)
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, a: TextArch) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(_Block(a.width, a.heads) for _ in range(a.layers))


class _Encoder(nn.Module):
    def __init__(self, a: TextArch) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(a.vocab, a.width)
        self.positional_embedding = nn.Parameter(torch.empty(a.context, a.width))
        self.transformer = _Transformer(a)
        self.ln_final = nn.LayerNorm(a.width)
        self.text_projection = nn.Parameter(torch.empty(a.width, a.projection))


class TextEncoder(nn.Module):
    """Token ids (N×T, 0 padding) → (padding N×T bool, True where padding; features N×T×d_model)."""

    def __init__(self, a: TextArch = TextArch()) -> None:
        super().__init__()
        self.arch = a
        self.encoder = _Encoder(a)
        self.resizer = nn.Linear(a.width, a.d_model)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.encoder
        x = e.token_embedding(tokens) + e.positional_embedding[: tokens.shape[1]]
        for block in e.transformer.resblocks:
            x = block(x)
        return tokens == 0, self.resizer(e.ln_final(x))
