"""SAM 1 (Segment Anything, ViT-B/L/H), written for `sam`; key names follow Meta's
checkpoints. FAMILY is this family's side of the seam (models/__init__.py)."""

from __future__ import annotations

import re

import torch

from ...errors import CheckpointError
from ...registry import ArchSpec
from .sam import Sam, build_sam

__all__ = ["FAMILY", "Sam", "build_sam"]


class Sam1Family:
    name = "sam1"

    def recognises(self, sd: dict[str, torch.Tensor]) -> bool:
        return "image_encoder.patch_embed.proj.weight" in sd and "image_encoder.pos_embed" in sd

    def ignored_keys(self, sd: dict[str, torch.Tensor]) -> list[str]:
        return []

    def infer_arch(self, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> ArchSpec:
        """Read the ViT's architecture back from tensor shapes."""
        try:
            patch = sd["image_encoder.patch_embed.proj.weight"]  # dim×3×p×p
            pos = sd["image_encoder.pos_embed"]  # 1×g×g×dim
            neck = sd["image_encoder.neck.0.weight"]  # out×dim×1×1
        except KeyError as e:
            raise CheckpointError(f"{source}: not a SAM checkpoint (missing key {e.args[0]})") from None
        dim, patch_size, grid = patch.shape[0], patch.shape[-1], pos.shape[1]
        block_ids = sorted(
            {int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
        )
        if not block_ids or block_ids != list(range(len(block_ids))):
            raise CheckpointError(f"{source}: image encoder blocks are missing or not numbered 0..N-1")
        head_dim = None
        global_idx: list[int] = []
        window = 14
        for i in block_ids:
            key = f"image_encoder.blocks.{i}.attn.rel_pos_h"
            if key not in sd:
                raise CheckpointError(f"{source}: missing key {key}")
            rows, head_dim = sd[key].shape
            if rows == 2 * grid - 1:
                global_idx.append(i)
            else:
                window = (rows + 1) // 2
        assert head_dim is not None
        if dim % head_dim:
            raise CheckpointError(f"{source}: embed dim {dim} is not a multiple of head dim {head_dim}")
        return ArchSpec(
            embed_dim=dim, depth=len(block_ids), num_heads=dim // head_dim,
            global_attn_indexes=tuple(global_idx), img_size=grid * patch_size,
            patch_size=patch_size, window_size=window, prompt_embed_dim=neck.shape[0],
        )

    def build(self, arch: ArchSpec, device: str | torch.device = "cpu") -> Sam:
        with torch.device(device):
            return build_sam(
                embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
                global_attn_indexes=arch.global_attn_indexes, img_size=arch.img_size,
                patch_size=arch.patch_size, window_size=arch.window_size,
                prompt_embed_dim=arch.prompt_embed_dim,
            )


FAMILY = Sam1Family()
