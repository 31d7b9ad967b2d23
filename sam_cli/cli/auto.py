"""`sam auto`: every object's mask, over files, folders, globs or paths on stdin."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app
from .exitcodes import ExitCode
from .options import CheckpointOpt, DeviceOpt, DtypeOpt, EmbeddingCacheOpt, FormatOpt, ModelOpt, QuietOpt

EPILOG = """Examples:

\b
  sam auto photos/ -o masks/

  sam auto 'shots/**/*.jpg' -o out --format coco-rle --format overlay

  find photos -name '*.jpg' | sam auto - -o out --format coco

Outputs mirror the inputs' paths under OUT (a folder argument's files and an absolute glob's
matches relative to it; an absolute file outside the working folder by its name; other files,
globs and stdin paths as given), keeping the extension so x.jpg and x.png never collide.
A rerun skips images whose outputs are all there (--overwrite redoes them). One JSON line per
image goes to stdout.
"""
Opt = typer.Option


@app.command(epilog=EPILOG)
def auto(
    inputs: Annotated[list[str], typer.Argument(help="Image files, folders (recursive), globs, or - to read paths from stdin.")],
    output: Annotated[Path, Opt("--output", "-o", metavar="DIR", help="Output folder.")],
    fmt: FormatOpt = None,
    points_per_side: Annotated[int, Opt(help="Grid points per side of the image.")] = 32,
    points_per_batch: Annotated[Optional[int], Opt(help="Points decoded together (memory vs speed; masks are the same). [default: 64 on the CPU, 256 on a GPU]", show_default=False)] = None,
    pred_iou_thresh: Annotated[float, Opt(help="Keep masks whose predicted IoU is above this (0 turns the filter off).")] = 0.88,
    stability_score_thresh: Annotated[float, Opt(help="Keep masks with a stability score at least this (0 turns it off).")] = 0.95,
    stability_score_offset: Annotated[float, Opt(help="Logit offset of the stability score.")] = 1.0,
    box_nms_thresh: Annotated[float, Opt(help="Box IoU above which duplicate masks are removed.")] = 0.7,
    crop_n_layers: Annotated[int, Opt(help="Extra layers of smaller crops (0: the whole image only).")] = 0,
    crop_nms_thresh: Annotated[float, Opt(help="Box IoU for duplicates across crops.")] = 0.7,
    crop_overlap_ratio: Annotated[float, Opt(help="Overlap of neighbouring crops, as a share of the short side.")] = 512 / 1500,
    crop_n_points_downscale_factor: Annotated[int, Opt(help="Crop layer i uses points-per-side / factor^i.")] = 1,
    min_mask_region_area: Annotated[int, Opt(help="Fill holes and remove islands smaller than this many pixels (0: off).")] = 0,
    batch_size: Annotated[Optional[int], Opt(min=1, help="Images (crops) per image-encoder batch. [default: 1 on the CPU, 4 on a GPU]", show_default=False)] = None,
    workers: Annotated[int, Opt(min=1, help="Threads decoding images ahead.")] = 2,
    compile_model: Annotated[bool, Opt("--compile", help="torch.compile the encoder and decoder: the first batches take a few minutes longer, later ones less time (on a GPU; not on a CPU). For long runs.", show_default=False)] = False,
    overwrite: Annotated[bool, Opt("--overwrite", help="Redo images whose outputs exist.")] = False,
    progress: Annotated[Optional[bool], Opt("--progress/--no-progress", help="Progress bar on stderr (default: only on a terminal).")] = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    embedding_cache: EmbeddingCacheOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate every object's mask for many images, streamed through a batched pipeline."""
    from ..automatic import AmgSettings
    from ..embedding_cache import check_folder
    from ..engines import AutomaticEngine
    from ..inputs import expand_inputs
    from ..io.formats import DEFAULT_FORMATS
    from ..io.outputs import OutputLayout
    from ..run import Runner
    from .common import EventPrinter, load_sam

    settings = AmgSettings(
        points_per_side=points_per_side, points_per_batch=points_per_batch,
        pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
        stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
        crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh, crop_overlap_ratio=crop_overlap_ratio,
        crop_n_points_downscale_factor=crop_n_points_downscale_factor, min_mask_region_area=min_mask_region_area,
    ).check()
    runner = Runner(OutputLayout(output, tuple(dict.fromkeys(fmt or DEFAULT_FORMATS))), overwrite=overwrite)
    if embedding_cache is not None:
        check_folder(embedding_cache)
    items = expand_inputs(inputs)
    total = None
    if "-" not in inputs:  # a known total for the progress bar
        items = list(items)
        total = len(items)
    out = EventPrinter(total, quiet, progress)

    def engine() -> AutomaticEngine:
        return AutomaticEngine(load_sam(model, checkpoint, device, dtype, quiet), settings,
                               batch_size=batch_size, workers=workers, compile_model=compile_model,
                               embedding_cache=embedding_cache, warn=out.note)

    made: list[AutomaticEngine] = []
    try:
        for ev in runner.run(items, lambda: made.append(engine()) or made[0]):
            out.event(ev)
    finally:
        out.close()
    if out.summary(runner.counts, made[0].cache if made else None, inputs):
        raise typer.Exit(ExitCode.PARTIAL)
