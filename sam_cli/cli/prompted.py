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
    from ..engines import prompted_record
    from ..io import sources
    from ..io.formats import DEFAULT_FORMATS, FormatOptions
    from ..io.outputs import OutputLayout
    from ..io.sources.base import PromptSource
    from ..run import Runner
    from .common import EventPrinter, run_to_end, shard_items
    from .workers import EngineSpec, parse_devices, spread_on_ray

    src = sources.detect(PromptSource(prompts, images, coco_dataset, class_names, min_score),
                         prompt_format)
    record = prompted_record(prompts=sources.identity(src), choice=choice, refine=refine,
                             model=model, checkpoint=checkpoint, dtype=dtype)
    layout = OutputLayout(output, tuple(dict.fromkeys(formats or DEFAULT_FORMATS)), prompted=True,
                          options=FormatOptions(*format_options))
    runner = Runner(layout, overwrite=overwrite, record=record)
    if embedding_cache is not None:
        check_folder(embedding_cache)
    items = sources.read(src)
    total = None
    if src.kind == "coco":  # read whole anyway: a known total for the progress bar
        items = list(items)
    items, part = shard_items(items, shard, quiet)
    if isinstance(items, list):
        total = len(items)
    out = EventPrinter(total, quiet, progress, unit="objects decoded")

    spec = EngineSpec("prompts", model, checkpoint, dtype, quiet, {
        "choice": choice, "refine": refine, "batch_size": batch_size, "workers": workers,
        "embedding_cache": embedding_cache})
    run_to_end(runner, items, lambda: spec.make(device, out.note, out.points), out, [prompts],
               empty=f"no images in {src.label}", shard=part, spec=spec,
               devices=parse_devices(devices) if devices else None,
               ray=spread_on_ray(ray, device, ray_actors, devices))
