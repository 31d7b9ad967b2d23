"""The ViT image encoder: 1024×1024 RGB → B×256×64×64 embedding.

Windowed attention in most blocks, global attention in a few, and a decomposed relative
position bias (separate height and width tables) in every block.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import LayerNorm2d, MLPBlock


def _resized_rel_table(table: torch.Tensor, q_size: int, k_size: int) -> torch.Tensor:
    """Relative-position embeddings for every (query, key) pair along one axis.

    table: L×C learned table. Returns q_size×k_size×C. The table is linearly resampled when its
    length differs from the 2·max(q, k) − 1 relative offsets needed (fine-tuned or odd sizes).
    """
    needed = 2 * max(q_size, k_size) - 1
    if table.shape[0] != needed:
        table = (
            F.interpolate(table.t().unsqueeze(0), size=needed, mode="linear")
            .squeeze(0)
            .t()
        )
    q_coords = torch.arange(q_size, device=table.device)[:, None] * max(k_size / q_size, 1.0)
    k_coords = torch.arange(k_size, device=table.device)[None, :] * max(q_size / k_size, 1.0)
    offsets = (q_coords - k_coords) + (k_size - 1) * max(q_size / k_size, 1.0)
    return table[offsets.long()]


class Attention(nn.Module):
    """Multi-head self-attention with a decomposed relative position bias.

    The bias for query (qh, qw) and key (kh, kw) is q·Rh[qh, kh] + q·Rw[qw, kw]: two small
    einsums give the H and W terms, and their broadcast sum is the additive mask of a fused
    scaled_dot_product_attention call (flash on the CPU, memory-efficient on CUDA), so the
    softmax never runs as separate passes over the HW×HW scores. The mask is built a band of
    query rows at a time into one reused buffer (a global vit_b block would otherwise write
    and read an 805 MB mask per image); one band when it fits the budget.
    Windowed blocks project q, k and v before padding: the padded tokens are zeros after the
    norm, so their projection is the bias, written in without the matmul.
    (Measured on a 2-core CPU, vit_b: folding the bias into q and k with one-hot key codes
    instead avoided the mask but widened q·k from 64 to 192 channels in global blocks, and
    was 1.5x slower: scripts/benchmark.py.)
    """

    #: Most bytes of attention mask built at once (a band of query rows), and heads per call
    #: on the CPU. There the loop takes one head at a time in bands of a few MB, so the mask
    #: and that head's keys and values stay in cache while the fused kernel reads them
    #: (vit_b global block on 2 cores: 0.41 s, against 0.49 s for all heads in 128 MB
    #: bands: scripts/cpu_profile.py --attention). On a GPU all heads go in one call and the
    #: budget only bounds memory (a global vit_h block at batch 8 would otherwise build a
    #: 4.3 GB mask).
    CPU_MASK_BYTES = 4 * 2**20
    CPU_HEADS = 1
    DEVICE_MASK_BYTES = 1 << 30

    def __init__(self, dim: int, num_heads: int, input_size: tuple[int, int]) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * input_size[0] - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * input_size[1] - 1, head_dim))

    def forward(self, x: torch.Tensor, window_size: int = 0) -> torch.Tensor:
        # x: B×H×W×C normalised tokens; window_size 0 means global attention
        h, w = x.shape[1], x.shape[2]
        qkv = self.qkv(x)
        if window_size:
            qkv, padded = _window_partition(qkv, window_size, fill=self.qkv.bias)
        out = self._attend(qkv)
        if window_size:
            out = _window_unpartition(out, window_size, padded, (h, w))
        return self.proj(out)

    def _attend(self, qkv: torch.Tensor) -> torch.Tensor:
        """B×H×W×3C projected tokens → B×H×W×C attention output (before proj)."""
        b, h, w, c3 = qkv.shape
        nh, c = self.num_heads, c3 // 3
        on_cpu = qkv.device.type == "cpu"
        heads_major = qkv.reshape(b, h * w, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        if on_cpu:  # one copy, so each head's keys and values are dense for the loop below
            heads_major = heads_major.contiguous()
        q, k, v = heads_major.unbind(0)
        rh = _resized_rel_table(self.rel_pos_h, h, h).to(q.dtype)  # H×H×hd
        rw = _resized_rel_table(self.rel_pos_w, w, w).to(q.dtype)  # W×W×hd
        qg = q.reshape(b, nh, h, w, -1)
        bias_h = torch.einsum("bnhwc,hkc->bnhwk", qg, rh)[..., :, None]  # B×nh×H×W×kh×1
        bias_w = torch.einsum("bnhwc,wkc->bnhwk", qg, rw)[..., None, :]  # B×nh×H×W×1×kw
        budget = self.CPU_MASK_BYTES if on_cpu else self.DEVICE_MASK_BYTES
        heads = min(self.CPU_HEADS, nh) if on_cpu else nh  # heads per call
        row_bytes = b * heads * w * h * w * q.element_size()
        fits = [r for r in range(1, h + 1) if h % r == 0 and r * row_bytes <= budget]
        rows = max(fits, default=1)
        tracing = torch.jit.is_tracing()  # an ONNX export: one call, the runtime plans memory
        if tracing:
            heads, rows = nh, h
        # one reused buffer, except under torch.compile, which owns the buffers (no out=)
        reuse = not torch.compiler.is_compiling() and not tracing
        buf = q.new_empty(b, heads, rows, w, h, w) if reuse else None
        out = q.new_empty(b, h * w, nh, c // nh)  # one band when rows == h
        for h0 in range(0, nh, heads):
            hs = slice(h0, h0 + heads)
            for r0 in range(0, h, rows):
                band = slice(r0 * w, (r0 + rows) * w)
                bh, bw = bias_h[:, hs, r0 : r0 + rows], bias_w[:, hs, r0 : r0 + rows]
                mask = torch.add(bh, bw, out=buf) if reuse else bh + bw
                out[:, band, hs] = F.scaled_dot_product_attention(
                    q[:, hs, band], k[:, hs], v[:, hs],
                    attn_mask=mask.reshape(b, heads, rows * w, h * w), scale=self.scale,
                ).transpose(1, 2)
        return out.view(b, h, w, c)


def _window_partition(
    x: torch.Tensor, size: int, fill: torch.Tensor
) -> tuple[torch.Tensor, tuple[int, int]]:
    """B×H×W×C → (B·nW)×size×size×C, padding H and W up to a multiple of size with `fill`
    (a C vector)."""
    b, h, w, c = x.shape
    ph, pw = (size - h % size) % size, (size - w % size) % size
    if ph or pw:
        padded = x.new_empty(b, h + ph, w + pw, c)
        padded[:, :h, :w] = x
        value = fill.to(x.dtype)
        padded[:, h:] = value
        padded[:, :h, w:] = value
        x = padded
    hp, wp = h + ph, w + pw
    x = x.view(b, hp // size, size, wp // size, size, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, size, size, c), (hp, wp)


def _window_unpartition(
    windows: torch.Tensor, size: int, padded: tuple[int, int], hw: tuple[int, int]
) -> torch.Tensor:
    hp, wp = padded
    b = windows.shape[0] // ((hp // size) * (wp // size))
    x = windows.view(b, hp // size, wp // size, size, size, -1).permute(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, hp, wp, -1)
    return x[:, : hw[0], : hw[1], :].contiguous()


class Block(nn.Module):
    """Pre-norm transformer block; window_size 0 means global attention."""

    def __init__(
        self, *, dim: int, num_heads: int, mlp_ratio: float, window_size: int,
        grid_size: tuple[int, int],
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        size = grid_size if window_size == 0 else (window_size, window_size)
        self.attn = Attention(dim, num_heads, size)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, int(dim * mlp_ratio), nn.GELU)
        self.window_size = window_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The branches run in their weights' dtype; their outputs join the residual stream in
        # its own (float32 after ImageEncoderViT.set_precision: the add promotes).
        dt = self.attn.qkv.weight.dtype
        x = x + self.attn(self.norm1(x).to(dt), self.window_size)
        return x + self.mlp(self.norm2(x).to(dt))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B×C×H×W → B×H×W×C, made contiguous once: a permuted view here would carry its strides
        # through every residual add, and each LayerNorm and linear would copy it again.
        return self.proj(x).permute(0, 2, 3, 1).contiguous()


class ImageEncoderViT(nn.Module):
    """B×3×1024×1024 normalised image → B×out_chans×64×64."""

    def __init__(
        self, *, img_size: int = 1024, patch_size: int = 16, embed_dim: int = 768,
        depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0, out_chans: int = 256,
        window_size: int = 14, global_attn_indexes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.img_size = img_size
        grid = img_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, embed_dim))
        self.blocks = nn.ModuleList(
            Block(
                dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                window_size=0 if i in global_attn_indexes else window_size,
                grid_size=(grid, grid),
            )
            for i in range(depth)
        )
        self.neck = nn.Sequential(
            nn.Conv2d(embed_dim, out_chans, kernel_size=1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def set_precision(self, dtype: torch.dtype) -> ImageEncoderViT:
        """Run the matmul-heavy parts in dtype (bfloat16): the patch embedding and each
        block's attention and MLP. The residual stream between them, the norms that read it,
        the position embedding and the neck stay float32, so rounding does not pile up over
        the blocks and the embedding is not rounded on its way out: on vit_h (random weights,
        a 2-core AVX512-BF16 CPU) bfloat16 everywhere moved the embedding by 1.4e-2 (relative
        L2) and this mix by 0.65e-2, for 3 % more time (`scripts/bf16_drift.py
        --encoder-only`). Casting the whole module instead (`.to(dtype)`) runs it all in
        dtype."""
        self.patch_embed.to(dtype)
        for block in self.blocks:
            block.attn.to(dtype)
            block.mlp.to(dtype)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x.to(self.patch_embed.proj.weight.dtype))
        x = x.to(self.pos_embed.dtype) + self.pos_embed  # the residual stream's dtype
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2).to(self.neck[0].weight.dtype))

