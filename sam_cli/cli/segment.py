"""`sam segment`: masks for points, boxes and mask prompts on one image."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app
from .options import CheckpointOpt, DeviceOpt, DtypeOpt, ModelOpt, QuietOpt

EPILOG = """Examples:

\b
  sam segment photo.jpg --point 320,240 -o mask.png

  sam segment photo.jpg --box 10,20,300,400 --box 320,40,600,380 -o masks.json --overlay look.png

  sam segment photo.jpg --point 320,240 --multimask -o mask.png   # mask_0.png … mask_2.png

Outputs: OUT ending in .png writes 0/255 single-channel masks: OUT itself for one mask, else
OUT's stem with _0, _1, … appended, in the order of the records printed on stdout (objects in
prompt order, then the model's masks). OUT ending in .json writes a list of records with
COCO RLE segmentations. `-o -` writes the one PNG mask to stdout. One JSON line per mask goes
to stdout (unless the PNG does).
"""


@app.command(epilog=EPILOG)
def segment(
    image: Annotated[Path, typer.Argument(help="The image (JPEG, PNG, BMP, TIFF, WebP).")],
    output: Annotated[
        str, typer.Option("--output", "-o", metavar="OUT", help="OUT.png, OUT.json or - (PNG to stdout).")
    ],
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
    model: ModelOpt = None,
    checkpoint: CheckpointOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "fp32",
    quiet: QuietOpt = False,
) -> None:
    """Segment objects in one image from points, boxes or a mask prompt."""
    from ..errors import PromptError
    from ..io import writers
    from ..io.images import read_image
    from ..prompts import Prompts, load_mask_prompt
    from .common import load_sam

    if not (output == "-" or output.lower().endswith((".png", ".json"))):
        raise PromptError(f"--output {output}: must end in .png or .json, or be - for stdout")
    prompts = Prompts.parse(point or [], neg_point or [], box or [])
    rgb = read_image(image)
    hw = rgb.shape[:2]
    prompts.check_inside(hw, str(image))
    mask_prompt = load_mask_prompt(mask_input, hw) if mask_input else None
    if not prompts.points and not prompts.boxes and mask_prompt is None:
        raise PromptError("no prompt: give --point, --neg-point, --box or --mask-input")

    from ..predictor import Predictor

    net = load_sam(model, checkpoint, device, dtype, quiet)
    predictor = Predictor(net)
    predictor.set_image(rgb)
    pred = predictor.predict(
        point_coords=prompts.points or None,
        point_labels=prompts.labels or None,
        boxes=prompts.boxes or None,
        mask_input=mask_prompt,
        multimask=multimask,
    )
    records = _records(pred)
    masks = [m for obj in pred.masks for m in obj]
    if output == "-":
        if len(masks) != 1:
            raise PromptError(f"-o - writes one PNG, but there are {len(masks)} masks; use OUT.png or OUT.json")
        sys.stdout.buffer.write(writers.mask_png(masks[0]))
        sys.stdout.buffer.flush()
    elif output.lower().endswith(".png"):
        paths = _png_paths(Path(output), len(masks))
        for path, m, rec in zip(paths, masks, records):
            writers.atomic_write_bytes(path, writers.mask_png(m))
            rec["file"] = str(path)
    else:
        from ..masks import rle_to_coco

        import torch

        from ..masks import masks_to_rle

        out = []
        for m, rec in zip(masks, records):
            rle = rle_to_coco(masks_to_rle(torch.from_numpy(m)[None])[0])
            out.append({"segmentation": rle, **{k: v for k, v in rec.items() if k != "file"}})
        writers.write_json(output, out)
        for rec in records:
            rec["file"] = output
    if overlay:
        writers.write_image(overlay, writers.overlay(rgb, masks))
    if logits:
        import io

        import numpy as np

        buf = io.BytesIO()
        np.save(buf, pred.low_res)
        writers.atomic_write_bytes(logits, buf.getvalue())
    if output != "-":
        for rec in records:
            print(json.dumps(rec), flush=True)


def _png_paths(out: Path, n: int) -> list[Path]:
    if n == 1:
        return [out]
    return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def _records(pred) -> list[dict]:
    from ..masks import masks_to_boxes, xyxy_to_xywh_coco

    import torch

    recs = []
    for oi, (obj_masks, obj_iou) in enumerate(zip(pred.masks, pred.iou)):
        boxes = masks_to_boxes(torch.from_numpy(obj_masks))
        for mi, (m, iou, b) in enumerate(zip(obj_masks, obj_iou, boxes.tolist())):
            area = int(m.sum())
            recs.append({
                "object_index": oi, "mask_index": mi, "predicted_iou": round(float(iou), 6),
                "area": area, "bbox": xyxy_to_xywh_coco(b, area),
            })
    return recs
