"""Read any common image file as H×W×3 uint8 RGB, as the user sees it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError
from .image_size import ENV_MAX_PIXELS, declared_size, max_pixels

# OpenCV logs decode failures to stderr itself; we report them as one clear error instead.
# (Its Python logging module is in OpenCV 5 and some 4.x builds, not in 4.12's wheels: there
# the setter OpenCV 4 exports is used; sam runs with either.)
if (_log := getattr(getattr(cv2, "utils", None), "logging", None)) is not None:
    _log.setLogLevel(_log.LOG_LEVEL_SILENT)
elif hasattr(cv2, "setLogLevel"):
    cv2.setLogLevel(0)  # LOG_LEVEL_SILENT

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".jp2", ".pbm",
     ".pgm", ".ppm", ".pnm", ".gif"}  # a GIF: its first frame
)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """16-bit images are scaled by 255/65535; float images are taken as 0–1 when their
    maximum is at most 1, else as 0–255, and clipped."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.float32) * (255.0 / 65535.0)) + 0.5).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        f = np.nan_to_num(img.astype(np.float32))
        if f.size and f.max() <= 1.0:
            f = f * 255.0
        return (np.clip(f, 0, 255) + 0.5).astype(np.uint8)
    if np.issubdtype(img.dtype, np.integer):
        info = np.iinfo(img.dtype)
        f = (img.astype(np.float64) - info.min) / (info.max - info.min) * 255.0
        return (f + 0.5).astype(np.uint8)
    raise ValueError(f"unsupported pixel type {img.dtype}")


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded bytes → H×W×3 uint8 RGB; EXIF orientation applied, alpha dropped."""
    size = declared_size(data)
    limit = max_pixels()
    if size is not None and size[0] * size[1] > limit:
        raise InputError(
            f"{name}: {size[0]}×{size[1]} pixels is more than the limit of {limit:,} "
            f"(--max-pixels or {ENV_MAX_PIXELS} raises it)")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = None
    if buf.size:
        try:
            img = cv2.imdecode(buf, cv2.IMREAD_COLOR | cv2.IMREAD_ANYDEPTH)
            if img is None:  # e.g. single-channel float TIFF, which IMREAD_COLOR refuses
                img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        except cv2.error:  # OpenCV's own checks (its pixel limit, a malformed header)
            raise InputError(f"{name}: cannot read image (too large for OpenCV, or corrupt)") from None
    if img is None or img.size == 0:
        raise InputError(f"{name}: cannot read image (unsupported format or corrupt file)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    elif img.shape[2] == 2:  # gray + alpha
        img = np.repeat(img[:, :, :1], 3, axis=2)
    img = to_uint8(img)
    return np.ascontiguousarray(img[:, :, ::-1])


def read_image(path: str | Path) -> np.ndarray:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _file_error(path, e) from None
    return decode_image(data, str(path))


def check_file(path: str | Path) -> None:
    """Raise read_image's InputError for a path that is missing or a folder, without reading
    it (a run rejects such inputs before any model work)."""
    try:
        mode = os.stat(path).st_mode  # through links
    except OSError as e:
        raise _file_error(Path(path), e) from None
    if stat.S_ISDIR(mode):
        raise _file_error(Path(path), IsADirectoryError())
    if not stat.S_ISREG(mode):  # reading a FIFO or a device would block, or never end
        raise InputError(f"{path}: not a regular file (a pipe, device or socket), which sam does not read")


def _file_error(path: Path, e: OSError) -> InputError:
    if isinstance(e, FileNotFoundError):
        return InputError(f"{path}: no such file")
    if isinstance(e, IsADirectoryError):
        return InputError(f"{path}: is a folder, not an image")
    return InputError(f"{path}: cannot read file ({e.strerror})")
