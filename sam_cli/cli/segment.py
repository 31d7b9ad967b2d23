"""`sam segment`: masks for points, boxes and mask prompts on one image, or on every image of a
prompt file (--prompts, cli/prompted.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as O
from .app import Command, app

EPILOG = """Examples:

\b
  sam segment photo.jpg --point 320,240 -o mask.png
  sam segment photo.jpg --box 10,20,300,400 --box 320,40,600,380 -o masks.json --overlay look.png
  sam segment photo.jpg --point 320,240 --multimask -o mask.png   # mask_0.png … mask_2.png
  sam segment photo.jpg --point 80,60 -o m2.png --embedding-cache emb/   # again: no encoder
  sam segment --prompts boxes.jsonl -o out/ -f coco      # many images: prompts from a file
  sam segment --prompts dets.json --coco-dataset instances.json --images val2017/ -o out/ --refine
  sam segment --prompts labels/ --images images/ --names data.yaml -o out/   # YOLO labels

Outputs: OUT ending in .png writes 0/255 single-channel masks: OUT itself for one mask, else
OUT's stem with _0, _1, … appended, in the order of the records printed on stdout (objects in
prompt order, then the model's masks). OUT ending in .json writes a list of records with
COCO RLE segmentations. `-o -` writes the one PNG mask to stdout. One JSON line per mask goes
to stdout (unless the PNG does).

With --prompts, the prompt file names the images and their objects (JSON Lines, one image per
line: {"image": "a/x.jpg", "objects": [{"box": [x0, y0, x1, y1], "points": [[x, y]],
"point_labels": [1], "category": "dog", "score": 0.9}]}; COCO; YOLO labels; CSV), and -o is an
output folder written as sam auto writes it (--format, resume, one JSON line per image).
"""


@app.command(epilog=EPILOG, cls=Command)
def segment(
    image: Annotated[
        Optional[Path],
        typer.Argument(metavar="IMAGE", show_default=False,
                       help="The image (JPEG, PNG, BMP, TIFF, WebP, GIF); not with --prompts."),
    ] = None,
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="OUT",
                          help="OUT.png, OUT.json or - (PNG to stdout); with --prompts, a folder.")
    ] = "",
    prompts: O.PromptsOpt = None,
    images: O.ImagesOpt = None,
    prompt_format: O.PromptFormatOpt = None,
    coco_dataset: O.CocoDatasetOpt = None,
    class_names: O.NamesOpt = None,
    min_score: O.MinScoreOpt = None,
    best_mask: O.BestMaskOpt = False,
    refine: O.RefineOpt = False,
    fmt: O.FormatOpt = None,
    category: O.CategoryOpt = "object",
    polygons: O.PolygonsOpt = False,
    polygon_tolerance: O.PolygonToleranceOpt = 0.5,
    polygon_min_area: O.PolygonMinAreaOpt = 0,
    image_root: O.ImageRootOpt = "",
    yolo_parts: O.YoloPartsOpt = "join",
    point: Annotated[
        Optional[list[str]],
        typer.Option("--point", "-p", metavar="X,Y", help="Foreground point (repeatable)."),
    ] = None,
    neg_point: Annotated[
        Optional[list[str]],
        typer.Option("--neg-point", "-n", metavar="X,Y", help="Background point (repeatable)."),
    ] = None,
    box: Annotated[
        Optional[list[str]],
        typer.Option(
            "--box", "-b", metavar="X0,Y0,X1,Y1",
            help="Box around one object (repeatable: each box is one object, decoded together).",
        ),
    ] = None,
    mask_input: Annotated[
        Optional[Path],
        typer.Option(
            "--mask-input", metavar="FILE",
            help="Mask prompt: a 256×256 .npy of low-res logits from an earlier run, or a binary "
            "mask image the size of IMAGE (non-zero inside; becomes logits ±10).",
        ),
    ] = None,
    multimask: Annotated[
        bool, typer.Option("--multimask", help="Return the three ambiguity masks per object.")
    ] = False,
    overlay: Annotated[
        Optional[Path], typer.Option("--overlay", metavar="FILE", help="Also write a picture of the masks over the image.")
    ] = None,
    logits: Annotated[
        Optional[Path],
        typer.Option("--save-logits", metavar="FILE", help="Also save low-res logits (.npy) to feed back with --mask-input."),
    ] = None,
    batch_size: O.BatchSizeOpt = None,
    workers: O.WorkersOpt = 2,
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
    """Segment objects from points, boxes or mask prompts: in one image, or in every image of a
    prompt file (--prompts)."""
    from ..errors import PromptError

    given = {"IMAGE": image, "--point": point, "--neg-point": neg_point, "--box": box,
             "--mask-input": mask_input, "--overlay": overlay, "--save-logits": logits}
    many = {"--images": images, "--prompt-format": prompt_format, "--coco-dataset": coco_dataset,
            "--names": class_names, "--min-score": min_score, "--format": fmt,
            "--polygons": polygons, "--image-root": image_root,
            "--yolo-parts": yolo_parts != "join", "--shard": shard,
            "--devices": devices, "--ray": ray, "--ray-actors": ray_actors}
    if not output:
        raise PromptError("missing option -o/--output")
    if best_mask and multimask:
        raise PromptError("--best-mask and --multimask ask for different masks; give one")
    if prompts is not None:
        if clash := next((k for k, v in given.items() if v), None):
            raise PromptError(f"{clash} is for one image; with --prompts the prompt file names "
                              "the images and their prompts")
        from .prompted import segment_prompts

        return segment_prompts(
            prompts, Path(output), images=images, prompt_format=prompt_format, coco_dataset=coco_dataset,
            class_names=class_names, min_score=min_score, choice=_choice(multimask, best_mask),
            refine=refine, formats=fmt, format_options=(category, polygons, polygon_tolerance, polygon_min_area, image_root,
                            yolo_parts),
            batch_size=batch_size, workers=workers, overwrite=overwrite,
            progress=progress, model=model, checkpoint=checkpoint, device=device, dtype=dtype,
            embedding_cache=embedding_cache, quiet=quiet, shard=shard, devices=devices,
            ray=ray, ray_actors=ray_actors)
    if clash := next((k for k, v in many.items() if v), None):
        raise PromptError(f"{clash} works with --prompts FILE (many images)")
    if image is None:
        raise PromptError("missing IMAGE (or --prompts FILE for many images)")
    import numpy as np

    from .. import masks as M
    from ..io import records as records_mod
    from ..io import writers
    from ..io.images import read_image
    from ..prompts import Prompts, load_mask_prompt
    from .common import load_sam, out_bytes, out_line

    if not (output == "-" or output.lower().endswith((".png", ".json"))):
        raise PromptError(f"--output {output}: must end in .png or .json, or be - for stdout")
    for target in (None if output == "-" else Path(output), overlay, logits):
        if target is not None:  # before any work: a typo costs nothing
            writers.check_folder_writable(target.parent, f"{target}: its folder {target.parent}")
    prompts = Prompts.parse(point or [], neg_point or [], box or [])
    rgb = read_image(image)
    hw = rgb.shape[:2]
    prompts.check_inside(hw, str(image))
    mask_prompt = load_mask_prompt(mask_input, hw) if mask_input else None
    if not prompts.points and not prompts.boxes and mask_prompt is None:
        raise PromptError("no prompt: give --point, --neg-point, --box or --mask-input")

    from ..embedding_cache import EmbeddingCache, check_folder
    from ..predictor import Predictor
    from .common import message

    if embedding_cache is not None:
        check_folder(embedding_cache)
    loaded = load_sam(model, checkpoint, device, dtype, quiet)
    cache = None
    if embedding_cache is not None:
        cache = EmbeddingCache(embedding_cache, loaded.net, warn=lambda text: message(text, quiet),
                               weights_id=loaded.weights_id)
    predictor = Predictor(loaded.net, cache)
    predictor.set_image(rgb)
    n_masks = max(1, len(prompts.boxes)) * (3 if multimask else 1)
    if output == "-" and n_masks != 1:
        raise PromptError(f"-o - writes one PNG, but there are {n_masks} masks; use OUT.png or OUT.json")
    png_paths = _png_paths(Path(output), n_masks) if output.lower().endswith(".png") else []
    # full-size masks one decoder call at a time (16 boxes on the CPU): each is written, or
    # encoded as RLE, and kept only as its box's pixels for the overlay
    records, segmentations, crops, lows = [], [], [], []
    for pred in predictor.predict_chunks(
        point_coords=prompts.points or None, point_labels=prompts.labels or None,
        boxes=prompts.boxes or None, mask_input=mask_prompt, choice=_choice(multimask, best_mask),
        refine=refine,
        low_res=bool(logits),  # without --save-logits, skip the logits that cover padding
    ):
        first = len(records)
        chunk = records_mod.mask_records(pred.masks, pred.iou, pred.index)
        for rec in chunk:
            rec["object_index"] += first // pred.masks.shape[1]
        for k, m in enumerate(m for obj in pred.masks for m in obj):
            if output == "-":
                out_bytes(writers.mask_png(m))
            elif png_paths:
                writers.atomic_write_bytes(png_paths[first + k], writers.mask_png(m))
                chunk[k]["file"] = str(png_paths[first + k])
            else:
                segmentations.append(M.mask_to_coco(m))
            if overlay:
                crops.append(M.mask_crop(m))
        records += chunk
        if logits:
            lows.append(pred.low_res)
    if output != "-" and not png_paths:
        writers.write_json(output, [{"segmentation": s, **r} for s, r in zip(segmentations, records)])
        for rec in records:
            rec["file"] = output
    if overlay:
        picture = writers.overlay_crops(rgb, crops)
        writers.draw_prompts(picture, prompts.points, prompts.labels, prompts.boxes)
        writers.write_image(overlay, picture)
    if logits:
        writers.atomic_write_bytes(logits, records_mod.npy_bytes(np.concatenate(lows)))
    if output != "-":
        for rec in records:
            out_line(writers.json_text(rec))


def _choice(multimask: bool, best_mask: bool) -> str:
    return "all" if multimask else "best" if best_mask else "first"


def _png_paths(out: Path, n: int) -> list[Path]:
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]

