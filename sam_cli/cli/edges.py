"""`sam edges`: the paper's zero-shot edge maps (edges.py), over files, folders, globs or
paths on stdin, through the run engine (resumable, one JSON line per image)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import options as O
from .base import Command, app

EPILOG = """Examples:

\b
  sam edges photos/ -o edges/                 # x.jpg.edges.png, 16-bit
  sam edges photo.jpg -o edges/ --npy --nms 0.8
"""


@app.command(epilog=EPILOG, cls=Command, short_help="The paper's zero-shot edge maps of images.")
def edges(
    inputs: O.InputsArg,
    output: O.OutputDirOpt,
    grid: Annotated[int, typer.Option("--grid", metavar="N", min=1,
                                      help="Points per side of the foreground-point grid (the paper's 16: "
                                      "768 masks).")] = 16,
    nms: Annotated[float, typer.Option("--nms", metavar="IOU", min=0.0, max=1.0,
                                       help="Box NMS threshold for duplicate masks (the paper gives none; "
                                       "0.7, automatic mode's).")] = 0.7,
    npy: Annotated[bool, typer.Option("--npy", help="Also write x.jpg.edges.npy, the float32 map.")] = False,
    workers: O.WorkersOpt = 2,
    read_ahead: O.ReadAheadOpt = None,
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
    max_pixels: O.MaxPixelsOpt = None,
    quiet: O.QuietOpt = False,
) -> None:
    """Edge maps, the Segment Anything paper's way: a 16x16 grid of points, duplicate masks
    removed by NMS, each mask's probability edges on its boundary, the strongest kept, thinned.
    Writes x.jpg.edges.png (16-bit, 65535 the strongest edge) per image."""
    from ..edges import EdgeSettings
    from ..job import Job, ModelSpec, RunOptions
    from ..spread import choose
    from .common import run_over_inputs

    job = Job("edges", EdgeSettings(grid, nms, npy), output, ModelSpec(model, checkpoint, device, dtype),
              run=RunOptions(workers=workers, read_ahead=O.read_ahead(read_ahead, inputs)), overwrite=overwrite, quiet=quiet)
    runner = job.runner()
    run_over_inputs(job, runner, inputs, shard=shard, progress=progress, spread=choose(devices, ray, ray_actors))
