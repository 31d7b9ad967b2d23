"""The run engine: work items in, typed events out, for every command and backend that makes
masks for many images (`sam auto` now; prompts per image, shards and workers build on it).

For each item, in input order, the runner decides before any model work:

    reject   its output key is another input's (a collision), or the file is missing
    skip     the same file was named before in this run, or (without overwrite) an earlier
             run left all its outputs
    process  everything else, handed to the engine in input order

The engine (`Engine`) turns the items to process into mask records, batched and streamed
(stream.py, automatic/pipeline.py); the runner writes each image's outputs behind it on one thread (io.writers.
WriteBehind) and, at the end, the formats' end-of-run outputs (coco.json). The engine is made
only when the first item needs it: inputs that are all done never load a model.

Events come in input order, each as it happens: an image's once its outputs are written.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from .errors import InputError, OutputError, SamError
from .inputs import InputItem
from .io.images import check_file
from .io.outputs import OutputLayout
from .io.writers import WriteBehind
from .names import bad_text


@dataclass(frozen=True)
class Done:
    item: InputItem
    outputs: list[str]
    masks: int
    seconds: float  # model time spent on this image


@dataclass(frozen=True)
class Skipped:
    item: InputItem
    outputs: list[str]
    reason: str  # "done": an earlier run wrote its outputs; "repeated": named twice in this run
    masks: int | None = None  # how many masks those outputs hold, where a format can tell


@dataclass(frozen=True)
class Failed:
    item: InputItem
    error: SamError
    seconds: float = 0.0


@dataclass(frozen=True)
class RunOutput:
    """An end-of-run output written (coco.json)."""

    path: Path
    note: str = ""  # what the user should know of it (polygons: how close they are to the masks)


@dataclass(frozen=True)
class RunOutputStarted:
    """An end-of-run output about to be written (format name, over how many images)."""

    name: str
    images: int


@dataclass(frozen=True)
class RunOutputFailed:
    """An end-of-run output that could not be written (a full disk); counted as a failure."""

    error: SamError


Event = Done | Skipped | Failed | RunOutputStarted | RunOutput | RunOutputFailed


class Result(Protocol):
    """What an engine gives for an item it was sent (stream.ImageResult)."""

    item: InputItem
    image: object  # H×W×3 uint8 RGB, None on error
    records: list
    error: SamError | None
    seconds: float


class Engine(Protocol):
    """Items to process (InputItems), mixed with the runner's own decisions (any other
    object), in → a Result per item, and each decision unchanged in its place, in order."""

    def __call__(self, jobs: Iterable[object]) -> Iterator[Result | object]: ...

    def close(self) -> None: ...


@dataclass
class Counts:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failures: list[str] = field(default_factory=list)  # the errors, one line each

    @property
    def total(self) -> int:
        return self.done + self.skipped + self.failed


def mask_count(records: list) -> int:
    """The masks an image's records stand for: one each, or what a record says it stands for
    (an edge map: the masks whose boundaries made it, edges.EdgeMap.masks)."""
    return sum(getattr(r, "masks", 1) for r in records)


class Runner:
    def __init__(
        self, layout: OutputLayout, *, overwrite: bool = False, record: dict | None = None,
        finish: bool = True,
    ) -> None:
        """record: what makes this run's outputs (io.outputs.RUN_RECORD); a folder made by
        another is refused unless overwrite (OutputLayout.claim). finish: write the run-level
        outputs at the end (not for a shard of a run: shards.py merges them)."""
        self.layout = layout
        self.overwrite = overwrite
        self.record = record
        self.finish = finish
        self.stale: list[Path] = []  # temporary files of killed writers, removed at the start
        self.engine: Engine | None = None  # made by run() when the first item needs it
        self.counts = Counts()
        self._first: dict[str, str] = {}  # output key → real path of the input that has it
        self._claimed: set[str] = set()  # output keys decided in this run
        self._output_of: dict[Path, str] = {}  # each output (relative to the folder) → its key
        self._holding: dict[Path, str] = {}  # each folder an output lies in → the output's key
        self.finished: list[str] = []  # output keys of images with outputs, for finish()
        self.failed: list[str] = []  # output keys of images that failed
        self._unclaim: Callable[[], None] = lambda: None  # OutputLayout.claim's undo

    # ------------------------------------------------------------------------ decisions
    def decide(self, item: InputItem) -> InputItem | Skipped | Failed:
        """The item itself to process it, or the event that says why not."""
        if item.error is not None:  # a bad prompt row, known before reading anything
            return Failed(item, item.error)
        if bad := bad_text(item.rel):  # its name goes into JSON, CSV, XML and YAML files
            return Failed(item, InputError(f"{item.where or item.path!r}: the image's name {item.rel!r} {bad}, "
                                           "which the output formats cannot hold"))
        real = os.path.realpath(item.path)
        first = self._first.setdefault(item.rel, real)
        if first != real:
            return Failed(item, OutputError(
                f"{item.path}: its outputs ({item.rel}) would overwrite those of {first}"))
        if item.rel in self._claimed:
            return Skipped(item, self._outputs(item), "repeated")
        if nested := self._nested(item.rel):
            return Failed(item, OutputError(f"{item.path}: its outputs ({item.rel}) would {nested}"))
        self._claimed.add(item.rel)
        try:
            if getattr(item, "member", None) is None:  # a tar member is checked as it is read
                check_file(item.path)
        except SamError as e:
            return Failed(item, type(e)(f"{item.where}: {e}", e.hint) if item.where else e)
        if not self.overwrite and self.layout.is_complete(item.rel):
            return Skipped(item, self._outputs(item), "done")
        return item

    def _nested(self, rel: str) -> str | None:
        """How `rel`'s outputs would nest with another key's of this run (x.png.masks/0.png's
        inside x.png's png folder, or the other way round), or None; else they are noted."""
        root = self.layout.root
        mine = [p.relative_to(root) for p in self.layout.outputs(rel)]
        for out in mine:
            if (other := self._holding.get(out)) is not None and other != rel:
                return f"hold those of {self._first[other]} ({other})"
            for folder in out.parents:
                if (other := self._output_of.get(folder)) is not None and other != rel:
                    return f"lie inside those of {self._first[other]} ({other})"
        for out in mine:
            self._output_of[out] = rel
            for folder in out.parents:
                self._holding.setdefault(folder, rel)
        return None

    def _outputs(self, item: InputItem) -> list[str]:
        return self.layout.shown(item.rel)

    # ---------------------------------------------------------------------------- run
    def run(
        self, items: Iterable[InputItem], engine: Callable[[], Engine], emit: Callable[[Event], None],
        *, begin: bool = True,
    ) -> None:
        """Process `items`, handing each event to `emit` as it happens, in input order: an
        image's once its outputs are written, on the writer thread, while the engine works
        on the next ones (so a consumer sees each image as soon as it is done). `engine()` is
        called once, when the first item needs it. An exception from `emit` (a closed pipe)
        stops the run like any other. begin: claim the folder and clear a killed run's leftovers
        first (Runner.begin), unless the caller did (a Ray actor, once, not per batch)."""
        if begin:
            self.begin()
        writer = WriteBehind(lambda job: job())
        ok = False
        try:
            jobs = (self.decide(it) for it in items)
            for job in jobs:  # decisions before the first item to process: no model yet
                if isinstance(job, InputItem):
                    try:
                        self.engine = engine()
                    except BaseException:
                        # nothing is written before the model: the folder is not this run's
                        self._unclaim()
                        raise
                    for res in self.engine(_chain(job, jobs)):
                        writer.submit(partial(self.settle, res, emit))
                    break
                writer.submit(partial(self.settle, job, emit))
            ok = True
        finally:
            try:
                writer.close()  # the writes already handed over are finished, even on Ctrl-C
            except BaseException:
                if ok:
                    raise
            finally:
                if self.engine is not None:
                    self.engine.close()
        if self.finish:
            self.write_run_outputs(emit)

    def begin(self) -> None:
        """Claim the folder for this run's record, and remove a killed run's leftovers."""
        if self.record is not None:
            self._unclaim = self.layout.claim(self.record, self.overwrite)
        self.stale = self.layout.remove_stale_temps()

    def write_run_outputs(self, emit: Callable[[Event], None]) -> None:
        """The run-level outputs (coco.json) over the images with outputs: each announced
        (RunOutputStarted: they can take minutes), then written whole or not at all and
        reported (RunOutput), or its failure reported (RunOutputFailed) and the next one
        written all the same."""
        if not self.finished:
            return
        for name in self.layout.run_level():
            emit(RunOutputStarted(name, len(set(self.finished))))
            try:
                path, note = self.layout.finish_one(name, self.finished)
            except SamError as e:
                self.counts.failures.append(str(e))
                emit(RunOutputFailed(e))
                continue
            emit(RunOutput(path, note))

    def settle(self, res: object, emit: Callable[[Event], None]) -> None:
        """On the writer thread, in order: write a result's outputs; count; emit its event."""
        if isinstance(res, Skipped):  # counted here, behind the model, not before it
            ev = Skipped(res.item, res.outputs, res.reason, self.layout.count(res.item.rel))
        elif isinstance(res, Failed):
            ev = res
        elif res.error is not None:
            ev = Failed(res.item, res.error, res.seconds)
        else:
            try:
                written = self.layout.write(res.item.rel, res.image, res.records, res.item.image_id,
                                             getattr(res.item, "member", None) or res.item.path)
                ev = Done(res.item, written, mask_count(res.records), res.seconds)
            except SamError as e:
                ev = Failed(res.item, e, res.seconds)
        self.tally(ev)
        emit(ev)

    def triage(self, items: Iterable[InputItem], emit: Callable[[Event], None]) -> list[InputItem]:
        """The runner's decisions over every item before a run is spread over workers (which
        decide again, each over its own items only): collisions and repeats across the whole
        run are caught here; each item not to process gets its event now. Returns the items
        to process."""
        todo = []
        for it in items:
            d = self.decide(it)
            if isinstance(d, InputItem):
                todo.append(d)
            else:
                self.settle(d, emit)
        return todo

    def tally(self, ev: Done | Skipped | Failed) -> None:
        """Count an image's event (for the summary and the run-level outputs)."""
        if isinstance(ev, Done):
            self.counts.done += 1
        elif isinstance(ev, Skipped):
            self.counts.skipped += 1
        else:
            self.counts.failed += 1
            self.counts.failures.append(str(ev.error))
            self.failed.append(ev.item.rel)
        if isinstance(ev, Done) or (isinstance(ev, Skipped) and ev.reason == "done"):
            self.finished.append(ev.item.rel)


def _chain(first: object, rest: Iterator[object]) -> Iterator[object]:
    yield first
    yield from rest
