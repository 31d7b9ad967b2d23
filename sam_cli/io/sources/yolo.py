"""YOLO detection labels: a folder of .txt files, one per image, mirroring the images folder
(--images): labels/a/x.txt holds the objects of images/a/x.jpg, one per line,
`class cx cy w h [confidence]`, normalised to 0..1 of the image's width and height. An image
without a label file has no objects (YOLO's background image). Class names come from --names:
a data.yaml (its `names:` list or mapping) or a text file with one name per line; otherwise
the class index is the category."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from ...errors import PromptError
from ...inputs import Exclusions
from .base import PromptItem, PromptSource, make_object


def read(src: PromptSource) -> Iterator[PromptItem]:
    from ...inputs import walk_images

    labels = Path(src.path)
    if src.images is None:
        raise PromptError(f"--prompts {labels}: YOLO labels need --images, the folder of their images")
    if not src.images.is_dir():
        raise PromptError(f"--images {src.images}: no such folder")
    names = read_names(src.names) if src.names is not None else None
    for image in walk_images(src.images, Exclusions()):
        rel = image.relative_to(src.images)
        txt = labels / rel.with_suffix(".txt")
        objects, error = [], None
        try:
            lines = txt.read_text(encoding="utf-8").splitlines() if txt.is_file() else []
        except (OSError, UnicodeDecodeError) as e:
            error = PromptError(f"{txt}: cannot read it ({e})")
            lines = []
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                objects.append(_object(line, f"{txt} line {n}", names))
            except PromptError as e:
                error = e
                break
        yield src.item(rel.as_posix(), [] if error else objects, where=str(txt), error=error)


def _object(line: str, where: str, names: list[str] | dict[int, str] | None):
    parts = line.split()
    if len(parts) not in (5, 6):
        raise PromptError(f"{where}: {len(parts)} values; a YOLO detection label is "
                          "`class cx cy w h [confidence]`")
    try:
        cls = int(parts[0])
        cx, cy, w, h, *conf = (float(v) for v in parts[1:])
    except ValueError:
        raise PromptError(f"{where}: {line.strip()!r} is not `class cx cy w h [confidence]`") from None
    if names is not None and (cls not in names if isinstance(names, dict) else not 0 <= cls < len(names)):
        raise PromptError(f"{where}: class {cls} has no name in the names file")
    return make_object(where=where, box=[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], category=cls,
                       category_name=names[cls] if names is not None else None,
                       score=conf[0] if conf else None, normalized=True)


def read_names(path: Path) -> list[str] | dict[int, str]:
    """Class names from a YOLO data.yaml (`names: [a, b]`, a `names:` block of `- a` items or
    of `0: a` pairs) or a text file of one name per line. No YAML library: only `names`."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PromptError(f"--names {path}: cannot read it ({e.strerror or e})") from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        return [s.strip() for s in text.splitlines() if s.strip()]
    lines = text.splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^names\s*:\s*(.*?)\s*(#.*)?$", line)
        if not m:
            continue
        inline = m.group(1)
        if inline.startswith("["):
            return [_unquote(s) for s in inline.strip("[]").split(",") if s.strip()]
        if inline.startswith("{"):
            return {int(k): _unquote(v) for k, v in (p.split(":", 1) for p in inline.strip("{}").split(",") if p.strip())}
        block = []
        for sub in lines[i + 1:]:
            if sub.strip() and not sub.startswith((" ", "\t", "-")):
                break
            if sub.strip() and not sub.strip().startswith("#"):
                block.append(sub.strip())
        if all(b.startswith("-") for b in block):
            return [_unquote(b[1:]) for b in block]
        try:
            return {int(k): _unquote(v) for k, v in (b.split(":", 1) for b in block)}
        except ValueError:
            break
    raise PromptError(f"--names {path}: no `names:` list or mapping in it")


def _unquote(s: str) -> str:
    s = s.split(" #")[0].strip()
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"" else s
