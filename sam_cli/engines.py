"""Engines for the run engine (run.py): a loaded model made ready for a kind of run, turning
the images it is sent into mask records, batched and streamed (pipeline.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from . import pipeline
from .automatic import AmgSettings, AutomaticMaskGenerator
from .embedding_cache import EmbeddingCache
from .weights import LoadedModel

#: Said when --compile is asked for on a CPU (measured with scripts/cpu_profile.py --compile).
COMPILE_ON_CPU_NOTE = (
    "note: --compile is for GPUs; on a CPU compiling takes minutes and has not made sam "
    "measurably faster"
)


def automatic_record(
    settings: AmgSettings, *, model: str | None, checkpoint: Path | None, dtype: str,
    proposals: int | None = None,
) -> dict:
    """What decides an automatic run's masks, for its output folder's run record: the sam
    version, the weights (named without loading them), the precision and every setting but
    points_per_batch (which changes only speed); with proposals, how many are kept."""
    from dataclasses import asdict

    from . import __version__
    from .weights import describe

    kept = {k: v for k, v in asdict(settings).items() if k != "points_per_batch"}
    if proposals is not None:
        kept["proposals"] = proposals
    return {"sam": __version__, "mode": "automatic", "weights": describe(model, checkpoint),
            "dtype": dtype, "settings": kept}


class AutomaticEngine:
    """Automatic mode over many images. batch_size None: 1 on the CPU, 4 on a GPU, where a
    vit_h batch of 4 costs 0.63x the time per image of a single one. `warn` gets one-line
    notes (compiling, an embedding cache that cannot be written); `on_points` the number of
    point prompts decoded, batch by batch."""

    def __init__(
        self, loaded: LoadedModel, settings: AmgSettings, *, batch_size: int | None = None,
        workers: int = 2, compile_model: bool = False, embedding_cache: Path | None = None,
        warn: Callable[[str], None] = lambda text: None, on_points: Callable[[int], None] | None = None,
        proposals: int | None = None,
    ) -> None:
        """proposals: keep each image's best N masks as object proposals (automatic/proposals.py)."""
        self.proposals = proposals
        net = loaded.net
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
        self.workers = workers

    def __call__(self, jobs: Iterable[object]) -> Iterator[pipeline.ImageResult | object]:
        results = pipeline.generate_masks(self.gen, jobs, batch_size=self.batch_size,
                                          workers=self.workers)
        return results if self.proposals is None else map(self._ranked, results)

    def _ranked(self, res: object) -> object:
        from .automatic.proposals import rank

        if isinstance(res, pipeline.ImageResult) and res.error is None:
            res.records = rank(res.records, self.proposals)
        return res

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def prompted_record(
    *, prompts: str, choice: str, refine: bool, model: str | None, checkpoint: Path | None, dtype: str,
) -> dict:
    """What decides a prompted run's masks, for its output folder's run record: the prompts
    (io.sources.identity), the mask choice and refinement, the weights and the precision."""
    from . import __version__
    from .weights import describe

    return {"sam": __version__, "mode": "prompts", "weights": describe(model, checkpoint),
            "dtype": dtype, "settings": {"prompts": prompts, "masks": choice, "refine": refine}}


class PromptEngine:
    """Prompted segmentation over many images (prompted.py). batch_size None: images per
    encoder call, 1 on the CPU, 4 on a GPU. `on_objects` gets the number of objects decoded."""

    def __init__(
        self, loaded: LoadedModel, *, choice: str = "first", refine: bool = False,
        batch_size: int | None = None, workers: int = 2, embedding_cache: Path | None = None,
        warn: Callable[[str], None] = lambda text: None, on_objects: Callable[[int], None] | None = None,
    ) -> None:
        from .predictor import Predictor
        from .prompted import PromptSegmenter

        net = loaded.net
        self.cache = None
        if embedding_cache is not None:
            self.cache = EmbeddingCache(embedding_cache, net, warn=warn, weights_id=loaded.weights_id)
        self.seg = PromptSegmenter(Predictor(net, self.cache), choice=choice, refine=refine,
                                   on_objects=on_objects)
        self.batch_size = batch_size or (1 if net.device.type == "cpu" else 4)
        self.workers = workers

    def __call__(self, jobs: Iterable[object]) -> Iterator[pipeline.ImageResult | object]:
        from .prompted import segment_prompts

        return segment_prompts(self.seg, jobs, batch_size=self.batch_size, workers=self.workers)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
