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
#: beside it: the project's labelling config, to paste in Settings → Labeling Interface
CONFIG_FILE = "labelstudio-config.xml"
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
    longer than 65,536 are split; padded with 0 bits to whole bytes. Linear in the number of
    runs: the fields are laid out with numpy, one pass per bit of the widest field."""
    flat = np.ascontiguousarray(mask, dtype=bool).ravel()
    n = flat.size
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], edges]).astype(np.int64)
    lengths = np.diff(np.concatenate([starts, [n]])) * 4  # RGBA: four values per pixel
    values = np.where(flat[starts], 255, 0) if n else np.zeros(0, np.int64)
    # runs longer than 2**16 values become several of at most 2**16 (the last one shorter)
    pieces = -(-lengths // (1 << 16))
    run_of = np.repeat(np.arange(len(lengths)), pieces)
    first_piece = np.repeat(np.cumsum(pieces) - pieces, pieces)
    k = np.arange(len(run_of)) - first_piece
    chunk = np.minimum(lengths[run_of] - k * (1 << 16), 1 << 16)
    index = np.searchsorted(np.array([1 << s for s in RLE_SIZES]), chunk)  # the smallest size that holds it
    size = np.array(RLE_SIZES)[index]
    m = len(chunk)
    head = [(n * 4, 32), (7, 5)] + [(s - 1, 4) for s in RLE_SIZES]
    field_values = np.concatenate([np.array([v for v, _ in head], np.int64),
                                   np.stack([np.ones(m, np.int64), index, chunk - 1, values[run_of]], 1).ravel()])
    field_widths = np.concatenate([np.array([w for _, w in head], np.int64),
                                   np.stack([np.ones(m, np.int64), np.full(m, 2), size, np.full(m, 8)], 1).ravel()])
    ends = np.cumsum(field_widths)
    total = int(ends[-1])
    bits = np.zeros(total + (-total % 8), np.uint8)
    begins = ends - field_widths
    for b in range(int(field_widths.max())):  # bit b of each field from its most significant
        has = field_widths > b
        shift = field_widths[has] - 1 - b
        bits[begins[has] + b] = (field_values[has] >> shift) & 1
    return np.packbits(bits).tolist()


def labelling_config(names: list[str], polygons: bool) -> str:
    """The Label Studio labelling config that tasks of these category names need."""
    from xml.sax.saxutils import quoteattr

    labels = "".join(f"\n    <Label value={quoteattr(n)}/>" for n in names)
    polygon = (f'\n  <PolygonLabels name="polygon" toName="image">{labels}\n  </PolygonLabels>'
               if polygons else "")
    return (f'<View>\n  <Image name="image" value="$image"/>\n  <BrushLabels name="label" toName="image">'
            f"{labels}\n  </BrushLabels>{polygon}\n</View>\n")


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
                # Label Studio scores are 0..1; a predicted IoU can stray outside
                score = min(1.0, max(0.0, float(a.get("score", a["predicted_iou"]))))
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
    names = list(dict.fromkeys(cats.ids.values()))
    writers.atomic_write_bytes(root / CONFIG_FILE, labelling_config(names, options.polygons).encode())
    note = polygon_note(kept_masks, dropped, "brush masks", options)
    config = f"its labelling config in {CONFIG_FILE}"
    return path, f"{note}; {config}" if note else config
