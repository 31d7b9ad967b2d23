"""`sam auto`: every object's mask, over files, folders, globs or paths on stdin."""

from __future__ import annotations

import typer

from . import options as O
from .app import Command, app

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


@app.command(epilog=EPILOG, cls=Command)
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
    points_per_side: O.PointsPerSideOpt = 32,
    points_per_batch: O.PointsPerBatchOpt = None,
    pred_iou_thresh: O.PredIouThreshOpt = 0.88,
    stability_score_thresh: O.StabilityThreshOpt = 0.95,
    stability_score_offset: O.StabilityOffsetOpt = 1.0,
    box_nms_thresh: O.BoxNmsOpt = 0.7,
    crop_n_layers: O.CropLayersOpt = 0,
    crop_nms_thresh: O.CropNmsOpt = 0.7,
    crop_overlap_ratio: O.CropOverlapOpt = 512 / 1500,
    crop_n_points_downscale_factor: O.CropDownscaleOpt = 1,
    min_mask_region_area: O.MinRegionOpt = 0,
    proposals: O.ProposalsOpt = False,
    max_proposals: O.MaxProposalsOpt = 1000,
    batch_size: O.BatchSizeOpt = None,
    workers: O.WorkersOpt = 2,
    compile_model: O.CompileOpt = False,
    overwrite: O.OverwriteOpt = False,
    shard: O.ShardOpt = None,
    progress: O.ProgressOpt = None,
    model: O.ModelOpt = None,
    checkpoint: O.CheckpointOpt = None,
    device: O.DeviceOpt = "auto",
    devices: O.DevicesOpt = None,
    ray: O.RayOpt = None,
    ray_actors: O.RayActorsOpt = None,
    dtype: O.DtypeOpt = "fp32",
    embedding_cache: O.EmbeddingCacheOpt = None,
    max_pixels: O.MaxPixelsOpt = None,
    quiet: O.QuietOpt = False,
) -> None:
    """Generate every object's mask for many images, streamed through a batched pipeline."""
    from dataclasses import fields

    from ..automatic import AmgSettings
    from ..embedding_cache import check_folder
    from ..engines import automatic_record
    from ..inputs import Exclusions, expand_inputs
    from ..io.formats import DEFAULT_FORMATS, FormatOptions
    from ..io.outputs import OutputLayout
    from ..run import Runner
    from .common import EventPrinter, run_to_end, shard_items
    from .workers import EngineSpec, parse_devices, spread_on_ray

    given = locals()
    if proposals:
        from ..automatic.proposals import PRESET

        # the preset where the option was not given (Typer's click: compared by name)
        given.update((k, v) for k, v in PRESET.items() if ctx.get_parameter_source(k).name == "DEFAULT")
    settings = AmgSettings(**{f.name: given[f.name] for f in fields(AmgSettings)}).check()
    kept = max_proposals if proposals else None
    record = automatic_record(settings, model=model, checkpoint=checkpoint, dtype=dtype, proposals=kept)
    options = FormatOptions(category, polygons, polygon_tolerance, polygon_min_area, image_root, yolo_parts)
    layout = OutputLayout(output, tuple(dict.fromkeys(fmt or DEFAULT_FORMATS)), options=options)
    runner = Runner(layout, overwrite=overwrite, record=record)
    if embedding_cache is not None:
        check_folder(embedding_cache)
    excluded = Exclusions(output)
    items = expand_inputs(inputs, exclude=excluded)
    total = None
    if "-" not in inputs:  # a known total for the progress bar
        items = list(items)
    items, part = shard_items(items, shard, quiet)
    if isinstance(items, list):
        total = len(items)
    out = EventPrinter(total, quiet, progress)

    spec = EngineSpec("automatic", model, checkpoint, dtype, quiet, {
        "settings": settings, "batch_size": batch_size, "workers": workers, "compile_model": compile_model,
        "embedding_cache": embedding_cache, "proposals": kept})
    run_to_end(runner, items, lambda: spec.make(device, out.note, out.points), out, inputs, excluded=excluded,
               shard=part, spec=spec, devices=parse_devices(devices) if devices else None,
               ray=spread_on_ray(ray, device, ray_actors, devices))
