"""`sam export onnx`: the prompt encoder and mask decoder and, with --encoder, the image
encoder, as ONNX files, checked in onnxruntime: SAM 1 with Meta's interface (export/onnx.py),
SAM 2.1 with onnxruntime's (export/sam2.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import options as O
from .base import Command, app

export_app = typer.Typer(help="Export the model to other runtimes.", short_help="ONNX files for onnxruntime apps.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(export_app, name="export")

EPILOG = """Examples:

\b
  sam export onnx -o onnx/                       # decoder.onnx, for apps written for Meta's export
  sam export onnx --model vit_h --encoder -o onnx/ --return-single-mask
  sam export onnx --model sam2.1_hiera_tiny --encoder -o onnx2/   # onnxruntime's SAM 2 interface
  python scripts/onnx_segment.py onnx/ photo.jpg --point 320,240 -o mask.png   # onnxruntime alone
"""

#: model families with an ONNX export: SAM 1 with Meta's interface (export/onnx.py), SAM 2.1 with
#: onnxruntime's (export/sam2.py)
EXPORTS = ("sam1", "sam2")


@export_app.command(epilog=EPILOG, cls=Command)
def onnx(
    output: Annotated[Path, typer.Option("--output", "-o", metavar="DIR", help="Folder for the .onnx files.",
                                         show_default=False)],
    model: O.ModelOpt = None,
    checkpoint: O.CheckpointOpt = None,
    encoder: Annotated[bool, typer.Option("--encoder", help="Also write encoder.onnx, the image encoder "
                                          "(a 1x3x1024x1024 normalised image in; SAM 1: 1x256x64x64 out, "
                                          "SAM 2.1: three levels).")] = False,
    return_single_mask: Annotated[bool, typer.Option(
        "--return-single-mask", help="One mask: the best of three for one click, mask token 0 for more.")] = False,
    use_stability_score: Annotated[bool, typer.Option(
        "--use-stability-score", help="Report stability scores instead of predicted IoUs.")] = False,
    return_extra_metrics: Annotated[bool, typer.Option(
        "--return-extra-metrics", help="Also output stability_scores and areas.")] = False,
    gelu_approximate: Annotated[bool, typer.Option(
        "--gelu-approximate", help="tanh GELU, for runtimes without a fast erf (slightly other masks).")] = False,
    opset: Annotated[int, typer.Option("--opset", metavar="N", min=14,
                                       help="ONNX opset (14 or later: the attention needs it).")] = 17,
    quantize: Annotated[bool, typer.Option(
        "--quantize", help="Weights of decoder.onnx dynamically quantised to uint8 (smaller, looser).")] = False,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Run each file in onnxruntime against "
                                        "sam's own model once and report the difference.")] = True,
    quiet: O.QuietOpt = False,
) -> None:
    """Write decoder.onnx (prompt encoder, mask decoder and post-processing, with the inputs and
    outputs of Meta's export; a SAM 2.1 model's those of onnxruntime's SAM 2 export) and, with
    --encoder, encoder.onnx. Needs the onnx extra: pip install 'segment-anything-cli[onnx]'."""
    from ..errors import PromptError
    from .common import load_sam, message

    for mod in ("onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            raise PromptError(f"sam export onnx needs {mod}, which is not installed",
                              hint="pip install 'segment-anything-cli[onnx]'") from None
    import onnx

    from ..export.onnx import DecoderOptions, check_decoder, check_encoder, export_decoder, export_encoder
    from ..io.writers import check_folder_writable

    if opset > (newest := onnx.defs.onnx_opset_version()):
        raise PromptError(f"--opset {opset}: the installed onnx knows opsets up to {newest}")
    check_folder_writable(output)  # a file in the way, no permission, a read-only disk: before any work

    o = DecoderOptions(return_single_mask, use_stability_score, return_extra_metrics, gelu_approximate, opset,
                       quantize)
    loaded = load_sam(model, checkpoint, "cpu", "fp32", quiet)
    if loaded.family not in EXPORTS:
        raise PromptError(f"sam export onnx: {loaded.checkpoint}: a {loaded.family} model, which has no ONNX "
                          f"export yet (it has: {', '.join(EXPORTS)})")
    if loaded.family == "sam2":
        # options of Meta's SAM 1 interface that onnxruntime's SAM 2 one has no counterpart for
        given = [flag for flag, on in (("--use-stability-score", use_stability_score),
                                       ("--return-extra-metrics", return_extra_metrics),
                                       ("--gelu-approximate", gelu_approximate)) if on]
        if given:
            raise PromptError(f"{given[0]} is for SAM 1's export (Meta's interface); a SAM 2.1 model's follows "
                              "onnxruntime's, which has no such output")
        from ..export import sam2 as X

        def decoder(path):
            return X.export_decoder(loaded.net, path, single_mask=return_single_mask, opset=opset, quantize=quantize)

        def checked(path):
            return X.check_decoder(loaded.net, path, single_mask=return_single_mask)

        export_encoder, check_encoder = X.export_encoder, X.check_encoder
        what = "encoder outputs"
    else:
        def decoder(path):
            return export_decoder(loaded.net, path, o)

        def checked(path):
            return check_decoder(loaded.net, path, o)

        what = "embeddings"
    path = _written(lambda: decoder(output / "decoder.onnx"), output / "decoder.onnx")
    said = ""
    if check:
        said = f" (onnxruntime against sam: low-res logits relative L2 {checked(path):.1e})"
    message(f"wrote {path}{said}", quiet)
    if encoder:
        path = _written(lambda: export_encoder(loaded.net, output / "encoder.onnx", opset), output / "encoder.onnx")
        data = path.with_name(path.name + ".data")
        said = f", weights in {data.name}" if data.is_file() else ""
        if check:
            said += f" (onnxruntime against sam: {what} relative L2 {check_encoder(loaded.net, path):.1e})"
        message(f"wrote {path}{said}", quiet)


def _written(export, path):
    """export()'s result; a write that fails (a full or read-only disk) is an OutputError
    naming the file."""
    from ..errors import OutputError

    try:
        return export()
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
