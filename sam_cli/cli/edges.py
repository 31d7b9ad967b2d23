"""`sam edges`: the paper's zero-shot edge maps (edges.py), over files, folders, globs or
paths on stdin, through the run engine (resumable, one JSON line per image)."""

from __future__ import annotations

from typing import Annotated

import typer

from . import options as O
from .app import Command, app

EPILOG = """Examples:

\b
  sam edges photos/ -o edges/                 # x.jpg.edges.png, 16-bit
  sam edges photo.jpg -o edges/ --npy --nms 0.8
"""


@app.command(epilog=EPILOG, cls=Command)
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
    overwrite: O.OverwriteOpt = False,
    progress: O.ProgressOpt = None,
    model: O.ModelOpt = None,
    checkpoint: O.CheckpointOpt = None,
    device: O.DeviceOpt = "auto",
    dtype: O.DtypeOpt = "fp32",
    max_pixels: O.MaxPixelsOpt = None,
    quiet: O.QuietOpt = False,
) -> None:
    """Edge maps, the Segment Anything paper's way: a 16x16 grid of points, duplicate masks
    removed by NMS, each mask's probability edges on its boundary, the strongest kept, thinned.
    Writes x.jpg.edges.png (16-bit, 65535 the strongest edge) per image."""
    from ..edges import EdgeEngine, EdgeOutput, edges_record
    from ..inputs import Exclusions, expand_inputs
    from ..io.outputs import OutputLayout
    from ..run import Runner
    from .common import EventPrinter, load_sam, run_to_end

    record = edges_record(grid=grid, nms=nms, model=model, checkpoint=checkpoint, dtype=dtype)
    layout = OutputLayout(output, (), own={"edges": EdgeOutput(npy)})
    runner = Runner(layout, overwrite=overwrite, record=record)
    excluded = Exclusions(output)
    items = expand_inputs(inputs, exclude=excluded)
    total = None
    if "-" not in inputs:
        items = list(items)
        total = len(items)
    out = EventPrinter(total, quiet, progress)
    run_to_end(runner, items, lambda: EdgeEngine(load_sam(model, checkpoint, device, dtype, quiet), grid=grid,
                                                 nms=nms, workers=workers), out, inputs, excluded=excluded)
