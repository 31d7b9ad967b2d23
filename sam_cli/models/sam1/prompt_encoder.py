"""Prompt encoder: points, boxes and a low-res mask → sparse and dense embeddings."""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import Embedding, LayerNorm2d, on_meta_device


class PositionEmbeddingRandom(nn.Module):
    """Random-Fourier positional encoding of coordinates normalised to [0, 1]."""

    def __init__(self, num_pos_feats: int = 128) -> None:
        super().__init__()
        shape = (2, num_pos_feats)
        self.register_buffer(
            "positional_encoding_gaussian_matrix",
            torch.empty(shape) if on_meta_device() else torch.randn(shape),
        )

    def _encode(self, coords: torch.Tensor) -> torch.Tensor:
        # coords: …×2 in [0, 1] → …×(2·num_pos_feats)
        mat = self.positional_encoding_gaussian_matrix
        coords = (2 * coords - 1).to(mat.dtype) @ mat
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def dense(self, size: tuple[int, int]) -> torch.Tensor:
        """Encoding of every cell centre of an H×W grid: C×H×W."""
        h, w = size
        mat = self.positional_encoding_gaussian_matrix
        ys = (torch.arange(h, device=mat.device, dtype=mat.dtype) + 0.5) / h
        xs = (torch.arange(w, device=mat.device, dtype=mat.dtype) + 0.5) / w
        grid = torch.stack(
            [xs[None, :].expand(h, w), ys[:, None].expand(h, w)], dim=-1
        )
        return self._encode(grid).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """coords: B×N×2 (x, y) in input-frame pixels → B×N×C."""
        coords = coords.clone()
        coords[..., 0] = coords[..., 0] / image_size[1]
        coords[..., 1] = coords[..., 1] / image_size[0]
        return self._encode(coords.float())


class PromptEncoder(nn.Module):
    def __init__(
        self, *, embed_dim: int = 256, image_embedding_size: tuple[int, int] = (64, 64),
        input_image_size: tuple[int, int] = (1024, 1024), mask_in_chans: int = 16,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.image_embedding_size = image_embedding_size
        self.input_image_size = input_image_size
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right
        self.point_embeddings = nn.ModuleList(Embedding(1, embed_dim) for _ in range(4))
        self.not_a_point_embed = Embedding(1, embed_dim)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """1×C×64×64 positional encoding of the image embedding grid."""
        return self.pe_layer.dense(self.image_embedding_size).unsqueeze(0)

    def _embed_points(
        self, points: torch.Tensor, labels: torch.Tensor, pad: bool
    ) -> torch.Tensor:
        points = points + 0.5  # to the pixel centre
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        emb = self.pe_layer.points(points, self.input_image_size)
        lab = labels[..., None]
        emb = torch.where(lab == -1, self.not_a_point_embed.weight, emb)
        emb = emb + torch.where(lab == 0, self.point_embeddings[0].weight, 0.0)
        emb = emb + torch.where(lab == 1, self.point_embeddings[1].weight, 0.0)
        # box corners given as points (labels 2, 3), as SAM 2 gives boxes (SAM 1 never does: + 0.0)
        emb = emb + torch.where(lab == 2, self.point_embeddings[2].weight, 0.0)
        emb = emb + torch.where(lab == 3, self.point_embeddings[3].weight, 0.0)
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        emb = self.pe_layer.points(corners, self.input_image_size)
        corner_codes = torch.cat(
            [self.point_embeddings[2].weight, self.point_embeddings[3].weight], dim=0
        )
        return emb + corner_codes

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """points: (B×N×2 XY, B×N labels); boxes: B×4 XYXY; masks: B×1×256×256 logits.

        Returns sparse B×T×C and dense B×C×64×64 embeddings, dense 1×C×64×64 when there is no
        mask prompt (coordinates in the 1024 frame).
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        weight = self.no_mask_embed.weight
        parts = []
        if points is not None:
            parts.append(self._embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self._embed_boxes(boxes))
        if parts:
            sparse = torch.cat(parts, dim=1)
        else:
            sparse = weight.new_empty(bs, 0, self.embed_dim)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            # The same for every prompt: batch 1, broadcast by the decoder, which can then
            # share work on the image tokens across the whole batch of prompts.
            h, w = self.image_embedding_size
            dense = weight.reshape(1, -1, 1, 1).expand(1, -1, h, w)
        return sparse, dense
