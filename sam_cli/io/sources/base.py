"""What the prompt sources share: the item they yield per image, the source they read, and the
checking of one object's values."""

from __future__ import annotations

import io
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from ...errors import PromptError
from ...inputs import InputItem, safe_rel, under
from ...names import bad_text
from ...prompts import ObjectPrompt, check_phrase


@dataclass(frozen=True)
class PromptItem(InputItem):
    """An image and the objects to segment in it."""

    objects: tuple[ObjectPrompt, ...] = ()


@dataclass
class PromptSource:
    """A prompt file (or folder, or `-` for stdin) and what it needs to be read."""

    path: str  # the file, a YOLO labels folder, or "-"
    images: Path | None = None  # image paths are relative to it (else to the file's folder); or a Url
    coco_dataset: Path | None = None  # the dataset naming a COCO results list's images
    names: Path | None = None  # class names (YOLO data.yaml or one name per line)
    min_score: float | None = None  # objects scored below it are dropped
    kind: str = field(default="")  # set by detect()
    seen: dict[str, str] = field(default_factory=dict, repr=False)  # output key → where first named
    below_min_score: int = field(default=0, repr=False)  # objects left out by min_score so far
    origin: str | None = None  # the URL the prompt file was copied from (path is the local copy)

    @property
    def label(self) -> str:
        return "stdin" if self.path == "-" else self.origin or self.path

    def image_root(self):
        """The folder (or a bucket's prefix, an io.remote.Url) the file's image paths start from."""
        if self.images is not None:
            return self.images
        if self.origin is not None:  # a prompt file in a bucket: its images beside it there
            from ..remote import Url

            return Url(self.origin.rsplit("/", 1)[0])
        return Path(".") if self.path == "-" else Path(self.path).parent

    def item(self, name: str, objects: list[ObjectPrompt], *, where: str, image_id: int | None = None,
             error: PromptError | None = None) -> PromptItem:
        """The item for the image `name` as the file gives it (relative to image_root() unless
        absolute); its output key is that name, made safe. An image named a second time (as
        the same output key) fails there: its objects belong with the first."""
        path, member = under(self.image_root(), name)
        rel = safe_rel(name)
        if error is None and not os.path.splitext(name)[1]:
            error = PromptError(f"{where}: image {name!r} has no file extension")
        first = self.seen.setdefault(rel, where)
        if error is None and first != where:
            error = PromptError(f"{where}: {name} was named at {first} already; "
                                "give all of an image's objects in one place")
        kept = [o for o in objects if self.min_score is None or o.score is None or o.score >= self.min_score]
        self.below_min_score += len(objects) - len(kept)
        objects = kept
        return PromptItem(path, rel, error=error, image_id=image_id, where=where, member=member,
                          objects=tuple(objects))

    def failed(self, where: str, message: str) -> PromptItem:
        """An item for a row that names no usable image: it fails with `where` as its input."""
        return PromptItem(Path(where), f"<{where}>", error=PromptError(f"{where}: {message}"))


@contextmanager
def open_text(src: PromptSource, **kw) -> Iterator[TextIO]:
    """The prompt file as text (UTF-8, a byte-order mark as Excel's "CSV UTF-8" writes it
    skipped; bytes that are not UTF-8 kept for not_utf8 to find), or stdin for `-` (left open)."""
    if src.path == "-":
        stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="surrogateescape", **kw)
        try:
            yield stdin
        finally:
            stdin.detach()  # stdin stays open
        return
    with open(src.path, encoding="utf-8-sig", errors="surrogateescape", **kw) as f:
        yield f


def not_utf8(text: str) -> bool:
    """Whether open_text's text holds bytes that were not UTF-8 (kept as lone surrogates, so
    that one bad line fails alone instead of stopping the file)."""
    return any("\udc80" <= c <= "\udcff" for c in text)


# ------------------------------------------------------------ checking an object's values
def number(v: object, what: str, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise PromptError(f"{where}: {what} must be a finite number, got {v!r}")
    return float(v)


def _box(box, what: str, where: str) -> tuple[float, float, float, float]:
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise PromptError(f"{where}: {what} must be [x0, y0, x1, y1], got {box!r}")
    bx = tuple(number(v, what, where) for v in box)
    if bx[2] < bx[0] or bx[3] < bx[1]:
        raise PromptError(f"{where}: {what} {list(box)} has x1 < x0 or y1 < y0 (it is [x0, y0, x1, y1])")
    return bx


def make_object(
    *, where: str, box=None, points=None, labels=None, mask=None, category=None, score=None,
    object_id=None, base: Path | None = None, normalized: bool = False, category_name: str | None = None,
    text=None, exemplars=(), neg_exemplars=(),
) -> ObjectPrompt:
    """An ObjectPrompt from a row's values, checked: a box is 4 numbers with x1 ≥ x0, y1 ≥ y0;
    points are [x, y] pairs with labels 1 or 0 (all 1 when absent); the object needs a box, a
    point or a mask, or else is a concept: a `text` phrase and/or exemplar boxes (examples
    and counter-examples of it; counter-examples need a phrase or an example beside them),
    with no box, point or mask of its own. `mask` is a path, relative to `base`. `category`
    an int (an id) or a string (a name); `category_name` names an id given as `category` (a
    dataset's name for it). Raises PromptError with `where`."""
    bx = None if box is None else _box(box, "box", where)
    phrase = None
    if text is not None:
        if not isinstance(text, str):
            raise PromptError(f"{where}: text must be a phrase (a string), got {text!r}")
        phrase = check_phrase(text, f"{where}: text")
    ex = []
    for what, given, label in (("exemplars", exemplars, 1), ("neg_exemplars", neg_exemplars, 0)):
        if not isinstance(given, (list, tuple)):
            raise PromptError(f"{where}: {what} must be a list of [x0, y0, x1, y1] boxes, got {given!r}")
        name = what[:-1].replace("_", " ")
        for b in given:
            bx_ = _box(b, name, where)
            if bx_[2] == bx_[0] or bx_[3] == bx_[1]:  # as --exemplar refuses it: no pixels to show
                raise PromptError(f"{where}: {name} {list(b)} has no area (x1 must be right of x0, y1 below y0)")
            ex.append((bx_, label))
    if phrase is None and ex and not any(label for _, label in ex):
        raise PromptError(f"{where}: neg_exemplars need a text or an exemplar beside them")
    if (phrase is not None or ex) and (bx is not None or points or mask is not None):
        raise PromptError(f"{where}: a text or exemplar object takes no box, points or mask of its own "
                          "(its boxes go in exemplars)")
    pts: list[tuple[float, float]] = []
    for p in points or ():
        if not isinstance(p, (list, tuple)) or len(p) != 2:
            raise PromptError(f"{where}: a point must be [x, y], got {p!r}")
        pts.append((number(p[0], "x", where), number(p[1], "y", where)))
    if labels is None:
        labs = [1] * len(pts)
    else:
        if not isinstance(labels, (list, tuple)) or len(labels) != len(pts):
            raise PromptError(f"{where}: point_labels must list one label per point ({len(pts)})")
        if any(lab not in (0, 1) or isinstance(lab, bool) for lab in labels):
            raise PromptError(f"{where}: point labels must be 1 (foreground) or 0 (background)")
        labs = [int(lab) for lab in labels]
    mk = None
    if mask is not None:
        if not isinstance(mask, str) or not mask:
            raise PromptError(f"{where}: mask must be a file name, got {mask!r}")
        mk = Path(mask) if os.path.isabs(mask) or base is None else base / mask
    if bx is None and not pts and mk is None and phrase is None and not ex:
        raise PromptError(f"{where}: an object needs a box, a point or a mask (or, for SAM 3, a text)")
    cat_name = cat_id = None
    for name in (category, category_name):
        if isinstance(name, str) and (bad := bad_text(name)):
            raise PromptError(f"{where}: the category name {name!r} {bad}")
    if isinstance(category, bool) or not (category is None or isinstance(category, (int, str))):
        raise PromptError(f"{where}: category must be a name or an integer id, got {category!r}")
    if isinstance(category, int):
        cat_id, cat_name = category, category_name
    elif isinstance(category, str) and category:
        cat_name = category
    sc = None if score is None else number(score, "score", where)
    if object_id is not None and (isinstance(object_id, bool) or not isinstance(object_id, (int, str))):
        raise PromptError(f"{where}: id must be an integer or a string, got {object_id!r}")
    return ObjectPrompt(bx, tuple(pts), tuple(labs), mk, cat_name, cat_id, sc, object_id, normalized, where, phrase,
                        tuple(b for b, _ in ex), tuple(label for _, label in ex))
