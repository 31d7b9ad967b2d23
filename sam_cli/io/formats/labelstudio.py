"""labelstudio: labelstudio.json, a list of Label Studio tasks for the run, one per image,
its masks as predictions, to import as pre-annotations (a project whose labelling config has
`<Image name="image">`, `<BrushLabels name="label" toName="image">` and, for polygons,
`<PolygonLabels name="polygon" toName="image">`). Written at the end from the per-image
coco-rle files (REQUIRES), when every label is known.

Each mask is a `brushlabels` result in Label Studio's brush RLE (rle-pack: the mask as an
RGBA image, each pixel's 0 or 255 four times, bit-packed runs, `brush_rle`). With
options.polygons, a mask without holes is `polygonlabels` results instead, one per part, in
percent of the image's width and height; a mask with holes, which a polygon cannot hold,
stays a brush mask. Each result has its score (the detector's, else the predicted IoU); the
task's image is options.image_root joined with the image's path (Label Studio serves local
files under /data/local-files/?d=…)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import writers
from . import FormatOptions, ImageOutput
from .dataset import Categories, docs, mask_of, polygon_note, polygon_parts

REQUIRES = ("coco-rle",)
LS_FILE = "labelstudio.json"
#: rle-pack's header: the run-length field sizes, in bits, that a 2-bit index chooses from.
RLE_SIZES = (3, 4, 8, 16)


def outputs(base: Path) -> list[Path]:
    return []  # per image, coco-rle's file (REQUIRES)


def write(img: ImageOutput) -> None:
    pass


def brush_rle(mask: np.ndarray) -> list[int]:
    """H×W bool → Label Studio's brush RLE bytes: 32 bits the number of values (H·W·4), 5 bits
    the word size − 1 (8 bits), 4 bits each RLE_SIZES − 1, then each run of equal values as
    1, a 2-bit size index, the length − 1 in that size, and the 8-bit value (0 or 255); runs
    longer than 65,536 are split; padded with 0 bits to whole bytes."""
    flat = mask.ravel()
    n = flat.size
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [n]])) * 4  # RGBA: four values per pixel
    bits: list[tuple[int, int]] = [(n * 4, 32), (7, 5)] + [(s - 1, 4) for s in RLE_SIZES]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        value = 255 if flat[start] else 0
        while length > 0:
            chunk = min(length, 1 << 16)
            index = next(k for k, s in enumerate(RLE_SIZES) if chunk <= 1 << s)
            bits += [(1, 1), (index, 2), (chunk - 1, RLE_SIZES[index]), (value, 8)]
            length -= chunk
    acc, nbits = 0, 0
    for value, width in bits:
        acc = (acc << width) | value
        nbits += width
    pad = -nbits % 8
    return list((acc << pad).to_bytes((nbits + pad) // 8, "big"))


def finish(root: Path, rels: list[str], options: FormatOptions | None = None) -> tuple[Path, str]:
    from ... import __version__
    from ...masks import mask_crop

    options = options or FormatOptions()
    images, cats = Categories.scan(root, rels, options, LS_FILE)
    path = root / LS_FILE
    kept_masks = dropped = 0
    with writers.atomic_open(path) as f:
        f.write(b"[")
        for k, (im, doc) in enumerate(zip(images, docs(root, rels, LS_FILE))):
            w, h = im["width"], im["height"]
            results = []
            scores = []
            for i, a in enumerate(doc["annotations"]):
                mask = mask_of(a)
                score = float(a.get("score", a["predicted_iou"]))
                scores.append(score)
                base = {"from_name": "label", "to_name": "image", "original_width": w, "original_height": h,
                        "image_rotation": 0, "score": score}
                parts, left_out = polygon_parts(mask_crop(mask), options) if options.polygons else (None, 0)
                dropped += left_out
                if parts is not None:
                    for j, part in enumerate(parts):
                        pts = (part / [w, h] * 100).round(4).tolist()
                        results.append({**base, "id": f"m{i}p{j}", "from_name": "polygon", "type": "polygonlabels",
                                        "value": {"points": pts, "closed": True,
                                                  "polygonlabels": [cats.name_of(a)]}})
                    continue
                kept_masks += options.polygons
                results.append({**base, "id": f"m{i}", "type": "brushlabels",
                                "value": {"format": "rle", "rle": brush_rle(mask), "brushlabels": [cats.name_of(a)]}})
            task = {"data": {"image": options.image_root + im["file_name"]},
                    "predictions": [{"model_version": f"sam {__version__}",
                                     "score": float(np.mean(scores)) if scores else 0.0, "result": results}]}
            f.write((b"," if k else b"") + writers.json_bytes(task))
        f.write(b"]")
    note = polygon_note(kept_masks, dropped, "brush masks", options)
    return path, note
