"""A toy model family: the whole of what a family adds to sam, in one module (plus a registry
entry, which `registry_entry` makes). Its network is a few tensors with an analytic decoder,
so tests can say what its masks must be:

- encoder: two feature levels, "coarse" B×C×64×64 (a 16×16 patch conv) and "fine"
  B×C×128×128 (8×8 mean pool then a 1×1 conv): ImageFeatures with more than one tensor;
- decoder: a click gives discs around the first click (input-frame radii `toy_decoder.radius`,
  one per mask, grown by up to 10 % where the coarse features at the click are high), a box
  its inside; predicted IoUs are sigmoid(`toy_decoder.iou_bias`);
- its checkpoints carry `video.*` tensors the image path ignores (as SAM 2's do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from sam_cli.errors import CheckpointError
from sam_cli.models.features import AutomaticStyle

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


@dataclass(frozen=True)
class ToyArch:
    channels: int = 4
    patch: int = 16
    img_size: int = 1024


class ToyNet(nn.Module):
    family = "toy"
    mask_threshold = 0.0

    def __init__(self, arch: ToyArch) -> None:
        super().__init__()
        c, p = arch.channels, arch.patch
        self.arch = arch
        self.toy_encoder = nn.Module()
        self.toy_encoder.proj = nn.Conv2d(3, c, p, stride=p, bias=False)
        self.toy_encoder.pos = nn.Parameter(torch.zeros(1, c, arch.img_size // p, arch.img_size // p))
        self.toy_encoder.fine = nn.Conv2d(3, c, 1, bias=False)
        self.toy_decoder = nn.Module()
        self.toy_decoder.radius = nn.Parameter(torch.tensor([40.0, 80.0, 120.0]))
        self.toy_decoder.iou_bias = nn.Parameter(torch.tensor([1.0, 2.0, 0.5]))
        self.init_constants()

    def init_constants(self) -> None:
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)

    # ---------------------------------------------------------------- the seam's operations
    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.arch.img_size

    @property
    def grid_hw(self) -> tuple[int, int]:
        g = self.arch.img_size // self.arch.patch
        return (g, g)

    @property
    def low_res_hw(self) -> tuple[int, int]:
        return (self.arch.img_size // 4, self.arch.img_size // 4)

    @property
    def encoder_dtype(self) -> torch.dtype:
        return self.toy_encoder.proj.weight.dtype

    @property
    def encoder_compiled(self) -> bool:
        return False

    automatic = AutomaticStyle(pred_iou_thresh=0.88, small_regions="full_res")  # sam auto may run it

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        from sam_cli.transforms import target_size

        return target_size(h, w, self.img_size)

    def resize(self, image: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        x = image.permute(2, 0, 1)[None].float()
        return F.interpolate(x, size=input_hw, mode="bilinear", align_corners=False)

    def upscale_frame(self, input_hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        return self.img_size, input_hw

    def upscale(self, low: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int]) -> torch.Tensor:
        from sam_cli.upscale import upscale_in_frame

        return upscale_in_frame(self, low, input_hw, orig_hw)

    def clamp_low_res(self, low: torch.Tensor) -> torch.Tensor:
        return low

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return self.toy_encoder.state_dict()

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        g = self.grid_hw[0]
        return {"coarse": (self.arch.channels, g, g), "fine": (self.arch.channels, 2 * g, 2 * g)}

    def set_precision(self, dtype: torch.dtype) -> ToyNet:
        self.toy_encoder.to(dtype)
        return self

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.to(self.encoder_dtype)
        coarse = self.toy_encoder.proj(x) + self.toy_encoder.pos
        fine = self.toy_encoder.fine(F.avg_pool2d(x, self.arch.patch // 2))
        return {"coarse": coarse.float(), "fine": fine.float()}

    def decode(self, features, points, labels, boxes, mask_input, multimask, grid=None, min_iou=None):
        n_low = self.low_res_hw[0]
        cell = self.img_size / n_low  # input pixels per low-res logit
        centres = (torch.arange(n_low, device=self.device, dtype=torch.float32) + 0.5) * cell
        yy, xx = centres[:, None], centres[None, :]
        b = (points if points is not None else boxes).shape[0]
        m = 3 if multimask else 1
        picks = [1, 2, 0] if multimask else [0]
        logits = []
        for i in range(b):
            if boxes is not None:
                x0, y0, x1, y1 = boxes[i].tolist()
                inside = torch.minimum(torch.minimum(xx - x0, x1 - xx), torch.minimum(yy - y0, y1 - yy))
                logits.append(inside.expand(m, -1, -1))
                continue
            real = (labels[i] >= 0).nonzero()
            x, y = points[i, int(real[0])].tolist()
            cy = min(int(y // self.arch.patch), self.grid_hw[0] - 1)
            cx = min(int(x // self.arch.patch), self.grid_hw[1] - 1)
            grow = 1.0 + 0.1 * math.tanh(float(features["coarse"][0, 0, cy, cx]))
            dist = torch.sqrt((xx - x) ** 2 + (yy - y) ** 2)
            logits.append(torch.stack([self.toy_decoder.radius[k] * grow - dist for k in picks]))
        low = torch.stack(logits)
        if mask_input is not None:
            low = low + 1e-3 * mask_input
        iou = torch.sigmoid(self.toy_decoder.iou_bias[picks]).expand(b, -1)
        if grid is not None:
            per = n_low // self.grid_hw[0]
            low = low[..., : grid[0] * per, : grid[1] * per]
        low, iou = low.contiguous(), iou.contiguous()
        if min_iou is None:
            return low, iou
        keep = (iou > min_iou).any(1).nonzero()[:, 0]
        return low[keep], iou[keep], keep


class ToyFamily:
    name = "toy"

    def recognises(self, sd: dict) -> bool:
        return "toy_encoder.proj.weight" in sd

    def ignored_keys(self, sd: dict) -> list[str]:
        return [k for k in sd if k.startswith("video.")]

    def infer_arch(self, sd: dict, source: str = "checkpoint") -> ToyArch:
        try:
            proj, pos = sd["toy_encoder.proj.weight"], sd["toy_encoder.pos"]
        except KeyError as e:
            raise CheckpointError(f"{source}: not a toy checkpoint (missing key {e.args[0]})") from None
        return ToyArch(channels=proj.shape[0], patch=proj.shape[-1], img_size=pos.shape[-1] * proj.shape[-1])

    def build(self, arch: ToyArch, device: str | torch.device = "cpu") -> ToyNet:
        with torch.device(device):
            return ToyNet(arch)


FAMILY = ToyFamily()


def save_toy_checkpoint(path: Path, seed: int = 0) -> Path:
    """A toy checkpoint in a family's upstream layout: the model's tensors under "model",
    beside tensors the image path does not use."""
    torch.manual_seed(seed)
    net = ToyNet(ToyArch())
    with torch.no_grad():
        net.toy_encoder.proj.weight.normal_(0, 0.02)
        net.toy_encoder.fine.weight.normal_(0, 0.1)
    sd = dict(net.state_dict())
    sd["video.memory.weight"] = torch.zeros(2, 2)
    torch.save({"model": sd}, path)
    return path


def registry_entry(path: Path):
    """A registry entry for the toy weights in `path` (its size and sha256)."""
    import hashlib

    from sam_cli.registry import ModelType, WeightsSpec

    data = Path(path).read_bytes()
    return ModelType("toy_small", "toy", ToyArch(), WeightsSpec(Path(path).name, len(data),
                     hashlib.sha256(data).hexdigest()), 0.0, 0)

