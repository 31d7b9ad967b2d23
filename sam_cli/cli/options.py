"""Options shared by several commands, defined once as Annotated aliases. Their choices come
from the registries (model types, precisions, devices, output formats), which import no
torch, so `--help` and TAB stay fast; a value outside them is a usage error (exit 2)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Optional, get_args

import typer

from ..io.formats import FORMATS, YOLO_IMAGES, YOLO_PARTS, FormatOptions, unread_option
from ..io.sources import SOURCES
from ..registry import DEVICES, DTYPES, MODELS


def model_names() -> list[str]:
    """The registry's model names, read when an option is parsed (a family's entries count)."""
    return list(MODELS)


def choice(what: Callable[[], Iterable[str]], pattern: str | None = None):
    """A Typer callback accepting the values `what()` lists (read when the option is parsed,
    so a format registered later counts), or matching `pattern`; None and lists pass through
    value by value."""

    def check(value):
        if value is None:
            return value
        allowed = list(what())
        for v in value if isinstance(value, list) else [value]:
            if v not in allowed and not (pattern and re.fullmatch(pattern, v)):
                raise typer.BadParameter(f"{v!r}: choose from {', '.join(allowed)}")
        return value

    return check


def format_names() -> list[str]:
    return list(FORMATS)


def source_names() -> list[str]:
    return list(SOURCES)


# Values offered for an option's argument, by parameter name (completions and man page).
CHOICES: dict[str, Callable[[], Iterable[str]]] = {
    "model": model_names, "device": lambda: DEVICES, "dtype": lambda: DTYPES,
    "fmt": format_names, "names": model_names, "prompt_format": source_names,
    "yolo_parts": lambda: YOLO_PARTS, "yolo_images": lambda: YOLO_IMAGES,
}

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", metavar="NAME",
        help="Model: vit_b (default: 375 MB, usable on a laptop CPU), vit_l or vit_h (SAM 1's best "
        "masks, 2.6 GB), SAM 2.1's sam2.1_hiera_tiny, _small, _base_plus, _large, or SAM 3's sam3 (text "
        "prompts, the default with --text, and points and boxes; gated: HF_TOKEN). Downloaded into the cache on first use.",
        autocompletion=model_names, callback=choice(CHOICES["model"]),
    ),
]
ModelNamesArg = Annotated[
    Optional[list[str]],
    typer.Argument(metavar="NAMES", show_default=False, help="Model names (vit_b, sam2.1_hiera_tiny, …); all when omitted.",
                   autocompletion=model_names, callback=choice(CHOICES["names"])),
]
def path_or_url(value: str | None):
    """A Path, or an io.remote.Url for a bucket's object (s3://…, gs://, az://): an option that
    takes either (pathlib would fold a URL's //). (A Typer callback: one parameter.)"""
    return _path_or_url(value, "reads", " here")


def _path_or_url(value: str | None, verb: str, where: str):
    """path_or_url; a scheme no backend serves is a usage error ("sam {verb} s3, … URLs{where},
    not ftp://")."""
    from ..io.remote import BACKENDS, Url, scheme

    if value is None:
        return None
    if (s := scheme(value)) is None:
        return Path(value)
    if s not in BACKENDS:
        raise typer.BadParameter(f"{value}: sam {verb} {', '.join(sorted(BACKENDS))} URLs{where}, not {s}://")
    return Url(value)


CheckpointOpt = Annotated[
    Optional[str],
    typer.Option(
        "--checkpoint", "-c", metavar="PATH",
        help="A checkpoint (.pth or .pt as Meta publishes it, or .safetensors): any SAM 1 or SAM 2 "
        "size, fine-tuned ones too, recognised from its tensors. Overrides --model. A bucket's object "
        "(s3://…) is copied into the cache and used from there while it is unchanged.",
        callback=path_or_url,
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", "-d", metavar="DEVICE",
        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.",
        autocompletion=lambda: list(DEVICES), callback=choice(CHOICES["device"], r"cuda:\d+"),
    ),
]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype", metavar="DTYPE",
        help="Precision of the heavy parts (the image encoder's attention and MLPs, the mask "
        "decoder's image side): fp32 (default) or bf16: faster on GPUs and on CPUs with native "
        "bfloat16 (AVX512-BF16, AMX), at a small cost in precision; the encoder's residual "
        "stream, prompts, IoU and mask logits stay fp32. fp16 is not offered: it breaks vit_h.",
        autocompletion=lambda: list(DTYPES), callback=choice(CHOICES["dtype"]),
    ),
]
FormatOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--format", "-f", metavar="FORMAT",
        help=f"{', '.join(f'{n} ({s.summary})' for n, s in FORMATS.items())}; "
        "repeat for several. [default: png]",
        autocompletion=format_names, callback=choice(format_names),
    ),
]
def _max_pixels(value: int | None) -> int | None:
    """--max-pixels takes effect for every image read in this process, on any thread."""
    if value is not None:
        import os

        from ..io.image_size import ENV_MAX_PIXELS

        os.environ[ENV_MAX_PIXELS] = str(value)
    return value


MaxPixelsOpt = Annotated[
    Optional[int],
    typer.Option("--max-pixels", metavar="N", min=1, callback=_max_pixels, show_default=False,
                 help="Refuse images whose header declares more pixels than this (a small file "
                 "can declare a huge image). [default: 200000000; or SAM_MAX_PIXELS]"),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or messages on stderr; errors still.")
]
EmbeddingCacheOpt = Annotated[
    Optional[str],
    typer.Option(
        "--embedding-cache", metavar="DIR", envvar="SAM_EMBEDDING_CACHE", callback=path_or_url,
        help="Keep image embeddings in DIR and reuse them: on an image already seen, another "
        "prompt or other automatic settings skip the image encoder (most of a sam segment "
        "call's time on a CPU). 4 MB per image; keyed by the pixels, the checkpoint, --dtype "
        "and the device type; never cleaned up by sam. A bucket's prefix (s3://…) is shared by every machine.",
    ),
]

# ------------------------------------------------ automatic mode's settings (AmgSettings)
PointsPerSideOpt = Annotated[int, typer.Option(metavar="N", help="Grid points per side of the image.")]
PointsPerBatchOpt = Annotated[
    Optional[int],
    typer.Option(metavar="N", help="Points decoded together (memory vs speed; masks are the same). "
                 "[default: 64 on the CPU, 256 on a GPU]", show_default=False),
]
PredIouThreshOpt = Annotated[
    Optional[float], typer.Option(
        metavar="T", show_default=False,
        help="Keep masks whose predicted IoU is above this (0 turns the filter off). Default: the model's "
             "reference generator's, 0.88 for SAM 1, 0.8 for SAM 2.1.")
]
StabilityThreshOpt = Annotated[
    float, typer.Option(metavar="T", help="Keep masks with a stability score at least this (0 turns it off).")
]
StabilityOffsetOpt = Annotated[float, typer.Option(metavar="X", help="Logit offset of the stability score.")]
BoxNmsOpt = Annotated[float, typer.Option(metavar="IOU", help="Box IoU above which duplicate masks are removed.")]
CropLayersOpt = Annotated[int, typer.Option(metavar="N", help="Extra layers of smaller crops (0: the whole image only).")]
CropNmsOpt = Annotated[float, typer.Option(metavar="IOU", help="Box IoU for duplicates across crops.")]
CropOverlapOpt = Annotated[
    float, typer.Option(metavar="R", help="Overlap of neighbouring crops, as a share of the short side. "
                        "[default: 0.3413 (512/1500)]", show_default=False)
]
CropDownscaleOpt = Annotated[int, typer.Option(metavar="F", help="Crop layer i uses points-per-side / factor^i.")]
MinRegionOpt = Annotated[
    int, typer.Option(metavar="PX", help="Fill holes and remove islands smaller than this many pixels (0: off). "
                      "SAM 1: in the final masks, then duplicates removed again; SAM 2.1: holes and islands of "
                      "at most this many cells of the 256×256 low-res logits, before upscaling (as Meta's generators).")
]
MultimaskAutoOpt = Annotated[
    bool, typer.Option("--multimask/--no-multimask",
                       help="Three masks per point (the ambiguity outputs), or one (SAM 2.1: the most stable of "
                            "the three when the single one is unstable).")
]
M2mOpt = Annotated[
    bool, typer.Option("--use-m2m", help="Decode each mask again with itself as the mask prompt and keep the "
                       "refined one (SAM 2's use_m2m; slower, often cleaner masks).")
]

# ------------------------------------------------------------ runs over many images
InputsArg = Annotated[
    list[str],
    typer.Argument(metavar="INPUTS", show_default=False,
                   help="Image files, folders (recursive), globs, or - to read paths from stdin."),
]
def output_folder(value: str | None):
    """-o: a folder on a disk (a Path), or a bucket's prefix (an io.remote.Url: s3://b/out/,
    gs://, az://), whose backend must be one sam writes to (a usage error names what to
    install)."""
    from ..io.remote import Url, filesystem

    folder = _path_or_url(value, "writes to", "")
    if isinstance(folder, Url):
        filesystem(folder)  # the extra is installed, or a usage error says which
    return folder


OutputDirOpt = Annotated[str, typer.Option("--output", "-o", metavar="DIR", help="Output folder, or a bucket "
                                           "URL (s3://bucket/out/, gs://, az://).", callback=output_folder)]
BatchSizeOpt = Annotated[
    Optional[int],
    typer.Option(min=1, metavar="N", help="Images (crops) per image-encoder batch. "
                 "[default: 1 on the CPU, 4 on a GPU]", show_default=False),
]
WorkersOpt = Annotated[int, typer.Option(min=1, metavar="N", help="Threads decoding images ahead.")]
ReadAheadOpt = Annotated[
    Optional[int],
    typer.Option("--read-ahead", min=1, metavar="N", show_default=False,
                 help="Reads in flight ahead of the model, each on a thread of its own, for images in a bucket "
                 "or a tar shard (a bucket answers each read after tens of milliseconds: many must overlap); "
                 "--workers threads decode them. At most N images' bytes are held. "
                 "[default: 16 when an input is a URL; else none: the --workers threads read too]"),
]


#: --read-ahead where it is not given and an input is a URL (a bucket, the web)
REMOTE_READ_AHEAD = 16


def read_ahead(given: int | None, inputs) -> int | None:
    """--read-ahead's value; where not given, REMOTE_READ_AHEAD when an input is a URL."""
    from ..io.remote import is_url

    if given is None and any(is_url(str(a)) for a in inputs):
        return REMOTE_READ_AHEAD
    return given
CompileOpt = Annotated[
    bool,
    typer.Option("--compile", help="torch.compile the encoder and decoder: the first batches take "
                 "a few minutes longer, later ones less time (on a GPU; not on a CPU). For long runs.",
                 show_default=False),
]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Redo images whose outputs exist.")]
ProposalsOpt = Annotated[
    bool,
    typer.Option("--proposals", help="Object proposals as the paper makes them: a 64x64 grid, no crops, no "
                 "IoU or stability filter, NMS 0.9 (options given explicitly win), masks ranked by "
                 "the mean of predicted IoU and stability score (COCO's score), the best kept."),
]
MaxProposalsOpt = Annotated[
    int, typer.Option("--max-proposals", metavar="N", min=1, help="--proposals: how many to keep per image."),
]
DevicesOpt = Annotated[
    Optional[str],
    typer.Option("--devices", metavar="LIST",
                 help="One worker process per device, each with its own model: cuda:0,cuda:1,… or a "
                 "count N (cuda:0 to cuda:N-1); cpu may be named more than once (the cores are "
                 "shared out). Replaces --device."),
]
RayOpt = Annotated[
    Optional[str],
    typer.Option("--ray", metavar="ADDRESS",
                 help="Run on a Ray cluster (pip install 'segment-anything-cli[ray]'): local (a Ray on this machine), "
                 "auto (the cluster this machine is in) or ray://HOST:PORT. Inputs and -o must be on "
                 "a filesystem every node sees."),
]
RayActorsOpt = Annotated[
    Optional[int],
    typer.Option("--ray-actors", metavar="N", min=1,
                 help="--ray: how many actors, each with a model (default: one per GPU of the cluster, "
                 "or one per machine of a cluster without GPUs)."),
]
ShardOpt = Annotated[
    Optional[str],
    typer.Option("--shard", metavar="I/N",
                 help="Process shard I of N only (I from 0 to N-1): the images whose output name hashes to "
                 "I, the same on every machine; then `sam merge OUT` writes the run-level outputs. "
                 "Default: from a Slurm array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT) or a "
                 "Kubernetes Indexed Job (JOB_COMPLETION_INDEX, SAM_SHARD_COUNT); 0/1: every image."),
]
ProgressOpt = Annotated[
    Optional[bool],
    typer.Option("--progress/--no-progress", help="Progress bar on stderr (default: only on a terminal)."),
]

# ------------------------------------------------------------ prompts for many images
PromptsOpt = Annotated[
    Optional[str],
    typer.Option("--prompts", metavar="FILE", show_default=False,
                 help="Segment every image a prompt file names, with its boxes, points or masks (or, "
                 "with SAM 3, its phrases and exemplar boxes: a \"text\" key or column): "
                 "JSON Lines (- for stdin), COCO (a dataset, or detections with --coco-dataset), a "
                 "folder of YOLO labels, or CSV. -o is then an output folder, as for sam auto."),
]
ImagesOpt = Annotated[
    Optional[str],
    typer.Option("--images", metavar="DIR", show_default=False, callback=path_or_url,
                 help="Where the prompt file's image paths start, a folder or a bucket's prefix "
                 "(default: the prompt file's folder; stdin: the working folder). Needed for YOLO labels."),
]
PromptFormatOpt = Annotated[
    Optional[str],
    typer.Option("--prompt-format", metavar="KIND", show_default=False,
                 autocompletion=source_names, callback=choice(source_names),
                 help="jsonl, coco, yolo or csv. [default: from the name: .jsonl, .json, .csv, a "
                 "folder is YOLO, - is JSON Lines]"),
]
CocoDatasetOpt = Annotated[
    Optional[Path],
    typer.Option("--coco-dataset", metavar="FILE", show_default=False,
                 help="The COCO dataset file naming the images of a COCO detections list."),
]
NamesOpt = Annotated[
    Optional[Path],
    typer.Option("--names", metavar="FILE", show_default=False,
                 help="YOLO class names: a data.yaml, or a text file with one name per line."),
]
MinScoreOpt = Annotated[
    Optional[float],
    typer.Option("--min-score", metavar="S", show_default=False,
                 help="Leave out objects whose detector score is below S."),
]
BestMaskOpt = Annotated[
    bool,
    typer.Option("--best-mask", help="Decode the three ambiguity masks and keep the most confident "
                 "(for a lone click, as the paper scores it; the default keeps the single-mask "
                 "output, best for boxes and several points)."),
]
RefineOpt = Annotated[
    bool,
    typer.Option("--refine", help="Decode each object twice, feeding the most confident mask back "
                 "with its prompts (the paper's instance-segmentation setting)."),
]

# ------------------------------------------------------------ what the formats write
def _name(value: str) -> str:
    from ..names import bad_text

    if bad := bad_text(value):
        raise typer.BadParameter(f"{value!r} {bad}, which the output formats cannot hold")
    return value


CategoryOpt = Annotated[
    str,
    typer.Option("--category", metavar="NAME", callback=_name,
                 help="The category of masks that have none (all of automatic mode's), in coco, "
                 "yolo-seg and the other formats that name categories."),
]
PolygonsOpt = Annotated[
    bool,
    typer.Option("--polygons", help="coco, cvat and labelstudio write polygons instead of RLE masks "
                 "(coco counts each mask's holes, which its polygons cannot hold, in polygon_holes; cvat "
                 "and labelstudio keep a mask with holes as a mask). yolo-seg always writes polygons."),
]
ImageRootOpt = Annotated[
    str,
    typer.Option("--image-root", metavar="PREFIX",
                 help="labelstudio: put PREFIX before each image's path in the tasks (e.g. "
                 "/data/local-files/?d=photos/ for Label Studio's local files)."),
]
PolygonToleranceOpt = Annotated[
    float,
    typer.Option("--polygon-tolerance", metavar="PX", min=0.0,
                 help="How far a polygon may stray from the mask's outline, pixels (0: exact outline)."),
]
YoloPartsOpt = Annotated[
    str,
    typer.Option("--yolo-parts", metavar="HOW", autocompletion=lambda: list(YOLO_PARTS),
                 callback=choice(CHOICES["yolo_parts"]),
                 help="yolo-seg, a mask of several parts (a label line holds one polygon): join "
                 "(default: one line, the parts joined by zero-width corridors, as Ultralytics' "
                 "converter does; filled back, a corridor covers the pixels it runs along), split "
                 "(a line per part: exact, but the object becomes several) or largest (the other "
                 "parts dropped, counted)."),
]
YoloImagesOpt = Annotated[
    str,
    typer.Option("--yolo-images", metavar="HOW", autocompletion=lambda: list(YOLO_IMAGES),
                 callback=choice(CHOICES["yolo_images"]),
                 help="yolo-seg, the dataset's images/ folder beside labels/ (where Ultralytics looks): "
                 "link (default: a symbolic link to each image), copy, or none."),
]
PolygonMinAreaOpt = Annotated[
    int,
    typer.Option("--polygon-min-area", metavar="N", min=0,
                 help="Leave out parts of a mask smaller than N pixels from its polygons (counted)."),
]


# ------------------------------------------------------------ the titled groups of --help
def _panel(name: str, *aliases) -> None:
    for alias in aliases:
        get_args(alias)[1].rich_help_panel = name


#: Each option group, defined once: `--help` prints a titled group per panel (base.Command),
#: in the order a command first uses them; `sam segment` reads them to tell one-image options
#: from many-image ones.
PROMPT_FILE = "Prompt file (many images)"
MASKS = "Masks"
OUTPUT = "Output"
FORMATS_PANEL = "Output formats"
AUTOMATIC = "Automatic settings"
MODEL = "Model"
RUN = "Run"
SPREAD = "Spreading over GPUs and machines"
GENERAL = "General"
_panel(PROMPT_FILE, PromptsOpt, ImagesOpt, PromptFormatOpt, CocoDatasetOpt, NamesOpt, MinScoreOpt)
_panel(MASKS, BestMaskOpt, RefineOpt)
_panel(OUTPUT, OutputDirOpt)
_panel(FORMATS_PANEL, FormatOpt, CategoryOpt, PolygonsOpt, PolygonToleranceOpt, PolygonMinAreaOpt, ImageRootOpt,
       YoloPartsOpt, YoloImagesOpt)
_panel(AUTOMATIC, PointsPerSideOpt, PointsPerBatchOpt, PredIouThreshOpt, StabilityThreshOpt, StabilityOffsetOpt,
       BoxNmsOpt, CropLayersOpt, CropNmsOpt, CropOverlapOpt, CropDownscaleOpt, MinRegionOpt, MultimaskAutoOpt, M2mOpt,
       ProposalsOpt,
       MaxProposalsOpt)
_panel(MODEL, ModelOpt, CheckpointOpt, DeviceOpt, DtypeOpt, CompileOpt, EmbeddingCacheOpt)
_panel(RUN, BatchSizeOpt, WorkersOpt, ReadAheadOpt, OverwriteOpt, ProgressOpt)
_panel(SPREAD, ShardOpt, DevicesOpt, RayOpt, RayActorsOpt)
_panel(GENERAL, MaxPixelsOpt, QuietOpt)



# ------------------------------------------------------------ each group builds its dataclass
def given(ctx: typer.Context, name: str) -> bool:
    """Whether the parameter `name` was given (on the command line or in the environment)."""
    source = ctx.get_parameter_source(name)  # Typer's own click: compared by name
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


#: the output-format options' parameters → FormatOptions' fields
FORMAT_FIELDS = {"category": "category", "polygons": "polygons", "polygon_tolerance": "tolerance",
                 "polygon_min_area": "min_area", "image_root": "image_root", "yolo_parts": "yolo_parts",
                 "yolo_images": "yolo_images"}


def format_options(ctx: typer.Context, formats: tuple[str, ...]) -> FormatOptions:
    """The Output formats group as FormatOptions; an option given that none of `formats`
    reads (each format declares its own: FormatSpec.options) is a usage error."""
    from ..errors import PromptError

    fields = [FORMAT_FIELDS[n] for n in FORMAT_FIELDS if given(ctx, n)]
    if (field := unread_option(formats, fields)) is not None:
        name = next(k for k, v in FORMAT_FIELDS.items() if v == field)
        readers = [f for f, spec in FORMATS.items() if field in spec.options]
        raise PromptError(f"--{name.replace('_', '-')} is read by {', '.join(readers)}, and none of them is asked for "
                          f"(-f {' -f '.join(formats)})", hint=f"add -f {readers[0]}, or leave the option out")
    return FormatOptions(**{v: ctx.params[k] for k, v in FORMAT_FIELDS.items()})
