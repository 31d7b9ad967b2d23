"""Stream many images through the automatic mask generator (on stream.py's helpers).

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..errors import InputError, SamError
from ..inputs import InputItem, read_input
from ..models.features import ImageFeatures
from ..stream import ENCODING, ImageResult, in_batches, read_ahead
from .generator import AutomaticMaskGenerator, CropInput


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
        img = read_input(item)
        return _Loaded(item, img, gen.prepare_crops(img), None, t)
    except SamError as e:
        return _Loaded(item, None, [], e, t)
    except Exception as e:  # noqa: BLE001 - any decoder failure is this file's failure
        return _Loaded(item, None, [], InputError(f"{item.path}: {type(e).__name__}: {e}"), t)


def generate_masks(
    gen: AutomaticMaskGenerator, jobs: Iterable[InputItem | object], *, batch_size: int = 1,
    workers: int = 2, ahead: int = 4, reads: int = 0,
) -> Iterator[ImageResult | object]:
    """An ImageResult per InputItem of `jobs`, in order; any other object in `jobs` (the run
    engine's decisions about images it does not send here) comes back unread in its place."""
    def flush(batch: list[_Loaded]) -> Iterator[ImageResult]:
        t0 = time.perf_counter()
        crops = [c for ld in batch for c in ld.crops]
        if gen.on_points is not None and any(c.features is None for c in crops):
            gen.on_points(ENCODING)  # a phase of its own: the encoder takes most of a minute on a CPU
        feats: list[ImageFeatures | None] = list(gen.embed_crops(crops, batch_size))
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
    loaded = read_ahead(partial(_load, gen), jobs, workers, max(ahead, 2 * batch_size), reads)
    yield from in_batches(loaded, _Loaded, flush, lambda b: sum(len(x.crops) for x in b) >= batch_size)
