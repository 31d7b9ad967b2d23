"""An image file's size in pixels from its header alone, before anything is decoded: a small
file can declare a huge image (a PNG of under 1 MB can declare 30000×30000 pixels, 2.7 GB
once decoded), and sam refuses those above a limit instead of decoding them.

Reads PNG, JPEG, GIF, BMP, WebP, TIFF and PNM headers; None for anything else or a header it
cannot make sense of (OpenCV's own limit then applies)."""

from __future__ import annotations

import os
import struct

#: Default --max-pixels: 200 million pixels, 600 MB as RGB (a 14000×14000 scan, or any photo
#: camera's). `sam auto --max-pixels N` or SAM_MAX_PIXELS raises it.
DEFAULT_MAX_PIXELS = 200_000_000
ENV_MAX_PIXELS = "SAM_MAX_PIXELS"


def max_pixels() -> int:
    """The limit in force: SAM_MAX_PIXELS, else the default."""
    try:
        return max(1, int(os.environ.get(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS)))
    except ValueError:
        return DEFAULT_MAX_PIXELS


def declared_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) that the file's header declares, or None."""
    try:
        for sniff in (_png, _jpeg, _gif, _bmp, _webp, _tiff, _pnm):
            size = sniff(data)
            if size is not None:
                return size
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _png(d: bytes):
    if d[:8] == b"\x89PNG\r\n\x1a\n" and d[12:16] == b"IHDR":
        return struct.unpack(">II", d[16:24])
    return None


def _gif(d: bytes):
    if d[:6] in (b"GIF87a", b"GIF89a"):
        return struct.unpack("<HH", d[6:10])
    return None


def _bmp(d: bytes):
    if d[:2] == b"BM" and len(d) >= 26:
        w, h = struct.unpack("<ii", d[18:26])
        return abs(w), abs(h)
    return None


def _jpeg(d: bytes):
    if d[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 4 <= len(d):
        if d[i] != 0xFF:
            return None
        marker = d[i + 1]
        if marker == 0xFF:  # padding
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # no length
            i += 2
            continue
        length = struct.unpack(">H", d[i + 2 : i + 4])[0]
        # start of frame: every SOFn but DHT (C4), JPG (C8) and DAC (CC)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", d[i + 5 : i + 9])
            return w, h
        i += 2 + length
    return None


def _webp(d: bytes):
    if d[:4] != b"RIFF" or d[8:12] != b"WEBP":
        return None
    kind = d[12:16]
    if kind == b"VP8X":
        w = int.from_bytes(d[24:27], "little") + 1
        h = int.from_bytes(d[27:30], "little") + 1
        return w, h
    if kind == b"VP8L":
        b = int.from_bytes(d[21:25], "little")
        return (b & 0x3FFF) + 1, ((b >> 14) & 0x3FFF) + 1
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", d[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _tiff(d: bytes):
    if d[:4] not in (b"II*\x00", b"MM\x00*"):
        return None
    e = "<" if d[:2] == b"II" else ">"
    off = struct.unpack(e + "I", d[4:8])[0]
    n = struct.unpack(e + "H", d[off : off + 2])[0]
    size = {}
    for k in range(n):
        tag, typ, _, value = struct.unpack(e + "HHI4s", d[off + 2 + 12 * k : off + 14 + 12 * k])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            size[tag] = struct.unpack(e + ("H" if typ == 3 else "I"), value[: 2 if typ == 3 else 4])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm(d: bytes):
    if len(d) < 3 or d[0:1] != b"P" or d[1:2] not in b"123456":
        return None
    fields: list[int] = []
    for line in d[2:4096].split(b"\n"):
        for tok in line.split(b"#")[0].split():
            fields.append(int(tok))
            if len(fields) == 2:
                return fields[0], fields[1]
    return None
