"""Options shared by several commands, defined once as Annotated aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..io.formats import FORMATS

MODEL_NAMES = ("vit_b", "vit_l", "vit_h")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("fp32", "bf16")

# Values offered for an option's argument, by parameter name (completions and man page).
CHOICES: dict[str, tuple[str, ...]] = {
    "model": MODEL_NAMES, "device": DEVICES, "dtype": DTYPES, "fmt": FORMATS, "names": MODEL_NAMES,
}

ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model", "-m", metavar="NAME",
        help="Model type: vit_b (default: 375 MB, usable on a laptop CPU), vit_l or vit_h "
        "(best masks, 2.6 GB). Downloaded into the cache on first use.",
        autocompletion=lambda: list(MODEL_NAMES),
    ),
]
CheckpointOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--checkpoint", "-c", metavar="PATH",
        help="A local checkpoint (.pth as Meta publishes it, or .safetensors); any SAM-ViT "
        "size, fine-tuned ones too. Overrides --model.",
    ),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device", "-d", metavar="DEVICE",
        help="auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps.",
        autocompletion=lambda: list(DEVICES),
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
        autocompletion=lambda: list(DTYPES),
    ),
]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or messages on stderr; errors still.")
]
EmbeddingCacheOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--embedding-cache", metavar="DIR", envvar="SAM_EMBEDDING_CACHE",
        help="Keep image embeddings in DIR and reuse them: on an image already seen, another "
        "prompt or other automatic settings skip the image encoder (most of a sam segment "
        "call's time on a CPU). 4 MB per image; keyed by the pixels, the checkpoint, --dtype "
        "and the device type; never cleaned up by sam.",
    ),
]
