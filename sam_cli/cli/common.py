"""Helpers the commands share: messages, progress, model loading with a download bar."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def stderr_is_tty() -> bool:
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def message(text: str, quiet: bool = False) -> None:
    if not quiet:
        print(text, file=sys.stderr, flush=True)


def download_progress(quiet: bool):
    """A weights.ProgressFactory drawing a tqdm bar on stderr (terminals only)."""
    if quiet or not stderr_is_tty():
        return None

    def factory(total, have):
        from tqdm import tqdm

        bar = tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc="downloading", file=sys.stderr, leave=False,
        )

        def update(n: int) -> None:
            if n < 0:
                bar.close()
            else:
                bar.update(n)

        return update

    return factory


def load_sam(model: str | None, checkpoint: Path | None, device: str, dtype: str, quiet: bool):
    """Resolve the device, then load (downloading if needed) the model in `dtype`."""
    from ..device import configure_threads, resolve_device, slow_bf16_note, tune_allocator
    from ..errors import CheckpointError, PromptError
    from ..weights import load_model

    if dtype not in ("fp32", "bf16"):
        raise PromptError(f"--dtype {dtype}: choose fp32 or bf16 (fp16 breaks vit_h)")
    if model is not None and model not in ("vit_b", "vit_l", "vit_h"):
        raise CheckpointError(f"--model {model}: unknown model", hint="choose vit_b, vit_l or vit_h")
    dev = resolve_device(device)
    if dtype == "bf16" and (note := slow_bf16_note(dev)):
        message(note, quiet)
    configure_threads()
    tune_allocator()
    return load_model(model=model, checkpoint=checkpoint, device=dev, dtype=dtype,
                      progress=download_progress(quiet))
