"""SAM 3's image detector assembled from its parts, under the module names of Meta's checkpoint
(its `detector.` keys with the prefix taken off): `backbone.vision_backbone`,
`backbone.language_backbone`, `geometry_encoder`, `transformer.{encoder, decoder}`,
`segmentation_head`, `dot_prod_scoring`.

One prompt per row: an image's pyramid (expanded to as many rows as the image has prompts),
a phrase's token features, and exemplar points and boxes. The prompt the fusion encoder, the
decoder, the scoring and the segmentation head read is the phrase's 32 tokens followed by the
geometry tokens (exemplars, then the CLS token), as Meta concatenates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .decoder import DetrDecoder, DotProductScoring, SegmentationHead
from .fusion import FusionEncoder, sine_position
from .geometry import GeometryEncoder
from .text import TextArch, TextEncoder
from .vit import VisionBackbone, VitArch


@dataclass(frozen=True)
class Sam3Arch:
    vit: VitArch = field(default_factory=VitArch)
    text: TextArch = field(default_factory=TextArch)
    dim: int = 256
    heads: int = 8
    ffn: int = 2048
    encoder_layers: int = 6
    decoder_layers: int = 6
    geometry_layers: int = 3
    queries: int = 200
    interactive: bool = True  # the second pyramid (sam2_convs) for the point-and-box head
    point_head: bool = True  # the point-and-box head itself (the file's tracker.sam_* keys; family.py)


@dataclass
class Detections:
    """Per prompt row: each query's logit (N×Q), the presence logit (N), boxes (N×Q×4, cx, cy,
    w, h in [0, 1] of the image) and mask logits at the finest level (N×Q×h×w, 288² for 1008²;
    None when detect was told masks=False: Sam3Detector.masks_of makes a row's on demand, from
    `context`)."""

    logits: torch.Tensor
    presence: torch.Tensor
    boxes: torch.Tensor
    masks: torch.Tensor | None
    context: tuple = ()  # (levels, memory, queries, prompt, padding): what masks are made from

    @property
    def scores(self) -> torch.Tensor:
        """score = sigmoid(logit) · sigmoid(presence), as Meta's processor gives it."""
        return self.logits.sigmoid() * self.presence.sigmoid()[:, None]


class _Backbone(nn.Module):
    def __init__(self, a: Sam3Arch) -> None:
        super().__init__()
        self.vision_backbone = VisionBackbone(a.vit, interactive=a.interactive)
        self.language_backbone = TextEncoder(a.text)


class _Transformer(nn.Module):
    def __init__(self, a: Sam3Arch) -> None:
        super().__init__()
        self.encoder = FusionEncoder(a.dim, a.heads, a.ffn, a.encoder_layers)
        self.decoder = DetrDecoder(a.dim, a.heads, a.ffn, a.decoder_layers, a.queries)


class Sam3Detector(nn.Module):
    def __init__(self, a: Sam3Arch = Sam3Arch()) -> None:
        super().__init__()
        self.arch = a
        self.backbone = _Backbone(a)
        self.geometry_encoder = GeometryEncoder(a.dim, a.heads, a.ffn, a.geometry_layers)
        self.transformer = _Transformer(a)
        self.segmentation_head = SegmentationHead(a.dim, a.heads)
        self.dot_prod_scoring = DotProductScoring(a.dim, a.ffn)

    def encode_image(self, x: torch.Tensor) -> list[torch.Tensor]:
        """N×3×S×S (normalised) → the pyramid the detector reads: 4×, 2× and 1× the token grid."""
        return self.backbone.vision_backbone(x, levels=3)

    def encode_text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids N×32 → (padding N×32, features N×32×d)."""
        return self.backbone.language_backbone(tokens)

    def detect(self, levels: list[torch.Tensor], text_pad: torch.Tensor, text: torch.Tensor,
               points: torch.Tensor | None = None, point_labels: torch.Tensor | None = None,
               boxes: torch.Tensor | None = None, box_labels: torch.Tensor | None = None,
               masks: bool = True) -> Detections:
        """levels: encode_image's maps (N rows; with masks=False the coarsest alone will do: it is
        all the fusion encoder reads); text, text_pad: encode_text's; points N×P×2,
        boxes N×B×4 (cx, cy, w, h) in [0, 1] with labels (1 positive, 0 negative). masks=False:
        scores and boxes only; the segmentation head (the pixel decoder at the finest level, a
        third of a row's time) runs later for the rows and queries kept (masks_of)."""
        coarse = levels[-1]
        n, d, h, w = coarse.shape
        tokens = coarse.flatten(2).transpose(1, 2)
        pos = sine_position(h, w, d, device=coarse.device).flatten(1).T[None].expand(n, -1, -1).to(coarse.dtype)
        empty = coarse.new_zeros(n, 0, 2)
        points = empty if points is None else points
        boxes = coarse.new_zeros(n, 0, 4) if boxes is None else boxes
        point_labels = torch.ones(points.shape[:2], device=coarse.device) if point_labels is None else point_labels
        box_labels = torch.ones(boxes.shape[:2], device=coarse.device) if box_labels is None else box_labels
        geo, geo_pad = self.geometry_encoder(tokens, pos, (h, w), points, point_labels, boxes, box_labels)
        prompt, pad = torch.cat((text, geo), 1), torch.cat((text_pad, geo_pad), 1)
        memory = self.transformer.encoder(tokens, pos, prompt, pad)
        queries, out_boxes, presence = self.transformer.decoder(memory, pos, (h, w), prompt, pad)
        logits = self.dot_prod_scoring(queries, prompt, pad)
        context = (levels, memory, queries, prompt, pad)
        if not masks:
            return Detections(logits, presence, out_boxes, None, context)
        out_masks, _ = self.segmentation_head(levels, memory, queries, prompt, pad)
        return Detections(logits, presence, out_boxes, out_masks, context)

    def pixel_embeddings(self, det: Detections, row: int, fine: list[torch.Tensor] | None = None) -> torch.Tensor:
        """One prompt row's pixel embeddings 1×d×H×W (the segmentation head's, before the queries).
        fine: the image's finer pyramid levels (1×d×…), when detect was given the coarsest alone."""
        levels, memory, _, prompt, pad = det.context
        r = slice(row, row + 1)
        rows = [*fine, levels[-1][r]] if fine is not None else [lv[r] for lv in levels]
        head = self.segmentation_head
        return head.instance_seg_head(head.decoded_pixels(rows, memory[r], prompt[r], pad[r]))

    def masks_of(self, det: Detections, row: int, queries: list[int], pixels: torch.Tensor) -> torch.Tensor:
        """Mask logits 1×K×H×W of a row's queries, from its pixel_embeddings."""
        q = det.context[2][row : row + 1, queries]
        return self.segmentation_head.masks(q, pixels)


def preprocess(rgb: torch.Tensor, size: int) -> torch.Tensor:
    """H×W×3 uint8 → 1×3×size×size, as Meta's processor: squashed to a square (the aspect ratio
    is not kept), resized in uint8 (bilinear, antialiased: the rounding torchvision's resize of a
    uint8 image gives on a CPU), then scaled to [0, 1] and normalised with mean and std 0.5."""
    return normalise(squash(rgb, (size, size)))


def squash(rgb: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """H×W×3 uint8 → 1×3×h×w, resized in uint8 (preprocess's first half), as float 0–255."""
    x = rgb.permute(2, 0, 1)[None].contiguous()
    if tuple(x.shape[-2:]) != tuple(hw):
        x = torch.nn.functional.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
    return x.float()


def normalise(x: torch.Tensor) -> torch.Tensor:
    """0–255 values → [0, 1], then mean and std 0.5 (preprocess's second half)."""
    return (x / 255 - 0.5) / 0.5


@dataclass
class Found:
    """What a prompt found in an image, the queries above the threshold, in query order."""

    scores: torch.Tensor  # K
    boxes: torch.Tensor  # K×4, x0, y0, x1, y1 in the image's pixels
    masks: torch.Tensor  # K×H×W bool


def postprocess(det: Detections, row: int, orig_hw: tuple[int, int], threshold: float) -> Found:
    """One prompt row's detections kept above `threshold` (score = sigmoid(logit)·sigmoid(presence)),
    boxes in pixels, masks as Meta's processor makes them: the kept queries' logits upsampled
    bilinearly to the image's size, then sigmoid above 0.5 (logit above 0). Masks only for the
    kept queries."""
    scores = det.scores[row]
    keep = scores > threshold
    h, w = orig_hw
    cx, cy, bw, bh = det.boxes[row][keep].unbind(-1)
    boxes = torch.stack((cx - 0.5 * bw, cy - 0.5 * bh, cx + 0.5 * bw, cy + 0.5 * bh), -1) * torch.tensor(
        [w, h, w, h], dtype=det.boxes.dtype)
    logits = det.masks[row][keep][:, None]
    masks = torch.nn.functional.interpolate(logits, (h, w), mode="bilinear", align_corners=False)[:, 0]
    return Found(scores[keep], boxes, masks.sigmoid() > 0.5)
