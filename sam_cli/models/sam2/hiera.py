"""SAM 2's image encoder: the Hiera trunk and the FPN neck, key names as Meta's checkpoints
(`image_encoder.trunk.*`, `image_encoder.neck.convs.N.conv.*`).

Hiera: a 7×7 stride-4 patch embedding (B×3×1024×1024 → B×256×256×C, channels last), a
positional embedding (a background grid bicubically resized to the token grid, plus a window
pattern tiled over it), then blocks in four stages of C, 2C, 4C, 8C channels at strides 4, 8,
16, 32. The first block of stages 2–4 pools its queries 2×2 (max pooling), so attention maps
the finer grid onto the coarser one, and its shortcut is the pooled projection of its input.
Attention is windowed (windows of the stage's size, padded) except in the global blocks; the
first block of a stage still uses the window of the stage before it, halved after the pooling.

FPN neck: each stage's features through a 1×1 conv to 256 channels; the two coarsest levels
take the coarser level's nearest ×2 upsampling (in float32) added. The coarsest level is
dropped (`scalp`), leaving B×256×256×256, B×256×128×128 and B×256×64×64.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def window_partition(x: torch.Tensor, size: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """B×H×W×C → (B·nW)×size×size×C windows, the grid zero-padded to multiples of size;
    with the padded (Hp, Wp)."""
    b, h, w, c = x.shape
    ph, pw = -h % size, -w % size
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // size, size, wp // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size, size, c), (hp, wp)


def window_unpartition(x: torch.Tensor, size: int, padded: tuple[int, int], hw: tuple[int, int]) -> torch.Tensor:
    """window_partition's inverse: (B·nW)×size×size×C → B×H×W×C, the padding cut off."""
    hp, wp = padded
    b = x.shape[0] // (hp * wp // size // size)
    x = x.reshape(b, hp // size, wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, -1)
    return x[:, : hw[0], : hw[1]] if (hp, wp) != tuple(hw) else x


def _pool(x: torch.Tensor) -> torch.Tensor:
    """B×H×W×C → B×H/2×W/2×C, 2×2 max pooling (channels last)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), 2, 2).permute(0, 2, 3, 1)


class TwoLayerMLP(nn.Module):
    """Linear → act → Linear in SAM 2's key names, layers.0 and layers.1 (GELU in Hiera's
    blocks, ReLU in the decoder's transformer)."""

    def __init__(self, dim: int, hidden: int, act=F.gelu) -> None:
        super().__init__()
        self.act = act
        self.layers = nn.ModuleList([nn.Linear(dim, hidden), nn.Linear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](self.act(self.layers[0](x)))


class PooledAttention(nn.Module):
    """Multi-head attention over B×H×W×C tokens (a window, or the whole grid); with pool, the
    queries are 2×2 max-pooled first, so the output is B×H/2×W/2×dim_out."""

    def __init__(self, dim: int, dim_out: int, heads: int, pool: bool) -> None:
        super().__init__()
        self.heads, self.pool = heads, pool
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        q, k, v = self.qkv(x).reshape(b, h * w, 3, self.heads, -1).unbind(2)  # each B×N×heads×d
        if self.pool:
            q = _pool(q.reshape(b, h, w, -1))
            h, w = q.shape[1:3]
            q = q.reshape(b, h * w, self.heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(b, h, w, -1))


class HieraBlock(nn.Module):
    def __init__(self, dim: int, dim_out: int, heads: int, window: int, pool: bool) -> None:
        super().__init__()
        self.dim, self.dim_out, self.window, self.pool = dim, dim_out, window, pool
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PooledAttention(dim, dim_out, heads, pool)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = TwoLayerMLP(dim_out, 4 * dim_out)
        if dim != dim_out:
            self.proj = nn.Linear(dim, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B×H×W×C → B×H'×W'×C'
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            shortcut = self.proj(x)
            if self.pool:
                shortcut = _pool(shortcut)
        if self.window:
            x, _ = window_partition(x, self.window)
        x = self.attn(x)
        if self.window:
            size = self.window // 2 if self.pool else self.window
            hw = shortcut.shape[1:3]
            x = window_unpartition(x, size, (hw[0] + -hw[0] % size, hw[1] + -hw[1] % size), hw)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B×3×H×W → B×H/4×W/4×C
        return self.proj(x).permute(0, 2, 3, 1)


class Hiera(nn.Module):
    """The trunk: B×3×1024×1024 → the four stages' features, B×C_i×H_i×W_i, finest first."""

    def __init__(self, *, embed_dim: int, num_heads: int, stages: tuple[int, ...], global_blocks: tuple[int, ...],
                 window_spec: tuple[int, ...], pos_bkg: tuple[int, int]) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *pos_bkg))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))
        self.stage_ends = [sum(stages[: i + 1]) - 1 for i in range(len(stages))]
        pooled = {end + 1 for end in self.stage_ends[:-1]}  # the first block of stages 2–4
        self.blocks = nn.ModuleList()
        dim, heads, stage = embed_dim, num_heads, 0
        for i in range(sum(stages)):
            window = 0 if i in global_blocks else window_spec[stage]  # the previous stage's, at a stage's start
            dim_out = dim
            if i in pooled:
                dim_out, heads, stage = dim * 2, heads * 2, stage + 1
            self.blocks.append(HieraBlock(dim, dim_out, heads, window, i in pooled))
            dim = dim_out
        self.channels = [self.blocks[e].dim_out for e in self.stage_ends]

    def _pos_embed(self, h: int, w: int) -> torch.Tensor:
        pos = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic")
        win = self.pos_embed_window
        pos = pos + win.tile(1, 1, h // win.shape[-2], w // win.shape[-1])
        return pos.permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self._pos_embed(*x.shape[1:3])
        out = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                out.append(x.permute(0, 3, 1, 2))
        return out


class _Conv(nn.Module):
    """A 1×1 conv under the key `conv` (Meta's neck wraps each in a Sequential)."""

    def __init__(self, dim: int, out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, out, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class FpnNeck(nn.Module):
    """The trunk's four levels (finest first) → three 256-channel levels (the coarsest dropped):
    convs[0] takes the coarsest (8C) level, convs[3] the finest (C)."""

    TOP_DOWN = (2, 3)  # levels that add the coarser level's upsampling

    def __init__(self, channels: list[int], d_model: int = 256) -> None:
        super().__init__()
        self.convs = nn.ModuleList([_Conv(c, d_model) for c in reversed(channels)])

    def forward(self, xs: list[torch.Tensor], lateral_from: int = 0) -> list[torch.Tensor]:
        """lateral_from: the finest level that gets its 1×1 conv here; finer ones (which take no
        top-down path) come back as the trunk gave them, for a caller that fuses the conv with
        what it applies next (Sam2.encode)."""
        n = len(xs) - 1
        out: list[torch.Tensor] = [None] * len(xs)  # type: ignore[list-item]
        prev = None
        for i in range(n, -1, -1):
            if i < lateral_from and i not in self.TOP_DOWN:
                out[i] = xs[i]
                continue
            lateral = self.convs[n - i](xs[i])
            if i in self.TOP_DOWN and prev is not None:
                prev = lateral + F.interpolate(prev.float(), scale_factor=2.0, mode="nearest")
            else:
                prev = lateral
            out[i] = prev
        return out[:-1]  # the stride-32 level is not used


class ImageEncoder(nn.Module):
    """trunk + neck: B×3×1024×1024 → [B×256×256×256, B×256×128×128, B×256×64×64]."""

    def __init__(self, trunk: Hiera, d_model: int = 256) -> None:
        super().__init__()
        self.trunk = trunk
        self.neck = FpnNeck(trunk.channels, d_model)

    def forward(self, x: torch.Tensor, lateral_from: int = 0) -> list[torch.Tensor]:
        return self.neck(self.trunk(x), lateral_from)
