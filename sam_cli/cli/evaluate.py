"""`sam eval`: the paper's single-point valid-mask evaluation, or box prompts, on a COCO-format
ground truth (evaluate.py), through the run engine (resumable, one JSON line per image)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as O
from .base import Command, app

EPILOG = """Examples:

\b
  sam eval instances_val.json --images val/ -o report/          # mIoU after 1, 2, 3, 5, 9 clicks
  sam eval gt.json -o report/ --oracle --clicks 1,3,5
  sam eval gt.json -o report/ --box --refine                    # mIoU and COCO mask AP
  sam eval instances_val.json --images val/ -o report/ --text   # SAM 3: mask AP of the category names
"""


def _clicks(text: str) -> tuple[int, ...]:
    from ..errors import PromptError

    try:
        ks = tuple(sorted({int(v) for v in text.split(",")}))
    except ValueError:
        raise PromptError(f"--clicks {text}: give numbers of clicks, e.g. 1,2,3,5,9") from None
    if not ks or ks[0] < 1:
        raise PromptError(f"--clicks {text}: each must be at least 1")
    return ks


@app.command(name="eval", epilog=EPILOG, cls=Command,
             short_help="mIoU after 1, 2, 3… clicks (or boxes) on a COCO ground truth.")
def evaluate(
    ground_truth: Annotated[Path, typer.Argument(metavar="GT", show_default=False,
                                                 help="A COCO dataset file with the objects' segmentations.")],
    output: O.OutputDirOpt,
    images: Annotated[Optional[str], typer.Option("--images", metavar="DIR", callback=O.path_or_url,
                                                  help="Where the images are, a folder or a bucket's prefix "
                                                  "(default: GT's folder).")] = None,
    clicks: Annotated[str, typer.Option("--clicks", metavar="LIST",
                                        help="Report mIoU after these numbers of clicks.")] = "1,2,3,5,9",
    oracle: Annotated[bool, typer.Option("--oracle", help="First click: the best of the three masks "
                                         "against the ground truth, not the most confident.")] = False,
    first_click: Annotated[str, typer.Option("--first-click", metavar="HOW",
                                             help="center (the point farthest from the boundary) or random "
                                             "(a seeded pixel of the object).")] = "center",
    seed: Annotated[int, typer.Option("--seed", help="--first-click random's seed.")] = 0,
    box: Annotated[bool, typer.Option("--box", help="Prompt with each object's box instead of clicks: mIoU "
                                      "and COCO mask AP.")] = False,
    refine: Annotated[bool, typer.Option("--refine", help="--box: decode again with the first mask as the "
                                         "mask prompt.")] = False,
    text: Annotated[bool, typer.Option("--text", help="SAM 3: find each category by its name as a phrase in every "
                                       "image; COCO mask AP (the zero-shot protocol).")] = False,
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
    """The Segment Anything paper's interactive evaluation on your ground truth: a click at each
    object's center, then at the middle of the largest error, the previous mask fed back; mIoU
    after each number of clicks (stdout), every object's results (eval.json) and a plot
    (eval.png). --box: box prompts, mIoU and COCO mask AP."""
    import hashlib
    import json
    import os

    from ..errors import InputError, PromptError
    from ..evaluate import EvalRun, EvalSettings, keep_ground_truth, table
    from ..ground_truth import read_ground_truth
    from ..inputs import InputItem, under
    from ..job import Job, ModelSpec, RunOptions
    from ..spread import choose
    from .common import EventPrinter, message, refuse_all_missing, run_to_end, shard_items

    if first_click not in ("center", "random"):
        raise PromptError(f"--first-click {first_click}: choose center or random")
    if refine and not box:
        raise PromptError("--refine works with --box")
    if text and (box or oracle):
        raise PromptError(f"--text and {'--box' if box else '--oracle'} are two evaluations; give one")
    report = _clicks(clicks)
    try:  # read once: parsed here and hashed below
        data = ground_truth.read_bytes()
    except OSError as e:
        raise InputError(f"{ground_truth}: cannot read the ground truth ({e})") from None
    gt = read_ground_truth(ground_truth, boxes=box, data=data)
    s = EvalSettings(clicks=max(report), oracle=oracle, first=first_click, seed=seed, box=box, refine=refine,
                     text=text)
    if text and model is None and checkpoint is None:
        from ..registry import DEFAULT_TEXT_MODEL

        model = DEFAULT_TEXT_MODEL
    identity = hashlib.sha256(data).hexdigest()
    run = EvalRun(os.path.abspath(ground_truth), identity, s, report)
    keep_ground_truth(run, gt)  # read once in this process
    reading = RunOptions(workers=workers, read_ahead=O.read_ahead(read_ahead, [images or ""]))
    job = Job("eval", run, output, ModelSpec(model, checkpoint, device, dtype), run=reading,
              overwrite=overwrite, quiet=quiet)
    runner = job.runner()
    root = images if images is not None else ground_truth.parent
    items = []
    for i in sorted(gt.objects):
        path, member = under(root, gt.images[i]["file_name"])
        items.append(InputItem(path, gt.images[i]["file_name"], image_id=i, where=f"{ground_truth} image {i}",
                               member=member))
    refuse_all_missing(items, None if images is not None else
                       f"the images are looked for beside {ground_truth}; pass --images DIR, the folder its "
                       "file_name paths start from")
    items, part = shard_items(items, shard, quiet)
    out = EventPrinter(len(items), quiet, progress, unit="objects")
    report_path = runner.layout.root / "eval.json"
    before = report_path.stat().st_mtime_ns if report_path.is_file() else None

    def say_table() -> None:  # for people, on stderr, after the images' lines; never an earlier run's
        if report_path.is_file() and report_path.stat().st_mtime_ns != before:
            message(table(json.loads(report_path.read_text())["summary"], s), quiet)

    try:
        run_to_end(job, runner, items, out, [str(ground_truth)], empty=f"no objects in {ground_truth}",
                   shard=part, spread=choose(devices, ray, ray_actors))
    except typer.Exit:
        say_table()  # some images failed: the others' table
        raise
    say_table()
