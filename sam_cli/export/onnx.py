"""SAM to ONNX: the prompt encoder, mask decoder and mask post-processing as one graph with the
interface of Meta's export (so apps written for it work unchanged), and the image encoder.

decoder.onnx (REFERENCE: Meta's `scripts/export_onnx_model.py`), all float32:

    inputs   image_embeddings 1×256×64×64, point_coords 1×N×2 (XY in the frame whose long
             side is 1024), point_labels 1×N (-1 padding, 0 negative, 1 positive, 2 and 3 a
             box's top-left and bottom-right corners), mask_input 1×1×256×256 (low-res
             logits), has_mask_input [1] (0 or 1), orig_im_size [2] (H, W)
    outputs  masks 1×M×H×W logits at the image's size (a pixel is in the mask above 0),
             iou_predictions 1×M, low_res_masks 1×M×256×256; M = 4 (every mask token; the
             usual three multimask outputs are 1..3), or 1 with return_single_mask; with
             return_extra_metrics also stability_scores 1×M and areas 1×M after
             iou_predictions. Only N is dynamic, and the output size follows orig_im_size.

As in Meta's export, the app appends a (0, 0) point labelled -1 when it gives no box;
return_single_mask picks the best of the three multimask outputs for a lone click and mask
token 0 for more (score = iou + (N − 2.5)·[1000, 0, 0, 0], N counting padding and corners);
use_stability_score reports stability scores instead of predicted IoUs.

encoder.onnx: input `image` 1×3×1024×1024 float32, the photo resized so its long side is 1024
(bilinear, antialiased), normalised by the model's pixel mean and std and padded with zeros
to the bottom and right; output `image_embeddings` 1×256×64×64. Weights past 2 GB (vit_h) go
to an external data file beside it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from ..models.sam1 import Sam

DEFAULT_OPSET = 17
#: onnx's limit on one protobuf file; larger models keep their weights in external data
PROTOBUF_LIMIT = 2**31


@dataclass(frozen=True)
class DecoderOptions:
    return_single_mask: bool = False
    use_stability_score: bool = False
    return_extra_metrics: bool = False
    gelu_approximate: bool = False
    opset: int = DEFAULT_OPSET
    quantize: bool = False


DECODER_INPUTS = ("image_embeddings", "point_coords", "point_labels", "mask_input", "has_mask_input", "orig_im_size")


def decoder_outputs(o: DecoderOptions) -> list[str]:
    extra = ["stability_scores", "areas"] if o.return_extra_metrics else []
    return ["masks", "iou_predictions", *extra, "low_res_masks"]


class DecoderGraph(nn.Module):
    """The traced module behind decoder.onnx (see the module doc), built on sam's own prompt
    encoder and mask decoder weights; every branch is arithmetic, so one graph serves every N."""

    def __init__(self, net: Sam, o: DecoderOptions) -> None:
        super().__init__()
        self.net = net
        self.o = o
        self.threshold = float(net.mask_threshold)

    def _sparse(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        pe = self.net.prompt_encoder
        size = float(pe.input_image_size[0])
        emb = pe.pe_layer._encode((coords + 0.5) / size)  # 1×N×C; the 1024 frame is square
        lab = labels[..., None]
        emb = emb * (lab != -1).float() + pe.not_a_point_embed.weight * (lab == -1).float()
        for code, table in enumerate(pe.point_embeddings):
            emb = emb + table.weight * (lab == code).float()
        return emb

    def _dense(self, mask_input: torch.Tensor, has_mask: torch.Tensor) -> torch.Tensor:
        pe = self.net.prompt_encoder
        none = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        return has_mask * pe.mask_downscaling(mask_input) + (1 - has_mask) * none

    def _stability(self, logits: torch.Tensor) -> torch.Tensor:
        hi = (logits > self.threshold + 1.0).float().sum((-1, -2))
        lo = (logits > self.threshold - 1.0).float().sum((-1, -2))
        return hi / lo

    def _to_image(self, low: torch.Tensor, orig_im_size: torch.Tensor) -> torch.Tensor:
        size = self.net.img_size
        up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        hw = orig_im_size.float()
        scaled = torch.floor(hw * (size / hw.max()) + 0.5).long()  # the resized image, inside the padding
        up = up[..., : scaled[0], : scaled[1]]
        h, w = orig_im_size.long()[0], orig_im_size.long()[1]
        return F.interpolate(up, size=(h, w), mode="bilinear", align_corners=False)

    def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
        dec = self.net.mask_decoder
        low, iou = dec.predict_masks(image_embeddings, self.net.prompt_encoder.get_dense_pe(),
                                     self._sparse(point_coords, point_labels),
                                     self._dense(mask_input, has_mask_input))
        score = self._stability(low) if self.o.use_stability_score else iou
        if self.o.return_single_mask:
            n = point_coords.shape[1]
            bias = torch.zeros(1, dec.num_mask_tokens)
            bias[0, 0] = 1000.0
            best = torch.argmax(score + (n - 2.5) * bias, dim=1)
            low, score = low[:, best[0]][:, None], score[:, best[0]][:, None]
        masks = self._to_image(low, orig_im_size)
        if self.o.return_extra_metrics:
            areas = (masks > self.threshold).float().sum((-1, -2))
            return masks, score, self._stability(masks), areas, low
        return masks, score, low


class EncoderGraph(nn.Module):
    def __init__(self, net: Sam) -> None:
        super().__init__()
        self.encoder = net.image_encoder

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(image)


def _approximate_gelu(net: nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, nn.GELU):
            m.approximate = "tanh"


def dummy_decoder_inputs(net: Sam, n: int = 5) -> tuple[torch.Tensor, ...]:
    size = net.img_size
    grid = net.prompt_encoder.image_embedding_size
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(1, net.prompt_encoder.embed_dim, *grid, generator=g),
        torch.randint(0, size, (1, n, 2), generator=g).float(),
        torch.randint(-1, 4, (1, n), generator=g).float(),
        torch.randn(1, 1, 4 * grid[0], 4 * grid[1], generator=g),
        torch.tensor([1.0]),
        torch.tensor([1500.0, 2250.0]),
    )


def _quiet_tracing():
    """The tracer's warnings about shape-dependent branches: the graphs run at batch 1, the
    shape they are traced at, so the branch taken is the one every run takes."""
    import warnings

    w = warnings.catch_warnings()
    w.__enter__()
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
    return w


def write_model(trace, path: Path, *, quantize: bool = False) -> Path:
    """Trace into a temporary folder beside `path` (trace(tmp_file), under no_grad, the
    tracer's warnings quiet), then put the file in place whole: with quantize, its weights
    dynamically quantised to uint8 (onnxruntime's quantize_dynamic, as Meta's --quantize-out);
    weights near or past PROTOBUF_LIMIT (past it the exporter writes a file per tensor)
    gathered into `<name>.data` beside it. Returns path."""
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = path.with_name(f".{path.name}.export.tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir()
    tmp = tmp_dir / path.name
    data = path.with_name(path.name + ".data")
    quiet = _quiet_tracing()
    try:
        with torch.no_grad():
            trace(tmp)
        if quantize:
            import logging

            from onnxruntime.quantization import QuantType, quantize_dynamic

            logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its advice on stderr
            qtmp = tmp_dir / f"quantized.{path.name}"
            quantize_dynamic(str(tmp), str(qtmp), per_channel=False, reduce_range=False,
                             weight_type=QuantType.QUInt8)
            qtmp.replace(tmp)
        # near the limit (or past it: the exporter wrote a file per tensor), one external file
        if tmp.stat().st_size > PROTOBUF_LIMIT - 2**26 or any(p.name != path.name for p in tmp_dir.iterdir()):
            model = onnx.load(str(tmp))
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data.name, size_threshold=1024)
            (tmp_dir / data.name).replace(data)
        else:
            data.unlink(missing_ok=True)  # an earlier export's, not this file's
        tmp.replace(path)
    finally:
        quiet.__exit__(None, None, None)
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def export_decoder(net: Sam, path: Path, o: DecoderOptions = DecoderOptions()) -> Path:
    """Write decoder.onnx for `net` (float32, on the CPU) to `path`; with o.quantize, the
    weights dynamically quantised to uint8 in place of the float file. Returns the path written."""
    import copy

    net = copy.deepcopy(net).float().cpu().eval()
    if o.gelu_approximate:
        _approximate_gelu(net)
    graph = DecoderGraph(net, o)

    def trace(tmp: Path) -> None:
        torch.onnx.export(
            graph, dummy_decoder_inputs(net), str(tmp), input_names=list(DECODER_INPUTS),
            output_names=decoder_outputs(o), opset_version=o.opset, do_constant_folding=True, dynamo=False,
            dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
        )

    return write_model(trace, path, quantize=o.quantize)


def export_encoder(net: Sam, path: Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write encoder.onnx (float32, see the module doc); weights past PROTOBUF_LIMIT go to
    `<name>.data` beside it."""
    net = net.float().cpu().eval()
    graph = EncoderGraph(net)
    size = net.img_size

    def trace(tmp: Path) -> None:
        torch.onnx.export(graph, (torch.zeros(1, 3, size, size),), str(tmp), input_names=["image"],
                          output_names=["image_embeddings"], opset_version=opset, do_constant_folding=True,
                          dynamo=False)

    return write_model(trace, path)


# ------------------------------------------------------------------------------ checks
def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _rel(a, b) -> float:
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def check_decoder(net: Sam, path: Path, o: DecoderOptions) -> float:
    """decoder.onnx in onnxruntime against the same graph in torch, on random embeddings with
    clicks (3 points) and a box with a mask (7 points): the largest relative L2 difference of
    the low-res logits."""
    import copy

    net = copy.deepcopy(net).float().cpu().eval()
    if o.gelu_approximate:
        _approximate_gelu(net)
    graph = DecoderGraph(net, o)
    sess = _session(path)
    worst = 0.0
    for n, hw in ((3, (480, 640)), (7, (1365, 1024))):
        ins = list(dummy_decoder_inputs(net, n))
        ins[4] = torch.tensor([float(n > 3)])
        ins[5] = torch.tensor([float(hw[0]), float(hw[1])])
        got = sess.run(["low_res_masks"], {k: v.numpy() for k, v in zip(DECODER_INPUTS, ins)})[0]
        with torch.no_grad():
            want = graph(*ins)[-1]
        worst = max(worst, _rel(got, want.numpy()))
    return worst


def check_encoder(net: Sam, path: Path) -> float:
    """encoder.onnx in onnxruntime against sam's encoder on one random normalised image:
    the relative L2 difference of the embeddings."""
    net = net.float().cpu().eval()
    x = torch.randn(1, 3, net.img_size, net.img_size, generator=torch.Generator().manual_seed(0))
    got = _session(path).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        want = net.image_encoder(x)
    return _rel(got, want.numpy())
