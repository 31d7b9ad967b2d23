"""Generic streaming for the engines (no mode's own code): images decoded ahead on worker
threads in input order (read_ahead), loaded images grouped into batches without reordering
(in_batches), and one image at a time for engines that take no batch (image_by_image).

Every stage is a generator; memory is bounded by the look-ahead and the batch, not by the
number of images. A worker's error surfaces in the consumer with the file name attached.
What to send here, and writing the results behind, are the run engine's (run.py).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np

from .errors import InputError, SamError
from .inputs import InputItem, read_input
from .masks import MaskRecord, PromptedMask

T = TypeVar("T")

#: What an engine's progress callback is given, in place of a count of prompts decoded, when
#: the image encoder starts on a batch (the progress bar shows it as a phase).
ENCODING = -1


@dataclass
class ImageResult:
    item: InputItem
    image: np.ndarray | None = None
    records: list[MaskRecord] | list[PromptedMask] = field(default_factory=list)
    error: SamError | None = None
    seconds: float = 0.0  # encoder + decoder time spent on this image (not queueing)


def image_by_image(
    jobs: Iterable[InputItem | object], work: Callable[[InputItem, np.ndarray], list], *, workers: int = 2,
    check: Callable[[InputItem, np.ndarray], SamError | None] = lambda item, img: None, reads: int = 0,
) -> Iterator[ImageResult | object]:
    """An ImageResult per InputItem of `jobs`, in order, for engines that take one image at a
    time (`sam edges`, `sam eval`): images read ahead on threads (then `check`, an error for an image that cannot be used),
    then `work(item, image)`'s records, timed; other objects come back unread in their place."""
    def load(item: InputItem):
        try:
            img = read_input(item)
        except SamError as e:
            return item, None, e
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's failure
            return item, None, InputError(f"{item.path}: {type(e).__name__}: {e}")
        return item, img, check(item, img)

    for job in read_ahead(load, jobs, workers, 2, reads):
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
    reads: int = 0,
) -> Iterator[T | object]:
    """load(item) for the InputItems of `jobs` on `workers` threads, in input order, at most
    `ahead` in flight; any other object is passed through in its place.

    reads (--read-ahead): an item read from a member (an object in a bucket, a tar member) has
    its bytes fetched first on `reads` threads of their own, then is loaded (decoded) on the
    `workers` threads: many slow reads overlap while decoding keeps to its cores. At most
    max(ahead, reads) items are in flight, fetched or loaded: the bytes held stay bounded."""
    ahead = max(ahead, reads)
    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sam-read") as pool, \
            ThreadPoolExecutor(max_workers=max(1, reads), thread_name_prefix="sam-fetch") as fetcher:
        inflight: deque[Future] = deque()
        for job in jobs:
            if isinstance(job, InputItem):
                if reads and getattr(job, "member", None) is not None:
                    inflight.append(_fetch_then(fetcher, pool, load, job))
                else:
                    inflight.append(pool.submit(load, job))
            else:
                done: Future = Future()
                done.set_result(job)
                inflight.append(done)
            if len(inflight) >= ahead:
                yield inflight.popleft().result()
        while inflight:
            yield inflight.popleft().result()


@dataclass(frozen=True)
class Fetched:
    """A member's bytes, read ahead (read_ahead's reads): read_input decodes them."""

    data: bytes
    name: str

    def read_bytes(self) -> bytes:
        return self.data

    def __str__(self) -> str:
        return self.name


def _fetch_then(fetcher: ThreadPoolExecutor, pool: ThreadPoolExecutor, load: Callable, item) -> Future:
    """A future of load(item) with item's member bytes fetched first on `fetcher`; a fetch
    that fails leaves the member as it was, for load to read again and report."""
    out: Future = Future()

    def fetch():
        try:
            return replace(item, member=Fetched(item.member.read_bytes(), str(item.member)))
        except Exception:  # noqa: BLE001 - load reads it again and says what is wrong
            return item

    def fetched(f: Future) -> None:
        done = pool.submit(load, f.result())
        done.add_done_callback(lambda d: out.set_exception(d.exception()) if d.exception() else out.set_result(d.result()))

    fetcher.submit(fetch).add_done_callback(fetched)
    return out


def each_image(batch: list, features: list, work: Callable[[object, object], list],
               t0: float) -> Iterator[ImageResult]:
    """A batch's ImageResults once its features are made (one per loaded image, in order):
    work(loaded, its features)'s records, or the SamError it raised as that image's failure;
    each image timed from the previous one's end (the first from t0, when the batch began),
    its features freed once used."""
    for k, ld in enumerate(batch):
        try:
            records, error = work(ld, features[k]), None
        except SamError as e:
            records, error = [], e
        features[k] = None
        now = time.perf_counter()
        yield ImageResult(ld.item, ld.image if error is None else None, records, error, now - t0)
        t0 = now


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
