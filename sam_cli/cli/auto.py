"""`sam auto`: every object's mask, over files, folders, globs or paths on stdin."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app
from .exitcodes import ExitCode
from .options import FORMATS, CheckpointOpt, DeviceOpt, DtypeOpt, EmbeddingCacheOpt, ModelOpt, QuietOpt

EPILOG = """Examples:

\b
  sam auto photos/ -o masks/

  sam auto 'shots/**/*.jpg' -o out --format coco-rle --format overlay

  find photos -name '*.jpg' | sam auto - -o out --format coco

Outputs mirror the inputs' paths under OUT (a folder argument's files and an absolute glob's
matches relative to it; an absolute file outside the working folder by its name; other files,
globs and stdin paths as given), keeping the extension so x.jpg and x.png never collide:
png: x.jpg.masks/0.png … N-1.png + metadata.csv; coco-rle: x.jpg.json; coco: coco.json for
the run (plus the per-image x.jpg.json it is built from); label-map: x.jpg.labels.png (16-bit,
each pixel 1 + the index of the smallest mask covering it, 0 for none); overlay: x.jpg.overlay.jpg.
A rerun skips images whose outputs are all there (--overwrite redoes them). One JSON line per
image goes to stdout.
"""

#: Said when --compile is asked for on a CPU (measured with scripts/cpu_profile.py --compile).
COMPILE_ON_CPU_NOTE = (
    "note: --compile is for GPUs; on a CPU compiling takes minutes and has not made sam "
    "measurably faster"
)

FormatOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--format", "-f", metavar="FORMAT",
        help="png (default), coco-rle, coco, label-map, overlay; repeat for several.",
        autocompletion=lambda: list(FORMATS),
    ),
]


@app.command(epilog=EPILOG)
def auto(
    inputs: Annotated[
        list[str], typer.Argument(help="Image files, folders (recursive), globs, or - to read paths from stdin.")
    ],
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DIR", help="Output folder.")],
    fmt: FormatOpt = None,
    points_per_side: Annotated[int, typer.Option(help="Grid points per side of the image.")] = 32,
    points_per_batch: Annotated[
        Optional[int],
        typer.Option(help="Points decoded together (memory vs speed; masks are the same). [default: 64 on the CPU, 256 on a GPU]", show_default=False),
    ] = None,
    pred_iou_thresh: Annotated[float, typer.Option(help="Keep masks whose predicted IoU is above this (0 turns the filter off).")] = 0.88,
    stability_score_thresh: Annotated[float, typer.Option(help="Keep masks with a stability score at least this (0 turns it off).")] = 0.95,
    stability_score_offset: Annotated[float, typer.Option(help="Logit offset of the stability score.")] = 1.0,
    box_nms_thresh: Annotated[float, typer.Option(help="Box IoU above which duplicate masks are removed.")] = 0.7,
    crop_n_layers: Annotated[int, typer.Option(help="Extra layers of smaller crops (0: the whole image only).")] = 0,
    crop_nms_thresh: Annotated[float, typer.Option(help="Box IoU for duplicates across crops.")] = 0.7,
    crop_overlap_ratio: Annotated[float, typer.Option(help="Overlap of neighbouring crops, as a share of the short side.")] = 512 / 1500,
    crop_n_points_downscale_factor: Annotated[int, typer.Option(help="Crop layer i uses points-per-side / factor^i.")] = 1,
    min_mask_region_area: Annotated[int, typer.Option(help="Fill holes and remove islands smaller than this many pixels (0: off).")] = 0,
    batch_size: Annotated[
        Optional[int],
        typer.Option(help="Images (crops) per image-encoder batch. [default: 1 on the CPU, 4 on a GPU]", show_default=False),
    ] = None,
    workers: Annotated[int, typer.Option(help="Threads decoding images ahead.")] = 2,
    compile_model: Annotated[
        bool,
        typer.Option("--compile", help="torch.compile the encoder and decoder: the first batches take a few minutes longer, later ones less time (on a GPU; not on a CPU). For long runs.", show_default=False),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo images whose outputs exist.")] = False,
    progress: Annotated[
        Optional[bool],
        typer.Option("--progress/--no-progress", help="Progress bar on stderr (default: only on a terminal)."),
    ] = None,
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    embedding_cache: EmbeddingCacheOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Generate every object's mask for many images, streamed through a batched pipeline."""
    from ..automatic import AmgSettings, AutomaticMaskGenerator
    from ..embedding_cache import EmbeddingCache, check_folder
    from ..errors import PromptError, SamError
    from ..inputs import expand_inputs
    from ..io.amg_outputs import OutputLayout, write_coco_dataset, write_image_outputs
    from ..io.images import IMAGE_EXTENSIONS
    from ..pipeline import ImageResult, WriteBehind, generate_masks
    from .common import load_sam, message, stderr_is_tty

    formats = tuple(dict.fromkeys(fmt or ["png"]))
    for f in formats:
        if f not in FORMATS:
            raise PromptError(f"--format {f}: choose from {', '.join(FORMATS)}")
    for name, val in (("--points-per-side", points_per_side), ("--points-per-batch", 1 if points_per_batch is None else points_per_batch),
                      ("--batch-size", 1 if batch_size is None else batch_size),
                      ("--crop-n-points-downscale-factor", crop_n_points_downscale_factor)):
        if val < 1:
            raise PromptError(f"{name} {val}: must be at least 1")
    if crop_n_layers < 0 or min_mask_region_area < 0:
        raise PromptError("--crop-n-layers and --min-mask-region-area must not be negative")
    settings = AmgSettings(
        points_per_side=points_per_side, points_per_batch=points_per_batch,
        pred_iou_thresh=pred_iou_thresh, stability_score_thresh=stability_score_thresh,
        stability_score_offset=stability_score_offset, box_nms_thresh=box_nms_thresh,
        crop_n_layers=crop_n_layers, crop_nms_thresh=crop_nms_thresh,
        crop_overlap_ratio=crop_overlap_ratio,
        crop_n_points_downscale_factor=crop_n_points_downscale_factor,
        min_mask_region_area=min_mask_region_area,
    )
    layout = OutputLayout(output, formats)
    if embedding_cache is not None:
        check_folder(embedding_cache)
    items = expand_inputs(inputs)
    total = None
    if "-" not in inputs:
        items = list(items)
        total = len(items)
        if total == 0:  # nothing to do is not an error (exit 0), but say so, before any download
            message(f"no images found in {' '.join(inputs)} "
                    f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})", quiet)
            return
    net = load_sam(model, checkpoint, device, dtype, quiet)
    if compile_model:
        if net.device.type == "cpu":
            message(COMPILE_ON_CPU_NOTE, quiet)
        failed: list[str] = []

        def compile_failed(part: str, err: BaseException) -> None:
            if not failed:  # one line, not one per part
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                message(f"--compile: compiling the {part} failed ({first}); it runs uncompiled, as does any other part that fails", quiet)
            failed.append(part)

        net.compile_parts(on_failure=compile_failed)
    cache = None
    if embedding_cache is not None:
        def warn(text: str) -> None:
            if bar is not None:
                bar.write(text, file=sys.stderr)
            else:
                message(text, quiet)

        cache = EmbeddingCache(embedding_cache, net, warn=warn)
    gen = AutomaticMaskGenerator(net, settings, embedding_cache=cache)
    if batch_size is None:  # a GPU encodes 4 images in 0.63x the time per image of one (vit_h)
        batch_size = 1 if gen.on_cpu else 4
    seen: dict[str, str] = {}
    done_rels: list[str] = []
    failures: list[str] = []
    counts = {"ok": 0, "skipped": 0, "failed": 0}

    bar = None
    if not quiet and (progress if progress is not None else stderr_is_tty()):
        from tqdm import tqdm

        bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)

    def emit(line: dict) -> None:
        print(json.dumps(line), flush=True)
        if bar is not None:
            bar.update(1)

    def fail(path, err: SamError, seconds: float = 0.0) -> None:
        counts["failed"] += 1
        failures.append(str(err))
        if bar is not None:
            bar.write(f"Error: {err}", file=sys.stderr)
        elif not quiet:
            message(f"Error: {err}")
        emit({"input": str(path), "status": "failed", "error": str(err), "seconds": round(seconds, 3)})

    claimed: set[str] = set()  # output keys already produced or skipped in this run

    def unique(it) -> bool:
        """False when another input already maps to this output key."""
        first = seen.setdefault(it.rel, os.path.realpath(it.path))
        return first == os.path.realpath(it.path)

    def skip(it) -> bool:
        if not unique(it):
            return False  # reported as a collision below
        if it.rel in claimed:
            return True  # the same file named twice
        claimed.add(it.rel)
        return not overwrite and layout.is_complete(it.rel)

    def write_job(res: ImageResult) -> None:
        try:
            written = write_image_outputs(layout, res.item.rel, res.image, res.records, res.item.rel)
        except SamError as e:
            fail(res.item.path, e, res.seconds)
            return
        counts["ok"] += 1
        done_rels.append(res.item.rel)
        emit({"input": str(res.item.path), "status": "ok", "outputs": written,
              "masks": len(res.records), "seconds": round(res.seconds, 3)})

    writer = WriteBehind(lambda job: job())
    try:
        for res in generate_masks(gen, items, batch_size=batch_size, workers=workers, skip=skip):
            if not isinstance(res, ImageResult):  # skipped: outputs already complete
                def skipped(it=res) -> None:
                    counts["skipped"] += 1
                    done_rels.append(it.rel)
                    emit({"input": str(it.path), "status": "skipped"})
                writer.submit(skipped)
            elif not unique(res.item):
                err = SamError(
                    f"{res.item.path}: its outputs ({res.item.rel}) would overwrite those of "
                    f"{seen[res.item.rel]}"
                )
                writer.submit(lambda r=res, e=err: fail(r.item.path, e))
            elif res.error is not None:
                writer.submit(lambda r=res: fail(r.item.path, r.error, r.seconds))
            else:
                writer.submit(lambda r=res: write_job(r))
    finally:
        writer.close()
        if cache is not None:
            cache.close()
        if bar is not None:
            bar.close()
    if "coco" in formats and done_rels:
        path = write_coco_dataset(layout, done_rels)
        message(f"wrote {path}", quiet)
    message(
        f"{counts['ok']} done, {counts['skipped']} skipped (already done), {counts['failed']} failed",
        quiet,
    )
    if cache is not None and cache.hits + cache.misses:
        message(f"embedding cache: {cache.hits} of {cache.hits + cache.misses} embeddings "
                f"read from {embedding_cache}", quiet)
    if failures:
        message("failed inputs:\n  " + "\n  ".join(failures), quiet)
        raise typer.Exit(ExitCode.PARTIAL)
