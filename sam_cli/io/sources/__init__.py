"""Prompt sources for `sam segment --prompts`: files that say, per image, which objects to
segment (boxes, clicks, mask prompts), one module each, in one registry like the output
formats. Each module defines

    read(src: PromptSource) -> Iterator[PromptItem]
        one item per image, in the file's order, streamed where the format allows; a bad row
        or a missing image becomes an item whose `error` names the file and line, so that
        image fails and the rest goes on
    looks_like(path: Path) -> bool     (optional) whether a file is of this kind (detect())

The registry imports nothing heavy (--help and completions read it); base.py holds what the
modules share. Coordinates are pixels of the image as displayed (EXIF applied), except YOLO's 0..1.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from ...errors import PromptError

if TYPE_CHECKING:
    from .base import PromptItem, PromptSource

SOURCES: dict[str, str] = {  # name → module, imported on first use
    "jsonl": f"{__name__}.jsonl",
    "coco": f"{__name__}.coco",
    "yolo": f"{__name__}.yolo",
    "csv": f"{__name__}.table",
}


def load(name: str) -> ModuleType:
    return importlib.import_module(SOURCES[name])


def detect(src: PromptSource, kind: str | None = None) -> PromptSource:
    """Set src.kind: `kind` if given, else from the path: - and .jsonl/.ndjson JSON Lines, a
    folder YOLO labels, .csv CSV, .json COCO (a dataset or a results list) unless it holds
    one JSON object per line. Raises PromptError for a missing file or an unknown kind."""
    if kind:
        src.kind = kind
    elif src.path == "-":
        src.kind = "jsonl"
    else:
        p = Path(src.path)
        if p.is_dir():
            src.kind = "yolo"
        elif not p.exists():
            raise PromptError(f"--prompts {src.path}: no such file or folder")
        else:
            suffix = p.suffix.lower()
            if suffix in (".jsonl", ".ndjson"):
                src.kind = "jsonl"
            elif suffix == ".csv":
                src.kind = "csv"
            elif suffix == ".json":
                src.kind = "jsonl" if load("jsonl").looks_like(p) else "coco"
            else:
                raise PromptError(f"--prompts {src.path}: cannot tell its format from the name",
                                  hint="name it .jsonl, .json, .csv, or give --prompt-format")
    if src.kind not in SOURCES:
        raise PromptError(f"--prompt-format {src.kind}: choose from {', '.join(SOURCES)}")
    if src.path != "-" and not Path(src.path).exists():
        raise PromptError(f"--prompts {src.path}: no such file or folder")
    return src


def read(src: PromptSource) -> Iterator[PromptItem]:
    return load(src.kind).read(src)


def identity(src: PromptSource) -> str:
    """What the prompts are, for the run record: the file's name and a SHA-256 of its bytes
    (of every label file under a folder; of the COCO dataset too), so a rerun with other
    prompts into the same folder is refused, not skipped; 'stdin' for `-`."""
    if src.path == "-":
        return "stdin"
    h = hashlib.sha256()
    p = Path(src.path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    files += [f for f in (src.coco_dataset, src.names) if f is not None]
    for f in files:
        h.update(str(f.relative_to(p) if p.is_dir() and f.is_relative_to(p) else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    extra = f" min-score {src.min_score:g}" if src.min_score is not None else ""
    return f"{src.label} sha256:{h.hexdigest()[:16]}{extra}"


