"""A SAM 3 checkpoint small enough for the default run, saved as Meta's sam3.pt is laid out
(a `model` dict of `detector.` and `tracker.` keys): sam's own detector at a small size,
every parameter drawn at random from a seed. Its detections are whatever the random weights
give; tests compare the command's outputs with the detector's own (PartByPart, itself
checked against Meta's processor in test_sam3_parts.py)."""

from __future__ import annotations

from pathlib import Path

import torch

#: 112 px (8×8 tokens of 14 px), widths whose head counts SAM 3's head widths (64, 64, 32) give
TINY = dict(vit=dict(img_size=112, dim=128, depth=4, heads=2, window=4, global_blocks=(1, 3), pretrain_size=56,
                     d_model=64),
            text=dict(width=128, layers=2, heads=2, d_model=64),
            dim=64, heads=2, ffn=96, encoder_layers=2, decoder_layers=2, geometry_layers=1, queries=12)


def tiny_detector(seed: int = 0, sizes: dict = TINY):
    from sam_cli.models.sam3.model import Sam3Arch, Sam3Detector
    from sam_cli.models.sam3.text import TextArch
    from sam_cli.models.sam3.vit import VitArch

    a = dict(sizes)
    arch = Sam3Arch(vit=VitArch(**a.pop("vit")), text=TextArch(**a.pop("text")), **a)
    net = Sam3Detector(arch).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net


def tiny_head(net, seed: int = 0):
    """The point-and-box head (its `tracker.` keys) for a tiny detector, drawn at random."""
    from sam_cli.models.sam3.interactive import InteractiveHead

    a = net.arch.vit
    head = InteractiveHead(a.d_model, a.grid, a.img_size).eval()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return head


def save_tiny_sam3(path: Path, seed: int = 0, sizes: dict = TINY, head: bool = True) -> Path:
    """The tiny detector in sam3.pt's layout, with its point-and-box head (unless head=False)
    and a key of the video tracker beside them."""
    net = tiny_detector(seed, sizes)
    sd = {f"detector.{k}": v for k, v in net.state_dict().items()}
    if head:
        sd.update({f"tracker.{k}": v for k, v in tiny_head(net, seed).state_dict().items()})
    sd["tracker.maskmem_tpos_enc"] = torch.zeros(7, 1, 1, 64)
    torch.save({"model": sd}, path)
    return path


class PartByPart:
    """A detector's detections called part by part, as Meta's processor calls them (preprocess,
    the image, the phrases' text, detect, postprocess), the phrases through the detector
    together and the segmentation head one phrase at a time, as Meta's processor runs it (and
    the command): what the command's outputs are compared with."""

    def __init__(self, net) -> None:
        from sam_cli.models.sam3.tokenizer import Tokenizer

        self.net = net
        self.tokenizer = Tokenizer()

    @torch.no_grad()
    def predict(self, rgb: torch.Tensor, phrases: list[str], threshold: float = 0.5) -> list:
        """H×W×3 uint8 and its phrases → what each phrase found (model.Found, above `threshold`)."""
        from sam_cli.models.sam3.model import postprocess, preprocess

        levels = self.net.encode_image(preprocess(rgb, self.net.arch.vit.img_size))
        pad, text = self.net.encode_text(self.tokenizer(phrases))
        from sam_cli.models.sam3.model import Detections

        n = len(phrases)
        det = self.net.detect([lv.expand(n, -1, -1, -1) for lv in levels], pad, text, masks=False)
        out = []
        for i in range(n):
            masks = self.net.masks_of(det, i, list(range(det.logits.shape[1])), self.net.pixel_embeddings(det, i))
            row = Detections(det.logits[i : i + 1], det.presence[i : i + 1], det.boxes[i : i + 1], masks)
            out.append(postprocess(row, 0, tuple(rgb.shape[:2]), threshold))
        return out
