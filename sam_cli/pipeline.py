"""Stream many images through the automatic mask generator.

    read + decode + resize   worker threads, a bounded number of images ahead (with an
                             embedding cache they look each crop up, and skip its resize)
    image encoder            crops of several images per batch (--batch-size), except those
                             the cache had; new embeddings are written to it behind
    decoder, filters, NMS    point batches per crop
    write                    one writer thread behind, bounded queue

Every stage is a generator; memory is bounded by the look-ahead and the batch, not by the
number of images. A worker's error surfaces in the consumer with the file name attached.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from .automatic.generator import AutomaticMaskGenerator, CropInput, MaskRecord
from .errors import InputError, SamError
from .inputs import InputItem
from .io.images import read_image


@dataclass
class ImageResult:
    item: InputItem
    image: np.ndarray | None = None
    records: list[MaskRecord] = field(default_factory=list)
    error: SamError | None = None
    seconds: float = 0.0  # encoder + decoder time spent on this image (not queueing)


@dataclass
class _Loaded:
    item: InputItem
    image: np.ndarray | None
    crops: list[CropInput]
    error: SamError | None
    started: float
    skipped: bool = False


def _load(gen: AutomaticMaskGenerator, item: InputItem) -> _Loaded:
    t = time.perf_counter()
    try:
        img = read_image(item.path)
        return _Loaded(item, img, gen.prepare_crops(img), None, t)
    except SamError as e:
        return _Loaded(item, None, [], e, t)
    except Exception as e:  # noqa: BLE001 - any decoder failure is this file's failure
        return _Loaded(item, None, [], InputError(f"{item.path}: {type(e).__name__}: {e}"), t)


def _read_ahead(
    gen: AutomaticMaskGenerator, items: Iterable[InputItem], workers: int, ahead: int,
    skip: Callable[[InputItem], bool] | None,
) -> Iterator[_Loaded]:
    """Decode in threads, in input order, at most `ahead` images in flight. Items that `skip`
    names are passed through in their place, unread."""
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sam-read") as pool:
        inflight: deque[Future] = deque()
        for item in items:
            if skip is not None and skip(item):
                done: Future = Future()
                done.set_result(_Loaded(item, None, [], None, time.perf_counter(), skipped=True))
                inflight.append(done)
            else:
                inflight.append(pool.submit(_load, gen, item))
            if len(inflight) >= ahead:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()


def generate_masks(
    gen: AutomaticMaskGenerator, items: Iterable[InputItem], *, batch_size: int = 1,
    workers: int = 2, ahead: int = 4, skip: Callable[[InputItem], bool] | None = None,
) -> Iterator[ImageResult | InputItem]:
    """Yield an ImageResult per image in input order, or the InputItem itself for an image
    that `skip` says is already done (it is never read)."""
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

    batch: list[_Loaded] = []
    # While a batch is on the device, the next one is being read: look ahead a batch at least.
    for ld in _read_ahead(gen, items, workers, max(ahead, 2 * batch_size), skip):
        if ld.skipped or ld.error is not None:
            yield from flush(batch)  # keep results in input order
            batch = []
            yield ld.item if ld.skipped else ImageResult(
                ld.item, None, [], ld.error, time.perf_counter() - ld.started
            )
            continue
        batch.append(ld)
        if sum(len(x.crops) for x in batch) >= batch_size:
            yield from flush(batch)
            batch = []
    yield from flush(batch)


class WriteBehind:
    """Run `fn(result)` on one background thread; at most `depth` results wait. An exception
    in fn is raised again in the caller at the next submit() or at close()."""

    def __init__(self, fn: Callable[[object], None], depth: int = 4) -> None:
        self.fn = fn
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="sam-write", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is None:
                try:
                    self.fn(job)
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    self.error = e

    def submit(self, job: object) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(job)

    def close(self) -> None:
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
