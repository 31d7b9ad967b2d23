"""The two-way transformer of the mask decoder: prompt tokens ↔ image tokens.

In automatic mode this runs for thousands of prompts per image, so the cross attentions are
computed in an algebraically equal but cheaper order than the textbook one:

* token → image (T ≈ 7 queries, N = 4096 image keys): when the image tokens are shared by every
  prompt (the first layer), K and V are projected once for the whole batch. Otherwise the query
  is folded into the key projection, q·(Wk x + bk) = (Wkᵀq)·x + const, and the constant is
  dropped (softmax ignores it); the value projection is applied after the attention-weighted sum
  of raw image tokens (rows of P sum to 1, so the bias passes through unchanged).
* image → token (N queries, T keys): the output projection is folded into the T values
  (P·V·Woutᵀ = P·(V·Woutᵀ)), and for unshared image tokens the query projection is folded into
  the T keys, so no N×internal tensor is ever built or transposed. The residual add is the
  input of that last matmul (baddbmm).

Each fold changes only the order of floating-point sums; the result is the same function.

Precision (set_precision): the image side, the N-token tensors and the cross attentions that
read them, can run in bfloat16, while the prompt tokens stay float32 throughout: the token
self-attention, MLP and norms cost nothing next to the image side (T ≈ 7 rows against 4096),
and the tokens are what the IoU head and the mask hypernetworks read. Each cross attention
takes the tokens in the image side's dtype and hands its T-row result back in float32.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import MLPBlock


class Attention(nn.Module):
    """Attention with projections down to embedding_dim / downsample_rate channels."""

    #: Device types whose image → token logits put the image tokens innermost (see
    #: image_to_tokens); the others take the accelerators' layout (tests run both on the CPU).
    IMAGE_INNER_ON: tuple[str, ...] = ("cpu",)

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim / downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    @property
    def head_dim(self) -> int:
        return self.internal_dim // self.num_heads

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Plain attention, for the small token self-attention: B×Nq×C, B×Nk×C → B×Nq×C."""
        h = self.num_heads
        q, k, v = self.q_proj(q), self.k_proj(k), self.v_proj(v)
        b, nq, _ = q.shape
        split = lambda x: x.reshape(x.shape[0], x.shape[1], h, -1).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.out_proj(out.transpose(1, 2).reshape(b, nq, self.internal_dim))

    def tokens_to_image(
        self, tokens_q: torch.Tensor, keys_pe: torch.Tensor, keys: torch.Tensor
    ) -> torch.Tensor:
        """Prompt tokens attend to image tokens. tokens_q: B×T×C (with PE); keys_pe, keys:
        B'×N×C image tokens with and without PE, B' = B or 1 (shared). Returns B×T×C."""
        h, d, c = self.num_heads, self.head_dim, self.embedding_dim
        q = self.q_proj(tokens_q)
        b, t, _ = q.shape
        scale = d**-0.5
        if keys.shape[0] == 1 and b > 2:
            k = self.k_proj(keys_pe)[0]  # N×I, once for all prompts
            v = self.v_proj(keys)[0]
            n = k.shape[0]
            qh = q.reshape(b * t, h, d).transpose(0, 1)  # H×BT×d
            p = torch.softmax(torch.bmm(qh, k.reshape(n, h, d).permute(1, 2, 0)) * scale, -1)
            out = torch.bmm(p, v.reshape(n, h, d).transpose(0, 1))  # H×BT×d
            out = out.transpose(0, 1).reshape(b, t, h * d)
        else:
            keys_pe = keys_pe.expand(b, -1, -1)
            keys = keys.expand(b, -1, -1)
            wk = self.k_proj.weight.view(h, d, c)
            qk = torch.einsum("bthe,hec->bhtc", q.view(b, t, h, d), wk).reshape(b, h * t, c)
            p = torch.softmax(torch.bmm(qk * scale, keys_pe.transpose(1, 2)), -1)  # B×HT×N
            pk = torch.bmm(p, keys).view(b, h, t, c)  # attention-weighted raw image tokens
            wv = self.v_proj.weight.view(h, d, c)
            out = torch.einsum("bhtc,hec->bthe", pk, wv).reshape(b, t, h * d) + self.v_proj.bias
        return self.out_proj(out)

    def image_to_tokens(
        self, keys_pe: torch.Tensor, tokens_k: torch.Tensor, tokens_v: torch.Tensor,
        residual: torch.Tensor, *, in_place: bool = False,
    ) -> torch.Tensor:
        """Image tokens attend to prompt tokens. keys_pe, residual: B'×N×C (B' = B or 1);
        tokens_k (with PE), tokens_v: B×T×C. Returns residual + attention output, B×N×C, with
        the residual added by the final matmul itself (into `residual`'s own memory when
        in_place, for a B×N×C residual the caller no longer needs)."""
        h, d, c = self.num_heads, self.head_dim, self.embedding_dim
        k = self.k_proj(tokens_k).view(tokens_k.shape[0], -1, h, d)  # B×T×H×d
        v = self.v_proj(tokens_v).view(tokens_v.shape[0], -1, h, d)
        b, t = k.shape[:2]
        n = keys_pe.shape[1]
        shared = keys_pe.shape[0] == 1 and b > 1
        image_inner = keys_pe.device.type in self.IMAGE_INNER_ON
        # Logits B×(T, H)×N on the CPU, image tokens innermost: the softmax over the T (≈7)
        # tokens then runs vectorised along N, several times faster on a CPU than with heads
        # innermost or over a last dim of 7 (`scripts/cpu_profile.py --decoder`). GPUs take
        # B×N×(H, T) and a last-dim softmax, which their kernels do well (a strided softmax
        # took 9 % of the decoder's CUDA time on an H200, batch 64, bf16:
        # scripts/gpu_profile.py). `th` is the order of the (T, H) pairs in either layout.
        th = "th" if image_inner else "ht"
        wo = self.out_proj.weight.view(c, h, d)
        # Values through Wout, plus bias / H: each head's weights sum to 1 over the T tokens,
        # so the H heads add the output bias exactly once and no separate pass adds it.
        vo = torch.einsum(f"bthe,che->b{th}c", v, wo) + self.out_proj.bias / h
        vo = vo.reshape(b, t * h, c)
        k = k * d**-0.5
        if shared:
            q = self.q_proj(keys_pe)[0].view(n, h, d)  # once for all prompts
            logits = torch.einsum("bthe,nhe->" + ("bthn" if image_inner else "bnht"), k, q)
        else:
            logits = self._folded_query_logits(keys_pe, k, image_inner=image_inner)
        if image_inner:
            p = torch.softmax(logits.reshape(b, t, h, n), 1).view(b, t * h, n).transpose(1, 2)
        else:
            p = torch.softmax(logits.reshape(b, n, h, t), 3).reshape(b, n, h * t)
        if in_place and residual.shape[0] == b:
            return residual.baddbmm_(p, vo)
        return torch.baddbmm(residual, p, vo)

    def _folded_query_logits(
        self, keys_pe: torch.Tensor, k: torch.Tensor, *, image_inner: bool
    ) -> torch.Tensor:
        """Logits of B×N×C image tokens against the T×H keys k (B×T×H×d), the query
        projection folded into the keys, so no B×N×internal query is built:
        B×(T, H)×N when image_inner, else B×N×(H, T)."""
        b = k.shape[0]
        order = "bthc" if image_inner else "bhtc"
        wq = self.q_proj.weight.view(self.num_heads, self.head_dim, self.embedding_dim)
        m = torch.einsum(f"bthe,hec->{order}", k, wq).flatten(1, 2)  # B×TH×C
        bias = torch.einsum(f"bthe,he->{order[:3]}", k, self.q_proj.bias.view(self.num_heads, -1))
        keys_pe = keys_pe.expand(b, -1, -1)
        if image_inner:
            return torch.baddbmm(bias.reshape(b, -1, 1), m, keys_pe.transpose(1, 2))
        return torch.baddbmm(bias.reshape(b, 1, -1), keys_pe, m.transpose(1, 2))


class TwoWayAttentionBlock(nn.Module):
    def __init__(
        self, *, embedding_dim: int, num_heads: int, mlp_dim: int,
        attention_downsample_rate: int, skip_first_layer_pe: bool,
    ) -> None:
        super().__init__()
        self.self_attn = Attention(embedding_dim, num_heads)
        self.norm1 = nn.LayerNorm(embedding_dim)
        self.cross_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm2 = nn.LayerNorm(embedding_dim)
        self.mlp = MLPBlock(embedding_dim, mlp_dim, nn.ReLU)
        self.norm3 = nn.LayerNorm(embedding_dim)
        self.norm4 = nn.LayerNorm(embedding_dim)
        self.cross_attn_image_to_token = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor,
        key_pe: torch.Tensor, *, keys_owned: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: B×T×C prompt tokens; keys: B'×N×C image tokens (B' = 1: shared by all
        prompts, as before the first update). keys_owned: keys is a previous block's output,
        which this block may overwrite. Returns queries B×T×C, keys B×N×C."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        dt = keys.dtype  # the image side's; the tokens keep their own (see the module doc)
        keys_pe = keys + key_pe
        queries = queries + self.cross_attn_token_to_image.tokens_to_image(
            (queries + query_pe).to(dt), keys_pe, keys
        ).to(queries.dtype)
        queries = self.norm2(queries)
        queries = self.norm3(queries + self.mlp(queries))

        keys = self.norm4(self.cross_attn_image_to_token.image_to_tokens(
            keys_pe, (queries + query_pe).to(dt), queries.to(dt), residual=keys,
            in_place=keys_owned,
        ))
        return queries, keys

    def set_precision(self, dtype: torch.dtype) -> None:
        """The image side (cross attentions, norm4) in dtype; the token side stays float32."""
        for m in (self.cross_attn_token_to_image, self.norm4, self.cross_attn_image_to_token):
            m.to(dtype)


class TwoWayTransformer(nn.Module):
    def __init__(
        self, *, depth: int = 2, embedding_dim: int = 256, num_heads: int = 8,
        mlp_dim: int = 2048, attention_downsample_rate: int = 2,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayAttentionBlock(
                embedding_dim=embedding_dim, num_heads=num_heads, mlp_dim=mlp_dim,
                attention_downsample_rate=attention_downsample_rate,
                skip_first_layer_pe=i == 0,
            )
            for i in range(depth)
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim, num_heads, attention_downsample_rate
        )
        self.norm_final_attn = nn.LayerNorm(embedding_dim)

    @property
    def image_dtype(self) -> torch.dtype:
        """The dtype of the image side, which image_embedding and image_pe should be in."""
        return self.final_attn_token_to_image.q_proj.weight.dtype

    @property
    def token_dtype(self) -> torch.dtype:
        """The dtype of the token side (float32 unless the whole module was cast)."""
        return self.norm_final_attn.weight.dtype

    def set_precision(self, dtype: torch.dtype) -> TwoWayTransformer:
        """Run the image side in dtype (bfloat16); the prompt tokens stay float32."""
        for layer in self.layers:
            layer.set_precision(dtype)
        self.final_attn_token_to_image.to(dtype)
        return self

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor,
        out_tokens: list[int] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding, image_pe: B'×C×H×W (B' is B or 1), in image_dtype;
        point_embedding: B×T×C, in token_dtype.

        Returns queries B×T'×C and keys B×HW×C (row-major over H, W: channels-last). With
        out_tokens, T' = len(out_tokens) and the final attention runs for those tokens only
        (each token's row of it depends on that token alone): a caller that reads the IoU
        token and three of the mask tokens skips 3 of the 7 rows, 3/7 of its cost.
        """
        # Channels-last and contiguous once (a 4 MB copy at batch 1): as transposed views they
        # would make every broadcast add below produce a transposed B×N×C result that each
        # LayerNorm then copies back.
        keys = image_embedding.flatten(2).transpose(1, 2).contiguous()
        key_pe = image_pe.flatten(2).transpose(1, 2).contiguous()
        queries = point_embedding
        for i, layer in enumerate(self.layers):
            # a later layer may overwrite the keys the one before made (not when autograd needs them)
            owned = i > 0 and not torch.is_grad_enabled()
            queries, keys = layer(queries, keys, point_embedding, key_pe, keys_owned=owned)
        queries_pe = queries + point_embedding
        if out_tokens is not None and out_tokens != list(range(queries.shape[1])):
            queries, queries_pe = queries[:, out_tokens], queries_pe[:, out_tokens]
        attn = self.final_attn_token_to_image.tokens_to_image(
            queries_pe.to(keys.dtype), keys + key_pe, keys
        )
        queries = self.norm_final_attn(queries + attn.to(queries.dtype))
        return queries, keys
