"""SAM 3 as a family of the seam (models/__init__.py): FAMILY recognises Meta's sam3.pt by its
`detector.` keys, reads the architecture back from the shapes (checkpoint.infer_arch) and
builds Sam3, whose `detector` takes those keys as they are, and whose `tracker` takes the
point-and-box head's (interactive.py) when the file has them; the video tracker's other
`tracker.` keys are left out by name; anything else is refused by the strict load.

Sam3 serves text and exemplar prompts (text.py's engine), and points and boxes through the
seam's decode as SAM 2 does: `encode` gives the ViT's output ("trunk", 1×1024×72×72 at 1008
px), what the embedding cache keeps; `pyramid` makes the detector's three levels from it, and
the head's own three (the second neck) are made from it on an image's first decode (cheap
convolutions, not worth 5x the cache's bytes).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ...errors import PromptError
from ..sam2 import LOW_RES_CLAMP, sam2_decode
from .checkpoint import TRACKER, infer_arch, split
from .interactive import HEAD_KEYS, MAX_HOLE_AREA, InteractiveHead
from .model import Sam3Arch, Sam3Detector, normalise, squash

__all__ = ["FAMILY", "Sam3"]


class Sam3(nn.Module):
    family = "sam3"
    automatic = None  # no everything mode: SAM 3 finds the instances of a concept
    text_prompts = True
    mask_threshold: float = 0.0

    def __init__(self, arch: Sam3Arch) -> None:
        super().__init__()
        self.arch = arch
        self.detector = Sam3Detector(arch)
        self.tracker = InteractiveHead(arch.vit.d_model, arch.vit.grid, arch.vit.img_size) if arch.point_head else None
        self._head_features: tuple = ()  # (the trunk tensor, its head features): an image's, made once

    @property
    def point_prompts(self) -> bool:
        return self.tracker is not None

    def init_constants(self) -> None:
        pass  # normalisation is a constant 0.5 (model.preprocess); RoPE tables are in the file

    @property
    def img_size(self) -> int:
        return self.arch.vit.img_size

    @property
    def device(self) -> torch.device:
        return self.detector.transformer.decoder.query_embed.weight.device

    @property
    def _trunk(self) -> nn.Module:
        return self.detector.backbone.vision_backbone.trunk

    @property
    def encoder_dtype(self) -> torch.dtype:
        return self._trunk.patch_embed.proj.weight.dtype

    @property
    def encoder_compiled(self) -> bool:
        return False

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return self._trunk.state_dict()

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        side = self.arch.vit.img_size // self.arch.vit.patch
        return {"trunk": (self.arch.vit.dim, side, side)}

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        return (self.img_size, self.img_size)  # squashed to a square, the aspect not kept

    def prepare(self, rgb: torch.Tensor) -> torch.Tensor:
        """H×W×3 uint8 → 1×3×S×S normalised float, as Meta's processor makes it."""
        return self.preprocess(self.resize(rgb, self.input_size(*rgb.shape[:2])))

    def resize(self, rgb: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        """H×W×3 uint8 → 1×3×S×S, resized in uint8 (model.squash), as float."""
        return squash(rgb, input_hw)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return normalise(x)

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """N×3×S×S (prepare's) → {"trunk": N×C×S/14×S/14 float32}."""
        return {"trunk": self._trunk(x.to(self.device, self.encoder_dtype)).float()}

    def pyramid(self, trunk: torch.Tensor, which: tuple[int, ...] = (0, 1, 2)) -> list[torch.Tensor]:
        """The ViT's output → the detector's levels (0, 1, 2: 4×, 2×, 1× the token grid), float32.
        The coarsest is all the detector reads before the masks; the finer two, most of the
        pyramid's time, only the segmentation head."""
        convs = self.detector.backbone.vision_backbone.convs
        return [convs[i](trunk) for i in which]

    def set_precision(self, dtype: torch.dtype) -> Sam3:
        """The ViT in `dtype` (its RoPE tables stay complex float32); the rest float32."""
        self._trunk._apply(lambda t: t.to(dtype) if t.is_floating_point() else t)
        return self

    def compile_parts(self, backend="inductor", on_failure=None) -> Sam3:
        raise PromptError("--compile is not available for SAM 3 models yet")

    # ------------------------------------------------------------ the point-and-box head
    @property
    def grid_hw(self) -> tuple[int, int]:
        return (self.arch.vit.grid,) * 2

    @property
    def low_res_hw(self) -> tuple[int, int]:
        return (4 * self.arch.vit.grid,) * 2

    def head_features(self, trunk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image embedding, feat_s0, feat_s1) of an image's ViT output, made on its first decode."""
        if not self._head_features or self._head_features[0] is not trunk:
            convs = list(self.detector.backbone.vision_backbone.sam2_convs)[:3]
            self._head_features = (trunk, self.tracker.features([conv(trunk) for conv in convs]))
        return self._head_features[1]

    def decode(self, features, points, labels, boxes, mask_input, multimask, grid=None, min_iou=None):
        """As Sam2.decode, through the head (interactive.py): prompts in the 1008² frame."""
        if self.tracker is None:
            raise PromptError(NO_POINTS)
        embed, s0, s1 = self.head_features(features["trunk"])
        pe, dec = self.tracker.sam_prompt_encoder, self.tracker.sam_mask_decoder
        return sam2_decode(pe, dec, embed, s0, s1, points, labels, boxes, mask_input, multimask, min_iou,
                           cache=getattr(features, "derived", None))

    def upscale_frame(self, input_hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        side = self.low_res_hw[0]
        return side, (side, side)

    def upscale(self, low: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int]) -> torch.Tensor:
        """Low-res logits → …×H×W: holes of at most MAX_HOLE_AREA cells filled, then one
        bilinear step (Meta's SAM3InteractiveImagePredictor)."""
        from ...masks import fill_holes_and_sprinkles
        from ...upscale import upscale_in_frame

        filled = fill_holes_and_sprinkles(low.flatten(0, -3), self.mask_threshold, MAX_HOLE_AREA, 0.0)
        return upscale_in_frame(self, filled.reshape(low.shape), input_hw, orig_hw)

    def clamp_low_res(self, low: torch.Tensor) -> torch.Tensor:
        return low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)


#: What a point, box or mask prompt on a SAM 3 checkpoint without its point-and-box head is told
NO_POINTS = ("this SAM 3 checkpoint has no point-and-box head (the tracker.sam_prompt_encoder and "
             "tracker.sam_mask_decoder weights of Meta's sam3.pt); it takes text and exemplar prompts (--text, "
             "--exemplar)")


class Sam3Family:
    name = "sam3"

    def recognises(self, sd: dict) -> bool:
        return "detector.backbone.vision_backbone.trunk.patch_embed.proj.weight" in sd

    def ignored_keys(self, sd: dict) -> list[str]:
        """The video tracker's keys (every `tracker.` key but the point-and-box head's)."""
        return [k for k in sd if k.startswith(TRACKER) and not k.startswith(HEAD_KEYS)]

    def infer_arch(self, sd: dict, source: str = "checkpoint") -> Sam3Arch:
        """From the detector's tensors (checkpoint.split: a key neither the detector's nor the
        tracker's is refused by name); the point-and-box head when the file has any of its keys
        (a part of it missing is then named by the strict load)."""
        arch = infer_arch(split(sd, source)[0], source)
        return replace(arch, point_head=any(k.startswith(HEAD_KEYS) for k in sd))

    def build(self, arch: Sam3Arch, device: str | torch.device = "cpu") -> Sam3:
        with torch.device(device):
            return Sam3(arch)


FAMILY = Sam3Family()
