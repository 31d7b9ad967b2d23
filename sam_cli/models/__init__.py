"""Model families: one module (or folder) per network, each behind the same small seam.

A family module exposes ``FAMILY``, an object with:

    name                     "sam1", the value registry.ModelType.family names it by
    recognises(sd) -> bool   whether a checkpoint's state dict (tensor name → tensor) is this
                             family's; read from key names only, nothing is built
    infer_arch(sd, source)   the architecture, read back from tensor shapes (a fine-tuned
                             checkpoint works without a model name); CheckpointError naming
                             `source` when the file does not hold one
    ignored_keys(sd)         the keys a family's checkpoints carry that the image path never
                             uses (SAM 2's video modules), dropped by name before the strict
                             load; anything else unknown is refused
    build(arch, device)      the network (weights uninitialised; on "meta" to take a file's)

The network it builds is a torch Module with the operations every engine uses (the engines
never see a family's own tensors):

    family, img_size, mask_threshold, device
    automatic                an AutomaticStyle (features.py): `sam auto`'s defaults and small-
                             region clean-up for the family; None where it has no automatic mode
    grid_hw, low_res_hw      the feature grid (64×64) and the low-res logits' size (256×256)
    input_size(h, w)         an h×w image's size after the resize to the encoder's input
    resize(image, input_hw)  H×W×3 uint8 tensor → 1×3×h×w float, as the family's reference resizes
    upscale(low, input_hw, orig_hw)   low-res logits → …×H×W logits at the image's size
    upscale_frame(input_hw)  (S, (h, w)): how upscale gets there, as upscale.upscale_logits
                             takes it: to S², the first h×w kept, to the image (automatic mode
                             upscales tile by tile with the same matrices)
    clamp_low_res(low)       the low-res logits as the family's predictor returns them
    encoder_dtype            the precision the encoder computes in (names cached features)
    encoder_state()          the encoder's tensors (names features built in memory)
    feature_shapes()         {name: C×h×w} of one image's features (checks cached entries)
    preprocess(x)            B×3×h×w RGB 0–255, long side resized → B×3×S×S normalised, padded
    encode(x)                B×3×S×S → {name: B×C×h×w float32}: the tensors ImageFeatures holds
    decode(features, points, labels, boxes, mask_input, multimask, grid=None, min_iou=None)
                             prompts in the input frame → low-res logits B×M×h×w and IoU B×M
                             (and the kept prompts' indices with min_iou)
    set_precision(dtype), compile_parts(...), encoder_compiled

Adding a family is its module plus its registry entries (docs/architecture.md). This file
imports no torch: `sam --help` reads the registry, never a network.
"""

from __future__ import annotations

import importlib
from typing import Any

#: family name → the module that defines it (imported when a checkpoint is loaded)
FAMILY_MODULES: dict[str, str] = {
    "sam1": "sam_cli.models.sam1",
    "sam2": "sam_cli.models.sam2",
    "sam3": "sam_cli.models.sam3.family",
}

_extra: dict[str, Any] = {}  # families registered at run time (register())


def register(family: Any) -> None:
    """Add a family object (tests, plugins); it is tried after the built-in ones."""
    _extra[family.name] = family


def get(name: str) -> Any:
    """The family object called `name` (its module imported)."""
    if name in _extra:
        return _extra[name]
    if name not in FAMILY_MODULES:
        raise KeyError(f"unknown model family {name!r}")
    return importlib.import_module(FAMILY_MODULES[name]).FAMILY


def families() -> list[Any]:
    """Every family, built-in ones first."""
    return [get(n) for n in FAMILY_MODULES] + [f for n, f in _extra.items() if n not in FAMILY_MODULES]


def detect(sd: dict, source: str) -> Any:
    """The family whose checkpoints look like `sd`. None fits: the first (SAM 1) family's own
    error, which names the key it missed (most files given by mistake are no checkpoint)."""
    for fam in families():
        if fam.recognises(sd):
            return fam
    return get("sam1").infer_arch(sd, source)  # raises CheckpointError naming the missing key
