"""Zero-shot edge detection, the paper's way (Kirillov et al. 2023, §7.2 and appendix D.2):
SAM prompted with a 16×16 grid of foreground points (768 masks, three per point), no
predicted-IoU or stability filter, box NMS to remove duplicate masks, then a Sobel filter on
each kept mask's unthresholded probability map, kept only where it meets the mask's boundary;
the pixel-wise maximum over masks, normalised to [0, 1] and thinned by edge non-maximum
suppression (as Canny does).

The paper does not give its NMS threshold; DEFAULT_NMS is automatic mode's (0.7), the one
SAM's authors use to call two masks duplicates elsewhere; `sam edges --nms` changes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

GRID = 16
DEFAULT_NMS = 0.7
#: Points per decoder call (each gives three masks, each upscaled to the image's size).
BATCH = 16


@dataclass
class EdgeMap:
    """What the edge engine gives for an image, in place of mask records."""

    edges: np.ndarray  # H×W float32 in [0, 1], thinned
    masks: int  # the masks left after NMS, whose boundaries made it


_SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K×H×W → (gx, gy), K×H×W each, the 3×3 Sobel derivatives (replicated borders)."""
    k = torch.stack([_SOBEL_X, _SOBEL_X.t()])[:, None].to(x)
    g = F.conv2d(F.pad(x[:, None], (1, 1, 1, 1), mode="replicate"), k)
    return g[:, 0], g[:, 1]


def boundary_strength(logits: torch.Tensor) -> torch.Tensor:
    """K×H×W mask logits → H×W: the largest Sobel magnitude of any mask's probability map
    (sigmoid of its logits) on that mask's boundary (the pixels within one pixel of where it
    changes side of the threshold), 0 elsewhere."""
    prob = torch.sigmoid(logits.float())
    gx, gy = sobel(prob)
    mag = torch.sqrt(gx * gx + gy * gy)
    inside = (logits > 0).float()[:, None]
    grown = F.max_pool2d(inside, 3, 1, 1)
    shrunk = -F.max_pool2d(-inside, 3, 1, 1)
    on_edge = (grown > shrunk)[:, 0]
    return torch.where(on_edge, mag, torch.zeros((), dtype=mag.dtype)).amax(0)


def thin(edges: np.ndarray) -> np.ndarray:
    """Edge non-maximum suppression: a pixel stays where it is at least its two neighbours
    along the edge map's own gradient direction (quantised to 0°, 45°, 90°, 135°)."""
    e = torch.from_numpy(np.ascontiguousarray(edges, np.float32))
    gx, gy = (g[0] for g in sobel(e[None]))
    angle = (torch.rad2deg(torch.atan2(gy, gx)) + 180.0) % 180.0
    sector = (((angle + 22.5) // 45) % 4).long()  # 0: horizontal gradient, 1: 45°, 2: vertical, 3: 135°
    p = F.pad(e[None, None], (1, 1, 1, 1))[0, 0]
    h, w = e.shape

    def at(dy: int, dx: int) -> torch.Tensor:
        return p[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]

    # neighbours along the gradient, per sector (y grows downwards)
    pairs = {0: ((0, -1), (0, 1)), 1: ((-1, -1), (1, 1)), 2: ((-1, 0), (1, 0)), 3: ((-1, 1), (1, -1))}
    keep = torch.zeros_like(e, dtype=torch.bool)
    for s, (a, b) in pairs.items():
        keep |= (sector == s) & (e >= at(*a)) & (e >= at(*b))
    return torch.where(keep, e, torch.zeros(())).numpy()


def edge_map(predictor, image: np.ndarray, *, grid: int = GRID, nms: float = DEFAULT_NMS) -> EdgeMap:
    """The edge map of one H×W×3 uint8 RGB image (see the module doc). predictor: a
    predictor.Predictor on the model; it is set to this image."""
    from .automatic.grids import point_grid
    from .masks import box_nms, masks_to_boxes
    from .transforms import scale_coords

    h, w = image.shape[:2]
    predictor.set_image(image)
    net = predictor.model
    pts = scale_coords(point_grid(grid) * [w, h], (h, w), predictor.input_hw)
    lows, boxes, scores = [], [], []
    with torch.inference_mode():
        for s in range(0, len(pts), BATCH):
            p = torch.as_tensor(pts[s : s + BATCH], dtype=torch.float32, device=net.device)[:, None]
            low, iou = predictor.decode(p, torch.ones(p.shape[:2], device=net.device), None, None, True)
            low = low.flatten(0, 1).float()  # (B·3)×256×256
            full = net.upscale(low, predictor.input_hw, (h, w))
            boxes.append(masks_to_boxes(full > 0).float().cpu())
            scores.append(iou.flatten().float().cpu())
            lows.append(low.cpu())
        low = torch.cat(lows)
        keep = box_nms(torch.cat(boxes), torch.cat(scores), nms)
        strength = torch.zeros(h, w)
        for s in range(0, len(keep), BATCH):
            full = net.upscale(low[keep[s : s + BATCH]].to(net.device), predictor.input_hw, (h, w))
            strength = torch.maximum(strength, boundary_strength(full.contiguous()).cpu())
    top = float(strength.max())
    edges = (strength / top).numpy() if top > 0 else strength.numpy()
    return EdgeMap(thin(edges), len(keep))


# ------------------------------------------------------------------ in the run engine
class EdgeEngine:
    """Edge maps over many images for the run engine (run.py): images decoded ahead on
    threads, each given one EdgeMap as its records."""

    def __init__(self, loaded, *, grid: int = GRID, nms: float = DEFAULT_NMS, workers: int = 2,
                 reads: int = 0) -> None:
        from .engines import require_points
        from .predictor import Predictor

        require_points(loaded)
        self.predictor = Predictor(loaded.net)
        self.grid, self.nms, self.workers, self.reads = grid, nms, workers, reads

    def __call__(self, jobs):
        from .stream import image_by_image

        return image_by_image(jobs, lambda item, img: [edge_map(self.predictor, img, grid=self.grid, nms=self.nms)],
                              workers=self.workers, reads=self.reads)

    def close(self) -> None:
        pass


class EdgeOutput:
    """`sam edges`' own output (io.outputs.OutputLayout's `own`): x.jpg.edges.png, 16-bit
    (the edge strength × 65535), and with npy x.jpg.edges.npy (float32)."""

    def __init__(self, npy: bool = False) -> None:
        self.npy = npy

    def outputs(self, base):
        from pathlib import Path

        base = Path(base)
        names = [base.with_name(base.name + ".edges.png")]
        return names + ([base.with_name(base.name + ".edges.npy")] if self.npy else [])

    def write(self, img) -> None:
        from .io import writers
        from .io.records import npy_bytes

        [em] = img.records
        png, *npy = self.outputs(img.base)
        writers.atomic_write_bytes(png, writers.encode_png(np.round(em.edges * 65535).astype(np.uint16)))
        if npy:
            writers.atomic_write_bytes(npy[0], npy_bytes(em.edges.astype(np.float32)))


@dataclass(frozen=True)
class EdgeSettings:
    grid: int = GRID
    nms: float = DEFAULT_NMS
    npy: bool = False  # also write the float32 map (an output, not in the run record)


def _build(job, loaded, note, progress) -> EdgeEngine:
    s = job.settings
    return EdgeEngine(loaded, grid=s.grid, nms=s.nms, workers=job.run.workers, reads=job.run.reads)


def _kind():
    from .engines import EngineKind

    return EngineKind(
        "edges", _build, lambda s: {"grid": s.grid, "nms": s.nms},
        own_outputs=lambda s: {"edges": EdgeOutput(s.npy)},
        merge_args=lambda s: {"npy": s.npy},
        own_from_merge=lambda args: {"edges": EdgeOutput(bool(args["npy"]))},
    )


KIND = _kind()
