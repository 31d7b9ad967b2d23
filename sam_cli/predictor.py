"""Image → ImageFeatures once; prompts → masks as often as needed (what SamPredictor does),
for any model family (models/__init__.py: the seam)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .embedding_cache import EmbeddingCache
from .models.features import ImageFeatures, split_batch
from .transforms import scale_coords
from .upscale import low_res_needed


@dataclass
class Prediction:
    masks: np.ndarray  # B×M×H×W bool, full resolution
    iou: np.ndarray  # B×M float32 predicted IoU
    low_res: np.ndarray | None  # B×M×256×256 float32 logits (feed back as a mask prompt)
    index: np.ndarray | None = None  # B×M: which of the decoder's masks each is (--best-mask)


#: Prompts per mask-decoder call on the CPU. After the first two-way layer every prompt has its
#: own 4 MB of image tokens, and the memory-bound steps (LayerNorm, adds, copies) run well only
#: while a call's share stays near the caches. `scripts/cpu_profile.py --decoder` (vit_b with
#: the benchmark's confident weights, 2 cores, 2026-11-28) gave, for calls of 8 / 16 / 24
#: prompts: automatic 32×32 default filters 13.71 / 13.06 / 12.89 s, filters off 18.65 /
#: 17.85 / 17.47 s, 64 boxes 0.94 / 0.88 / 0.90 s; 16 keeps most of the gain at 2/3 of 24's
#: memory. GPUs take a whole batch.
CPU_DECODER_BATCH = 16
#: Prompts per decoder call in automatic mode on the CPU where the transformer runs factored
#: (models/sam1/factored.py: no per-prompt image tokens, so a call's memory is a quarter of the
#: plain path's). `scripts/cpu_profile.py --decoder --model sam2.1_hiera_tiny` (2 cores,
#: 2026-12-07), automatic 32×32, default filters, decoder seconds for 16 / 32: factored 10.85 /
#: 8.97, plain 13.62 / 15.42.
CPU_FACTORED_BATCH = 32
#: Which of the decoder's masks each object gets: "first" the single-mask output (best for a
#: box or several points), "best" the most confident of the three ambiguity masks (what the
#: paper scores for a lone click), "all" the three of them.
MASK_CHOICES = ("first", "best", "all")


def cpu_auto_decoder_batch(model: torch.nn.Module) -> int:
    """Prompts per decoder call for automatic mode on the CPU: CPU_FACTORED_BATCH where the
    model's decoder transformer runs factored, else CPU_DECODER_BATCH."""
    from .models.sam1 import factored
    from .models.sam1.transformer import TwoWayTransformer

    trs = [m for m in model.modules() if isinstance(m, TwoWayTransformer)]
    return CPU_FACTORED_BATCH if trs and all(factored.applies(t) for t in trs) else CPU_DECODER_BATCH


class Predictor:
    def __init__(self, model: torch.nn.Module, cache: EmbeddingCache | None = None) -> None:
        """model: a family's network (models/__init__.py)."""
        self.model = model
        self.cache = cache  # features kept on disk (set_image, AutomaticMaskGenerator)
        self.features: ImageFeatures | None = None

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def orig_hw(self) -> tuple[int, int]:
        return self.features.orig_hw if self.features is not None else (0, 0)

    @property
    def input_hw(self) -> tuple[int, int]:
        return self.features.input_hw if self.features is not None else (0, 0)

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """H×W×3 uint8 RGB → (1×3×h×w float tensor on the model's device, (h, w) resized)."""
        h, w = image.shape[:2]
        input_hw = self.model.input_size(h, w)
        t = torch.from_numpy(np.ascontiguousarray(image))
        if self.device.type == "cuda":  # resize where the encoder reads it (exact int32 sums)
            t = t.to(self.device)
        return self.model.resize(t, input_hw).to(self.device), input_hw

    @torch.inference_mode()
    def embed(self, images: list[torch.Tensor], orig_hws: list[tuple[int, int]]) -> list[ImageFeatures]:
        """Resized 1×3×h×w tensors (prepare's) of images (or crops) of sizes orig_hws →
        their ImageFeatures, from one encoder batch."""
        x = torch.cat([self.model.preprocess(t) for t in images], dim=0)
        sizes = [((t.shape[-2], t.shape[-1]), tuple(hw)) for t, hw in zip(images, orig_hws)]
        return split_batch(self.model.family, self.model.encode(x), sizes)

    def set_image(self, image: np.ndarray) -> None:
        """Encode an H×W×3 uint8 RGB image (or take its features from the cache)."""
        key, input_hw, cached = self.lookup(image)
        if cached is not None:
            self.features = cached.to(self.device)
            return
        x, _ = self.prepare(image)
        self.features = self.embed([x], [image.shape[:2]])[0]
        if self.cache is not None:
            self.cache.save_now(key, self.features)

    def lookup(self, image: np.ndarray) -> tuple[str, tuple[int, int], ImageFeatures | None]:
        """An H×W×3 image or crop in the embedding cache: (its key, "" without a cache; its
        size after the resize; its cached ImageFeatures on the CPU, or None)."""
        input_hw = self.model.input_size(image.shape[0], image.shape[1])
        if self.cache is None:
            return "", input_hw, None
        key = self.cache.key(image, input_hw)
        return key, input_hw, self.cache.load(key, input_hw, (image.shape[0], image.shape[1]))

    def set_features(self, features: ImageFeatures) -> None:
        self.features = features

    def to_input_frame(self, coords: np.ndarray) -> np.ndarray:
        return scale_coords(coords, self.orig_hw, self.input_hw)

    @torch.inference_mode()
    def decode(
        self, points: torch.Tensor | None, labels: torch.Tensor | None,
        boxes: torch.Tensor | None, mask_input: torch.Tensor | None, multimask: bool,
        *, image_part_only: bool = False, min_iou: float | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Prompts already in the input frame: points B×N×2, labels B×N, boxes B×4,
        mask_input B×1×256×256 or 1×1×256×256. Returns low-res logits B×M×256×256, iou B×M.

        image_part_only: compute only the low-res rows and columns that upscale_logits reads
        for this image (the rest covers padding), so logits are B×M×h×w with h, w ≤ 256;
        upscaling them gives the same masks as the full logits.
        min_iou: only the K prompts with a predicted IoU above it get logits: returns logits
        K×M×…, iou K×M and the K prompt indices (MaskDecoder.forward)."""
        if self.features is None:
            raise RuntimeError("set_image() must be called before decode()")
        grid = None
        if image_part_only:
            gh, _ = self.model.grid_hw
            low = self.model.low_res_hw  # low-res logits per side
            per_cell = low[0] // gh
            size, keep_hw = self.model.upscale_frame(self.input_hw)
            grid = (
                -(-low_res_needed(low[0], size, keep_hw[0]) // per_cell),
                -(-low_res_needed(low[1], size, keep_hw[1]) // per_cell),
            )
        return self.model.decode(self.features, points, labels, boxes, mask_input, multimask, grid, min_iou)

    @torch.inference_mode()
    def decode_chosen(
        self, points: torch.Tensor | None, labels: torch.Tensor | None, boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None, *, choice: str = "first", refine: bool = False,
        image_part_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """decode() with a choice of masks (MASK_CHOICES): "first" the single-mask output,
        "best" the most confident of the three ambiguity masks, "all" the three. refine: decode
        twice, the second time with the first pass's most confident low-res logits as the mask
        prompt, besides the same points and box (the paper's instance-segmentation setting;
        SamPredictor.predict called again with mask_input). Returns low-res logits B×M×…,
        iou B×M and the decoder's index of each mask B×M (M: 1, or 3 for "all")."""
        if choice not in MASK_CHOICES:
            raise ValueError(f"choice must be one of {MASK_CHOICES}")
        if refine:
            low, iou = self.decode(points, labels, boxes, mask_input, True)
            mask_input = low[torch.arange(low.shape[0], device=low.device), iou.argmax(1)][:, None]
        low, iou = self.decode(points, labels, boxes, mask_input, choice != "first",
                               image_part_only=image_part_only)
        index = torch.arange(low.shape[1], device=low.device).expand(low.shape[0], -1)
        if choice == "best":
            index = iou.argmax(1, keepdim=True)
            low = low.gather(1, index[..., None, None].expand(-1, -1, *low.shape[-2:]))
            iou = iou.gather(1, index)
        return low, iou, index

    def predict(
        self, *, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None, mask_input: np.ndarray | None = None,
        multimask: bool = True, low_res: bool = True, choice: str | None = None, refine: bool = False,
    ) -> Prediction:
        """Prompts in original-image pixels: points N×2 XY with labels N (1 fg, 0 bg), boxes
        B×4 XYXY (one object each, decoded together, in calls of CPU_DECODER_BATCH on the CPU;
        points, if any, apply to every box), mask_input 1×256×256 or B×1×256×256 low-res
        logits. Returns B objects × M masks. choice and refine: as decode_chosen (choice
        defaults to "all" with multimask, else "first").
        low_res=False skips the low-res logits that cover only padding (a non-square image's
        masks come out the same, cheaper) and returns no low_res."""
        parts = list(self.predict_chunks(point_coords=point_coords, point_labels=point_labels,
                                         boxes=boxes, mask_input=mask_input, multimask=multimask,
                                         low_res=low_res, choice=choice, refine=refine))
        if len(parts) == 1:
            return parts[0]
        return Prediction(
            masks=np.concatenate([p.masks for p in parts]), iou=np.concatenate([p.iou for p in parts]),
            low_res=np.concatenate([p.low_res for p in parts]) if low_res else None,
            index=np.concatenate([p.index for p in parts]),
        )

    def predict_chunks(
        self, *, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None, mask_input: np.ndarray | None = None,
        multimask: bool = True, low_res: bool = True, choice: str | None = None, refine: bool = False,
    ) -> Iterator[Prediction]:
        """predict(), one decoder call's objects at a time (CPU_DECODER_BATCH boxes on the
        CPU, all of them elsewhere), in object order: full-size masks are held for one chunk,
        so memory does not grow with the number of boxes × the image's pixels."""
        dev = self.device
        pts = lab = bx = mk = None
        n_obj = 1
        if boxes is not None and len(boxes):
            bx = torch.as_tensor(
                self.to_input_frame(np.asarray(boxes, np.float64).reshape(-1, 2, 2)).reshape(-1, 4),
                dtype=torch.float32, device=dev,
            )
            n_obj = bx.shape[0]
        if point_coords is not None and len(point_coords):
            pts = torch.as_tensor(
                self.to_input_frame(np.asarray(point_coords, np.float64)),
                dtype=torch.float32, device=dev,
            )[None].expand(n_obj, -1, -1)
            lab = torch.as_tensor(np.asarray(point_labels), dtype=torch.int64, device=dev)
            lab = lab[None].expand(n_obj, -1)
        if mask_input is not None:
            mk = torch.as_tensor(np.asarray(mask_input, np.float32), device=dev)
            mk = mk.reshape(-1, 1, *mk.shape[-2:])
            if mk.shape[0] == 1 and n_obj > 1:
                mk = mk.expand(n_obj, -1, -1, -1)
        step = CPU_DECODER_BATCH if dev.type == "cpu" else n_obj
        for i in range(0, n_obj, step):
            low, iou, index = self.decode_chosen(
                *(None if x is None else x[i : i + step] for x in (pts, lab, bx, mk)),
                choice=choice or ("all" if multimask else "first"), refine=refine,
                image_part_only=not low_res)
            with torch.inference_mode():
                full = self.model.upscale(low, self.input_hw, self.orig_hw)
                masks = (full > self.model.mask_threshold).contiguous()
                del full
            yield Prediction(
                masks=masks.cpu().numpy(), iou=iou.float().cpu().numpy(),
                low_res=self.model.clamp_low_res(low.float()).cpu().numpy() if low_res else None,
                index=index.cpu().numpy(),
            )
