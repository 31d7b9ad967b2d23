"""JSON Lines prompts (also `-` for stdin), one image per line:

    {"image": "a/x.jpg", "image_id": 3, "objects": [{"box": [x0, y0, x1, y1],
     "points": [[x, y], ...], "point_labels": [1, 0, ...], "mask": "prev.npy",
     "category": "dog", "score": 0.91, "id": 7}, ...]}

Every key of an object is optional, but it needs a box, a point or a mask; "image_id" is
optional. For SAM 3, an object may be a concept instead: {"text": "dog", "exemplars": [[x0,
y0, x1, y1], ...], "neg_exemplars": [...]} (every instance of it is found); a line's own
"text" (a phrase or a list of them) is one such object per phrase, before its "objects".
Read line by line. The same image on two lines fails the second (its objects belong on one
line)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from ...errors import PromptError
from .base import PromptItem, PromptSource, make_object, not_utf8, open_text

#: How much of a .json file's first line is read to tell JSON Lines from one JSON document.
LOOK = 16 << 20
OBJECT_KEYS = {"box", "points", "point_labels", "mask", "category", "score", "id", "text", "exemplars",
               "neg_exemplars"}
LINE_KEYS = {"image", "image_id", "objects", "text"}


def looks_like(path: Path) -> bool:
    """A .json file holding one JSON object per line (not one JSON document)."""
    with open(path, "rb") as f:
        first = f.readline(LOOK)  # a COCO file is often one long line: never read it whole here
        second = f.readline(LOOK).strip()
    if not first.endswith(b"\n") or not first.startswith(b"{") or not second:
        return False
    try:
        json.loads(first)
        return True
    except ValueError:
        return False


def read(src: PromptSource) -> Iterator[PromptItem]:
    name = src.label
    base = Path(".") if src.path == "-" else Path(src.path).parent  # mask files: beside the prompts
    with open_text(src) as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                yield _item(src, line, f"{name} line {n}", base)


def _item(src: PromptSource, line: str, where: str, base: Path) -> PromptItem:
    if not_utf8(line):
        return src.failed(where, "not UTF-8 text")
    try:
        doc = json.loads(line)
    except ValueError as e:
        return src.failed(where, f"not a JSON object ({e})")
    if not isinstance(doc, dict) or not isinstance(doc.get("image"), str) or not doc["image"]:
        return src.failed(where, 'each line needs "image": the image\'s path')
    image = doc["image"]
    image_id = doc.get("image_id")
    try:
        if unknown := sorted(set(doc) - LINE_KEYS):  # a box given beside "image" would be dropped unseen
            raise PromptError(f"{where}: unknown key {unknown[0]!r} (a line holds {', '.join(sorted(LINE_KEYS))}; "
                              "boxes and points go in its objects)")
        if image_id is not None and (isinstance(image_id, bool) or not isinstance(image_id, int)):
            raise PromptError(f"{where}: image_id must be an integer, got {image_id!r}")
        objs = doc.get("objects", [])
        if not isinstance(objs, list):
            raise PromptError(f'{where}: "objects" must be a list')
        texts = doc.get("text", [])
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list):
            raise PromptError(f'{where}: "text" must be a phrase or a list of phrases, got {texts!r}')
        objects = [make_object(where=f"{where}, text {k}", text=t) for k, t in enumerate(texts)]
        for k, o in enumerate(objs):
            at = f"{where}, object {k}"
            if not isinstance(o, dict):
                raise PromptError(f"{at}: must be a JSON object")
            unknown = set(o) - OBJECT_KEYS
            if unknown:
                raise PromptError(f"{at}: unknown key {sorted(unknown)[0]!r} "
                                  f"(known: {', '.join(sorted(OBJECT_KEYS))})")
            objects.append(make_object(
                where=at, box=o.get("box"), points=o.get("points"), labels=o.get("point_labels"),
                mask=o.get("mask"), category=o.get("category"), score=o.get("score"),
                object_id=o.get("id"), base=base, text=o.get("text"), exemplars=o.get("exemplars", ()),
                neg_exemplars=o.get("neg_exemplars", ())))
    except PromptError as e:
        return src.item(image, [], where=where, error=e)
    return src.item(image, objects, where=where, image_id=image_id)
