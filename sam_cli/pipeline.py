"""Stream many images through the automatic mask generator.

    read + decode + resize   worker threads, a bounded number of images ahead (with an
                             embedding cache they look each crop up, and skip its resize)
    image encoder            crops of several images per batch (--batch-size), except those
                             the cache had; new embeddings are written to it behind
    decoder, filters, NMS    point batches per crop

Every stage is a generator; memory is bounded by the look-ahead and the batch, not by the
number of images. A worker's error surfaces in the consumer with the file name attached.
What to send here, and writing the results behind, are the run engine's (run.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import numpy as np
import torch

from .automatic.generator import AutomaticMaskGenerator, CropInput
from .errors import InputError, SamError
from .inputs import InputItem
from .io.images import read_image
from .masks import MaskRecord, PromptedMask

T = TypeVar("T")


@dataclass
class ImageResult:
    item: InputItem
    image: np.ndarray | None = None
    records: list[MaskRecord] | list[PromptedMask] = field(default_factory=list)
    error: SamError | None = None
    seconds: float = 0.0  # encoder + decoder time spent on this image (not queueing)


@dataclass
class _Loaded:
    item: InputItem
    image: np.ndarray | None
    crops: list[CropInput]
    error: SamError | None
    started: float


def _load(gen: AutomaticMaskGenerator, item: InputItem) -> _Loaded:
    t = time.perf_counter()
    try:
        img = read_image(item.path)
        return _Loaded(item, img, gen.prepare_crops(img), None, t)
    except SamError as e:
        return _Loaded(item, None, [], e, t)
    except Exception as e:  # noqa: BLE001 - any decoder failure is this file's failure
        return _Loaded(item, None, [], InputError(f"{item.path}: {type(e).__name__}: {e}"), t)


def image_by_image(
    jobs: Iterable[InputItem | object], work: Callable[[InputItem, np.ndarray], list], *, workers: int = 2,
    check: Callable[[InputItem, np.ndarray], SamError | None] = lambda item, img: None,
) -> Iterator[ImageResult | object]:
    """An ImageResult per InputItem of `jobs`, in order, for engines that take one image at a
    time (`sam edges`, `sam eval`): images read ahead on threads (then `check`, an error for an image that cannot be used),
    then `work(item, image)`'s records, timed; other objects come back unread in their place."""
    def load(item: InputItem):
        try:
            img = read_image(item.path)
        except SamError as e:
            return item, None, e
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's failure
            return item, None, InputError(f"{item.path}: {type(e).__name__}: {e}")
        return item, img, check(item, img)

    for job in read_ahead(load, jobs, workers, 2):
        if not isinstance(job, tuple):
            yield job
            continue
        item, img, err = job
        if err is not None:
            yield ImageResult(item, None, [], err)
            continue
        t = time.perf_counter()
        records = work(item, img)
        yield ImageResult(item, img, records, None, time.perf_counter() - t)


def read_ahead(
    load: Callable[[InputItem], T], jobs: Iterable[InputItem | object], workers: int, ahead: int,
) -> Iterator[T | object]:
    """load(item) for the InputItems of `jobs` in threads, in input order, at most `ahead`
    in flight; any other object is passed through in its place."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sam-read") as pool:
        inflight: deque[Future] = deque()
        for job in jobs:
            if isinstance(job, InputItem):
                inflight.append(pool.submit(load, job))
            else:
                done: Future = Future()
                done.set_result(job)
                inflight.append(done)
            if len(inflight) >= ahead:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()


def generate_masks(
    gen: AutomaticMaskGenerator, jobs: Iterable[InputItem | object], *, batch_size: int = 1,
    workers: int = 2, ahead: int = 4,
) -> Iterator[ImageResult | object]:
    """An ImageResult per InputItem of `jobs`, in order; any other object in `jobs` (the run
    engine's decisions about images it does not send here) comes back unread in its place."""
    def flush(batch: list[_Loaded]) -> Iterator[ImageResult]:
        t0 = time.perf_counter()
        crops = [c for ld in batch for c in ld.crops]
        feats: list[torch.Tensor | None] = list(gen.embed_crops(crops, batch_size))
        k = 0
        for ld in batch:
            hw = (ld.image.shape[0], ld.image.shape[1])
            parts = []
            for c in ld.crops:
                parts.append(gen.decode_crop(feats[k], c, hw))
                feats[k] = None  # free each embedding once its crop is decoded
                k += 1
            records = gen.finalize(parts, hw)
            now = time.perf_counter()
            # compute time of this image: since the batch began or the previous image ended
            yield ImageResult(ld.item, ld.image, records, None, now - t0)
            t0 = now

    # While a batch is on the device, the next one is being read: look ahead a batch at least.
    loaded = read_ahead(partial(_load, gen), jobs, workers, max(ahead, 2 * batch_size))
    yield from in_batches(loaded, _Loaded, flush, lambda b: sum(len(x.crops) for x in b) >= batch_size)


def in_batches(
    loaded: Iterable[object], kind: type, flush: Callable[[list], Iterator[ImageResult]],
    full: Callable[[list], bool],
) -> Iterator[ImageResult | object]:
    """The images of `loaded` read without error (instances of `kind`, with item, error and
    started) in batches, each handed to `flush` once full(batch); everything else comes out
    in its place, after the batch before it is flushed, so results keep input order: an image
    that failed to read as a failed ImageResult, any other object (the run engine's own
    decisions) as it is."""
    batch: list = []
    for ld in loaded:
        if not isinstance(ld, kind) or ld.error is not None:
            yield from flush(batch)
            batch = []
            yield ld if not isinstance(ld, kind) else ImageResult(
                ld.item, None, [], ld.error, time.perf_counter() - ld.started)
            continue
        batch.append(ld)
        if full(batch):
            yield from flush(batch)
            batch = []
    yield from flush(batch)
