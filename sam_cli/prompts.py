"""Parse and check prompts; turn a mask file into a low-res logit prompt."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError, PromptError, SamError
from .transforms import target_size

MASK_LOGIT = 10.0  # a binary mask prompt becomes logits of +10 inside, −10 outside
#: Longest phrase taken, in characters: a noun phrase, not a paragraph (SAM 3 reads 32 tokens)
MAX_PHRASE = 300


def parse_numbers(text: str, n: int, option: str) -> list[float]:
    parts = [p.strip() for p in text.split(",")]
    what = "X,Y" if n == 2 else "X0,Y0,X1,Y1"
    if len(parts) != n:
        raise PromptError(f"{option} {text!r}: expected {what} ({n} numbers separated by commas)")
    try:
        vals = [float(p) for p in parts]
    except ValueError:
        raise PromptError(f"{option} {text!r}: {what} must be numbers") from None
    if not all(np.isfinite(vals)):
        raise PromptError(f"{option} {text!r}: {what} must be finite numbers")
    return vals


def check_phrase(text: str, where: str = "--text") -> str:
    """A phrase as given, or PromptError saying what is wrong with it (empty, control
    characters, longer than MAX_PHRASE)."""
    if not text.strip():
        raise PromptError(f"{where}: the phrase is empty")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cf")), None)
    if bad is not None:
        raise PromptError(f"{where} {text[:40]!r}: holds a control character (U+{ord(bad):04X})")
    if len(text) > MAX_PHRASE:
        raise PromptError(f"{where}: a phrase of {len(text)} characters; SAM 3 reads a short noun phrase "
                          f"(at most {MAX_PHRASE} characters here, 32 tokens in the model)")
    return text


@dataclass
class Prompts:
    points: list[list[float]] = field(default_factory=list)  # XY, image pixels
    labels: list[int] = field(default_factory=list)  # 1 foreground, 0 background
    boxes: list[list[float]] = field(default_factory=list)  # XYXY, image pixels

    @classmethod
    def parse(cls, points: list[str], neg_points: list[str], boxes: list[str]) -> Prompts:
        p = cls()
        for t in points:
            p.points.append(parse_numbers(t, 2, "--point"))
            p.labels.append(1)
        for t in neg_points:
            p.points.append(parse_numbers(t, 2, "--neg-point"))
            p.labels.append(0)
        for t in boxes:
            b = parse_numbers(t, 4, "--box")
            if b[2] < b[0] or b[3] < b[1]:
                raise PromptError(f"--box {t!r}: X1,Y1 must not be left of or above X0,Y0")
            p.boxes.append(b)
        return p

    def check_inside(self, hw: tuple[int, int], image_name: str) -> None:
        h, w = hw
        for (x, y), lab in zip(self.points, self.labels):
            if not (0 <= x <= w and 0 <= y <= h):
                opt = "--point" if lab == 1 else "--neg-point"
                raise PromptError(
                    f"{opt} {x:g},{y:g} is outside {image_name} ({w}×{h} pixels)"
                )
        for b in self.boxes:
            if not (0 <= b[0] <= w and 0 <= b[2] <= w and 0 <= b[1] <= h and 0 <= b[3] <= h):
                box = ",".join(f"{v:g}" for v in b)
                raise PromptError(f"--box {box} is outside {image_name} ({w}×{h} pixels)")


def _read_logits(path: Path, side: int = 256) -> np.ndarray:
    """A .npy of real numbers, side×side or 1×side×side, checked from its header before its
    data is read (a header can declare an array of any size), as float32 side×side."""
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            major, _ = fmt.read_magic(f)
            shape, _, dtype = (fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0)(f)
            if dtype.kind not in "biuf" or dtype.hasobject:
                raise InputError(f"{path}: mask logits must be real numbers, not {dtype}")
            if tuple(shape) not in ((side, side), (1, side, side), (1, 1, side, side)):
                raise InputError(f"{path}: mask logits must be {side}×{side} (the model's low-res masks), got "
                                 f"{'×'.join(map(str, shape)) or 'a scalar'}")
            f.seek(0)
            arr = np.load(f, allow_pickle=False)
    except InputError:
        raise
    except (ValueError, TypeError, OSError, EOFError):  # not a .npy, truncated
        raise InputError(f"{path}: not a readable .npy array of numbers") from None
    return np.asarray(arr, dtype=np.float32).reshape(side, side)


def load_mask_prompt(path: str | Path, image_hw: tuple[int, int], net=None) -> np.ndarray:
    """A mask prompt file → 1×L×L float32 logits, L the model's low-res side (256 for SAM 1 and
    SAM 2, 288 for SAM 3; net None: SAM 1's frame).

    `.npy`: low-res logits as the model returns them (L×L or 1×L×L), used as they are.
    Image file (PNG…): a binary mask the size of the image (non-zero = inside); it is resized
    as the model resizes the image (SAM 1: the long side to 1024, padded; SAM 2 and SAM 3:
    squashed to the square input), averaged down to L×L and mapped to logits ±10.
    """
    import cv2

    from .io.images import check_file, read_image

    path = Path(path)
    check_file(path)  # missing, a folder, or a FIFO that would block: said before reading
    h, w = image_hw
    side = net.img_size if net is not None else 1024
    nh, nw = net.input_size(h, w) if net is not None else target_size(h, w, side)
    low = net.low_res_hw[0] if net is not None else 256
    if path.suffix.lower() == ".npy":
        arr = _read_logits(path, low)
        if not np.isfinite(arr).all():
            raise InputError(f"{path}: mask logits must be finite numbers (it holds NaN or infinity)")
        return arr[None]
    mask = read_image(path).max(axis=2) > 0
    if mask.shape != (h, w):
        raise InputError(
            f"{path}: mask is {mask.shape[1]}×{mask.shape[0]}, the image is {w}×{h}"
        )
    m = cv2.resize(mask.astype(np.float32), (nw, nh), interpolation=cv2.INTER_LINEAR)
    padded = np.zeros((side, side), np.float32)
    padded[:nh, :nw] = m
    small = cv2.resize(padded, (low, low), interpolation=cv2.INTER_AREA)
    return ((small * 2 - 1) * MASK_LOGIT).astype(np.float32)[None]


# ------------------------------------------------------------------ prompts from a file
#: A box may reach this far outside its image and still be clipped to it (a detector's box
#: often overshoots by a pixel); further out, it is most likely in another image's frame or
#: in normalised units, and the image fails. A fraction of the image's side, at least 2 pixels.
BOX_SLACK = 0.01


@dataclass(frozen=True)
class ObjectPrompt:
    """One object's prompts as a prompt file gives them, checked for shape but not yet
    against its image (whose size is known only once it is read)."""

    box: tuple[float, float, float, float] | None = None  # XYXY, image pixels (or 0..1)
    points: tuple[tuple[float, float], ...] = ()  # XY, image pixels (or 0..1)
    labels: tuple[int, ...] = ()  # per point: 1 foreground, 0 background
    mask: Path | None = None  # a mask prompt file: .npy low-res logits or a binary mask image
    category: str | None = None
    category_id: int | None = None
    score: float | None = None  # the detector's confidence
    object_id: int | str | None = None  # the input's own id for the object
    normalized: bool = False  # box and points in 0..1 of the image's width and height (YOLO)
    where: str = ""  # "dets.jsonl line 12, object 3", for messages
    text: str | None = None  # a concept (SAM 3): every instance of the phrase
    exemplars: tuple[tuple[float, float, float, float], ...] = ()  # the concept's example boxes, XYXY
    exemplar_labels: tuple[int, ...] = ()  # per exemplar: 1 an example, 0 a counter-example

    @property
    def signature(self) -> tuple[bool, int, bool]:
        """Objects with the same signature are decoded together in one batch."""
        return (self.box is not None, len(self.points), self.mask is not None)

    @property
    def concept(self) -> bool:
        """A text or exemplar object (SAM 3's concept prompt), not a point, box or mask one."""
        return self.text is not None or bool(self.exemplars)

    def in_pixels(self, hw: tuple[int, int], image_name: str, net=None) -> ResolvedPrompt:
        """The prompts in the pixels of an H×W image: normalised ones scaled, a box that
        overshoots the image by at most BOX_SLACK clipped to it, the mask file read into `net`'s
        frame (load_mask_prompt). Raises PromptError naming the object for a point outside the
        image or a box further out."""
        h, w = hw
        sx, sy = (w, h) if self.normalized else (1.0, 1.0)
        size = f"{image_name} ({w}×{h} pixels)"
        points = np.array([[x * sx, y * sy] for x, y in self.points], np.float64).reshape(-1, 2)
        for x, y in points:
            if not (0 <= x <= w and 0 <= y <= h):
                raise PromptError(f"{self.where}: point {x:g},{y:g} is outside {size}")
        box = None
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            box = _clipped(np.array([x0 * sx, y0 * sy, x1 * sx, y1 * sy], np.float64), hw, self.where, size)
        mask = None
        if self.mask is not None:
            try:
                mask = load_mask_prompt(self.mask, hw, net)
            except SamError as e:
                raise PromptError(f"{self.where}: {e}") from None
        exemplars = np.array([_clipped(np.array(b, np.float64) * (sx, sy, sx, sy), hw, self.where, size)
                              for b in self.exemplars], np.float64).reshape(-1, 4)
        return ResolvedPrompt(box, points, np.array(self.labels, np.int64), mask, exemplars)


def _clipped(box: np.ndarray, hw: tuple[int, int], where: str, size: str) -> np.ndarray:
    """An XYXY box in pixels clipped to the image, or PromptError when it overshoots by more
    than BOX_SLACK."""
    h, w = hw
    size_xy = np.array([w, h, w, h], np.float64)
    slack = np.maximum(size_xy * BOX_SLACK, 2.0)
    if (box < -slack).any() or (box > size_xy + slack).any():
        shown = ",".join(f"{v:g}" for v in box)
        raise PromptError(f"{where}: box {shown} is outside {size}")
    return np.clip(box, 0, size_xy)


@dataclass(frozen=True)
class ResolvedPrompt:
    """An object's prompts in its image's pixels, ready for the decoder."""

    box: np.ndarray | None  # 4 XYXY
    points: np.ndarray  # N×2 XY
    labels: np.ndarray  # N
    mask: np.ndarray | None  # 1×256×256 low-res logits
    exemplars: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # E×4 XYXY (a concept's)
