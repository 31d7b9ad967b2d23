"""SAM 3's geometry encoder: exemplar boxes and points (normalised to [0, 1]; boxes as cx, cy,
w, h) become prompt tokens, each the sum of a projection of its coordinates, of the image
features pooled under it (RoIAlign 7×7 for a box, a bilinear sample for a point) and of its
sine position, plus its label's embedding (0 negative, 1 positive); a CLS token is always
appended (a text-only prompt carries it alone); then three pre-norm layers attend among the
tokens and to the image. Meta's key names under `geometry_encoder.`: `label_embed, cls_embed,
points_{direct,pool,pos_enc}_project, boxes_{direct,pool,pos_enc}_project, final_proj, norm,
img_pre_norm, encode.N.{self_attn, cross_attn_image, linear1, linear2, norm1..3}, encode_norm`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import PreNormLayer, sine


def roi_align(feats: torch.Tensor, boxes: list[torch.Tensor], size: int) -> torch.Tensor:
    """torchvision's roi_align (spatial scale 1, adaptive sampling, not aligned) in torch alone:
    feats N×C×H×W, boxes[i] K_i×4 (x0, y0, x1, y1 in feature pixels) → (ΣK)×C×size×size. Each
    bin is the mean of ceil(roi/size)² bilinear samples; a sample more than a pixel outside the
    map counts as 0."""
    n, c, h, w = feats.shape
    out = []
    for i, rois in enumerate(boxes):
        for x0, y0, x1, y1 in rois.tolist():
            rw, rh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
            gw, gh = math.ceil(rw / size), math.ceil(rh / size)
            ys = y0 + (torch.arange(size)[:, None] * rh / size + (torch.arange(gh)[None] + 0.5) * rh / size / gh)
            xs = x0 + (torch.arange(size)[:, None] * rw / size + (torch.arange(gw)[None] + 0.5) * rw / size / gw)
            out.append(_bilinear(feats[i], ys.flatten().to(feats), xs.flatten().to(feats))
                       .view(c, size, gh, size, gw).mean(dim=(2, 4)))
    return torch.stack(out) if out else feats.new_zeros(0, c, size, size)


def _bilinear(f: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """f C×H×W at every (y, x) of the grid ys × xs, as RoIAlign samples: C×len(ys)×len(xs)."""
    _, h, w = f.shape

    def axis(v: torch.Tensor, size: int):
        inside = (v >= -1.0) & (v <= size)
        v = v.clamp(min=0)
        lo = v.floor().long().clamp(max=size - 1)
        hi = (lo + 1).clamp(max=size - 1)
        v = torch.where(lo >= size - 1, lo.to(v.dtype), v)
        frac = v - lo
        return lo, hi, frac, inside

    ylo, yhi, fy, iny = axis(ys, h)
    xlo, xhi, fx, inx = axis(xs, w)
    top = f[:, ylo][:, :, xlo] * (1 - fx) + f[:, ylo][:, :, xhi] * fx
    bottom = f[:, yhi][:, :, xlo] * (1 - fx) + f[:, yhi][:, :, xhi] * fx
    v = top * (1 - fy)[:, None] + bottom * fy[:, None]
    return v * (iny[:, None] & inx[None, :]).to(v)


def sine_xy(x: torch.Tensor, y: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinates in [0, 1] → their sine encodings (…×dim/2 each), as Meta's position encoder."""
    return sine(x * 2 * math.pi, dim // 2), sine(y * 2 * math.pi, dim // 2)


class GeometryEncoder(nn.Module):
    def __init__(self, dim: int = 256, heads: int = 8, ffn: int = 2048, layers: int = 3, roi: int = 7) -> None:
        super().__init__()
        self.dim, self.roi = dim, roi
        self.label_embed = nn.Embedding(2, dim)
        self.cls_embed = nn.Embedding(1, dim)
        self.points_direct_project = nn.Linear(2, dim)
        self.points_pool_project = nn.Linear(dim, dim)
        self.points_pos_enc_project = nn.Linear(dim, dim)
        self.boxes_direct_project = nn.Linear(4, dim)
        self.boxes_pool_project = nn.Conv2d(dim, dim, roi)
        self.boxes_pos_enc_project = nn.Linear(dim + 2, dim)
        self.final_proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.img_pre_norm = nn.LayerNorm(dim)
        self.encode = nn.ModuleList(PreNormLayer(dim, heads, ffn) for _ in range(layers))
        self.encode_norm = nn.LayerNorm(dim)

    def forward(self, image: torch.Tensor, image_pos: torch.Tensor, hw: tuple[int, int], points: torch.Tensor,
                point_labels: torch.Tensor, boxes: torch.Tensor, box_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """image, image_pos: N×L×d (the coarsest level's tokens and sine positions, L = h·w);
        points N×P×2 (x, y), boxes N×B×4 (cx, cy, w, h), all in [0, 1], labels N×P, N×B (1
        positive) → (tokens N×(P+B+1)×d, padding N×(P+B+1), all False)."""
        n = image.shape[0]
        h, w = hw
        fmap = self.img_pre_norm(image).transpose(1, 2).reshape(n, self.dim, h, w)
        tokens = []
        if points.shape[1]:
            sampled = F.grid_sample(fmap, (points * 2 - 1)[:, :, None], align_corners=False)[..., 0].transpose(1, 2)
            ex, ey = sine_xy(points[..., 0], points[..., 1], self.dim)
            tokens.append(self.points_direct_project(points) + self.points_pool_project(sampled)
                          + self.points_pos_enc_project(torch.cat((ex, ey), -1)) + self.label_embed(point_labels.long()))
        if boxes.shape[1]:
            cx, cy, bw, bh = boxes.unbind(-1)
            xyxy = torch.stack((cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2), -1) * boxes.new_tensor([w, h, w, h])
            pooled = self.boxes_pool_project(roi_align(fmap, list(xyxy.float()), self.roi)).view(n, -1, self.dim)
            ex, ey = sine_xy(cx, cy, self.dim)
            pos = torch.cat((ey, ex, bh[..., None], bw[..., None]), -1)
            tokens.append(self.boxes_direct_project(boxes) + pooled + self.boxes_pos_enc_project(pos)
                          + self.label_embed(box_labels.long()))
        tokens.append(self.cls_embed.weight[None].expand(n, -1, -1))
        x = self.norm(self.final_proj(torch.cat(tokens, 1)))
        pad = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
        for layer in self.encode:
            x = layer(x, image, pad=pad, memory_pos=image_pos)
        return self.encode_norm(x), pad
