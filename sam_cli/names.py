"""Names that every output format can hold. A category or an image name travels into JSON,
CSV, XML, YAML and PNG text: a control character cannot be written in XML 1.0 at all, and a
lone surrogate (bytes of a file name that are not UTF-8, or a JSON "\\ud800") cannot be
written as UTF-8. Such names are refused where they come in, with the character named."""

from __future__ import annotations


def bad_text(text: str) -> str | None:
    """What keeps `text` out of the formats' files, or None."""
    for c in text:
        o = ord(c)
        if o < 0x20 or o == 0x7F or 0x80 <= o <= 0x9F:
            return f"holds the control character U+{o:04X}"
        if 0xDC80 <= o <= 0xDCFF:
            return "holds bytes that are not UTF-8"
        if 0xD800 <= o <= 0xDFFF:
            return f"holds an unpaired surrogate U+{o:04X}"
        if o in (0xFFFE, 0xFFFF):
            return f"holds the non-character U+{o:04X}"
    return None


def yaml_quoted(text: str) -> str:
    """`text` as a YAML double-quoted scalar (names bad_text accepts, anything else escaped)."""
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return "".join(out) + '"'
