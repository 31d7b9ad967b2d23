"""`sam auto`: every object's mask, over files, folders, globs or paths on stdin."""

from __future__ import annotations

import typer

from . import options as O
from .base import Command, app

EPILOG = """Examples:

\b
  sam auto photos/ -o masks/
  sam auto 'shots/**/*.jpg' -o out --format coco-rle --format overlay
  find photos -name '*.jpg' | sam auto - -o out --format coco
  sam auto photos/ -o out -f cvat -f yolo-seg --category bottle   # for CVAT and YOLO training

Outputs mirror the inputs' paths under OUT (a folder argument's files and an absolute glob's
matches relative to it; an absolute file outside the working folder by its name; other files,
globs and stdin paths as given), keeping the extension so x.jpg and x.png never collide.
A rerun skips images whose outputs are all there (--overwrite redoes them). One JSON line per
image goes to stdout.
"""


@app.command(epilog=EPILOG, cls=Command, short_help="Every object's mask, over files, folders and globs.")
def auto(
    ctx: typer.Context,
    inputs: O.InputsArg,
    output: O.OutputDirOpt,
    fmt: O.FormatOpt = None,
    category: O.CategoryOpt = "object",
    polygons: O.PolygonsOpt = False,
    polygon_tolerance: O.PolygonToleranceOpt = 0.5,
    polygon_min_area: O.PolygonMinAreaOpt = 0,
    image_root: O.ImageRootOpt = "",
    yolo_parts: O.YoloPartsOpt = "join",
    yolo_images: O.YoloImagesOpt = "link",
    points_per_side: O.PointsPerSideOpt = 32,
    points_per_batch: O.PointsPerBatchOpt = None,
    pred_iou_thresh: O.PredIouThreshOpt = None,
    stability_score_thresh: O.StabilityThreshOpt = 0.95,
    stability_score_offset: O.StabilityOffsetOpt = 1.0,
    box_nms_thresh: O.BoxNmsOpt = 0.7,
    crop_n_layers: O.CropLayersOpt = 0,
    crop_nms_thresh: O.CropNmsOpt = 0.7,
    crop_overlap_ratio: O.CropOverlapOpt = 512 / 1500,
    crop_n_points_downscale_factor: O.CropDownscaleOpt = 1,
    min_mask_region_area: O.MinRegionOpt = 0,
    multimask: O.MultimaskAutoOpt = True,
    use_m2m: O.M2mOpt = False,
    proposals: O.ProposalsOpt = False,
    max_proposals: O.MaxProposalsOpt = 1000,
    model: O.ModelOpt = None,
    checkpoint: O.CheckpointOpt = None,
    device: O.DeviceOpt = "auto",
    dtype: O.DtypeOpt = "fp32",
    compile_model: O.CompileOpt = False,
    embedding_cache: O.EmbeddingCacheOpt = None,
    batch_size: O.BatchSizeOpt = None,
    workers: O.WorkersOpt = 2,
    read_ahead: O.ReadAheadOpt = None,
    overwrite: O.OverwriteOpt = False,
    progress: O.ProgressOpt = None,
    shard: O.ShardOpt = None,
    devices: O.DevicesOpt = None,
    ray: O.RayOpt = None,
    ray_actors: O.RayActorsOpt = None,
    max_pixels: O.MaxPixelsOpt = None,
    quiet: O.QuietOpt = False,
) -> None:
    """Generate every object's mask for many images, streamed through a batched pipeline."""
    from dataclasses import fields

    from ..automatic import AmgSettings
    from ..embedding_cache import check_folder
    from ..engines import AutomaticSettings
    from ..io.formats import DEFAULT_FORMATS
    from ..job import Job, ModelSpec, RunOptions
    from ..spread import choose
    from .common import run_over_inputs

    given = locals()
    if proposals:
        from ..automatic.proposals import PRESET

        # the preset where the option was not given (Typer's click: compared by name)
        given.update((k, v) for k, v in PRESET.items() if ctx.get_parameter_source(k).name == "DEFAULT")
    settings = AmgSettings(**{f.name: given[f.name] for f in fields(AmgSettings)}).check()
    formats = tuple(dict.fromkeys(fmt or DEFAULT_FORMATS))
    job = Job(
        "automatic", AutomaticSettings(settings, max_proposals if proposals else None), output,
        ModelSpec(model, checkpoint, device, dtype), formats, O.format_options(ctx, formats),
        RunOptions(batch_size, workers, compile_model, embedding_cache, O.read_ahead(read_ahead, inputs)), overwrite, quiet)
    runner = job.runner()
    if embedding_cache is not None:
        check_folder(embedding_cache)
    run_over_inputs(job, runner, inputs, shard=shard, progress=progress, spread=choose(devices, ray, ray_actors))
