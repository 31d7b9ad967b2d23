"""The composite model: it only holds its three parts and the normalisation constants."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..compiled import compile_each, is_compiled
from ..features import AutomaticStyle
from .image_encoder import ImageEncoderViT
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .transformer import TwoWayTransformer

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class Sam(nn.Module):
    """SAM 1: a ViT image encoder, the prompt encoder and the two-way mask decoder. Its
    features are one 1×256×64×64 "image_embed" (models/__init__.py: the family seam)."""

    family = "sam1"
    automatic = AutomaticStyle(pred_iou_thresh=0.88, small_regions="full_res")
    mask_threshold: float = 0.0

    def __init__(
        self, image_encoder: ImageEncoderViT, prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.init_constants()

    def init_constants(self) -> None:
        """The buffers checkpoints do not hold (persistent=False, as in Meta's files): pixel
        mean and std, made again after a load onto the meta device."""
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return self.image_encoder.img_size

    @property
    def grid_hw(self) -> tuple[int, int]:
        return tuple(self.prompt_encoder.image_embedding_size)

    @property
    def low_res_hw(self) -> tuple[int, int]:
        return tuple(self.prompt_encoder.mask_input_size)

    @property
    def encoder_dtype(self) -> torch.dtype:
        return self.image_encoder.blocks[0].attn.qkv.weight.dtype

    def encoder_state(self) -> dict[str, torch.Tensor]:
        return self.image_encoder.state_dict()

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"image_embed": (self.prompt_encoder.embed_dim, *self.grid_hw)}

    def input_size(self, h: int, w: int) -> tuple[int, int]:
        """An h×w image's size after the resize: the long side to img_size, aspect kept."""
        from ...transforms import target_size

        return target_size(h, w, self.img_size)

    def resize(self, image: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
        """H×W×3 uint8 → 1×3×h×w float 0–255 (Pillow's bilinear, as the reference resizes)."""
        from ...transforms import resize_uint8

        return resize_uint8(image, input_hw).to(self.device).permute(2, 0, 1)[None].float()

    def upscale_frame(self, input_hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        """Low-res logits reach the image through the padded img_size² frame, its input_hw
        part kept (the rest is padding), as the reference does."""
        return self.img_size, input_hw

    def upscale(self, low: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int]) -> torch.Tensor:
        """…×256×256 logits → …×H×W: through the padded 1024 frame, as the reference does."""
        from ...upscale import upscale_in_frame

        return upscale_in_frame(self, low, input_hw, orig_hw)

    def clamp_low_res(self, low: torch.Tensor) -> torch.Tensor:
        return low

    def encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """B×3×S×S (preprocess's) → {"image_embed": B×256×64×64 float32}."""
        return {"image_embed": self.image_encoder(x).float()}  # the encoder casts to its own dtype

    def decode(
        self, features, points: torch.Tensor | None, labels: torch.Tensor | None,
        boxes: torch.Tensor | None, mask_input: torch.Tensor | None, multimask: bool,
        grid: tuple[int, int] | None = None, min_iou: float | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """features: an ImageFeatures of this family; prompts in its input frame (points
        B×N×2 XY, labels B×N, boxes B×4 XYXY, mask_input B×1×256×256). Returns low-res logits
        B×M×h×w and IoU B×M (MaskDecoder.forward: grid and min_iou)."""
        pe = self.prompt_encoder
        sparse, dense = pe((points, labels) if points is not None else None, boxes, mask_input)
        return self.mask_decoder(features["image_embed"], pe.get_dense_pe(), sparse, dense, multimask,
                                 grid, min_iou, cache=getattr(features, "derived", None))

    def set_precision(self, dtype: torch.dtype) -> Sam:
        """Run the heavy parts in `dtype` (bfloat16 on GPUs): the image encoder's attention
        and MLPs, the image side of the decoder's two-way transformer and its upscaling
        convs. The encoder's residual stream and neck, the prompt encoder (Fourier features
        of pixel coordinates), the transformer's prompt tokens, the IoU head and the
        hypernetwork MLPs stay float32, and masks and IoU come out float32, so thresholds
        (IoU 0.88, stability, 0 logits) compare full precision numbers."""
        self.image_encoder.set_precision(dtype)
        self.mask_decoder.transformer.set_precision(dtype)
        self.mask_decoder.output_upscaling.to(dtype)
        return self

    def compile_parts(
        self, backend: str | Callable = "inductor",
        on_failure: Callable[[str, BaseException], None] | None = None,
    ) -> Sam:
        """torch.compile the heavy parts: the image encoder, the decoder's two-way transformer
        and its upscaling (weights, their names and the outputs' meaning unchanged). The
        first call compiles (about a minute for vit_h on a GPU), so it pays off over a folder,
        not for one image; a later batch of another size (the last, smaller one) compiles
        once more, after which that size is dynamic.

        A part whose compilation fails (no C compiler for Inductor on a CPU, say) runs
        uncompiled from then on, after on_failure(part name, error)."""
        enc, dec = self.image_encoder, self.mask_decoder
        parts = (
            ("image encoder", enc, "forward", {}),
            ("decoder transformer", dec.transformer, "forward", {}),
            # The CPU's per-prompt loop stays in Python. Dynamic from the start: the prompts
            # the IoU filter keeps and the grid cells an image covers change per call.
            ("decoder upscaling", dec, "_upscale_batch", {"dynamic": True}),
        )
        compile_each(parts, backend, on_failure)
        return self

    @property
    def encoder_compiled(self) -> bool:
        """Whether compile_parts has replaced the image encoder's forward: its embeddings
        then differ from eager ones at rounding level."""
        return is_compiled(self.image_encoder)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×h×w RGB 0–255 (long side already resized to img_size) → normalised, padded
        bottom/right to B×3×img_size×img_size."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return nn.functional.pad(x, (0, self.img_size - w, 0, self.img_size - h))


def build_sam(
    *, embed_dim: int, depth: int, num_heads: int, global_attn_indexes: tuple[int, ...],
    img_size: int = 1024, patch_size: int = 16, window_size: int = 14,
    prompt_embed_dim: int = 256,
) -> Sam:
    """Build an (uninitialised-weights) SAM of the given encoder architecture."""
    grid = img_size // patch_size
    encoder = ImageEncoderViT(
        img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
        num_heads=num_heads, out_chans=prompt_embed_dim, window_size=window_size,
        global_attn_indexes=global_attn_indexes,
    )
    prompt = PromptEncoder(
        embed_dim=prompt_embed_dim, image_embedding_size=(grid, grid),
        input_image_size=(img_size, img_size), mask_in_chans=16,
    )
    decoder = MaskDecoder(
        transformer_dim=prompt_embed_dim,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=prompt_embed_dim, num_heads=8, mlp_dim=2048,
        ),
    )
    return Sam(encoder, prompt, decoder)
