"""`sam segment --prompts`: the prompts of many images from a file, through the run engine."""

from __future__ import annotations

import itertools
from pathlib import Path


def segment_prompts(
    prompts: str, output, *, images: Path | None, prompt_format: str | None,
    coco_dataset: Path | None, class_names: Path | None, min_score: float | None, choice: str,
    refine: bool, formats: tuple[str, ...], format_options, batch_size: int | None, workers: int, read_ahead: int | None,
    overwrite: bool,
    progress: bool | None, model: str | None, checkpoint: Path | None, device: str, dtype: str,
    embedding_cache: Path | None, quiet: bool, shard: str | None = None, devices: str | None = None,
    ray: str | None = None, ray_actors: int | None = None,
) -> None:
    from ..embedding_cache import check_folder
    from ..engines import PromptSettings
    from ..errors import PromptError
    from ..io import sources
    from ..io.remote import is_url, local_copy
    from ..io.sources.base import PromptSource
    from ..job import Job, ModelSpec, RunOptions
    from ..registry import DEFAULT_TEXT_MODEL
    from ..spread import choose
    from .common import EventPrinter, message, refuse_all_missing, run_to_end, shard_items
    from .options import read_ahead as default_read_ahead

    if isinstance(output, Path) and output.suffix.lower() in (".png", ".jpg", ".jpeg", ".json", ".npy", ".csv") \
            and not output.is_dir():
        raise PromptError(f"--output {output}: with --prompts, -o is an output folder (this looks like a file name)",
                          hint="give a folder, e.g. -o masks/")
    origin = None
    if is_url(prompts):  # read from a local copy; named by its URL
        origin, prompts = prompts, str(local_copy(prompts, "--prompts"))
    src = sources.detect(PromptSource(prompts, images, coco_dataset, class_names, min_score, origin=origin),
                         prompt_format)
    items = sources.read(src)
    if src.kind == "coco":  # read whole anyway: a known total for the progress bar
        items = list(items)
    first = next(iter(items), None) if not isinstance(items, list) else (items[0] if items else None)
    if not isinstance(items, list) and first is not None:
        items = itertools.chain([first], items)
    concepts = first is not None and any(o.concept for o in first.objects)
    if model is None and checkpoint is None and concepts:
        model = DEFAULT_TEXT_MODEL  # a file of phrases: SAM 3, as --text takes it
    job = Job("prompts", PromptSettings(sources.identity(src), choice, refine, min_score, concepts), output,
              ModelSpec(model, checkpoint, device, dtype), formats, format_options,
              RunOptions(batch_size, workers, False, embedding_cache,
                         default_read_ahead(read_ahead, [str(src.image_root())])),
              overwrite, quiet)
    runner = job.runner()
    if embedding_cache is not None:
        check_folder(embedding_cache)
    refuse_all_missing(items, None if images is not None or src.path == "-" else
                       f"the image paths of {src.label} are taken from its folder {src.image_root()}; pass "
                       "--images DIR, the folder they start from")
    items, part = shard_items(items, shard, quiet)
    out = EventPrinter(len(items) if isinstance(items, list) else None, quiet, progress, unit="objects decoded")
    try:
        run_to_end(job, runner, items, out, [src.label], empty=f"no images in {src.label}", shard=part,
                   spread=choose(devices, ray, ray_actors))
    finally:
        if src.below_min_score:
            message(f"{src.below_min_score} object{'s' if src.below_min_score != 1 else ''} left out: scored below "
                    f"--min-score {min_score:g}", quiet)
