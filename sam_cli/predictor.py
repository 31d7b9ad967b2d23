"""Image → embedding once; prompts → masks as often as needed (what SamPredictor does)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from .embedding_cache import EmbeddingCache
from .modeling import Sam
from .transforms import resize_uint8, scale_coords, target_size


@dataclass
class Prediction:
    masks: np.ndarray  # B×M×H×W bool, full resolution
    iou: np.ndarray  # B×M float32 predicted IoU
    low_res: np.ndarray | None  # B×M×256×256 float32 logits (feed back as a mask prompt)


@functools.lru_cache(maxsize=64)
def _linear_resize_weights(n_in: int, n_out: int) -> torch.Tensor:
    """n_in×n_out float32 weights of PyTorch's linear resize (half-pixel centres, no
    antialias), read off its own kernel applied to identity rows."""
    return F.interpolate(torch.eye(n_in)[None], size=n_out, mode="linear", align_corners=False)[0]


@functools.lru_cache(maxsize=64)
def _axis_resize_matrix(n_low: int, n_mid: int, keep: int, n_out: int) -> torch.Tensor:
    """n_out×n_low matrix of one axis of: linear resize n_low → n_mid, keep the first `keep`
    samples, linear resize keep → n_out (half-pixel centres, no antialias).

    The weights are read off float32 interpolations of identity rows, so they are exactly the
    ones PyTorch's kernels use; the two stages are composed in float64. Each row has at most
    three non-zeros.
    """
    first = _linear_resize_weights(n_low, n_mid)[:, :keep]
    second = _linear_resize_weights(keep, n_out)
    return (first.double() @ second.double()).t().float().contiguous()


@functools.lru_cache(maxsize=64)
def _low_res_needed(n_low: int, n_mid: int, keep: int) -> int:
    """How many leading low-res samples the first `keep` of n_mid resized ones depend on."""
    used = _linear_resize_weights(n_low, n_mid)[:, :keep].abs().sum(1).nonzero()
    return int(used.max()) + 1


@functools.lru_cache(maxsize=64)
def _bands(
    n_low: int, n_mid: int, keep: int, n_out: int, rows_per_band: int = 256
) -> tuple[tuple[int, int, int, int], ...]:
    """(j0, j1, k0, k1) per band of rows_per_band output rows of `_axis_resize_matrix`'s
    matrix r: every non-zero of rows j0:j1 lies in columns k0:k1."""
    r = _axis_resize_matrix(n_low, n_mid, keep, n_out)
    nz = r != 0
    out = []
    for j0 in range(0, r.shape[0], rows_per_band):
        j1 = min(r.shape[0], j0 + rows_per_band)
        cols = nz[j0:j1].any(0).nonzero()
        out.append((j0, j1, int(cols[0]), int(cols[-1]) + 1) if len(cols) else (j0, j1, 0, 1))
    return tuple(out)


def _banded_matmul(r: torch.Tensor, bands, x: torch.Tensor) -> torch.Tensor:
    """r @ x for a resize matrix r (n_out×n_in, a few non-zeros per row, in `bands`) and
    x B×n_in×m → B×n_out×m, multiplying only each band's columns: upscaling 256 low-res
    samples to 4000 pixels reads ~18 of them per band of 256 pixels, 1/14 of a dense matmul's
    work. The terms left out are exact zeros."""
    out = x.new_empty(x.shape[0], r.shape[0], x.shape[2])
    for j0, j1, k0, k1 in bands:
        torch.matmul(r[j0:j1, k0:k1], x[:, k0:k1], out=out[:, j0:j1])
    return out


def upscale_logits(
    low_res: torch.Tensor, input_hw: tuple[int, int], orig_hw: tuple[int, int], img_size: int,
    low_size: int | None = None,
) -> torch.Tensor:
    """…×256×256 logits → …×H×W: to the padded input frame, crop the padding, to the original.
    low_res may also hold only the leading rows and columns of the low_size×low_size logits
    (Predictor.decode with image_part_only): the missing ones have weight 0 here. low_size
    defaults to img_size / 4, SAM's low-res mask size.

    The reference runs this as two bilinear interpolations through a 1024×1024 intermediate.
    Both are linear and separable, so the same map is Rh · logits · Rwᵀ with one small matrix
    per axis (`_axis_resize_matrix`): two banded matmuls (`_banded_matmul`), no intermediate,
    and no work on the padding.
    The result is a transposed view of W×H (column-major) storage: that order makes the second
    matmul 1.7x faster on a CPU, and it is the order COCO RLE reads pixels in, so encoding
    needs no transpose. Call .contiguous() where row-major memory matters.
    Results agree with the two-pass version to float32 rounding (max |Δ| ≈ 2e-6 on logits of
    magnitude 10, and no pixel changes side of the threshold: tests/test_masks.py).
    """
    lead = low_res.shape[:-2]
    lh, lw = low_res.shape[-2:]
    low_size = low_size or img_size // 4
    ah = (low_size, img_size, input_hw[0], orig_hw[0])
    aw = (low_size, img_size, input_hw[1], orig_hw[1])
    rh, rw = _axis_resize_matrix(*ah), _axis_resize_matrix(*aw)
    if rh[:, lh:].any() or rw[:, lw:].any():
        raise ValueError(f"low-res logits {lh}×{lw} miss rows or columns this image needs")
    bh, bw = _bands(*ah), _bands(*aw)  # all non-zeros are in the first lh, lw columns
    rh = rh[:, :lh].to(device=low_res.device, dtype=low_res.dtype)
    rw = rw[:, :lw].to(device=low_res.device, dtype=low_res.dtype)
    rows = _banded_matmul(rh, bh, low_res.reshape(-1, lh, lw))  # …×H×lw
    x = _banded_matmul(rw, bw, rows.transpose(-1, -2))  # …×W×H
    return x.reshape(*lead, orig_hw[1], orig_hw[0]).transpose(-1, -2)


#: Prompts per mask-decoder call on the CPU. After the first two-way layer every prompt has its
#: own 4 MB of image tokens, and the memory-bound steps (LayerNorm, adds, copies) run well only
#: while a call's share stays near the caches. `scripts/cpu_profile.py --decoder` (vit_b with
#: the benchmark's confident weights, 2 cores, session 6) gave, for calls of 8 / 16 / 24
#: prompts: automatic 32×32 default filters 13.71 / 13.06 / 12.89 s, filters off 18.65 /
#: 17.85 / 17.47 s, 64 boxes 0.94 / 0.88 / 0.90 s; 16 keeps most of the gain at 2/3 of 24's
#: memory. GPUs take a whole batch.
CPU_DECODER_BATCH = 16


class Predictor:
    def __init__(self, model: Sam, cache: EmbeddingCache | None = None) -> None:
        self.model = model
        self.cache = cache  # embeddings kept on disk (set_image, AutomaticMaskGenerator)
        self.features: torch.Tensor | None = None  # 1×256×64×64
        self.orig_hw: tuple[int, int] = (0, 0)
        self.input_hw: tuple[int, int] = (0, 0)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """H×W×3 uint8 RGB → (1×3×h×w float tensor on the model's device, (h, w) resized)."""
        h, w = image.shape[:2]
        input_hw = target_size(h, w, self.model.img_size)
        t = torch.from_numpy(np.ascontiguousarray(image))
        if self.device.type == "cuda":  # resize where the encoder reads it (exact int32 sums)
            t = t.to(self.device)
        resized = resize_uint8(t, input_hw)
        x = resized.to(self.device).permute(2, 0, 1)[None].float()
        return x, input_hw

    @torch.inference_mode()
    def embed(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Resized 1×3×h×w tensors → B×256×64×64 embeddings, one encoder batch."""
        x = torch.cat([self.model.preprocess(t) for t in images], dim=0)
        return self.model.image_encoder(x).float()  # the encoder casts to its own dtype

    def set_image(self, image: np.ndarray) -> None:
        """Embed an H×W×3 uint8 RGB image (or take its embedding from the cache)."""
        self.orig_hw = (image.shape[0], image.shape[1])
        key, input_hw, cached = self.lookup(image)
        if cached is not None:
            self.input_hw, self.features = input_hw, cached.to(self.device)
            return
        x, self.input_hw = self.prepare(image)
        self.features = self.embed([x])
        if self.cache is not None:
            self.cache.save_now(key, self.features)

    def lookup(self, image: np.ndarray) -> tuple[str, tuple[int, int], torch.Tensor | None]:
        """An H×W×3 image or crop in the embedding cache: (its key, "" without a cache; its
        size after the resize; the cached 1×C×h×w embedding on the CPU, or None)."""
        input_hw = target_size(image.shape[0], image.shape[1], self.model.img_size)
        if self.cache is None:
            return "", input_hw, None
        key = self.cache.key(image, input_hw)
        return key, input_hw, self.cache.load(key)

    def set_features(
        self, features: torch.Tensor, orig_hw: tuple[int, int], input_hw: tuple[int, int]
    ) -> None:
        self.features, self.orig_hw, self.input_hw = features, orig_hw, input_hw

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
        pe = self.model.prompt_encoder
        sparse, dense = pe(
            (points, labels) if points is not None else None, boxes, mask_input
        )
        grid = None
        if image_part_only:
            gh, gw = self.features.shape[-2:]
            low = pe.mask_input_size  # low-res logits per side
            per_cell = low[0] // gh
            img = self.model.img_size
            grid = (
                -(-_low_res_needed(low[0], img, self.input_hw[0]) // per_cell),
                -(-_low_res_needed(low[1], img, self.input_hw[1]) // per_cell),
            )
        return self.model.mask_decoder(
            self.features, pe.get_dense_pe(), sparse, dense, multimask, grid, min_iou
        )

    def predict(
        self, *, point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
        boxes: np.ndarray | None = None, mask_input: np.ndarray | None = None,
        multimask: bool = True, low_res: bool = True,
    ) -> Prediction:
        """Prompts in original-image pixels: points N×2 XY with labels N (1 fg, 0 bg), boxes
        B×4 XYXY (one object each, decoded together, in calls of CPU_DECODER_BATCH on the CPU;
        points, if any, apply to every box), mask_input 1×256×256 or B×1×256×256 low-res
        logits. Returns B objects × M masks.
        low_res=False skips the low-res logits that cover only padding (a non-square image's
        masks come out the same, cheaper) and returns no low_res."""
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
        parts = [
            self.decode(*(None if x is None else x[i : i + step] for x in (pts, lab, bx, mk)),
                        multimask, image_part_only=not low_res)
            for i in range(0, n_obj, step)
        ]
        low, iou = (torch.cat(x) for x in zip(*parts)) if len(parts) > 1 else parts[0]
        with torch.inference_mode():
            full = upscale_logits(low, self.input_hw, self.orig_hw, self.model.img_size)
            masks = (full > self.model.mask_threshold).contiguous()
        return Prediction(
            masks=masks.cpu().numpy(), iou=iou.float().cpu().numpy(),
            low_res=low.float().cpu().numpy() if low_res else None,
        )
