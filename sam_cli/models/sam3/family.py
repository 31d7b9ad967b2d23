"""SAM 3 as a family of the seam (models/__init__.py): FAMILY recognises Meta's sam3.pt by its
`detector.` keys, reads the architecture back from the shapes (checkpoint.infer_arch) and
builds Sam3, whose `detector` takes those keys as they are. The interactive head's `tracker.`
keys are left out by name (sam's point-and-box head for SAM 3 is not written yet); anything
else is refused by the strict load.

Sam3 serves text and exemplar prompts (text.py's engine): `encode` gives the ViT's output
("trunk", 1×1024×72×72 at 1008 px), what the embedding cache keeps; `pyramid` makes the
detector's three levels from it (cheap convolutions, not worth 5x the cache's bytes).
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import PromptError
from .checkpoint import TRACKER, infer_arch, split
from .model import Sam3Arch, Sam3Detector, preprocess

__all__ = ["FAMILY", "Sam3"]


class Sam3(nn.Module):
    family = "sam3"
    automatic = None  # no everything mode: SAM 3 finds the instances of a concept
    text_prompts = True
    point_prompts = False  # the interactive head (tracker.* keys) is not written yet
    mask_threshold: float = 0.0

    def __init__(self, arch: Sam3Arch) -> None:
        super().__init__()
        self.arch = arch
        self.detector = Sam3Detector(arch)

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
        return preprocess(rgb, self.img_size)

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """N×3×S×S (prepare's) → {"trunk": N×C×S/14×S/14 float32}."""
        return {"trunk": self._trunk(x.to(self.device, self.encoder_dtype)).float()}

    def pyramid(self, trunk: torch.Tensor) -> list[torch.Tensor]:
        """The ViT's output → the detector's three levels (4×, 2×, 1× the token grid), float32."""
        convs = self.detector.backbone.vision_backbone.convs
        return [conv(trunk) for conv in list(convs)[:3]]

    def set_precision(self, dtype: torch.dtype) -> Sam3:
        """The ViT in `dtype` (its RoPE tables stay complex float32); the rest float32."""
        self._trunk._apply(lambda t: t.to(dtype) if t.is_floating_point() else t)
        return self

    def compile_parts(self, backend="inductor", on_failure=None) -> Sam3:
        raise PromptError("--compile is not available for SAM 3 models yet")

    def decode(self, *args, **kwargs):
        raise PromptError(NO_POINTS)


#: What a point, box or mask prompt on a SAM 3 model is told
NO_POINTS = ("SAM 3 takes text and exemplar prompts here (--text, --exemplar); its point-and-box head is not "
             "in sam yet: use a SAM 2.1 or SAM 1 model for points and boxes")


class Sam3Family:
    name = "sam3"

    def recognises(self, sd: dict) -> bool:
        return "detector.backbone.vision_backbone.trunk.patch_embed.proj.weight" in sd

    def ignored_keys(self, sd: dict) -> list[str]:
        return [k for k in sd if k.startswith(TRACKER)]

    def infer_arch(self, sd: dict, source: str = "checkpoint") -> Sam3Arch:
        """From the detector's tensors (checkpoint.split: a key neither the detector's nor the
        tracker's is refused by name)."""
        return infer_arch(split(sd, source)[0], source)

    def build(self, arch: Sam3Arch, device: str | torch.device = "cpu") -> Sam3:
        with torch.device(device):
            return Sam3(arch)


FAMILY = Sam3Family()
