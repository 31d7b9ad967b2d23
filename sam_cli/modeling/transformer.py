"""The two-way transformer of the mask decoder: prompt tokens ↔ image tokens."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .common import MLPBlock


class Attention(nn.Module):
    """Attention with projections down to embedding_dim / downsample_rate channels."""

    def __init__(self, embedding_dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        self.internal_dim = embedding_dim // downsample_rate
        self.num_heads = num_heads
        if self.internal_dim % num_heads:
            raise ValueError("num_heads must divide embedding_dim / downsample_rate")
        self.q_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.k_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.v_proj = nn.Linear(embedding_dim, self.internal_dim)
        self.out_proj = nn.Linear(self.internal_dim, embedding_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Already-projected B×N×internal inputs → B×Nq×embedding_dim."""
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        # Queries or keys may be one shared tensor broadcast over a batch of prompts.
        b = max(q.shape[0], k.shape[0])
        q, k, v = q.expand(b, -1, -1, -1), k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
        out = F.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).flatten(2)
        return self.out_proj(out)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.attend(self.q_proj(q), self.k_proj(k), self.v_proj(v))


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
        key_pe: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """queries: B×T×C prompt tokens; keys: B×HW×C image tokens (B may be 1, shared)."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)

        keys_pe = keys + key_pe
        queries = queries + self.cross_attn_token_to_image(queries + query_pe, keys_pe, keys)
        queries = self.norm2(queries)
        queries = self.norm3(queries + self.mlp(queries))

        delta = self.cross_attn_image_to_token(keys_pe, queries + query_pe, queries)
        keys = self.norm4(keys + delta)
        return queries, keys


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

    def forward(
        self, image_embedding: torch.Tensor, image_pe: torch.Tensor, point_embedding: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """image_embedding, image_pe: B'×C×H×W (B' is B or 1); point_embedding: B×T×C.

        Returns queries B×T×C and keys B×HW×C.
        """
        keys = image_embedding.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(2).transpose(1, 2)
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(queries, keys, point_embedding, key_pe)
        attn = self.final_attn_token_to_image(queries + point_embedding, keys + key_pe, keys)
        queries = self.norm_final_attn(queries + attn)
        return queries, keys
