"""Prompted segmentation over many images (`sam segment --prompts`): each image's objects
(boxes, clicks, mask prompts from a prompt file) into masks, streamed like automatic mode.

    read + decode + resize   worker threads, a bounded number of images ahead; each object's
                             prompts checked against its image (io.sources, prompts.py)
    image encoder            several images per batch (--batch-size); images with no object,
                             or whose embedding the cache has, skip it
    decoder                  an image's objects with the same kind of prompt (box or not,
                             number of points, mask or not) together, CPU_DECODER_BATCH of
                             them per call on a CPU, GPU_OBJECT_BATCH on a GPU; each call's
                             full-size masks are run-length encoded before the next

Memory is bounded by the look-ahead, the encoder batch and one decoder call's masks, however
many images and objects. What to send here and writing the results are the run engine's.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from . import masks as M
from .errors import InputError, PromptError, SamError
from .inputs import read_input
from .models.features import ImageFeatures
from .predictor import CPU_DECODER_BATCH, Predictor
from .prompts import ObjectPrompt, ResolvedPrompt
from .stream import ENCODING, ImageResult, each_image, in_batches, read_ahead

#: Objects per decoder call on a GPU: a vit_h call of 64 boxes holds 64 × 3 masks of a 12 MP
#: photo (2.3 GB as bool) at most.
GPU_OBJECT_BATCH = 64


@dataclass
class _Loaded:
    item: object  # io.sources.PromptItem
    image: np.ndarray | None
    prompts: list[ResolvedPrompt]
    x: torch.Tensor | None  # 1×3×h×w resized for the encoder; None without objects or if cached
    input_hw: tuple[int, int]
    key: str  # embedding-cache key ("" without a cache)
    cached: ImageFeatures | None  # from the embedding cache
    error: SamError | None
    started: float


class PromptSegmenter:
    """Masks for an image's objects. choice: one of predictor.MASK_CHOICES (checked there).
    refine: decode each object twice, the second time with the first pass's most confident
    low-res mask added as a mask prompt (the paper's instance-segmentation setting). on_objects: called with the number
    of objects decoded, call by call (progress within an image)."""

    def __init__(
        self, predictor: Predictor, *, choice: str = "first", refine: bool = False,
        on_objects: Callable[[int], None] | None = None,
    ) -> None:
        self.predictor = predictor
        self.choice = choice
        self.refine = refine
        self.on_objects = on_objects or (lambda n: None)

    def load(self, item) -> _Loaded:
        """On a reader thread: the image, its objects' prompts in its pixels, its encoder input."""
        t = time.perf_counter()
        try:
            if item.error is not None:
                raise item.error
            if concept := next((o for o in item.objects if o.concept), None):
                if getattr(self.predictor.model, "text_prompts", False):
                    raise PromptError(f"{concept.where}: a phrase or exemplar in a file read as boxes and points "
                                      "(its first image has none); give phrases in a file of their own")
                raise PromptError(f"{concept.where}: a text or exemplar prompt needs a SAM 3 model (--model sam3)")
            img = read_input(item)
            hw = (img.shape[0], img.shape[1])
            prompts = [o.in_pixels(hw, str(item.path), self.predictor.model) for o in item.objects]
            key, input_hw, cached, x = "", hw, None, None
            if prompts:
                key, input_hw, cached = self.predictor.lookup(img)
                if cached is None:
                    x, input_hw = self.predictor.prepare(img)
            return _Loaded(item, img, prompts, x, input_hw, key, cached, None, t)
        except SamError as e:
            err = e
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's failure
            err = InputError(f"{item.path}: {type(e).__name__}: {e}")
        return _Loaded(item, None, [], None, (0, 0), "", None, err, t)

    def embed(self, batch: list[_Loaded]) -> list[ImageFeatures | None]:
        """ImageFeatures per image of the batch (None for one without objects): the cache's,
        or from one encoder call for the rest."""
        todo = [ld for ld in batch if ld.x is not None]
        feats = iter(self.predictor.embed([ld.x for ld in todo], [ld.image.shape[:2] for ld in todo])
                     if todo else [])
        out = []
        for ld in batch:
            if ld.x is not None:
                f = next(feats)
                ld.x = None  # the resized image is no longer needed
                if self.predictor.cache is not None:
                    self.predictor.cache.save(ld.key, f)
                out.append(f)
            else:
                out.append(None if ld.cached is None else ld.cached.to(self.predictor.device))
        return out

    def segment(self, ld: _Loaded, features: ImageFeatures | None) -> list[M.PromptedMask]:
        """The masks of an image's objects, in object order (then the decoder's mask order)."""
        if not ld.prompts:
            return []
        hw = (ld.image.shape[0], ld.image.shape[1])
        self.predictor.set_features(features)
        groups: dict[tuple, list[int]] = {}
        for i, o in enumerate(ld.item.objects):
            groups.setdefault(o.signature, []).append(i)
        step = CPU_DECODER_BATCH if self.predictor.device.type == "cpu" else GPU_OBJECT_BATCH
        per_object: list[list[M.PromptedMask]] = [[] for _ in ld.prompts]
        for idx in groups.values():
            for k in range(0, len(idx), step):
                ids = idx[k : k + step]
                for i, recs in zip(ids, self._decode([ld.prompts[i] for i in ids], hw)):
                    per_object[i] = [self._record(r, i, ld.prompts[i], ld.item.objects[i]) for r in recs]
                self.on_objects(len(ids))
        return [r for recs in per_object for r in recs]

    def _decode(self, prompts: list[ResolvedPrompt], hw: tuple[int, int]) -> list[list[tuple]]:
        """Objects with the same kind of prompts → per object, its (rle, box, iou, mask index)."""
        p = self.predictor
        dev = p.device

        def tensor(arrays, dtype=torch.float32):
            return torch.as_tensor(np.stack(arrays), dtype=dtype, device=dev)

        pts = lab = bx = mk = None
        if len(prompts[0].points):
            pts = tensor([p.to_input_frame(r.points) for r in prompts])
            lab = tensor([r.labels for r in prompts], torch.int64)
        if prompts[0].box is not None:
            bx = tensor([p.to_input_frame(r.box.reshape(2, 2)).reshape(4) for r in prompts])
        if prompts[0].mask is not None:
            mk = tensor([r.mask for r in prompts])  # B×1×256×256
        with torch.inference_mode():
            low, iou, index = p.decode_chosen(pts, lab, bx, mk, choice=self.choice, refine=self.refine,
                                              image_part_only=True)
            full = p.model.upscale(low, p.input_hw, hw)
            masks = (full > p.model.mask_threshold).flatten(0, 1)  # (B·M)×H×W
            del full
            boxes = M.masks_to_boxes(masks).tolist()
            rles = M.masks_to_rle(masks)
        n = iou.shape[1]
        iou, index = iou.float().cpu().tolist(), index.cpu().tolist()
        return [[(rles[b * n + j], boxes[b * n + j], iou[b][j], index[b][j]) for j in range(n)]
                for b in range(len(prompts))]

    @staticmethod
    def _record(r: tuple, i: int, rp: ResolvedPrompt, obj: ObjectPrompt) -> M.PromptedMask:
        rle, box, iou, index = r
        prompt: dict = {}
        if rp.box is not None:
            prompt["box"] = [round(float(v), 3) for v in rp.box]
        if len(rp.points):
            prompt["points"] = [[round(float(v), 3) for v in pt] for pt in rp.points]
            prompt["point_labels"] = [int(v) for v in rp.labels]
        if obj.mask is not None:
            prompt["mask"] = str(obj.mask)
        source = {"category_id": obj.category_id, "category": obj.category, "score": obj.score,
                  "object_id": obj.object_id}
        return M.PromptedMask(rle, box, round(iou, 6), i, index, prompt, source)


def segment_prompts(
    seg: PromptSegmenter, jobs: Iterable[object], *, batch_size: int = 1, workers: int = 2,
    ahead: int = 4, reads: int = 0,
) -> Iterator[ImageResult | object]:
    """An ImageResult per PromptItem of `jobs`, in order; any other object comes back in its
    place (the run engine's own decisions)."""

    def flush(batch: list[_Loaded]) -> Iterator[ImageResult]:
        t0 = time.perf_counter()
        if any(ld.x is not None for ld in batch):
            seg.on_objects(ENCODING)  # a phase of its own: the encoder takes most of a minute on a CPU
        yield from each_image(batch, seg.embed(batch), seg.segment, t0)

    loaded = read_ahead(seg.load, jobs, workers, max(ahead, 2 * batch_size), reads)
    yield from in_batches(loaded, _Loaded, flush, lambda b: len(b) >= batch_size)
