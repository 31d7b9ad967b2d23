"""Writers: every file or folder is written under a temporary name beside it, then renamed,
so a reader (or a rerun after Ctrl-C) never sees half of one; and the one background thread
that writes behind the model (`WriteBehind`)."""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import queue
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np

from ..errors import OutputError
from ..masks import MaskCrop, mask_crop


def check_folder_writable(folder: str | Path, what: str | None = None) -> None:
    """Raise OutputError, naming `what` (default: the folder), unless `folder` is a folder sam
    can write into or create: checked before any model is loaded, so that a typo in -o costs
    nothing. A dangling link, a file in the way, or no permission are each named."""
    folder = Path(folder)
    name = what or str(folder)
    if folder.is_symlink() and not folder.exists():
        raise OutputError(f"{name}: a link to {os.readlink(folder)}, which does not exist")
    probe = folder
    while not probe.exists():  # the nearest folder that exists, which sam would create it in
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "exists and is not a folder" if probe == folder else f"{probe} is a file, not a folder"
        raise OutputError(f"{name}: {where}")
    if probe.exists() and not os.access(probe, os.W_OK | os.X_OK):
        where = "" if probe == folder else f" ({probe})"
        try:
            read_only = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except (OSError, AttributeError):
            read_only = False
        why = "it is on a read-only filesystem" if read_only else "permission denied"
        raise OutputError(f"{name}: cannot write into the folder{where}: {why}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path) as f:
        f.write(data)


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path` through: written under a temporary name in its folder and
    renamed when the block ends; on an error or Ctrl-C the temporary file is removed and
    nothing appears under `path` (an OSError becomes an OutputError naming it)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            yield f
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:  # Ctrl-C mid-write: leave nothing half-written behind
        _discard(tmp)
        raise


def atomic_link(path: str | Path, target: str | Path) -> None:
    """A symbolic link at `path` to `target` (absolute), made under a temporary name and
    renamed into place (an OSError becomes an OutputError naming `path`)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.abspath(target), tmp)
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """A folder to fill for `path`: made under a temporary name beside it and renamed into
    place when the block ends (a folder already there is replaced whole); on an error or
    Ctrl-C it is removed and `path` is left as it was (an OSError becomes an OutputError)."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        yield tmp
        _replace_dir(tmp, path)
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


#: This host in temporary names (dots replaced: the names are split on them).
_HOST = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)\.(?P<pid>\d+)\.(?P<tid>\d+)\.(?:tmp|old)$")


def _replace_dir(tmp: Path, path: Path) -> None:
    """Rename the folder tmp to path, replacing a folder there (another writer of the same
    output may put one there at any moment: whichever renames last wins, whole)."""
    old = path.with_name(tmp.name[: -len(".tmp")] + ".old")
    for _ in range(8):
        try:
            os.replace(tmp, path)  # path missing, or an empty folder
            break
        except OSError as e:
            if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(path, old)  # set the other folder aside, then try again
        except FileNotFoundError:
            pass  # another writer moved it first
    else:
        raise OSError(errno.EEXIST, "another process keeps writing it", str(path))
    shutil.rmtree(old, ignore_errors=True)


#: The longest file name most filesystems take, in bytes.
NAME_MAX = 255


def temp_name(path: Path) -> Path:
    """The hidden name beside `path` that it is written under: unique to this host, process
    and thread, so two writers of one output (shards on one or several machines) never write
    into each other's file, and a later run can tell a dead writer's leftovers."""
    tail = f".{_HOST}.{os.getpid()}.{threading.get_ident()}.tmp"
    name = path.name
    if len(f".{name}{tail}".encode()) > NAME_MAX:  # a long name: its hash in the temporary name instead
        name = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:32]
    return path.with_name(f".{name}{tail}")


def remove_stale_temps(root: str | Path, skip_dirs: tuple[str, ...] = ()) -> list[Path]:
    """Remove what writers on this host that are no longer running (killed: SIGKILL, a power
    cut) left under `root`: their temporary files and folders. Folders whose names end with
    one of `skip_dirs` (finished outputs that are folders: x.jpg.masks) are not entered.
    Returns what was removed."""
    removed: list[Path] = []
    for folder, dirs, files in os.walk(root):
        for name in [*files, *dirs]:
            m = _TEMP.match(name)
            if m and m["host"] == _HOST and not _running(int(m["pid"])):
                p = Path(folder) / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    _discard(p)
                removed.append(p)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not d.endswith(skip_dirs)]
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process
        return True
    return True


def _discard(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


class WriteBehind:
    """Run `fn(job)` for each submitted job on one background thread, in order; at most
    `depth` jobs wait (submit blocks beyond that). An exception in fn stops the jobs after it
    and is raised again in the caller at the next submit() or at close()."""

    def __init__(self, fn: Callable[[object], None], depth: int = 4, name: str = "sam-write") -> None:
        self.fn = fn
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.q.get()
            if job is None:
                return
            if self.error is None:
                try:
                    self.fn(job)
                except BaseException as e:  # noqa: BLE001 - handed to the caller
                    self.error = e

    def submit(self, job: object) -> None:
        if self.error is not None:
            raise self.error
        self.q.put(job)

    def close(self) -> None:
        """Wait for the jobs already submitted."""
        self.q.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


#: PNG row filter for masks: none. A 0/255 mask has nothing for a filter to predict, and
#: without one a 12 MP mask encoded in 28 ms into 47 KB, against 32 ms and 60 KB with
#: OpenCV's default (`python scripts/cpu_profile.py --writes`). The pixels are the same
#: either way; an older OpenCV without the setting uses its default.
_MASK_PNG_PARAMS = (
    [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE] if hasattr(cv2, "IMWRITE_PNG_FILTER") else []
)


def encode_png(img: np.ndarray, params: list[int] | None = None) -> bytes:
    ok, buf = cv2.imencode(".png", img, params or [])
    if not ok:  # pragma: no cover - OpenCV only fails on invalid arrays
        raise OutputError("cannot encode PNG")
    return buf.tobytes()


def mask_png(mask: np.ndarray) -> bytes:
    """H×W bool → single-channel 0/255 PNG bytes."""
    return encode_png(mask.astype(bool, copy=False).view(np.uint8) * np.uint8(255), _MASK_PNG_PARAMS)


def crop_png(crop: MaskCrop, hw: tuple[int, int]) -> bytes:
    """A MaskCrop → the whole H×W mask as mask_png gives it: the crop is pasted into zeros,
    so only the mask's box is written pixel by pixel."""
    full = np.zeros(hw, dtype=np.uint8)
    full[crop.window] = crop.mask.view(np.uint8) * np.uint8(255)
    return encode_png(full, _MASK_PNG_PARAMS)


def json_bytes(obj) -> bytes:
    """Compact UTF-8 JSON, as every JSON file sam writes is (json_text)."""
    return json_text(obj, compact=True).encode("utf-8")


def json_text(obj, compact: bool = False) -> str:
    """Valid JSON always: a NaN or infinite number (a broken checkpoint's predicted IoU, say),
    which JSON has no word for, is written as null."""
    seps = (",", ":") if compact else None
    try:
        return json.dumps(obj, separators=seps, allow_nan=False)
    except ValueError:
        return json.dumps(finite_or_null(obj), separators=seps, allow_nan=False)


def finite_or_null(obj):
    """obj with every NaN or infinite float (in dicts, lists, tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    return obj


def write_json(path: str | Path, obj) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    """H×W×3 uint8 RGB → image file, format from the extension."""
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    ok, buf = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OutputError(f"{path}: cannot encode an image of type {ext}")
    atomic_write_bytes(path, buf.tobytes())


def palette(n: int, seed: int = 0) -> np.ndarray:
    """n distinct-looking RGB colours, n×3 uint8 (golden-angle hues)."""
    if n == 0:  # OpenCV refuses an empty image
        return np.zeros((0, 3), dtype=np.uint8)
    hues = (np.arange(n) * 137.508 + seed) % 360
    hsv = np.stack([hues / 2, np.full(n, 200), np.full(n, 255)], axis=1).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def overlay(image: np.ndarray, masks: list[np.ndarray], alpha: float = 0.5) -> np.ndarray:
    """Colour each H×W bool mask over the H×W×3 RGB image (largest first, so small masks stay
    visible) and outline it."""
    return overlay_crops(image, [mask_crop(m) for m in masks], alpha)


def draw_prompts(
    rgb: np.ndarray, points: list, labels: list, boxes: list,
) -> None:
    """Draw the prompts on an H×W×3 RGB picture, in place: foreground points as green dots,
    background points as red ones (each ringed in white), boxes (XYXY) as white rectangles."""
    r = max(3, round(max(rgb.shape[:2]) / 200))
    for x0, y0, x1, y1 in boxes:
        cv2.rectangle(rgb, (round(x0), round(y0)), (round(x1), round(y1)), (255, 255, 255), max(1, r // 2))
    for (x, y), lab in zip(points, labels):
        centre = (round(x), round(y))
        cv2.circle(rgb, centre, r + 1, (255, 255, 255), -1)
        cv2.circle(rgb, centre, r, (0, 200, 0) if lab == 1 else (220, 0, 0), -1)


def overlay_crops(
    image: np.ndarray, crops: list[MaskCrop], alpha: float = 0.5,
) -> np.ndarray:
    """overlay() for masks given as MaskCrops: each blend and outline touches only its mask's
    box, so the cost follows the masks' sizes, not their number times the image's."""
    out = image.copy()
    colours = palette(len(crops))
    order = sorted(range(len(crops)), key=lambda i: -int(np.count_nonzero(crops[i].mask)))
    for i in order:
        c = crops[i]
        if c.mask.size:
            window = out[c.window]  # a view: OpenCV writes through its row stride
            # (1 − alpha)·pixel + alpha·colour per channel, rounded to uint8, in one pass
            mix = np.hstack([np.eye(3) * (1 - alpha), alpha * colours[i][:, None].astype(float)])
            done = cv2.copyTo(cv2.transform(window, mix), c.mask.view(np.uint8), window)
            if done is not window:  # pragma: no cover - an OpenCV that copied instead
                window[...] = done
    for i in order:
        c = crops[i]
        if c.mask.size:
            contours, _ = cv2.findContours(
                c.mask.view(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                offset=(c.x0, c.y0),
            )
            cv2.drawContours(out, contours, -1, tuple(int(v) for v in colours[i]), 1)
    return out
