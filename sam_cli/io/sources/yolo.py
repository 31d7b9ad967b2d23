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
    if not isinstance(src.images, Path) or not src.images.is_dir():
        raise PromptError(f"--images {src.images}: no such folder")
    names = _checked(read_names(src.names), src.names) if src.names is not None else None
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


#: YOLO classes are indices into the names: beyond this no dataset has a name for them
MAX_CLASS = 2**31


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
    if not 0 <= cls < MAX_CLASS:
        raise PromptError(f"{where}: class {parts[0]} is not an index from 0 to {MAX_CLASS - 1}")
    if names is not None and (cls not in names if isinstance(names, dict) else not 0 <= cls < len(names)):
        raise PromptError(f"{where}: class {cls} has no name in the names file")
    return make_object(where=where, box=[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], category=cls,
                       category_name=names[cls] if names is not None else None,
                       score=conf[0] if conf else None, normalized=True)


def read_names(path: Path) -> list[str] | dict[int, str]:
    """Class names from a YOLO data.yaml (`names: [a, b]`, `names: {0: a, 1: b}`, a `names:`
    block of `- a` items or of `0: a` pairs) or a text file of one name per line. No YAML
    library: only `names`, with YAML's quoting (commas and # inside quotes are the name's,
    double-quoted escapes as JSON's); anything else is a PromptError naming the file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PromptError(f"--names {path}: not UTF-8 text") from None
    except OSError as e:
        raise PromptError(f"--names {path}: cannot read it ({e.strerror or e})") from None
    if path.suffix.lower() not in (".yaml", ".yml"):
        return [s.strip() for s in text.splitlines() if s.strip()]
    lines = text.splitlines()
    try:
        for i, line in enumerate(lines):
            m = re.match(r"^names\s*:(.*)$", line)
            if not m:
                continue
            inline = _strip_comment(m.group(1)).strip()
            if inline.startswith("["):
                return [_scalar(v) for v in _flow_items(inline, "[]")]
            if inline.startswith("{"):
                return _pairs(_flow_items(inline, "{}"))
            block = []
            for sub in lines[i + 1:]:
                if sub.strip() and not sub.startswith((" ", "\t", "-")):
                    break
                if _strip_comment(sub).strip():
                    block.append(_strip_comment(sub).strip())
            if block and all(b.startswith("-") for b in block):
                return [_scalar(b[1:]) for b in block]
            return _pairs(block)
    except ValueError as e:
        raise PromptError(f"--names {path}: {e}") from None
    raise PromptError(f"--names {path}: no `names:` list or mapping in it")


def _checked(names, path: Path):
    from ...names import bad_text

    for n in names.values() if isinstance(names, dict) else names:
        if bad := bad_text(n):
            raise PromptError(f"--names {path}: the name {n!r} {bad}")
    return names


def _scan(text: str, *, closed: bool = False):
    """Each (index, character, outside) of text, outside False within YAML quotes ('…', or
    "…" with backslash escapes) and for the quote characters themselves. closed: a quote still
    open at the end is a ValueError."""
    quote, escaped = None, False
    for k, c in enumerate(text):
        if quote:
            if escaped:
                escaped = False
            elif quote == '"' and c == "\\":
                escaped = True
            elif c == quote:
                quote = None
            yield k, c, False
        elif c in "'\"":
            quote = c
            yield k, c, False
        else:
            yield k, c, True
    if closed and quote:
        raise ValueError("names: a quote is not closed")


def _strip_comment(text: str) -> str:
    """text without a # comment (a # inside quotes is text)."""
    for k, c, outside in _scan(text):
        if outside and c == "#" and (k == 0 or text[k - 1] in " \t"):
            return text[:k]
    return text


def _flow_items(text: str, brackets: str) -> list[str]:
    """The comma-separated items of a YAML flow list or mapping (commas in quotes kept)."""
    if not (text.startswith(brackets[0]) and text.endswith(brackets[1])):
        raise ValueError(f"names: {text!r} is not closed by {brackets[1]!r}")
    items, cur = [], ""
    for _, c, outside in _scan(text[1:-1], closed=True):
        if outside and c == ",":
            items.append(cur)
            cur = ""
        else:
            cur += c
    return [v for v in (*items, cur) if v.strip()]


def _pairs(items: list[str]) -> dict[int, str]:
    out: dict[int, str] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not re.fullmatch(r"\s*\d+\s*", key):
            raise ValueError(f"names: {item.strip()!r} is not `index: name` with a whole number index")
        out[int(key)] = _scalar(value)
    return out


#: YAML double-quoted escapes (those JSON lacks are YAML's own: \x, \U, \0, \a, \e …)
ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "n": "\n", "v": "\v", "f": "\f", "r": "\r",
           "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85", "_": "\xa0"}
HEX = {"x": 2, "u": 4, "U": 8}


def _double_quoted(body: str) -> str:
    out, k = [], 0
    while k < len(body):
        c = body[k]
        if c != "\\":
            out.append(c)
            k += 1
            continue
        e = body[k + 1 : k + 2]
        if e in ESCAPES:
            out.append(ESCAPES[e])
            k += 2
        elif e in HEX and re.fullmatch(r"[0-9a-fA-F]+", body[k + 2 : k + 2 + HEX[e]] or "-"):
            code = int(body[k + 2 : k + 2 + HEX[e]], 16)
            if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
                raise ValueError(f"names: \\{e} escape of a surrogate or beyond Unicode")
            out.append(chr(code))
            k += 2 + HEX[e]
        else:
            raise ValueError(f"names: unknown escape \\{e} in a double-quoted name")
    return "".join(out)


def _scalar(text: str) -> str:
    """A YAML scalar: double-quoted (YAML's escapes), single-quoted ('' for '), or plain."""
    s = text.strip()
    if len(s) >= 2 and s[0] == s[-1] == '"':
        return _double_quoted(s[1:-1])
    if len(s) >= 2 and s[0] == s[-1] == "'":
        return s[1:-1].replace("''", "'")
    return s
