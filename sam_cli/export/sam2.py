"""SAM 2.1 to ONNX, with the inputs and outputs of onnxruntime's SAM 2 export
(onnxruntime/python/tools/transformers/models/sam2: convert_to_onnx.py, image_encoder.py,
image_decoder.py), so apps written for those files work unchanged. All float32.

encoder.onnx
    input    image 1×3×1024×1024: the photo resized to 1024×1024 (a square, the aspect not
             kept; bilinear, antialiased), 0–1 values normalised with ImageNet's mean and std
    outputs  image_features_0 1×32×256×256 and image_features_1 1×64×128×128 (the decoder's
             high-resolution features, its 1×1 convs already applied), image_embeddings
             1×256×64×64 (no_mem_embed added)

decoder.onnx
    inputs   image_features_0, image_features_1, image_embeddings (the encoder's),
             point_coords L×N×2 float32 (XY in the 1024×1024 frame: x·1024/W, y·1024/H),
             point_labels L×N int32 (1 positive, 0 negative, -1 padding, 2 and 3 a box's
             top-left and bottom-right corners, given before the clicks), input_masks
             L×1×256×256 (low-res logits), has_input_masks [L] or [1] (1.0 or 0.0),
             original_image_size int32 [2] (H, W)
    outputs  masks L×M×H×W bool (logit above 0), iou_predictions L×M, low_res_masks
             L×M×256×256 clamped to ±32; M = 3 (the ambiguity masks), or 1 with
             return_single_mask (the single-mask output, or the most stable of the three when
             it is unstable: SAM 2's dynamic multimask)

The padding point is appended inside the graph, as SAM 2's predictor and onnxruntime's export
do: an app gives only its clicks and box corners. L and N are dynamic.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from .onnx import DEFAULT_OPSET, _rel, _session, write_model

ENCODER_OUTPUTS = ("image_features_0", "image_features_1", "image_embeddings")
DECODER_INPUTS = ("image_features_0", "image_features_1", "image_embeddings", "point_coords", "point_labels",
                  "input_masks", "has_input_masks", "original_image_size")
DECODER_OUTPUTS = ("masks", "iou_predictions", "low_res_masks")


class EncoderGraph(nn.Module):
    def __init__(self, net) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.net.encode(image)
        return f["feat_s0"], f["feat_s1"], f["image_embed"]


class DecoderGraph(nn.Module):
    def __init__(self, net, multimask: bool) -> None:
        super().__init__()
        self.net = net
        self.multimask = multimask
        self.threshold = float(net.mask_threshold)

    def forward(self, image_features_0, image_features_1, image_embeddings, point_coords, point_labels,
                input_masks, has_input_masks, original_image_size):
        pe = self.net.sam_prompt_encoder
        dec = self.net.sam_mask_decoder
        sparse = pe._embed_points(point_coords, point_labels.long(), pad=True)
        has = has_input_masks.reshape(-1, 1, 1, 1)
        none = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dense = has * pe.mask_downscaling(input_masks) + (1 - has) * none
        masks, iou, _ = dec.predict_masks(image_embeddings, pe.get_dense_pe(), sparse, dense,
                                          image_features_0, image_features_1)
        low, iou = dec.choose(masks, iou, self.multimask)
        hw = original_image_size.long()
        full = F.interpolate(low, size=(hw[0], hw[1]), mode="bilinear", align_corners=False)
        return full > self.threshold, iou, low.clamp(-32.0, 32.0)


def dummy_decoder_inputs(n_labels: int = 2, n_points: int = 3, hw=(1200, 1800)) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, 32, 256, 256, generator=g),
        torch.randn(1, 64, 128, 128, generator=g),
        torch.randn(1, 256, 64, 64, generator=g),
        torch.randint(0, 1024, (n_labels, n_points, 2), generator=g).float(),
        torch.randint(0, 4, (n_labels, n_points), generator=g).int(),
        torch.randn(n_labels, 1, 256, 256, generator=g),
        torch.tensor([1.0]),
        torch.tensor(hw, dtype=torch.int32),
    )


def export_decoder(net, path: Path, *, single_mask: bool = False, opset: int = DEFAULT_OPSET,
                   quantize: bool = False) -> Path:
    """Write decoder.onnx (see the module doc) to `path`; returns it."""
    net = copy.deepcopy(net).float().cpu().eval()
    graph = DecoderGraph(net, multimask=not single_mask)
    dynamic = {"point_coords": {0: "num_labels", 1: "num_points"}, "point_labels": {0: "num_labels", 1: "num_points"},
               "input_masks": {0: "num_labels"}, "has_input_masks": {0: "num_labels"},
               "masks": {0: "num_labels", 2: "original_image_height", 3: "original_image_width"},
               "iou_predictions": {0: "num_labels"}, "low_res_masks": {0: "num_labels"}}

    def trace(tmp: Path) -> None:
        torch.onnx.export(graph, dummy_decoder_inputs(), str(tmp), input_names=list(DECODER_INPUTS),
                          output_names=list(DECODER_OUTPUTS), opset_version=opset, do_constant_folding=True,
                          dynamo=False, dynamic_axes=dynamic)

    return write_model(trace, path, quantize=quantize)


def export_encoder(net, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write encoder.onnx (see the module doc) to `path`; returns it."""
    net = copy.deepcopy(net).float().cpu().eval()
    graph = EncoderGraph(net)

    def trace(tmp: Path) -> None:
        torch.onnx.export(graph, (torch.zeros(1, 3, 1024, 1024),), str(tmp), input_names=["image"],
                          output_names=list(ENCODER_OUTPUTS), opset_version=opset, do_constant_folding=True,
                          dynamo=False)

    return write_model(trace, path)


def check_decoder(net, path: Path, *, single_mask: bool = False) -> float:
    """decoder.onnx in onnxruntime against the same graph in torch, on random features with
    one object of 3 points and a mask, and two objects of 5 points without: the largest
    relative L2 difference of the low-res logits."""
    net = copy.deepcopy(net).float().cpu().eval()
    graph = DecoderGraph(net, multimask=not single_mask)
    sess = _session(path)
    worst = 0.0
    for labels, points, has, hw in ((1, 3, 1.0, (480, 640)), (2, 5, 0.0, (1365, 1024))):
        ins = list(dummy_decoder_inputs(labels, points, hw))
        ins[6] = torch.tensor([has])
        got = sess.run(["low_res_masks"], {k: v.numpy() for k, v in zip(DECODER_INPUTS, ins)})[0]
        with torch.no_grad():
            want = graph(*ins)[-1]
        worst = max(worst, _rel(got, want.numpy()))
    return worst


def check_encoder(net, path: Path) -> float:
    """encoder.onnx in onnxruntime against sam's encoder on one random normalised image: the
    largest relative L2 difference of the three outputs."""
    net = net.float().cpu().eval()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(0))
    got = _session(path).run(list(ENCODER_OUTPUTS), {"image": x.numpy()})
    with torch.no_grad():
        want = EncoderGraph(net)(x)
    return max(_rel(g, w.numpy()) for g, w in zip(got, want))


