"""SAM 3's image encoder: a plain ViT (patch 14, 1008² → 72² tokens) with 2-D axial rotary
position encoding, windowed attention (24×24 windows) in all blocks but a few global ones, and
an absolute position embedding tiled from its 24² pretraining grid; then a simple feature
pyramid (the neck: ×4, ×2, ×1, ×0.5 of the last block's map, each to d_model channels).

Meta's key names under `backbone.vision_backbone.`: `trunk.{patch_embed.proj, pos_embed,
ln_pre, blocks.N.{norm1, attn.{qkv, proj, freqs_cis}, norm2, mlp.{fc1, fc2}}}` and
`convs.N.{dconv_2x2_0, dconv_2x2_1, dconv_2x2, conv_1x1, conv_3x3}` (`sam2_convs`, the same
again, for the interactive head). `freqs_cis`, each block's rotary table, is in the file and
used as it is there.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class VitArch:
    img_size: int = 1008
    patch: int = 14
    dim: int = 1024
    depth: int = 32
    heads: int = 16
    mlp_ratio: float = 4.625
    window: int = 24
    global_blocks: tuple[int, ...] = (7, 15, 23, 31)
    pretrain_size: int = 336  # the position embedding's grid: 336 / 14 = 24
    d_model: int = 256
    scales: tuple[float, ...] = (4.0, 2.0, 1.0, 0.5)
    rope_theta: float = 10000.0

    @property
    def grid(self) -> int:
        return self.img_size // self.patch


def axial_rope(head_dim: int, side: int, scale: float, theta: float) -> torch.Tensor:
    """The rotary table of a side×side grid (complex, side²×head_dim/2): half the pairs turn
    with the token's column, half with its row, positions scaled by `scale`."""
    freqs = 1.0 / (theta ** (torch.arange(0, head_dim, 4)[: head_dim // 4].float() / head_dim))
    t = torch.arange(side * side, dtype=torch.float32)
    x, y = (t % side) * scale, torch.div(t, side, rounding_mode="floor") * scale
    fx, fy = torch.outer(x, freqs), torch.outer(y, freqs)
    return torch.cat([torch.polar(torch.ones_like(fx), fx), torch.polar(torch.ones_like(fy), fy)], dim=-1)


def _rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x (…×L×head_dim) turned by the rotary table freqs (L×head_dim/2, complex)."""
    xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(xc * freqs).flatten(-2).type_as(x)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, side: int, scale: float, theta: float) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.register_buffer("freqs_cis", axial_rope(dim // heads, side, scale, theta))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k = _rotate(q, self.freqs_cis), _rotate(k, self.freqs_cis)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.permute(0, 2, 1, 3).reshape(b, h, w, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    def __init__(self, a: VitArch, window: int) -> None:
        super().__init__()
        self.window = window
        side = window or a.grid
        # window blocks: positions within the window; global ones: the whole grid, scaled to
        # the window's range (the rotary table was trained on the window's grid)
        scale = 1.0 if window else a.window / a.grid
        self.norm1 = nn.LayerNorm(a.dim, eps=1e-5)
        self.attn = _Attention(a.dim, a.heads, side, scale, a.rope_theta)
        self.norm2 = nn.LayerNorm(a.dim, eps=1e-5)
        self.mlp = _Mlp(a.dim, int(a.dim * a.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        if self.window:
            b, h, w, c = y.shape
            s = self.window
            ph, pw = (s - h % s) % s, (s - w % s) % s
            if ph or pw:
                y = F.pad(y, (0, 0, 0, pw, 0, ph))
            hp, wp = h + ph, w + pw
            y = y.view(b, hp // s, s, wp // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s, s, c)
            y = self.attn(y)
            y = y.view(b, hp // s, wp // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)[:, :h, :w]
        else:
            y = self.attn(y)
        x = x + y
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, a: VitArch) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, a.dim, a.patch, a.patch, bias=False)


class Trunk(nn.Module):
    def __init__(self, a: VitArch) -> None:
        super().__init__()
        self.arch = a
        self.patch_embed = _PatchEmbed(a)
        side = a.pretrain_size // a.patch
        self.pos_embed = nn.Parameter(torch.empty(1, 1 + side * side, a.dim))  # a class token's slot first
        self.ln_pre = nn.LayerNorm(a.dim, eps=1e-5)
        self.blocks = nn.ModuleList(_Block(a, 0 if i in a.global_blocks else a.window) for i in range(a.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """N×3×H×W (normalised) → N×dim×H/14×W/14: the last global block's output."""
        x = self.patch_embed.proj(x).permute(0, 2, 3, 1)
        h, w = x.shape[1:3]
        side = int(round((self.pos_embed.shape[1] - 1) ** 0.5))
        pos = self.pos_embed[:, 1:].reshape(1, side, side, -1)
        if (side, side) != (h, w):  # tiled, not interpolated
            pos = pos.tile(1, h // side + 1, w // side + 1, 1)[:, :h, :w]
        x = self.ln_pre(x + pos)
        last = max(self.arch.global_blocks)
        for block in self.blocks[: last + 1]:
            x = block(x)
        return x.permute(0, 3, 1, 2)


def _level(dim: int, d_model: int, scale: float) -> nn.Sequential:
    parts: list[tuple[str, nn.Module]] = []
    if scale == 4.0:
        parts = [("dconv_2x2_0", nn.ConvTranspose2d(dim, dim // 2, 2, 2)), ("gelu", nn.GELU()),
                 ("dconv_2x2_1", nn.ConvTranspose2d(dim // 2, dim // 4, 2, 2))]
        out = dim // 4
    elif scale == 2.0:
        parts, out = [("dconv_2x2", nn.ConvTranspose2d(dim, dim // 2, 2, 2))], dim // 2
    elif scale == 1.0:
        out = dim
    elif scale == 0.5:
        parts, out = [("maxpool_2x2", nn.MaxPool2d(2, 2))], dim
    else:
        raise ValueError(f"scale {scale}")
    parts += [("conv_1x1", nn.Conv2d(out, d_model, 1)), ("conv_3x3", nn.Conv2d(d_model, d_model, 3, padding=1))]
    return nn.Sequential(OrderedDict(parts))


class VisionBackbone(nn.Module):
    """The trunk and its feature pyramid (and, with `interactive`, the second pyramid that SAM 3's
    point-and-box head reads)."""

    def __init__(self, a: VitArch = VitArch(), interactive: bool = False) -> None:
        super().__init__()
        self.trunk = Trunk(a)
        self.convs = nn.ModuleList(_level(a.dim, a.d_model, s) for s in a.scales)
        self.sam2_convs = nn.ModuleList(_level(a.dim, a.d_model, s) for s in a.scales) if interactive else None

    def forward(self, x: torch.Tensor, levels: int | None = None) -> list[torch.Tensor]:
        """The pyramid's maps, finest first (the first `levels` of them: SAM 3's detector uses 3)."""
        y = self.trunk(x)
        return [conv(y) for conv in list(self.convs)[:levels]]
