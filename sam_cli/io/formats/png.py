"""png (the default): x.jpg.masks/0.png … N-1.png, one 0/255 single-channel PNG per mask, and
metadata.csv, in the layout and with the CSV header of the reference's scripts/amg.py (bbox in
the COCO convention); a prompted run's metadata.csv has its own header (PROMPTED_HEADER)."""

from __future__ import annotations

import csv
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ... import masks as M
from .. import writers
from . import ImageOutput

METADATA_HEADER = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
    "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h"
)
#: metadata.csv of a prompted run (`sam segment --prompts`): object_index is the object's
#: position among its image's prompts, mask_index which of the decoder's masks it is, prompt
#: the prompts it was decoded from (JSON: the box after clipping, points and labels, a mask file).
PROMPTED_HEADER = (
    "id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,object_index,mask_index,predicted_iou,category_id,"
    "category,score,object_id,prompt"
)
#: Its output is a folder named so (not entered when looking for a killed run's leftovers).
FOLDER_SUFFIX = ".masks"
#: Threads encoding one image's mask PNGs.
PNG_THREADS = min(8, os.cpu_count() or 1)


def outputs(base: Path) -> list[Path]:
    return [base.with_name(base.name + FOLDER_SUFFIX)]


def markers(base: Path) -> list[Path]:
    return [outputs(base)[0] / "metadata.csv"]  # written last


def count(base: Path) -> int | None:
    try:
        with open(outputs(base)[0] / "metadata.csv", "rb") as f:
            return max(0, sum(1 for _ in f) - 1)  # the header
    except OSError:
        return None


def write(img: ImageOutput) -> None:
    records, anns = img.records, img.annotations
    with writers.atomic_dir(outputs(img.base)[0]) as tmp:

        def write_mask(i: int) -> None:
            rle = records[i].rle
            (tmp / f"{i}.png").write_bytes(writers.crop_png(M.rle_to_crop(rle), rle["size"]))

        # PNG encoding is most of this and OpenCV releases the GIL in it: the masks are
        # encoded on several threads (a 12 MP mask takes 15–30 ms on one core)
        pool = ThreadPoolExecutor(PNG_THREADS, thread_name_prefix="sam-png")
        try:
            for _ in pool.map(write_mask, range(len(records))):
                pass
        finally:  # on an error or Ctrl-C, the masks not yet started are not encoded
            pool.shutdown(cancel_futures=True)
        (tmp / "metadata.csv").write_text(prompted_metadata(anns) if img.prompted else metadata(anns))


def metadata(anns: list[dict]) -> str:
    lines = [METADATA_HEADER]
    for i, ann in enumerate(anns):
        x, y = ann["point_coords"][0]
        lines.append(",".join(str(v) for v in (
            i, ann["area"], *ann["bbox"], x, y, ann["predicted_iou"],
            ann["stability_score"], *ann["crop_box"],
        )))
    return "\n".join(lines) + "\n"


def prompted_metadata(anns: list[dict]) -> str:
    """A prompted run's metadata.csv: PROMPTED_HEADER, one row per mask; the prompt file's
    category, score and object id empty where it gave none."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(PROMPTED_HEADER.split(","))
    for i, a in enumerate(anns):
        out.writerow([i, a["area"], *a["bbox"], a["object_index"], a["mask_index"], a["predicted_iou"],
                      *(a.get(k, "") for k in ("category_id", "category", "score", "object_id")),
                      json.dumps(a.get("prompt", {}), ensure_ascii=False, separators=(",", ":"))])
    return buf.getvalue()
