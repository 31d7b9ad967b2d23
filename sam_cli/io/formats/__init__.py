"""The output formats of `sam auto` (and of every command that writes masks per image): one
module each, in one registry. The registry imports nothing heavy: `--format`'s choices and
help, the man page and the completions are read from it without loading a format's module.

A format module defines:

    outputs(base: Path) -> list[Path]
        what it writes for the image whose output key is `base` (OUT/a/x.jpg): files, or
        folders, beside that name
    write(img: ImageOutput) -> None
        writes them, each under a temporary name then renamed (io.writers)
    markers(base: Path) -> list[Path]       (optional; default: its outputs, all files)
        the files written last, whose presence says an earlier run left this image's
        outputs whole, so a rerun skips it (a folder's manifest: png's metadata.csv)
    count(base: Path) -> int | None         (optional) how many masks an earlier run wrote
        there (a skipped image's count), None if it cannot tell
    REQUIRES: tuple[str, ...]               (optional) formats whose per-image outputs it reads
    finish(root: Path, rels: list[str], options: FormatOptions) -> Path | tuple[Path, str]
        (optional) the end-of-run step, over the output keys of every image of the run that
        has its outputs (done or skipped); with a one-line note for the user, if any

Adding a format is one such module and one `FormatSpec` in FORMATS (or `register`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from ...masks import MaskRecord, PromptedMask
    from ..tars import TarMember


@dataclass(frozen=True)
class FormatSpec:
    name: str
    summary: str  # a few words for --help
    module: str  # the module that writes it, imported on first use
    #: the FormatOptions fields it reads (its own options): one given without any format that
    #: reads it is a usage error, not an option silently dropped
    options: tuple[str, ...] = ()

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


@dataclass(frozen=True)
class FormatOptions:
    """Settings that some formats read; every format is given them. They change only what is
    written at the end of a run (coco.json, yolo-seg's labels), never an image's own files."""

    category: str = "object"  # the category of masks without one (all of automatic mode's)
    polygons: bool = False  # coco, cvat, labelstudio: polygons instead of RLE masks
    tolerance: float = 0.5  # polygon simplification, pixels (polygons.DEFAULT_TOLERANCE)
    min_area: int = 0  # polygon parts smaller than this many pixels are left out (and counted)
    image_root: str = ""  # labelstudio: put before each image's path (a URL or a folder)
    yolo_parts: str = "join"  # yolo-seg, a mask of several parts: one of YOLO_PARTS
    yolo_images: str = "link"  # yolo-seg, the dataset's images/: one of YOLO_IMAGES
    #: the run's categories, ids 1, 2, … in this order, listed even where no mask has one
    #: (a text-prompt run's phrases: each class keeps its id, found or not)
    categories: tuple[str, ...] = ()


#: yolo-seg's ways with a mask of several parts (a line holds one polygon): `join` them into one
#: line by zero-width corridors (Ultralytics' own COCO converter does so), write each part as a
#: line of its own (`split`: the fill is exact, the object becomes several), or keep the
#: `largest` (the others are counted as dropped).
YOLO_PARTS = ("join", "split", "largest")
#: yolo-seg's images/ folder, beside labels/ as Ultralytics' loaders look for it: a symbolic
#: `link` to each image read, a `copy` of it (a dataset that moves), or `none`.
YOLO_IMAGES = ("link", "copy", "none")


FORMATS: dict[str, FormatSpec] = {
    s.name: s
    for s in (
        FormatSpec("png", "x.jpg.masks/0.png … and metadata.csv, the default", f"{__name__}.png"),
        FormatSpec("coco-rle", "x.jpg.json, COCO RLE records", f"{__name__}.coco_rle"),
        FormatSpec("coco", "coco.json, one COCO dataset for the run", f"{__name__}.coco",
                   ("category", "polygons", "tolerance", "min_area")),
        FormatSpec("yolo-seg", "images/, labels/x.txt polygons and data.yaml: a YOLO dataset", f"{__name__}.yolo_seg",
                   ("category", "tolerance", "min_area", "yolo_parts", "yolo_images")),
        FormatSpec("cvat", "annotations.xml, CVAT for images 1.1", f"{__name__}.cvat",
                   ("category", "polygons", "tolerance", "min_area")),
        FormatSpec("labelstudio", "labelstudio.json, Label Studio tasks with predictions", f"{__name__}.labelstudio",
                   ("category", "polygons", "tolerance", "min_area", "image_root")),
        FormatSpec("label-map", "x.jpg.labels.png, 16-bit label image", f"{__name__}.label_map"),
        FormatSpec("overlay", "x.jpg.overlay.jpg, to look at", f"{__name__}.overlay"),
    )
}
DEFAULT_FORMATS = ("png",)


def unread_option(formats: tuple[str, ...], given: list[str]) -> str | None:
    """The first FormatOptions field in `given` that none of `formats` reads, or None."""
    read = {o for f in formats for o in FORMATS[f].options}
    return next((o for o in given if o not in read), None)


def register(spec: FormatSpec) -> None:
    """Add a format (a module as the module doc says) under spec.name."""
    FORMATS[spec.name] = spec


@dataclass
class ImageOutput:
    """What a format's write() gets for one image."""

    base: Path  # OUT/<output key>, e.g. OUT/a/x.jpg; outputs are named beside it
    file_name: str  # the output key, as datasets name the image (a/x.jpg)
    image: np.ndarray  # H×W×3 uint8 RGB
    records: list[MaskRecord] | list[PromptedMask]
    image_id: int | None = None  # the dataset's id for the image, when the prompts gave one
    prompted: bool = False  # a prompted run's (PromptedMask records), even when there are none
    options: FormatOptions = FormatOptions()
    source: Path | TarMember | None = None  # the image file it was read from (read_bytes())

    @cached_property
    def annotations(self) -> list[dict]:
        """The records as the reference's coco_rle output mode gives them (shared by formats)."""
        from ..records import annotation

        return [annotation(r) for r in self.records]
