"""One image's prompts into masks and their files (`sam segment IMAGE`), as a library call:
the CLI parses and checks options, this does the work and hands each mask's record back.

Outputs (SingleOutputs): OUT.png writes 0/255 single-channel PNGs (OUT itself for one mask,
else OUT's stem with _0, _1, … in record order), OUT.json a list of records with COCO RLE
segmentations, "-" the one PNG mask to a byte sink (stdout); an overlay picture and the
low-res logits (.npy, to feed back as a mask prompt) besides. Full-size masks are held one
decoder call at a time (16 boxes on the CPU): each is written, or encoded as RLE, and kept only
as its box's pixels for the overlay.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import PromptError


@dataclass(frozen=True)
class SingleOutputs:
    output: str  # OUT.png, OUT.json or "-"
    overlay: Path | None = None
    logits: Path | None = None

    def check(self) -> None:
        """Refuse a bad output name, and folders that cannot be written, before any work."""
        from .io import writers
        from .io.remote import is_url, looks_like_mangled_url

        out = self.output
        for name, value in (("--output", out), ("--overlay", self.overlay), ("--logits", self.logits)):
            if value is not None and (is_url(str(value)) or looks_like_mangled_url(value)):
                raise PromptError(f"{name} {value}: sam segment on one image writes files on a disk",
                                  hint="for a bucket, use a prompt file: sam segment --prompts FILE -o s3://…/")
        if not (out == "-" or out.lower().endswith((".png", ".json"))):
            raise PromptError(f"--output {out}: must end in .png or .json, or be - for stdout")
        for target in (None if out == "-" else Path(out), self.overlay, self.logits):
            if target is not None:
                writers.check_folder_writable(target.parent, f"{target}: its folder {target.parent}")

    @property
    def pngs(self) -> bool:
        return self.output.lower().endswith(".png")

    def png_paths(self, n: int) -> list[Path]:
        out = Path(self.output)
        if n == 1:
            return [out]
        return [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(n)]


def segment_image(
    predictor, rgb: np.ndarray, prompts, mask_prompt: np.ndarray | None, outputs: SingleOutputs, *,
    choice: str = "first", refine: bool = False, to_stdout: Callable[[bytes], None] | None = None,
) -> list[dict]:
    """prompts (prompts.Prompts, in rgb's pixels) and mask_prompt (1×256×256 logits) on the
    H×W×3 uint8 image rgb → the masks' records, in order (objects in prompt order, then the
    decoder's masks), each with the file it went to; the files written as `outputs` says.
    predictor: a predictor.Predictor (its model loaded). choice: predictor.MASK_CHOICES."""
    from . import masks as M
    from .io import records as records_mod
    from .io import writers

    predictor.set_image(rgb)
    per_object = 3 if choice == "all" else 1
    n_masks = max(1, len(prompts.boxes)) * per_object
    if outputs.output == "-" and n_masks != 1:
        raise PromptError(f"-o - writes one PNG, but there are {n_masks} masks; use OUT.png or OUT.json")
    png_paths = outputs.png_paths(n_masks) if outputs.pngs else []
    records, segmentations, crops, lows = [], [], [], []
    for pred in predictor.predict_chunks(
        point_coords=prompts.points or None, point_labels=prompts.labels or None,
        boxes=prompts.boxes or None, mask_input=mask_prompt, choice=choice, refine=refine,
        low_res=outputs.logits is not None,  # without logits asked for, skip those covering padding
    ):
        first = len(records)
        chunk = records_mod.mask_records(pred.masks, pred.iou, pred.index)
        for rec in chunk:
            rec["object_index"] += first // pred.masks.shape[1]
        for k, m in enumerate(m for obj in pred.masks for m in obj):
            if outputs.output == "-":
                to_stdout(writers.mask_png(m))
            elif png_paths:
                writers.atomic_write_bytes(png_paths[first + k], writers.mask_png(m))
                chunk[k]["file"] = str(png_paths[first + k])
            else:
                segmentations.append(M.mask_to_coco(m))
            if outputs.overlay:
                crops.append(M.mask_crop(m))
        records += chunk
        if outputs.logits:
            lows.append(pred.low_res)
    if outputs.output != "-" and not png_paths:
        writers.write_json(outputs.output, [{"segmentation": s, **r} for s, r in zip(segmentations, records)])
        for rec in records:
            rec["file"] = outputs.output
    if outputs.overlay:
        picture = writers.overlay_crops(rgb, crops)
        writers.draw_prompts(picture, prompts.points, prompts.labels, prompts.boxes)
        writers.write_image(outputs.overlay, picture)
    if outputs.logits:
        writers.atomic_write_bytes(outputs.logits, records_mod.npy_bytes(np.concatenate(lows)))
    return records
