"""SAM 2 / 2.1 (image path), written for `sam`; key names as Meta's checkpoints. FAMILY is this
family's side of the seam (models/__init__.py); Sam2 its network.

The image: resized to 1024×1024 (a square, the aspect not kept), antialiased bilinear on 0–1
values, normalised with ImageNet's mean and std. The encoder (hiera.py) gives three levels; the
64×64 one plus no_mem_embed is "image_embed", the decoder's 1×1 convs of the finer two are
"feat_s0" and "feat_s1" (ImageFeatures). Prompts are in the 1024×1024 frame (x and y scaled
apart); low-res logits go to the image's size in one bilinear step.
"""

from __future__ import annotations

import re

import torch
from torch import nn
from torch.nn import functional as F

from ...errors import CheckpointError
from ...registry import SAM2_CONFIGS, Sam2Arch
from ..compiled import compile_each, is_compiled
from ..features import AutomaticStyle
from ..sam1.prompt_encoder import PromptEncoder
from .decoder import Sam2Decoder
from .hiera import Hiera, ImageEncoder

__all__ = ["FAMILY", "Sam2", "sam2_decode"]

#: ImageNet statistics, on 0–1 values (SAM 2's transforms)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
#: SAM 2's predictor returns low-res logits clamped to this
LOW_RES_CLAMP = 32.0
#: keys of the video model that the image path never reads (dropped by name when loading)
VIDEO_KEYS = ("memory_attention.", "memory_encoder.", "mask_downsample.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
              "maskmem_tpos_enc", "no_mem_pos_enc", "no_obj_ptr", "no_obj_embed_spatial")


class Sam2(nn.Module):
    family = "sam2"
    automatic = AutomaticStyle(pred_iou_thresh=0.8, small_regions="low_res")
    mask_threshold: float = 0.0
    img_size = 1024

    def __init__(self, arch: Sam2Arch) -> None:
        super().__init__()
        self.arch = arch
        self.image_encoder = ImageEncoder(Hiera(embed_dim=arch.embed_dim, num_heads=arch.num_heads, stages=arch.stages,
                                                global_blocks=arch.global_blocks, window_spec=arch.window_spec,
                                                pos_bkg=arch.pos_bkg))
        self.sam_prompt_encoder = PromptEncoder()
        self.sam_mask_decoder = Sam2Decoder()
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, 256))
        self.init_constants()

    def init_constants(self) -> None:
        self.register_buffer("pixel_mean", torch.tensor(MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(STD).view(-1, 1, 1), False)

    # ------------------------------------------------------------------ the seam's operations
    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def grid_hw(self) -> tuple[int, int]:
        return (64, 64)

    @property
    def low_res_hw(self) -> tuple[int, int]:
        return (256, 256)

    @property
    def encoder_dtype(self) -> torch.dtype:
        return self.image_encoder.trunk.patch_embed.proj.weight.dtype

    @property
    def encoder_compiled(self) -> bool:
        """Whether compile_parts has replaced the image encoder's forward (its features then
        differ from eager ones at rounding level: the embedding cache keeps them apart)."""
        return is_compiled(self.image_encoder)

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return self.image_encoder.state_dict()

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"image_embed": (256, 64, 64), "feat_s0": (32, 256, 256), "feat_s1": (64, 128, 128)}

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        return (self.img_size, self.img_size)  # a square: the aspect is not kept

    def resize(self, image: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        """H×W×3 uint8 → 1×3×1024×1024 float 0–1 (torchvision's Resize on a tensor: bilinear,
        antialiased)."""
        x = image.permute(2, 0, 1)[None].float() / 255.0
        return F.interpolate(x, size=input_hw, mode="bilinear", align_corners=False, antialias=True)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.pixel_mean) / self.pixel_std

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×1024×1024 → image_embed B×256×64×64 (with no_mem_embed), feat_s0, feat_s1."""
        # The two finer levels are used only through the decoder's 1×1 convs (conv_s0, conv_s1)
        # and take no top-down path: the neck's 1×1 conv and the decoder's compose into one,
        # applied to the trunk's features (a 256-channel map at 256² never built).
        levels = self.image_encoder(x.to(self.encoder_dtype), lateral_from=2)
        neck, dec = self.image_encoder.neck.convs, self.sam_mask_decoder
        s0 = _composed_conv(levels[0], neck[-1].conv, dec.conv_s0)
        s1 = _composed_conv(levels[1], neck[-2].conv, dec.conv_s1)
        embed = levels[2].float() + self.no_mem_embed.reshape(1, -1, 1, 1)
        return {"image_embed": embed, "feat_s0": s0, "feat_s1": s1}

    def decode(self, features, points, labels, boxes, mask_input, multimask, grid=None, min_iou=None):
        """As Sam.decode (sam2_decode)."""
        return sam2_decode(self.sam_prompt_encoder, self.sam_mask_decoder, features["image_embed"],
                           features["feat_s0"], features["feat_s1"], points, labels, boxes, mask_input, multimask,
                           min_iou, cache=getattr(features, "derived", None))

    def upscale_frame(self, input_hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        """One bilinear step from the 256² logits to the image (SAM 2's postprocess_masks):
        a 256² frame, all of it kept."""
        return 256, (256, 256)

    def upscale(self, low: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int]) -> torch.Tensor:
        """…×256×256 logits → …×H×W in one bilinear step (SAM 2's postprocess_masks)."""
        from ...upscale import upscale_in_frame

        return upscale_in_frame(self, low, input_hw, orig_hw)

    def clamp_low_res(self, low: torch.Tensor) -> torch.Tensor:
        return low.clamp(-LOW_RES_CLAMP, LOW_RES_CLAMP)

    def set_precision(self, dtype: torch.dtype) -> Sam2:
        self.image_encoder.to(dtype)
        return self

    def compile_parts(self, backend="inductor", on_failure=None) -> Sam2:
        """torch.compile the heavy parts, as Sam.compile_parts does for SAM 1: the image encoder
        (trunk and neck), the decoder's two-way transformer and its upscaling (one prompt's on
        the CPU, dynamic: the prompts the IoU filter keeps change per call). A part whose
        compilation fails runs uncompiled from then on, after on_failure(part name, error)."""
        enc, dec = self.image_encoder, self.sam_mask_decoder
        parts = (
            ("image encoder", enc, "forward", {}),
            ("decoder transformer", dec.transformer, "forward", {}),
            ("decoder upscaling", dec, "_upscale_batch", {"dynamic": True}),
        )
        compile_each(parts, backend, on_failure)
        return self


def sam2_decode(pe: PromptEncoder, decoder: Sam2Decoder, image_embed: torch.Tensor, feat_s0: torch.Tensor,
                feat_s1: torch.Tensor, points, labels, boxes, mask_input, multimask: bool, min_iou=None,
                cache: dict | None = None):
    """SAM 2's prompts to masks (SAM 3's point-and-box head too): boxes go to the prompt
    encoder as corner points (labels 2, 3) before the clicks, the padding point is always
    added; the single mask falls back to the best ambiguity mask when unstable. cache: the
    image's ImageFeatures.derived (Sam2Decoder.predict_masks)."""
    if boxes is not None:
        corners = boxes.reshape(-1, 2, 2)
        codes = torch.tensor([2, 3], device=corners.device).expand(corners.shape[0], 2)
        points = corners if points is None else torch.cat([corners, points], 1)
        labels = codes if labels is None else torch.cat([codes, labels], 1)
    sparse, dense = pe((points, labels) if points is not None else None, None, mask_input)
    if multimask:  # the three ambiguity masks: neither the single mask nor the object score is read
        out = decoder.predict_masks(image_embed, pe.get_dense_pe(), sparse, dense, feat_s0, feat_s1, min_iou,
                                    masks=(1, 2, 3), obj=False, cache=cache)
        return out[:2] if min_iou is None else (out[0], out[1], out[3])
    out = decoder.predict_masks(image_embed, pe.get_dense_pe(), sparse, dense, feat_s0, feat_s1, min_iou, obj=False,
                                cache=cache)
    low, iou = decoder.choose(out[0], out[1], multimask)
    if min_iou is not None:  # the decoder upscaled prompts with any of four IoUs above: now the chosen
        keep = (iou > min_iou).any(1).nonzero()[:, 0]
        return low[keep], iou[keep], out[3][keep]
    return low, iou


def _composed_conv(x: torch.Tensor, first: nn.Conv2d, second: nn.Conv2d) -> torch.Tensor:
    """second(first(x)) for two 1×1 convs, as one: B×C×H×W → float32 B×C''×H×W."""
    w1, w2 = first.weight.flatten(1).float(), second.weight.flatten(1).float()  # C'×C, C''×C'
    weight = (w2 @ w1)[..., None, None]
    bias = w2 @ first.bias.float() + second.bias.float()
    return F.conv2d(x.float(), weight, bias)


class Sam2Family:
    name = "sam2"

    def recognises(self, sd: dict) -> bool:
        return "image_encoder.trunk.patch_embed.proj.weight" in sd

    def ignored_keys(self, sd: dict) -> list[str]:
        return [k for k in sd if k.startswith(VIDEO_KEYS)]

    def infer_arch(self, sd: dict, source: str = "checkpoint") -> Sam2Arch:
        """The trunk's width and stages from the shapes (a block whose `proj` changes the
        width starts a stage); heads, windows and global blocks from Meta's config of them."""
        try:
            width = sd["image_encoder.trunk.patch_embed.proj.weight"].shape[0]
            bkg = tuple(sd["image_encoder.trunk.pos_embed"].shape[-2:])
        except KeyError as e:
            raise CheckpointError(f"{source}: not a SAM 2 checkpoint (missing key {e.args[0]})") from None
        blocks = sorted({int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))})
        if not blocks or blocks != list(range(len(blocks))):
            raise CheckpointError(f"{source}: Hiera blocks are missing or not numbered 0..N-1")
        starts = [i for i in blocks if f"image_encoder.trunk.blocks.{i}.proj.weight" in sd]
        stages = tuple(b - a for a, b in zip([0, *starts], [*starts, len(blocks)]))
        arch = SAM2_CONFIGS.get((width, stages))
        if arch is None:
            known = ", ".join(f"{w} wide, stages {list(s)}" for w, s in SAM2_CONFIGS)
            raise CheckpointError(f"{source}: a Hiera {width} wide with stages {list(stages)} is none of SAM 2's "
                                  f"({known})")
        if arch.pos_bkg != bkg:
            raise CheckpointError(f"{source}: positional embedding {bkg}, the config has {arch.pos_bkg}")
        return arch

    def build(self, arch: Sam2Arch, device: str | torch.device = "cpu") -> Sam2:
        with torch.device(device):
            return Sam2(arch)


FAMILY = Sam2Family()
