"""Build Meta's reference SAM (the oracle, tests only) with fixed seeds and save checkpoints."""

from __future__ import annotations

from pathlib import Path

import torch

TINY = dict(embed_dim=64, depth=4, num_heads=4, global_attn_indexes=(1, 3))


def build_reference(
    *, embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...],
    seed: int = 0, device: str | None = None,
):
    from segment_anything.build_sam import _build_sam

    torch.manual_seed(seed)
    if device == "meta":
        with torch.device("meta"):
            return _build_sam(embed_dim, depth, num_heads, list(global_attn_indexes))
    sam = _build_sam(embed_dim, depth, num_heads, list(global_attn_indexes))
    # Zero-initialised tensors (relative-position tables, positional embedding, biases) would
    # hide whole code paths: give every all-zero tensor some noise.
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if torch.count_nonzero(p) == 0:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return sam.eval()


def build_shifted_tiny(seed: int = 0):
    """The tiny reference with its IoU head shifted so predicted IoUs sit near 0.45 (a random
    model predicts about 0, where the reference's `> 0` test would switch the filter off), so
    that masks pass lowered automatic-mode filters."""
    sam = build_reference(**TINY, seed=seed)
    with torch.no_grad():
        sam.mask_decoder.iou_prediction_head.layers[2].bias += 0.5
    return sam


def save_checkpoint(sam, path: Path) -> Path:
    torch.save(sam.state_dict(), path)
    return path
