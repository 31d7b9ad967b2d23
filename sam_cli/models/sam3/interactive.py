"""SAM 3's point-and-box head (Meta's "instance interactivity", `SAM3InteractiveImagePredictor`):
SAM 2's prompt encoder and mask decoder (its two-way transformer's MLPs in SAM 1's key names)
over the ViT's second pyramid, keyed under `tracker.`
in sam3.pt: `sam_prompt_encoder.*`, `sam_mask_decoder.*` and `no_mem_embed` (the video
tracker's memory modules beside them are not read).

The image is the detector's (squashed to 1008², mean and std 0.5); the second pyramid
(`backbone.vision_backbone.sam2_convs`, 4×, 2× and 1× the 72² token grid) feeds the decoder as
SAM 2's three levels do: the coarsest plus `no_mem_embed` as the image embedding, the two finer
through the decoder's conv_s0 and conv_s1. Low-res masks are 288² (4× the grid); before they
are resized to the image, background holes of at most MAX_HOLE_AREA low-res cells are filled
(Meta's predictor's default for SAM 3, which SAM 2's predictor leaves at 0).
"""

from __future__ import annotations

import torch
from torch import nn

from ..sam1.prompt_encoder import PromptEncoder
from ..sam1.transformer import TwoWayTransformer
from ..sam2.decoder import Sam2Decoder

#: SAM3InteractiveImagePredictor's max_hole_area (its max_sprinkle_area is 0)
MAX_HOLE_AREA = 256.0
#: the tracker keys of the head (the rest of `tracker.` is the video model's)
HEAD_KEYS = ("tracker.sam_prompt_encoder.", "tracker.sam_mask_decoder.", "tracker.no_mem_embed")


class InteractiveHead(nn.Module):
    """dim: the pyramid's width (the neck's d_model, 256); grid: the token grid's side (72);
    img_size: the model's input side (1008)."""

    def __init__(self, dim: int, grid: int, img_size: int) -> None:
        super().__init__()
        self.sam_prompt_encoder = PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid),
                                                input_image_size=(img_size, img_size), mask_in_chans=16)
        self.sam_mask_decoder = Sam2Decoder(dim)
        # Meta's SAM 3 builds this transformer from its SAM 1 code: the MLPs keyed lin1 and lin2
        self.sam_mask_decoder.transformer = TwoWayTransformer(depth=2, embedding_dim=dim, num_heads=8, mlp_dim=2048)
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, dim))

    def features(self, levels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The second pyramid's three levels → (image embedding, feat_s0, feat_s1)."""
        dec = self.sam_mask_decoder
        return (levels[2] + self.no_mem_embed.reshape(1, -1, 1, 1), dec.conv_s0(levels[0]), dec.conv_s1(levels[1]))
