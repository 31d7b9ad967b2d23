"""Engines for the run engine (run.py), one per mode, in a registry: a loaded model made
ready for a kind of run, turning the images it is sent into records, batched and streamed
(stream.py). A mode is an EngineKind: how to build its engine from a Job (job.py), what of
its settings goes in the run record, its own outputs, and what `sam merge` needs of it.

Adding a mode (a command) is its EngineKind in its own module plus a line in MODES
(docs/architecture.md)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from . import stream
from .automatic import AmgSettings, AutomaticMaskGenerator
from .checkpoints import LoadedModel
from .embedding_cache import EmbeddingCache


@dataclass(frozen=True)
class EngineKind:
    """A mode of run. build(job, loaded, note, progress) → the engine (run.Engine);
    record(settings) → the settings part of the run record; own_outputs(settings) → the
    mode's own outputs for io.outputs.OutputLayout (None: the -f formats);
    merge_args(settings) → JSON that own_from_merge(args) turns back into them in `sam merge`."""

    mode: str
    build: Callable
    record: Callable[[object], dict]
    prompted: bool = False
    unit: str = "prompts decoded"  # what the progress callback counts
    own_outputs: Callable[[object], dict | None] = lambda settings: None
    merge_args: Callable[[object], dict | None] = lambda settings: None
    own_from_merge: Callable[[dict | None], dict | None] = lambda args: None
    #: build(job, loaded, note, progress) for a prompt file's run (the "prompts" mode) whose
    #: objects are this mode's kind (SAM 3's phrases: text_prompts.py), or None
    from_prompt_file: Callable | None = None

    @property
    def record_mode(self) -> str:
        return self.mode


#: mode → "module:attribute" of its EngineKind (imported when a run of that mode starts)
MODES: dict[str, str] = {
    "automatic": "sam_cli.engines:AUTOMATIC",
    "prompts": "sam_cli.engines:PROMPTS",
    "edges": "sam_cli.edges:KIND",
    "eval": "sam_cli.evaluate:KIND",
    "text": "sam_cli.text_prompts:KIND",
}


def get(mode: str) -> EngineKind:
    if mode not in MODES:
        raise KeyError(f"unknown mode {mode!r}")
    module, attr = MODES[mode].split(":")
    return getattr(importlib.import_module(module), attr)


def require_points(loaded: LoadedModel) -> None:
    """PromptError when the model takes no point, box or mask prompts (SAM 3's text-only
    detector), before any image is read."""
    if not getattr(loaded.net, "point_prompts", True):
        from .errors import PromptError
        from .models.sam3.family import NO_POINTS

        raise PromptError(f"{loaded.checkpoint.name}: {NO_POINTS}")


#: Said when --compile is asked for on a CPU (measured with scripts/cpu_profile.py --compile).
COMPILE_ON_CPU_NOTE = (
    "note: --compile is for GPUs; on a CPU compiling takes minutes and has not made sam "
    "measurably faster"
)


class AutomaticEngine:
    """Automatic mode over many images. batch_size None: 1 on the CPU, 4 on a GPU, where a
    vit_h batch of 4 costs 0.63x the time per image of a single one. `warn` gets one-line
    notes (compiling, an embedding cache that cannot be written); `on_points` the number of
    point prompts decoded, batch by batch."""

    def __init__(
        self, loaded: LoadedModel, settings: AmgSettings, *, batch_size: int | None = None,
        workers: int = 2, compile_model: bool = False, embedding_cache: Path | None = None,
        warn: Callable[[str], None] = lambda text: None, on_points: Callable[[int], None] | None = None,
        proposals: int | None = None, reads: int = 0,
    ) -> None:
        """proposals: keep each image's best N masks as object proposals (automatic/proposals.py)."""
        self.proposals = proposals
        net = loaded.net
        if not getattr(net, "automatic", None):
            from .errors import PromptError

            raise PromptError(f"sam auto: {loaded.checkpoint.name} is a {net.family} model, whose automatic mode "
                              "is not written yet (sam segment, sam segment --prompts, sam edges and sam eval take it)")
        if compile_model:
            if net.device.type == "cpu":
                warn(COMPILE_ON_CPU_NOTE)
            failed: list[str] = []

            def compile_failed(part: str, err: BaseException) -> None:
                if not failed:  # one line, not one per part
                    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                    warn(f"--compile: compiling the {part} failed ({first}); it runs "
                         "uncompiled, as does any other part that fails")
                failed.append(part)

            net.compile_parts(on_failure=compile_failed)
        self.cache = None
        if embedding_cache is not None:  # after compiling: compiled embeddings are kept apart
            self.cache = EmbeddingCache(embedding_cache, net, warn=warn, weights_id=loaded.weights_id)
        self.gen = AutomaticMaskGenerator(net, settings, embedding_cache=self.cache,
                                          on_points=on_points)  # progress within an image
        self.batch_size = batch_size or (1 if self.gen.on_cpu else 4)
        self.workers, self.reads = workers, reads  # decoding threads; reads ahead (--read-ahead)

    def __call__(self, jobs: Iterable[object]) -> Iterator[stream.ImageResult | object]:
        from .automatic import pipeline

        results = pipeline.generate_masks(self.gen, jobs, batch_size=self.batch_size,
                                          workers=self.workers, reads=self.reads)
        return results if self.proposals is None else map(self._ranked, results)

    def notes(self) -> list[str]:
        """What the run's summary should add: why no mask was kept, when the filters took all."""
        why = self.gen.counts.why_none(self.gen.s)
        return [why] if why else []

    def _ranked(self, res: object) -> object:
        from .automatic.proposals import rank

        if isinstance(res, stream.ImageResult) and res.error is None:
            res.records = rank(res.records, self.proposals)
        return res

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


class PromptEngine:
    """Prompted segmentation over many images (prompted.py). batch_size None: images per
    encoder call, 1 on the CPU, 4 on a GPU. `on_objects` gets the number of objects decoded."""

    def __init__(
        self, loaded: LoadedModel, *, choice: str = "first", refine: bool = False,
        batch_size: int | None = None, workers: int = 2, embedding_cache: Path | None = None,
        warn: Callable[[str], None] = lambda text: None, on_objects: Callable[[int], None] | None = None,
        reads: int = 0,
    ) -> None:
        from .predictor import Predictor
        from .prompted import PromptSegmenter

        require_points(loaded)
        net = loaded.net
        self.cache = None
        if embedding_cache is not None:
            self.cache = EmbeddingCache(embedding_cache, net, warn=warn, weights_id=loaded.weights_id)
        self.seg = PromptSegmenter(Predictor(net, self.cache), choice=choice, refine=refine,
                                   on_objects=on_objects)
        self.batch_size = batch_size or (1 if net.device.type == "cpu" else 4)
        self.workers, self.reads = workers, reads  # decoding threads; reads ahead (--read-ahead)

    def __call__(self, jobs: Iterable[object]) -> Iterator[stream.ImageResult | object]:
        from .prompted import segment_prompts

        return segment_prompts(self.seg, jobs, batch_size=self.batch_size, workers=self.workers, reads=self.reads)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


# ------------------------------------------------------------------------------- modes
@dataclass(frozen=True)
class AutomaticSettings:
    amg: AmgSettings
    proposals: int | None = None  # keep each image's best N masks as object proposals


def _automatic_record(s: AutomaticSettings) -> dict:
    """Every AMG setting but points_per_batch (which changes only speed); with proposals,
    how many are kept."""
    kept = {k: v for k, v in asdict(s.amg).items() if k != "points_per_batch"}
    if s.proposals is not None:
        kept["proposals"] = s.proposals
    return kept


def _build_automatic(job, loaded: LoadedModel, note, progress) -> AutomaticEngine:
    r = job.run
    return AutomaticEngine(loaded, job.settings.amg, batch_size=r.batch_size, workers=r.workers, reads=r.reads,
                           compile_model=r.compile_model, embedding_cache=r.embedding_cache, warn=note,
                           on_points=progress, proposals=job.settings.proposals)


AUTOMATIC = EngineKind("automatic", _build_automatic, _automatic_record)


@dataclass(frozen=True)
class PromptSettings:
    prompts: str  # the prompt file, as io.sources.identity names it (with its --min-score)
    choice: str = "first"  # predictor.MASK_CHOICES
    refine: bool = False
    min_score: float | None = None  # --min-score: with SAM 3, the detections' threshold too
    concepts: bool = False  # the file's first image has phrases or exemplars: read as SAM 3's concepts


def _build_prompts(job, loaded: LoadedModel, note, progress):
    r, s = job.run, job.settings
    text_model = getattr(loaded.net, "text_prompts", False)
    if text_model and (s.concepts or not loaded.net.point_prompts):  # SAM 3: the file's concepts
        return get("text").from_prompt_file(job, loaded, note, progress)
    return PromptEngine(loaded, choice=s.choice, refine=s.refine, batch_size=r.batch_size, workers=r.workers, reads=r.reads,
                        embedding_cache=r.embedding_cache, warn=note, on_objects=progress)


PROMPTS = EngineKind(
    "prompts", _build_prompts,
    lambda s: {"prompts": s.prompts, "masks": s.choice, "refine": s.refine},
    prompted=True, unit="objects decoded",
)
