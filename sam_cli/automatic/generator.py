"""The automatic mask generator, split into steps a streaming pipeline can batch:

    prepare_crops(image)        → CropInput per crop (resized pixels, boxes, points)
    embed_crops([...])          → ImageFeatures per crop: the encoder, many crops / images per batch
    decode_crop(features, crop) → CropMasks: filtered masks of one crop as RLE
    finalize(crops, hw)         → MaskRecord list (NMS across crops, small-region cleanup)

Low-res logits are filtered by predicted IoU before anything is upscaled. On the CPU the
full-resolution stability, boxes and RLEs then come from TiledMasks, which upscales only the
tiles along each mask's boundaries (noise-like masks, a random model's, go dense); elsewhere
whole masks are upscaled in chunks sized by a memory budget, and (with NMS on) their run
edges wait for in-crop NMS: only the survivors' low-res logits are upscaled again and encoded.
Either way memory never scales with the number of candidates at full resolution. Results
equal the reference algorithm's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch.nn import functional as F
from torch.profiler import record_function

from .. import masks as M
from ..embedding_cache import EmbeddingCache
from ..errors import PromptError
from ..masks import MaskRecord
from ..models.features import ImageFeatures
from ..predictor import Predictor, cpu_auto_decoder_batch
from ..transforms import scale_coords
from ..upscale import upscale_in_frame
from .grids import crop_boxes, layer_point_grids
from .tiled import TiledMasks

#: Masks per TiledMasks call: at 12 MP its working memory is ~2 MB per mask plus 4 KB per
#: upscaled tile (6 MB per mask at TILED_UNDECIDED_MAX).
TILED_MASKS_PER_CALL = 16
#: Above this share of tiles to upscale, upscaling whole masks is cheaper (noise-like masks
#: of random weights: `scripts/cpu_profile.py --masks`).
TILED_UNDECIDED_MAX = 0.5


#: Limits of AmgSettings.check: more crop layers or grid points can only exhaust memory.
MAX_CROP_LAYERS = 3
MAX_POINTS_PER_SIDE = 1024


@dataclass(frozen=True)
class AmgSettings:
    points_per_side: int = 32
    points_per_batch: int | None = None  # None: 64 on the CPU (the reference's), 256 on a GPU
    pred_iou_thresh: float | None = None  # None: the family's (AutomaticStyle: 0.88 SAM 1, 0.8 SAM 2)
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    #: three masks per point (the ambiguity outputs), or the single-mask output (SAM 2's
    #: multimask_output; with SAM 2 the dynamic fallback to the most stable of the three)
    multimask: bool = True
    #: SAM 2's use_m2m: decode each candidate again with its own low-res logits as the mask
    #: prompt (single-mask output), and filter the refined masks
    use_m2m: bool = False

    def resolved(self, style) -> AmgSettings:
        """These settings with the family's defaults (AutomaticStyle) where None."""
        if self.pred_iou_thresh is None:
            return replace(self, pred_iou_thresh=style.pred_iou_thresh)
        return self

    def check(self) -> AmgSettings:
        """Raise PromptError naming the first setting (as its option, --points-per-side) that
        is out of range; the settings themselves otherwise."""
        def bad(name: str, why: str) -> PromptError:
            return PromptError(f"--{name.replace('_', '-')} {getattr(self, name)}: {why}")

        for name in ("points_per_side", "crop_n_points_downscale_factor"):
            if getattr(self, name) < 1:
                raise bad(name, "must be at least 1")
        if self.points_per_batch is not None and self.points_per_batch < 1:
            raise bad("points_per_batch", "must be at least 1")
        for name in ("crop_n_layers", "min_mask_region_area"):
            if getattr(self, name) < 0:
                raise bad(name, "must not be negative")
        for name in ("pred_iou_thresh", "stability_score_thresh", "stability_score_offset",
                     "box_nms_thresh", "crop_nms_thresh", "crop_overlap_ratio"):
            if getattr(self, name) is not None and not math.isfinite(getattr(self, name)):
                raise bad(name, "must be a finite number")
        for name in ("pred_iou_thresh", "stability_score_thresh"):
            if getattr(self, name) is not None and not 0.0 <= getattr(self, name) <= 1.0:
                raise bad(name, "must be from 0 (off) to 1")
        for name in ("box_nms_thresh", "crop_nms_thresh"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise bad(name, "must be above 0 and at most 1 (1: off)")
        if not 0.0 <= self.crop_overlap_ratio < 1.0:
            raise bad("crop_overlap_ratio", "must be from 0 to below 1")
        if self.stability_score_offset < 0:
            raise bad("stability_score_offset", "must not be negative")
        # Beyond these a run can only exhaust memory: every crop of an image is prepared at
        # once (4^i crops in layer i, 12 MB each), and the grid is points-per-side² prompts.
        if self.crop_n_layers > MAX_CROP_LAYERS:
            raise bad("crop_n_layers", f"must be at most {MAX_CROP_LAYERS} "
                      f"({sum(4**i for i in range(MAX_CROP_LAYERS + 1))} crops an image)")
        if self.points_per_side > MAX_POINTS_PER_SIDE:
            raise bad("points_per_side", f"must be at most {MAX_POINTS_PER_SIDE}")
        return self


@dataclass
class FilterCounts:
    """How many masks passed each filter of automatic mode (summed over a run)."""

    candidates: int = 0  # three per point prompt (one without multimask)
    iou_kept: int = 0  # above pred_iou_thresh
    stable_kept: int = 0  # and above stability_score_thresh, not on a crop's inner edge

    def why_none(self, s: AmgSettings) -> str | None:
        """Why a run kept no mask, when the filters took them all (None otherwise)."""
        if not self.candidates or self.stable_kept:
            return None
        if not self.iou_kept:
            return (f"no mask kept: all {self.candidates} candidate masks were below --pred-iou-thresh "
                    f"{s.pred_iou_thresh:g} (random or untrained weights? --pred-iou-thresh 0 "
                    "--stability-score-thresh 0 keep them)")
        return (f"no mask kept: of {self.candidates} candidate masks, {self.iou_kept} passed --pred-iou-thresh "
                f"{s.pred_iou_thresh:g} and none --stability-score-thresh {s.stability_score_thresh:g} "
                "(--stability-score-thresh 0 keeps them)")


@dataclass
class CropInput:
    box: list[int]  # XYXY half-open, in the image
    layer: int
    pixels: torch.Tensor | None  # 1×3×h×w resized crop, 0–255; None when `features` is set
    input_hw: tuple[int, int]
    crop_hw: tuple[int, int]
    points: np.ndarray  # P×2 XY in crop pixels
    cache_key: str = ""  # in the predictor's embedding cache ("" without one)
    features: ImageFeatures | None = None  # from the cache (on the CPU)


@dataclass(frozen=True, eq=False)
class _Deferred:
    """A mask whose run edges are built only if it survives in-crop NMS, from its low-res
    logits h×w (the dense path; the mask is upscaled again then)."""

    logits: torch.Tensor


@dataclass
class CropMasks:
    box: list[int]
    # M.RunEdges or _Deferred until in-crop NMS, then RLE dicts
    rles: list = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)  # XYXY in the image frame
    iou: list[float] = field(default_factory=list)
    stability: list[float] = field(default_factory=list)
    points: list[np.ndarray] = field(default_factory=list)


class AutomaticMaskGenerator:
    def __init__(
        self, model: torch.nn.Module, settings: AmgSettings | None = None, *,
        upscale_budget_bytes: int = 512 << 20, logits_budget_bytes: int = 1 << 30,
        decoder_batch: int | None = None, embedding_cache: EmbeddingCache | None = None,
        on_points: Callable[[int], None] | None = None,
    ) -> None:
        self.model = model
        self.style = model.automatic
        self.s = (settings or AmgSettings()).resolved(self.style)
        #: --min-mask-region-area on the low-res logits (SAM 2) instead of the final masks
        self.low_res_cleanup = self.style.small_regions == "low_res" and self.s.min_mask_region_area > 0
        self.predictor = Predictor(model, embedding_cache)
        self.grids = layer_point_grids(
            self.s.points_per_side, self.s.crop_n_layers, self.s.crop_n_points_downscale_factor
        )
        self.budget = upscale_budget_bytes
        self.logits_budget = logits_budget_bytes
        self.on_cpu = self.predictor.device.type == "cpu"
        # Full-resolution outputs: upscaled along mask boundaries only on the CPU (TiledMasks),
        # dense on accelerators, where upscaling every pixel costs little.
        self.tiled = self.on_cpu
        # Masks do not depend on it; a GPU decodes 256 prompts per call 1.5x faster than 64
        # (vit_h, bf16, H200: scripts/gpu_profile.py) for about 1.3 GB more memory.
        self.points_per_batch = self.s.points_per_batch or (64 if self.on_cpu else 256)
        # Prompts per decoder call: the whole point batch on accelerators, a few on the CPU.
        self.decoder_batch = decoder_batch or (cpu_auto_decoder_batch(model) if self.on_cpu else None)
        #: Called with the number of point prompts just decoded: progress within an image,
        #: which on a CPU takes a minute (the run engine's progress bar shows it).
        self.on_points = on_points
        #: masks of the run so far, at each filter: the decoder's candidates, those above
        #: pred_iou_thresh, those also stable enough and inside their crop (FilterCounts)
        self.counts = FilterCounts()

    # ------------------------------------------------------------------------- steps
    def prepare_crops(self, image: np.ndarray) -> list[CropInput]:
        """H×W×3 uint8 RGB → one CropInput per crop box, in the reference's order. Crop boxes
        of no pixels (crop layers on an image a few pixels wide) are left out."""
        out = []
        for box, layer in crop_boxes(image.shape[:2], self.s.crop_n_layers, self.s.crop_overlap_ratio):
            x0, y0, x1, y1 = box
            if x1 <= x0 or y1 <= y0:
                continue
            crop = image[y0:y1, x0:x1]
            crop_hw = (y1 - y0, x1 - x0)
            points = self.grids[layer] * np.array(crop_hw)[None, ::-1]
            # With an embedding cache, a crop already embedded is neither resized nor encoded.
            key, input_hw, cached = self.predictor.lookup(crop)
            if cached is not None:
                out.append(CropInput(box, layer, None, input_hw, crop_hw, points, key, cached))
                continue
            pixels, input_hw = self.predictor.prepare(crop)
            out.append(CropInput(box, layer, pixels, input_hw, crop_hw, points, key))
        return out

    def embed_crops(self, crops: list[CropInput], batch_size: int = 1) -> list[ImageFeatures]:
        """The ImageFeatures of crops (of one or several images), in order: those the cache
        had, and the others from the encoder in batches of batch_size crops (then put in the
        cache)."""
        dev = self.predictor.device
        feats: list[ImageFeatures | None] = [
            None if c.features is None else c.features.to(dev) for c in crops
        ]
        todo = [i for i, c in enumerate(crops) if c.features is None]
        cache = self.predictor.cache
        for a in range(0, len(todo), batch_size):
            idx = todo[a : a + batch_size]
            emb = self.predictor.embed([crops[i].pixels for i in idx], [crops[i].crop_hw for i in idx])
            for i, e in zip(idx, emb):
                feats[i] = e
                if cache is not None and crops[i].cache_key:
                    cache.save(crops[i].cache_key, e)
        return feats  # type: ignore[return-value]

    @torch.inference_mode()
    def decode_crop(
        self, features: ImageFeatures, crop: CropInput, orig_hw: tuple[int, int]
    ) -> CropMasks:
        """features: this crop's → its masks after filters and in-crop NMS.

        Point batches are decoded back to back and their low-res logits kept on the device,
        a group of batches at a time: the mask-level IoU filter, which needs the host to learn
        how many masks survive, then waits for the device once per group instead of once per
        batch (on a GPU, one group holds a whole 32×32 grid). The masks and their order are
        the same for any grouping."""
        s = self.s
        p = self.predictor
        p.set_features(features)
        result = CropMasks(crop.box)
        dev = p.device
        n = len(crop.points)
        group = self.points_per_batch * self._batches_per_group()
        for g0 in range(0, n, group):
            pts = crop.points[g0 : g0 + group]
            in_pts = torch.as_tensor(
                scale_coords(pts, crop.crop_hw, crop.input_hw), dtype=torch.float32, device=dev
            )[:, None, :]
            labels = torch.ones(in_pts.shape[:2], dtype=torch.int64, device=dev)
            # the labels name the steps in torch.profiler tables (scripts/gpu_profile.py)
            with record_function("sam.decode"):
                # K×M×h×w, K×M, K (M: 3, or 1 without multimask)
                low, iou, prompt_idx = self._decode_points(in_pts, labels, s.multimask, filtered=not s.use_m2m)
                point_idx = prompt_idx.repeat_interleave(iou.shape[1])
                low, iou = low.flatten(0, 1), iou.flatten(0, 1).float()
                if s.use_m2m:  # each mask decoded again with itself as the mask prompt
                    low, iou = self._refine(in_pts[point_idx], low)
                if s.pred_iou_thresh > 0.0:
                    keep = iou > s.pred_iou_thresh
                    low, iou, point_idx = low[keep], iou[keep], point_idx[keep]
                pts_kept = pts[point_idx.cpu().numpy()]
                if self.low_res_cleanup and low.shape[0]:
                    area = s.min_mask_region_area
                    low = M.fill_holes_and_sprinkles(low, self.model.mask_threshold, area, area)
            self.counts.candidates += len(pts) * (3 if s.multimask else 1)
            self.counts.iou_kept += low.shape[0]
            before = len(result.rles)
            with record_function("sam.full_res"):
                self._upscale_and_filter(low, iou, pts_kept, crop, orig_hw, result)
            self.counts.stable_kept += len(result.rles) - before
            if self.on_points is not None:
                self.on_points(len(pts))
        with record_function("sam.nms"):
            self._nms_in_crop(result, crop, orig_hw)
        return result

    def _batches_per_group(self) -> int:
        """Point batches whose low-res logits are held at once: 1 on the CPU (memory stays
        at one batch), else as many as `logits_budget` bytes of float32 logits allow."""
        if self.on_cpu:
            return 1
        low = self.model.low_res_hw
        per_batch = self.points_per_batch * 3 * low[0] * low[1] * 4
        return max(1, self.logits_budget // per_batch)

    def _decode_points(
        self, points: torch.Tensor, labels: torch.Tensor, multimask: bool = True, filtered: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """P×1×2 points → logits K×M×h×w, IoU K×M and the indices K of the prompts that have
        a mask above pred_iou_thresh: the decoder does not upscale the others, whose masks the
        filter would drop anyway (K = P when the filter is off or `filtered` is False; then the
        logits are whole, 256×256, as a mask prompt needs them). Decoder calls take
        `decoder_batch` prompts: points_per_batch on accelerators; cpu_auto_decoder_batch on the
        CPU, so the decoder's activations stay near the caches. Results are the same for any
        split."""
        step = self.decoder_batch or self.points_per_batch
        thr = self.s.pred_iou_thresh if self.s.pred_iou_thresh > 0.0 and filtered else None
        lows, ious, idx = [], [], []
        for a in range(0, points.shape[0], step):
            out = self.predictor.decode(
                points[a : a + step], labels[a : a + step], None, None, multimask,
                image_part_only=filtered, min_iou=thr,
            )
            lows.append(out[0])
            ious.append(out[1])
            idx.append(out[2] + a if thr is not None else
                       torch.arange(a, a + out[1].shape[0], device=points.device))
        if len(lows) == 1:
            return lows[0], ious[0], idx[0]
        return torch.cat(lows), torch.cat(ious), torch.cat(idx)

    def _refine(self, points: torch.Tensor, low: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """--use-m2m: K×1×2 points and their masks' whole low-res logits K×256×256 → the
        single-mask output decoded with those logits (clamped as the family's predictor
        returns them) as the mask prompt: logits K×h×w, IoU K (SAM 2's refine_with_m2m)."""
        step = self.decoder_batch or self.points_per_batch
        prompt = self.model.clamp_low_res(low)[:, None]
        labels = torch.ones(points.shape[:2], dtype=torch.int64, device=points.device)
        lows, ious = [], []
        for a in range(0, points.shape[0], step):
            out = self.predictor.decode(points[a : a + step], labels[a : a + step], None,
                                        prompt[a : a + step], False, image_part_only=True)
            lows.append(out[0][:, 0])
            ious.append(out[1][:, 0].float())
        if not lows:
            return low, low.new_zeros(0)
        return torch.cat(lows), torch.cat(ious)

    def _upscale_and_filter(
        self, low: torch.Tensor, iou: torch.Tensor, pts: np.ndarray, crop: CropInput,
        orig_hw: tuple[int, int], out: CropMasks,
    ) -> None:
        """Full-resolution stability, boxes and RLEs of IoU-passing low-res masks K×h×w;
        the masks that pass the stability and crop-edge filters go to `out`."""
        if not self.tiled:
            return self._filter_dense(low, iou, pts, crop, orig_hw, out)
        step = TILED_MASKS_PER_CALL
        for a in range(0, low.shape[0], step):
            c = slice(a, a + step)
            size, keep_hw = self.model.upscale_frame(crop.input_hw)
            tm = TiledMasks(
                low[c], keep_hw, crop.crop_hw, size, self.model.mask_threshold,
                self.s.stability_score_offset, low_size=self.model.low_res_hw[0],
            )
            if tm.undecided > TILED_UNDECIDED_MAX:  # boundaries everywhere: dense is cheaper
                self._filter_dense(low[c], iou[c], pts[c], crop, orig_hw, out)
            else:
                self._filter_tiled(tm, iou[c], pts[c], crop, orig_hw, out)

    def _filter_dense(
        self, low: torch.Tensor, iou: torch.Tensor, pts: np.ndarray, crop: CropInput,
        orig_hw: tuple[int, int], out: CropMasks,
    ) -> None:
        """`_upscale_and_filter` with every mask upscaled whole, in chunks within the budget."""
        s = self.s
        h, w = orig_hw
        x0, y0 = crop.box[0], crop.box[1]
        chunk = self._dense_chunk(low, crop, orig_hw)
        thr = self.model.mask_threshold
        # With NMS on, run edges wait for it (it usually drops most masks): only the low-res
        # logits of the masks that pass here are kept (64 K floats each), and the survivors
        # are upscaled again. With NMS off every mask stays, so they are encoded at once.
        defer = s.box_nms_thresh < 1.0
        for a in range(0, low.shape[0], chunk):
            clow = low[a : a + chunk]
            logits = self._upscale(clow, crop)
            ciou = iou[a : a + chunk]
            cpts = pts[a : a + chunk]
            rows = torch.arange(clow.shape[0], device=clow.device)
            stab = M.stability_score(logits, thr, s.stability_score_offset)
            if s.stability_score_thresh > 0.0:
                keep = stab >= s.stability_score_thresh
                logits, ciou, stab, rows = logits[keep], ciou[keep], stab[keep], rows[keep]
                cpts = cpts[keep.cpu().numpy()]
            binary = logits > thr
            del logits
            boxes = M.masks_to_boxes(binary)
            near = M.box_near_crop_edge(boxes, crop.box, [0, 0, w, h])
            if bool(near.any()):
                keep = ~near
                binary, boxes, rows = binary[keep], boxes[keep], rows[keep]
                ciou, stab = ciou[keep], stab[keep]
                cpts = cpts[keep.cpu().numpy()]
            if rows.shape[0] == 0:
                continue
            if defer:
                del binary
                out.rles.extend(_Deferred(x) for x in clow[rows])  # views of one copy
            else:
                out.rles.extend(self._run_edges_in_image(binary, crop, orig_hw))
            # boxes stay in crop coordinates until in-crop NMS has run (as the reference does)
            out.boxes.extend(boxes.cpu().numpy())
            out.iou.extend(ciou.cpu().tolist())
            out.stability.extend(stab.cpu().tolist())
            out.points.extend(cpts + np.array([x0, y0]))

    def _upscale(self, low: torch.Tensor, crop: CropInput) -> torch.Tensor:
        """Low-res logits K×h×w (the leading rows and columns of the whole ones) → K×crop."""
        return upscale_in_frame(self.model, low, crop.input_hw, crop.crop_hw)

    def _dense_chunk(self, low: torch.Tensor, crop: CropInput, orig_hw: tuple[int, int]) -> int:
        """Masks per whole-mask upscale within the budget: its row pass, logits and binary
        (padded to the image for a crop)."""
        ch, cw = crop.crop_hw
        return max(1, self.budget // (4 * (ch * low.shape[-1] + ch * cw) + orig_hw[0] * orig_hw[1]))

    def _dense_run_edges(
        self, low: torch.Tensor, crop: CropInput, orig_hw: tuple[int, int]
    ) -> list[M.RunEdges]:
        """Run edges of low-res logits K×h×w in the image frame, upscaled whole (the same
        upscale and threshold as _filter_dense's first pass), in chunks within the budget."""
        chunk = self._dense_chunk(low, crop, orig_hw)
        out: list[M.RunEdges] = []
        for a in range(0, low.shape[0], chunk):
            binary = self._upscale(low[a : a + chunk], crop) > self.model.mask_threshold
            out.extend(self._run_edges_in_image(binary, crop, orig_hw))
        return out

    def _run_edges_in_image(
        self, binary: torch.Tensor, crop: CropInput, orig_hw: tuple[int, int]
    ) -> list[M.RunEdges]:
        """K×ch×cw masks of a crop → their run edges in the image frame."""
        (ch, cw), (h, w) = crop.crop_hw, orig_hw
        if (ch, cw) != (h, w):
            x0, y0 = crop.box[0], crop.box[1]
            binary = F.pad(binary, (x0, w - cw - x0, y0, h - ch - y0))
        with record_function("sam.run_edges"):
            return M.masks_to_run_edges(binary)

    def _filter_tiled(
        self, tm: TiledMasks, iou: torch.Tensor, pts: np.ndarray, crop: CropInput,
        orig_hw: tuple[int, int], out: CropMasks,
    ) -> None:
        """`_upscale_and_filter` for the masks of `tm`, upscaled only along their boundaries."""
        s = self.s
        h, w = orig_hw
        keep = ~M.box_near_crop_edge(tm.boxes, crop.box, [0, 0, w, h])
        if s.stability_score_thresh > 0.0:
            keep &= tm.stability >= s.stability_score_thresh
        idx = keep.nonzero(as_tuple=True)[0]
        if len(idx) == 0:
            return
        out.rles.extend(tm.run_edges(idx, (crop.box[0], crop.box[1]), orig_hw))
        out.boxes.extend(tm.boxes[idx].numpy())
        out.iou.extend(iou[idx].tolist())
        out.stability.extend(tm.stability[idx].tolist())
        out.points.extend(pts[idx.numpy()] + np.array(crop.box[:2]))

    def _nms_in_crop(self, c: CropMasks, crop: CropInput, orig_hw: tuple[int, int]) -> None:
        if not c.rles:
            return
        boxes = torch.as_tensor(np.stack(c.boxes)).float()
        keep = M.box_nms(boxes, torch.as_tensor(c.iou), self.s.box_nms_thresh).tolist()
        off = np.array([c.box[0], c.box[1], c.box[0], c.box[1]])
        late = [i for i in keep if isinstance(c.rles[i], _Deferred)]
        if late:
            low = torch.stack([c.rles[i].logits for i in late])
            for i, edges in zip(late, self._dense_run_edges(low, crop, orig_hw)):
                c.rles[i] = edges
        c.rles = [c.rles[i].to_rle() for i in keep]
        c.boxes = [c.boxes[i] + off for i in keep]
        c.iou = [c.iou[i] for i in keep]
        c.stability = [c.stability[i] for i in keep]
        c.points = [c.points[i] for i in keep]

    def finalize(self, crops: list[CropMasks], orig_hw: tuple[int, int]) -> list[MaskRecord]:
        recs = [
            MaskRecord(r, b.tolist(), i, p.tolist(), st, c.box)
            for c in crops
            for r, b, i, st, p in zip(c.rles, c.boxes, c.iou, c.stability, c.points)
        ]
        if len(crops) > 1 and recs:
            boxes = torch.as_tensor([r.box for r in recs], dtype=torch.float)
            areas = torch.as_tensor(
                [(r.crop_box[2] - r.crop_box[0]) * (r.crop_box[3] - r.crop_box[1]) for r in recs],
                dtype=torch.float,
            )
            keep = M.box_nms(boxes, 1.0 / areas, self.s.crop_nms_thresh).tolist()
            recs = [recs[i] for i in keep]
        if self.s.min_mask_region_area > 0 and recs and not self.low_res_cleanup:
            # the reference's threshold here: the larger of the two NMS thresholds
            nms = max(self.s.box_nms_thresh, self.s.crop_nms_thresh)
            recs = postprocess_small_regions(recs, self.s.min_mask_region_area, nms)
        return recs

    # ---------------------------------------------------------------------- one image
    def generate(self, image: np.ndarray) -> list[MaskRecord]:
        """H×W×3 uint8 RGB → mask records, crop by crop (the pipeline batches instead)."""
        hw = (image.shape[0], image.shape[1])
        results = []
        with record_function("sam.prepare"):
            crops = self.prepare_crops(image)
        for crop in crops:
            with record_function("sam.encode"):
                feats = self.embed_crops([crop])[0]
            results.append(self.decode_crop(feats, crop, hw))
        with record_function("sam.finalize"):
            return self.finalize(results, hw)


def postprocess_small_regions(recs: list[MaskRecord], area: int, nms_thresh: float) -> list[MaskRecord]:
    """--min-mask-region-area: fill holes and drop islands under `area` pixels in each mask,
    then NMS again with the changed masks scored lower, as the reference does. Each mask is
    worked on in its box (MaskCrop), with the same result as on the whole image at a fraction
    of the cost for an object that covers a small part of a large photo."""
    new_masks: dict[int, M.MaskCrop] = {}
    boxes, scores = [], []
    for i, r in enumerate(recs):
        crop, hw = M.rle_to_crop(r.rle), r.rle["size"]
        crop, changed_h = _small_regions(crop, hw, area, "holes")
        crop, changed_i = _small_regions(crop, hw, area, "islands")
        changed = changed_h or changed_i
        scores.append(0.0 if changed else 1.0)
        boxes.append(M.crop_box(crop))
        if changed:
            new_masks[i] = crop
    keep = M.box_nms(
        torch.as_tensor(boxes, dtype=torch.float), torch.as_tensor(scores), nms_thresh,
    ).tolist()
    out = []
    for i in keep:
        r = recs[i]
        if i in new_masks:
            r.rle = M.crop_to_rle(new_masks[i], r.rle["size"])
            r.box = boxes[i]
        out.append(r)
    return out


def _small_regions(crop: M.MaskCrop, hw, area: int, mode: str) -> tuple[M.MaskCrop, bool]:
    """M.remove_small_regions_crop, or the whole mask where only that gives the result."""
    done = M.remove_small_regions_crop(crop, hw, area, mode)
    if done is None:
        full = np.zeros(hw, dtype=bool)
        full[crop.window] = crop.mask
        mask, changed = M.remove_small_regions(full, area, mode)
        done = M.mask_crop(mask), changed
    return done
