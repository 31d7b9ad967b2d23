"""CSV prompts with a header row. Boxes: `image,x0,y0,x1,y1[,category][,score][,id]`; points:
`image,x,y[,label]` (label 1 foreground, 0 background; 1 when absent). Both kinds of column
may be in one file. Each row is one object, except that rows with the same value in an
`object` column (within one image) are one object: its points together, with its box. Rows of
one image come together (sort the file by image); the same image again after another fails.
Read row by row: memory holds one image's rows.

For SAM 3, a `text` column: a row with a phrase is a concept (every instance of it is found);
its box, if any, is an exemplar of the phrase (`label` 0: a counter-example), and an image's
rows with the same phrase are one concept with all their exemplars."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from ...errors import PromptError
from .base import PromptItem, PromptSource, make_object, not_utf8, open_text

BOX = ("x0", "y0", "x1", "y1")
POINT = ("x", "y")
KNOWN = {"image", *BOX, *POINT, "label", "category", "score", "id", "object", "mask", "text"}


def read(src: PromptSource) -> Iterator[PromptItem]:
    name = src.label
    with open_text(src, newline="") as f:
        rows = csv.reader(f)
        header = [h.strip().lower() for h in next(rows, [])]
        _check_header(header, name)
        col = {h: i for i, h in enumerate(header)}
        seen: dict[str, int] = {}
        group: list[tuple[int, list[str]]] = []
        for n, row in enumerate(rows, start=2):
            if not any(c.strip() for c in row):
                continue
            image = row[col["image"]].strip() if len(row) > col["image"] else ""
            if group and image != group[0][1][col["image"]].strip():
                yield _item(src, group, col, seen)
                group = []
            group.append((n, row))
        if group:
            yield _item(src, group, col, seen)


def _check_header(header: list[str], name: str) -> None:
    if "image" not in header:
        raise PromptError(f"--prompts {name}: the first row must be a header naming an `image` column",
                          hint="e.g. image,x0,y0,x1,y1 for boxes or image,x,y,label for points")
    has_box, has_point = all(c in header for c in BOX), all(c in header for c in POINT)
    if not (has_box or has_point or "text" in header):
        raise PromptError(f"--prompts {name}: the header needs x0,y0,x1,y1 (boxes), x,y (points) or text (phrases)")
    unknown = [h for h in header if h not in KNOWN]
    if unknown:
        raise PromptError(f"--prompts {name}: unknown column {unknown[0]!r} (known: {', '.join(sorted(KNOWN))})")


def _item(src: PromptSource, group: list[tuple[int, list[str]]], col: dict[str, int],
          seen: dict[str, int]) -> PromptItem:
    first, row0 = group[0]
    image = row0[col["image"]].strip()
    where = f"{src.label} line {first}"
    if bad := next((n for n, row in group if any(not_utf8(c) for c in row)), None):
        return src.failed(f"{src.label} line {bad}", "not UTF-8 text")
    if not image:
        return src.failed(where, "no image named in the `image` column")
    if image in seen:
        return src.item(image, [], where=where, error=PromptError(
            f"{where}: rows for {image} also came before line {first} (first on line {seen[image]}), "
            "with other images' rows between them; sort the file by image"))
    seen[image] = first
    base = Path(".") if src.path == "-" else Path(src.path).parent
    objects: dict[str, dict] = {}  # object key → its values, in first-row order
    try:
        for n, row in group:
            at = f"{src.label} line {n}"
            if len(row) != len(col):
                raise PromptError(f"{at}: {len(row)} values for {len(col)} columns")
            get = {h: row[i].strip() for h, i in col.items()}
            text = get.get("text") or None
            key = get.get("object") or (f"text {text}" if text is not None else f"row {n}")
            obj = objects.setdefault(key, {"where": at, "points": [], "labels": [], "exemplars": [], "neg": []})
            if text is not None:
                obj.setdefault("text", text)
            label = get.get("label") or "1"
            if label not in ("0", "1"):
                raise PromptError(f"{at}: label must be 1 (foreground) or 0 (background), got {label!r}")
            if all(get.get(c) for c in BOX):
                box = [_num(get[c], c, at) for c in BOX]
                if text is not None:  # an exemplar of the phrase
                    obj["exemplars" if label == "1" else "neg"].append(box)
                elif "box" in obj:
                    raise PromptError(f"{at}: object {key} has a box on an earlier row already")
                else:
                    obj["box"] = box
            elif any(get.get(c) for c in BOX):
                raise PromptError(f"{at}: a box needs all of x0,y0,x1,y1")
            if get.get("x") or get.get("y"):
                obj["points"].append([_num(get.get("x", ""), "x", at), _num(get.get("y", ""), "y", at)])
                obj["labels"].append(int(label))
            for k in ("category", "score", "id", "mask"):
                if get.get(k):
                    obj[k] = get[k]
        made = []
        for o in objects.values():
            cat = o.get("category")
            made.append(make_object(
                where=o["where"], box=o.get("box"), points=o["points"], labels=o["labels"],
                mask=o.get("mask"), category=int(cat) if cat and cat.lstrip("-").isdigit() else cat,
                score=_num(o["score"], "score", o["where"]) if "score" in o else None,
                object_id=o.get("id"), base=base, text=o.get("text"), exemplars=o["exemplars"],
                neg_exemplars=o["neg"]))
    except PromptError as e:
        return src.item(image, [], where=where, error=e)
    return src.item(image, made, where=where)


def _num(text: str, what: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise PromptError(f"{where}: {what} must be a number, got {text!r}") from None
