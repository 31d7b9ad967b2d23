"""Meta's sam3.pt as sam reads it: the image detector's tensors are the keys under `detector.`
(the prefix taken off, as Meta's loader does); the interactive head's are under `tracker.`
(kept apart for it); anything else is refused by name. The architecture is read back from
tensor shapes, so a fine-tuned or smaller file loads without a model name.
"""

from __future__ import annotations

import re

import torch

from ...errors import CheckpointError
from .model import Sam3Arch
from .text import TextArch
from .vit import VitArch

DETECTOR, TRACKER = "detector.", "tracker."
#: head width of the text encoder's attention (1024 / 16) and the detector's (256 / 8): their
#: head counts are not in the tensors' shapes (the ViT's is, in its rotary tables)
HEAD_DIM = {"text": 64, "detector": 32}


def split(sd: dict[str, torch.Tensor], source: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the detector's tensors, prefix removed; the interactive head's, prefix kept). A file
    whose state dict sits under "model" is unwrapped first. CheckpointError naming `source`
    and the first key that is neither."""
    if set(sd) == {"model"} and isinstance(sd["model"], dict):
        sd = sd["model"]
    detector = {k[len(DETECTOR):]: v for k, v in sd.items() if k.startswith(DETECTOR)}
    tracker = {k: v for k, v in sd.items() if k.startswith(TRACKER)}
    other = sorted(k for k in sd if not k.startswith((DETECTOR, TRACKER)))
    if other:
        raise CheckpointError(f"{source}: {other[0]!r} is neither SAM 3's detector nor its tracker"
                              + (f" (and {len(other) - 1} more keys)" if len(other) > 1 else ""))
    if not detector:
        raise CheckpointError(f"{source}: no `detector.` tensors: not a SAM 3 checkpoint")
    return detector, tracker


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.match(k))})


def _shape(sd: dict, key: str, source: str) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(f"{source}: {key!r} is missing: not a SAM 3 detector")
    return tuple(sd[key].shape)


def infer_arch(sd: dict[str, torch.Tensor], source: str) -> Sam3Arch:
    """The architecture of a detector state dict (split's first part), from its shapes."""
    t = "backbone.vision_backbone.trunk."
    dim, _, patch, _ = _shape(sd, t + "patch_embed.proj.weight", source)
    depth = _count(sd, re.escape(t) + r"blocks\.(\d+)\.")
    tables = {i: _shape(sd, f"{t}blocks.{i}.attn.freqs_cis", source) for i in range(depth)}
    rope = {i: shape[0] for i, shape in tables.items()}  # tokens a block attends over; a row is head_dim / 2
    window_tokens = min(rope.values())
    grid_tokens = max(rope.values())
    window, grid = round(window_tokens ** 0.5), round(grid_tokens ** 0.5)
    global_blocks = tuple(i for i, n in rope.items() if n == grid_tokens and grid_tokens != window_tokens) or \
        tuple(range(depth))
    pretrain = round((_shape(sd, t + "pos_embed", source)[1] - 1) ** 0.5) * patch
    hidden = _shape(sd, t + "blocks.0.mlp.fc1.weight", source)[0]
    d_model = _shape(sd, "backbone.vision_backbone.convs.0.conv_1x1.weight", source)[0]
    vit = VitArch(img_size=grid * patch, patch=patch, dim=dim, depth=depth, heads=dim // (2 * tables[0][1]),
                  mlp_ratio=hidden / dim, window=window if window != grid else 0, global_blocks=global_blocks,
                  pretrain_size=pretrain, d_model=d_model)
    e = "backbone.language_backbone.encoder."
    vocab, width = _shape(sd, e + "token_embedding.weight", source)
    text = TextArch(width=width, layers=_count(sd, re.escape(e) + r"transformer\.resblocks\.(\d+)\."),
                    heads=width // HEAD_DIM["text"], context=_shape(sd, e + "positional_embedding", source)[0],
                    vocab=vocab, projection=_shape(sd, e + "text_projection", source)[1], d_model=d_model)
    return Sam3Arch(
        vit=vit, text=text, dim=d_model, heads=d_model // HEAD_DIM["detector"],
        ffn=_shape(sd, "transformer.encoder.layers.0.linear1.weight", source)[0],
        encoder_layers=_count(sd, r"transformer\.encoder\.layers\.(\d+)\."),
        decoder_layers=_count(sd, r"transformer\.decoder\.layers\.(\d+)\."),
        geometry_layers=_count(sd, r"geometry_encoder\.encode\.(\d+)\."),
        queries=_shape(sd, "transformer.decoder.query_embed.weight", source)[0],
        interactive=any(k.startswith("backbone.vision_backbone.sam2_convs.") for k in sd))
