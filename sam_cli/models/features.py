"""ImageFeatures: what a family's image encoder made of one image, the value every engine
passes from the encoder to the decoder (and the embedding cache keeps)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class AutomaticStyle:
    """How a family's automatic mode (`sam auto`) follows its own reference generator.

    pred_iou_thresh: the reference generator's default (SAM 1 0.88, SAM 2 0.8).
    small_regions: how --min-mask-region-area applies. "full_res": holes and islands of the
    final masks, then NMS again (SAM 1's postprocess_small_regions); "low_res": holes and
    islands of each candidate's low-res logits, before upscaling (SAM 2's max_hole_area and
    max_sprinkle_area)."""

    pred_iou_thresh: float
    small_regions: str


@dataclass
class ImageFeatures:
    """One image's (or crop's) features.

    tensors: the family's tensors, each 1×C×h×w float32 (SAM 1: "image_embed" 1×256×64×64;
    a family with several levels holds one entry per level).
    input_hw: the image's size after the resize to the encoder's input, before padding.
    orig_hw: the image's (or crop's) own size, which masks come back at.
    derived: what a decoder computes from the tensors once and reuses on every call for this
    image (factored.SharedImage); never saved, and not carried over by to()."""

    family: str
    tensors: dict[str, torch.Tensor]
    input_hw: tuple[int, int]
    orig_hw: tuple[int, int]
    derived: dict = field(default_factory=dict, compare=False, repr=False)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    def to(self, device: torch.device | str) -> ImageFeatures:
        return ImageFeatures(self.family, {k: v.to(device) for k, v in self.tensors.items()},
                             self.input_hw, self.orig_hw)

    @property
    def device(self) -> torch.device:
        return next(iter(self.tensors.values())).device


def split_batch(
    family: str, tensors: dict[str, torch.Tensor], sizes: list[tuple[tuple[int, int], tuple[int, int]]],
) -> list[ImageFeatures]:
    """A batch's tensors {name: B×C×h×w} → one ImageFeatures per image; sizes: (input_hw,
    orig_hw) of each, in batch order."""
    return [
        ImageFeatures(family, {k: v[i : i + 1] for k, v in tensors.items()}, input_hw, orig_hw)
        for i, (input_hw, orig_hw) in enumerate(sizes)
    ]
