"""`sam segment`: masks for points, boxes and mask prompts on one image, or on every image of a
prompt file (--prompts, cli/prompted.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from . import options as O
from .base import Command, app

EPILOG = """Examples:

\b
  sam segment photo.jpg --point 320,240 -o mask.png
  sam segment photo.jpg --box 10,20,300,400 --box 320,40,600,380 -o masks.json --overlay look.png
  sam segment photo.jpg --point 320,240 --multimask -o mask.png   # mask_0.png … mask_2.png
  sam segment photo.jpg --point 80,60 -o m2.png --embedding-cache emb/   # again: no encoder
  sam segment --prompts boxes.jsonl -o out/ -f coco      # many images: prompts from a file
  sam segment --prompts dets.json --coco-dataset instances.json --images val2017/ -o out/ --refine
  sam segment --prompts labels/ --images images/ --names data.yaml -o out/   # YOLO labels
  sam segment photos/ --text dog --text cat -o out/ -f coco   # SAM 3: every dog and cat

Outputs: OUT ending in .png writes 0/255 single-channel masks: OUT itself for one mask, else
OUT's stem with _0, _1, … appended, in the order of the records printed on stdout (objects in
prompt order, then the model's masks). OUT ending in .json writes a list of records with
COCO RLE segmentations. `-o -` writes the one PNG mask to stdout. One JSON line per mask goes
to stdout (unless the PNG does).

With --prompts, the prompt file names the images and their objects (JSON Lines, one image per
line: {"image": "a/x.jpg", "objects": [{"box": [x0, y0, x1, y1], "points": [[x, y]],
"point_labels": [1], "category": "dog", "score": 0.9}]}; COCO; YOLO labels; CSV), and -o is an
output folder written as sam auto writes it (--format, resume, one JSON line per image).

With --text (SAM 3), IMAGES are files, folders, globs or - as for sam auto, and -o is an output
folder: each mask's category is the phrase that found it, its score SAM 3's (kept above
--min-score, default 0.5). --exemplar boxes (one image) show examples of the concept.
"""


ONE_IMAGE = "Prompts (one image)"
ONE_OUTPUT = "Output (one image)"
TEXT = "Text prompts (SAM 3, many images)"
#: Option groups that only some of the three ways to call sam segment take (options.py's
#: panels): one IMAGE with points and boxes; --prompts FILE; IMAGES... with --text
ONE_IMAGE_PANELS = (ONE_IMAGE, ONE_OUTPUT)
MANY_IMAGE_PANELS = (O.PROMPT_FILE, O.FORMATS_PANEL, O.RUN, O.SPREAD)

PointOpt = Annotated[Optional[list[str]], typer.Option(
    "--point", "-p", metavar="X,Y", rich_help_panel=ONE_IMAGE, help="Foreground point (repeatable).")]
NegPointOpt = Annotated[Optional[list[str]], typer.Option(
    "--neg-point", "-n", metavar="X,Y", rich_help_panel=ONE_IMAGE, help="Background point (repeatable).")]
BoxOpt = Annotated[Optional[list[str]], typer.Option(
    "--box", "-b", metavar="X0,Y0,X1,Y1", rich_help_panel=ONE_IMAGE,
    help="Box around one object (repeatable: each box is one object, decoded together).")]
MaskInputOpt = Annotated[Optional[Path], typer.Option(
    "--mask-input", metavar="FILE", rich_help_panel=ONE_IMAGE,
    help="Mask prompt: a .npy of low-res logits from an earlier run (256×256; SAM 3: 288×288), or a binary "
    "mask image the size of IMAGE (non-zero inside; resized as the model resizes IMAGE, becomes logits ±10).")]
TextOpt = Annotated[Optional[list[str]], typer.Option(
    "--text", "-t", metavar="PHRASE", rich_help_panel=TEXT,
    help="A noun phrase (repeatable): every instance of it in each image, its category the phrase (SAM 3; "
    "the model defaults to sam3).")]
ExemplarOpt = Annotated[Optional[list[str]], typer.Option(
    "--exemplar", metavar="X0,Y0,X1,Y1", rich_help_panel=TEXT,
    help="A box around one example of the concept, in the one image given (repeatable).")]
NegExemplarOpt = Annotated[Optional[list[str]], typer.Option(
    "--neg-exemplar", metavar="X0,Y0,X1,Y1", rich_help_panel=TEXT,
    help="A box around something that is not the concept (repeatable).")]
MultimaskOpt = Annotated[bool, typer.Option(
    "--multimask", rich_help_panel=O.MASKS, help="Return the three ambiguity masks per object.")]
OutOpt = Annotated[str, typer.Option(
    "--output", "-o", metavar="OUT", rich_help_panel=O.OUTPUT, show_default=False,
    help="OUT.png, OUT.json or - (PNG to stdout); with --prompts, a folder.  [required]")]
OverlayOpt = Annotated[Optional[Path], typer.Option(
    "--overlay", metavar="FILE", rich_help_panel=ONE_OUTPUT, help="Also write a picture of the masks over the image.")]
LogitsOpt = Annotated[Optional[Path], typer.Option(
    "--save-logits", metavar="FILE", rich_help_panel=ONE_OUTPUT,
    help="Also save low-res logits (.npy) to feed back with --mask-input.")]


@app.command(epilog=EPILOG, cls=Command,
             short_help="Masks from points, boxes or masks: one image, or a prompt file.")
def segment(
    ctx: typer.Context,
    image: Annotated[
        Optional[list[str]],
        typer.Argument(metavar="IMAGE...", show_default=False,
                       help="The image (JPEG, PNG, BMP, TIFF, WebP, GIF), a file or a bucket's object; with --text, "
                       "image files, folders, globs or - (paths on stdin); not with --prompts."),
    ] = None,
    point: PointOpt = None,
    neg_point: NegPointOpt = None,
    box: BoxOpt = None,
    mask_input: MaskInputOpt = None,
    text: TextOpt = None,
    exemplar: ExemplarOpt = None,
    neg_exemplar: NegExemplarOpt = None,
    multimask: MultimaskOpt = False,
    best_mask: O.BestMaskOpt = False,
    refine: O.RefineOpt = False,
    output: OutOpt = "",
    overlay: OverlayOpt = None,
    logits: LogitsOpt = None,
    prompts: O.PromptsOpt = None,
    images: O.ImagesOpt = None,
    prompt_format: O.PromptFormatOpt = None,
    coco_dataset: O.CocoDatasetOpt = None,
    class_names: O.NamesOpt = None,
    min_score: O.MinScoreOpt = None,
    fmt: O.FormatOpt = None,
    category: O.CategoryOpt = "object",
    polygons: O.PolygonsOpt = False,
    polygon_tolerance: O.PolygonToleranceOpt = 0.5,
    polygon_min_area: O.PolygonMinAreaOpt = 0,
    image_root: O.ImageRootOpt = "",
    yolo_parts: O.YoloPartsOpt = "join",
    yolo_images: O.YoloImagesOpt = "link",
    model: O.ModelOpt = None,
    checkpoint: O.CheckpointOpt = None,
    device: O.DeviceOpt = "auto",
    dtype: O.DtypeOpt = "fp32",
    embedding_cache: O.EmbeddingCacheOpt = None,
    batch_size: O.BatchSizeOpt = None,
    workers: O.WorkersOpt = 2,
    read_ahead: O.ReadAheadOpt = None,
    overwrite: O.OverwriteOpt = False,
    progress: O.ProgressOpt = None,
    shard: O.ShardOpt = None,
    devices: O.DevicesOpt = None,
    ray: O.RayOpt = None,
    ray_actors: O.RayActorsOpt = None,
    max_pixels: O.MaxPixelsOpt = None,
    quiet: O.QuietOpt = False,
) -> None:
    """Segment objects from points, boxes or mask prompts: in one image, or in every image of a
    prompt file (--prompts)."""
    from ..errors import PromptError
    from ..io.formats import DEFAULT_FORMATS

    texts = text is not None or exemplar is not None or neg_exemplar is not None
    if texts and prompts is not None:
        raise PromptError("--text and --prompts are two ways to call sam segment; give one (a prompt file gives "
                          'its own phrases, in a "text" key or column)')
    _check_modes(ctx, "text" if texts else "prompts" if prompts is not None else "one")
    if not output:
        raise PromptError("missing option -o/--output")
    formats = tuple(dict.fromkeys(fmt or DEFAULT_FORMATS))  # many images' (-f is refused for one)
    if texts:
        from .text import segment_texts

        return segment_texts(
            image or [], O.output_folder(output), phrases=text or [], exemplars=exemplar or [],
            neg_exemplars=neg_exemplar or [], min_score=min_score, formats=formats,
            format_options=O.format_options(ctx, formats), batch_size=batch_size, workers=workers,
            read_ahead=read_ahead, overwrite=overwrite, progress=progress, model=model, checkpoint=checkpoint,
            device=device, dtype=dtype, embedding_cache=embedding_cache, quiet=quiet, shard=shard, devices=devices,
            ray=ray, ray_actors=ray_actors)
    if best_mask and multimask:
        raise PromptError("--best-mask and --multimask ask for different masks; give one")
    choice = "all" if multimask else "best" if best_mask else "first"
    if prompts is not None:
        from .prompted import segment_prompts

        return segment_prompts(
            prompts, O.output_folder(output), images=images, prompt_format=prompt_format, coco_dataset=coco_dataset,
            class_names=class_names, min_score=min_score, choice=choice, refine=refine, formats=formats,
            format_options=O.format_options(ctx, formats),
            batch_size=batch_size, workers=workers, read_ahead=read_ahead, overwrite=overwrite, progress=progress, model=model,
            checkpoint=checkpoint, device=device, dtype=dtype, embedding_cache=embedding_cache, quiet=quiet,
            shard=shard, devices=devices, ray=ray, ray_actors=ray_actors)
    if not image:
        raise PromptError("missing IMAGE (or --prompts FILE, or IMAGES... --text PHRASE, for many images)")
    if len(image) > 1:
        raise PromptError(f"{len(image)} images given: points and boxes are for one IMAGE (many images take "
                          "--prompts FILE, or --text PHRASE)")
    _one_image(O.path_or_url(image[0]), point or [], neg_point or [], box or [], mask_input, choice, refine,
               output, overlay, logits, model, checkpoint, device, dtype, embedding_cache, quiet)


def _check_modes(ctx: typer.Context, mode: str) -> None:
    """Refuse an option of another way to call sam segment (mode "one": one IMAGE with points
    and boxes; "prompts": --prompts FILE; "text": IMAGES... --text), naming the first one
    given: the option groups say which is which."""
    from ..errors import PromptError

    for p in ctx.command.params:
        if p.name == "prompts" or not O.given(ctx, p.name):
            continue
        name = "IMAGE" if p.param_type_name == "argument" else max(p.opts, key=len)
        panel = getattr(p, "rich_help_panel", None)
        if mode == "prompts" and (panel in ONE_IMAGE_PANELS or name == "IMAGE"):
            raise PromptError(f"{name} is for one image; with --prompts the prompt file names the images "
                              "and their prompts")
        if mode == "text" and panel in (*ONE_IMAGE_PANELS, O.PROMPT_FILE, O.MASKS) and name != "--min-score":
            raise PromptError(f"{name} does not go with --text (SAM 3 finds each phrase's instances itself)")
        if mode == "one" and panel in MANY_IMAGE_PANELS:
            with_text = panel != O.PROMPT_FILE or name == "--min-score"
            raise PromptError(f"{name} works with --prompts FILE{' or --text PHRASE' if with_text else ''} (many images)")


def _one_image(image: Path, point: list[str], neg_point: list[str], box: list[str], mask_input: Path | None,
               choice: str, refine: bool, output: str, overlay: Path | None, logits: Path | None,
               model, checkpoint, device: str, dtype: str, embedding_cache: Path | None, quiet: bool) -> None:
    """sam segment IMAGE: options checked, then single.segment_image, one JSON line per mask."""
    from ..embedding_cache import EmbeddingCache, check_folder
    from ..engines import require_points
    from ..errors import PromptError
    from ..inputs import InputItem, read_input
    from ..io import writers
    from ..io.images import check_file, read_image
    from ..io.remote import RemoteFile, filesystem
    from ..predictor import Predictor
    from ..prompts import Prompts, load_mask_prompt
    from ..single import SingleOutputs, segment_image
    from .common import load_sam, message, out_bytes, out_line

    outputs = SingleOutputs(output, overlay, logits)
    outputs.check()  # before any work: a typo costs nothing
    prompts = Prompts.parse(point, neg_point, box)
    rgb = read_image(image) if isinstance(image, Path) else read_input(InputItem(image, "", member=RemoteFile(
        image, filesystem(image))))
    prompts.check_inside(rgb.shape[:2], str(image))
    if not prompts.points and not prompts.boxes and mask_input is None:
        raise PromptError("no prompt: give --point, --neg-point, --box or --mask-input")
    if mask_input is not None:
        check_file(mask_input)  # before the model loads: a typo costs nothing
    if embedding_cache is not None:
        check_folder(embedding_cache)
    loaded = load_sam(model, checkpoint, device, dtype, quiet)
    require_points(loaded)
    mask_prompt = load_mask_prompt(mask_input, rgb.shape[:2], loaded.net) if mask_input else None
    cache = None
    if embedding_cache is not None:
        cache = EmbeddingCache(embedding_cache, loaded.net, warn=lambda text: message(text, quiet),
                               weights_id=loaded.weights_id)
    records = segment_image(Predictor(loaded.net, cache), rgb, prompts, mask_prompt, outputs, choice=choice,
                            refine=refine, to_stdout=out_bytes)
    if output != "-":
        for rec in records:
            out_line(writers.json_text(rec))
