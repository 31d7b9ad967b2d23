"""`sam segment --prompts`: the prompts of many images from a file, through the run engine."""

from __future__ import annotations

from pathlib import Path


def segment_prompts(
    prompts: str, output: Path, *, images: Path | None, prompt_format: str | None,
    coco_dataset: Path | None, class_names: Path | None, min_score: float | None, choice: str,
    refine: bool, formats: list[str] | None, format_options: tuple, batch_size: int | None, workers: int, overwrite: bool,
    progress: bool | None, model: str | None, checkpoint: Path | None, device: str, dtype: str,
    embedding_cache: Path | None, quiet: bool, shard: str | None = None, devices: str | None = None,
    ray: str | None = None, ray_actors: int | None = None,
) -> None:
    from ..embedding_cache import check_folder
    from ..engines import PromptSettings
    from ..io import sources
    from ..io.formats import DEFAULT_FORMATS, FormatOptions
    from ..io.sources.base import PromptSource
    from ..job import Job, ModelSpec, RunOptions
    from ..spread import choose
    from .common import EventPrinter, run_to_end, shard_items

    src = sources.detect(PromptSource(prompts, images, coco_dataset, class_names, min_score),
                         prompt_format)
    job = Job("prompts", PromptSettings(sources.identity(src), choice, refine), output,
              ModelSpec(model, checkpoint, device, dtype), tuple(dict.fromkeys(formats or DEFAULT_FORMATS)),
              FormatOptions(*format_options), RunOptions(batch_size, workers, False, embedding_cache),
              overwrite, quiet)
    runner = job.runner()
    if embedding_cache is not None:
        check_folder(embedding_cache)
    items = sources.read(src)
    if src.kind == "coco":  # read whole anyway: a known total for the progress bar
        items = list(items)
    items, part = shard_items(items, shard, quiet)
    out = EventPrinter(len(items) if isinstance(items, list) else None, quiet, progress, unit="objects decoded")
    run_to_end(job, runner, items, out, [prompts], empty=f"no images in {src.label}", shard=part,
               spread=choose(devices, ray, ray_actors))
