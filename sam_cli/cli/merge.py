"""`sam merge`: the run-level outputs of a run split into shards (shards.py)."""

from __future__ import annotations

from typing import Annotated

import typer

from .base import Command, app
from .options import QuietOpt

EPILOG = """Examples:

\b
  sam auto photos/ -o out -f coco --shard 0/2 & sam auto photos/ -o out -f coco --shard 1/2; wait
  sam merge out
"""


@app.command(epilog=EPILOG, cls=Command, short_help="The run-level outputs of a run made in shards.")
def merge(
    output: Annotated[str, typer.Argument(metavar="OUT", help="The output folder (or bucket URL) the shards "
                                          "wrote to.", show_default=False)],
    quiet: QuietOpt = False,
) -> None:
    """Write the run-level outputs (coco.json, yolo-seg's labels, annotations.xml, …) of a run
    made in shards (--shard, --devices, --ray), once every shard has finished: the same
    files a plain run over the same images writes."""
    from ..engines import get
    from ..errors import SamError
    from ..inputs import RUN_RECORD
    from ..io.formats import FormatOptions
    from ..io.remote import Url
    from ..job import output_layout
    from ..shards import SHARDS_DIR, gather
    from .common import message
    from .exitcodes import ExitCode
    from .options import output_folder

    folder = output_folder(output)
    listed = {}
    if isinstance(folder, Url):  # the records read from a staging folder the bucket's layout fills
        from ..io.bucket import BucketLayout

        reader = BucketLayout(folder, ())
        reader.fetch(sorted(k for k in reader.keys if k == RUN_RECORD or k.startswith(SHARDS_DIR + "/")))
        plan = gather(reader.root, where=reader.where)
        listed = {"listing": set(reader.keys)}  # the writer below takes this listing: one per merge
    else:
        plan = gather(folder)
    job = plan.job or {"mode": "automatic"}
    own = get(job["mode"]).own_from_merge(job.get("own"))
    options = FormatOptions(**plan.options) if plan.options is not None else None
    layout = output_layout(folder, plan.formats, options=options, own=own, **listed)
    failed = []
    for name in layout.run_level() if plan.images else []:
        message(f"writing {name} over {len(plan.images)} images…", quiet)
        try:
            path, note = layout.finish_one(name, plan.images)
        except SamError as e:  # the others are written all the same
            message(f"Error: {e}")
            failed.append(name)
            continue
        message(f"wrote {path}" + (f" ({note})" if note else ""), quiet)
    message(f"merged {plan.count} shards: {len(plan.images)} images"
            + (f", {len(plan.failed)} failed" if plan.failed else ""), quiet)
    if not layout.run_level():
        message("no run-level formats were asked for (-f coco, yolo-seg, cvat, labelstudio): "
                "nothing to write", quiet)
    if failed:  # an output that could not be written (a full disk)
        raise typer.Exit(ExitCode.OUTPUT)
    if plan.failed:
        more = f" and {len(plan.failed) - 5} more" if len(plan.failed) > 5 else ""
        message(f"failed in their shards, so not in the run-level outputs: {', '.join(plan.failed[:5])}{more} "
                "(rerun their shards, then merge again)", quiet)
        raise typer.Exit(ExitCode.PARTIAL)
