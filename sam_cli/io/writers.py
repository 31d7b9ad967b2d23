"""Writers: every file is written under a temporary name in its folder, then renamed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import OutputError


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:  # Ctrl-C mid-write: leave nothing half-written behind
        _discard(tmp)
        raise


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def encode_png(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise OutputError("cannot encode PNG")
    return buf.tobytes()


def mask_png(mask: np.ndarray) -> bytes:
    """H×W bool → single-channel 0/255 PNG bytes."""
    return encode_png(mask.astype(np.uint8) * 255)


def write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, separators=(",", ":")).encode("utf-8"))


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """H×W×3 uint8 RGB → image file, format from the extension."""
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OutputError(f"{path}: cannot encode an image of type {ext}")
    atomic_write_bytes(path, buf.tobytes())


def palette(n: int, seed: int = 0) -> np.ndarray:
    """n distinct-looking RGB colours, n×3 uint8 (golden-angle hues)."""
    hues = (np.arange(n) * 137.508 + seed) % 360
    hsv = np.stack([hues / 2, np.full(n, 200), np.full(n, 255)], axis=1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def overlay(image: np.ndarray, masks: list[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """Colour each H×W bool mask over the H×W×3 RGB image (largest first, so small masks stay
    visible) and outline it."""
    out = image.astype(np.float32).copy()
    colours = palette(len(masks))
    order = sorted(range(len(masks)), key=lambda i: -int(masks[i].sum()))
    for i in order:
        m = masks[i]
        out[m] = out[m] * (1 - alpha) + colours[i] * alpha
    out = out.astype(np.uint8)
    for i in order:
        contours, _ = cv2.findContours(
            masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
        )
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in colours[i]), 1)
    return out
