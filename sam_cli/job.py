"""A Job: everything a run is, in one picklable value. Every command parses its options
into one, hands it to spread.run_job (plain, --shard, --devices, --ray) and renders the
events; a worker process or a Ray actor rebuilds the engine and the output layout from the
same Job, and `sam merge` rebuilds the layout from what the shard records keep of it
(Job.merge_args).

    mode       which engine (engines.ENGINES: automatic, prompts, edges, eval)
    settings   the mode's settings, a frozen dataclass (engines.py says which)
    model      the weights, device and precision (ModelSpec)
    output     the output folder; formats and format_options: the masks' formats
    run        how fast, not what: batch size, reader threads, --compile, embedding cache
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    model: str | None = None  # a registry name; None: the default
    checkpoint: Path | None = None  # a local file, which overrides model
    device: str = "auto"
    dtype: str = "fp32"


def load(spec: ModelSpec, device: str, note, download=None):
    """spec's model on `device` (resolved: auto → a GPU if any), loaded (downloaded if
    needed, with `download` a fetch.ProgressFactory) in spec's precision: a
    checkpoints.LoadedModel. note: one-line messages (bf16 on a device without it)."""
    from .checkpoints import load as load_checkpoint
    from .device import configure_threads, resolve_device, slow_bf16_note, tune_allocator

    dev = resolve_device(device)
    if spec.dtype == "bf16" and (text := slow_bf16_note(dev)):
        note(text)
    configure_threads()
    tune_allocator()
    loaded = load_checkpoint(model=spec.model, checkpoint=spec.checkpoint, device=dev, dtype=spec.dtype,
                             progress=download)
    if loaded.ignored and os.environ.get("SAM_DEBUG"):
        shown = ", ".join(loaded.ignored[:6]) + (f" and {len(loaded.ignored) - 6} more" if len(loaded.ignored) > 6 else "")
        note(f"{loaded.checkpoint}: {len(loaded.ignored)} keys the image model does not use, left out by name: {shown}")
    return loaded


@dataclass(frozen=True)
class RunOptions:
    """What changes a run's speed and memory, never its outputs."""

    batch_size: int | None = None  # images (or crops) per encoder call; None: the engine's
    workers: int = 2  # threads decoding images ahead
    compile_model: bool = False
    embedding_cache: Path | None = None
    read_ahead: int | None = None  # images read at once ahead of the model (threads); None: workers

    @property
    def reads(self) -> int:
        """Reads of members' bytes (a bucket's objects, tar members) in flight ahead of the
        decoding threads (stream.read_ahead); 0: the decoding threads read them."""
        return self.read_ahead or 0


@dataclass(frozen=True)
class Job:
    mode: str
    settings: Any
    output: Path  # or an io.remote.Url: a bucket
    model: ModelSpec = field(default_factory=ModelSpec)
    formats: tuple[str, ...] = ()
    format_options: Any = None  # io.formats.FormatOptions
    run: RunOptions = field(default_factory=RunOptions)
    overwrite: bool = False
    quiet: bool = False

    @property
    def kind(self):
        """The mode's engines.EngineKind."""
        from .engines import get

        return get(self.mode)

    def record(self) -> dict:
        """What decides this run's outputs, for the output folder's run record (RUN_RECORD):
        the sam version, the weights (named without loading them), the precision and the
        mode's settings. Speed options are left out."""
        from . import __version__
        from .fetch import describe

        m = self.model
        return {"sam": __version__, "mode": self.kind.record_mode, "weights": describe(m.model, m.checkpoint),
                "dtype": m.dtype, "settings": self.kind.record(self.settings)}

    def layout(self):
        """The io.outputs.OutputLayout this job writes (io.bucket's for a bucket URL)."""
        return output_layout(self.output, self.formats, prompted=self.kind.prompted, options=self.format_options,
                             own=self.kind.own_outputs(self.settings))

    def runner(self, *, finish: bool = True):
        from .run import Runner

        return Runner(self.layout(), overwrite=self.overwrite, record=self.record(), finish=finish)

    def engine(self, device: str, note, progress=None, download=None):
        """This job's engine on `device`, its model loaded: what run.Runner.run calls for.
        note: one-line messages; progress: called with the prompts decoded within an image."""
        return self.kind.build(self, load(self.model, device, note, download), note, progress)

    def merge_args(self) -> dict:
        """What `sam merge` needs to rebuild this job's run-level outputs (JSON)."""
        from dataclasses import asdict

        opts = self.format_options
        return {"mode": self.mode, "formats": list(self.formats), "options": asdict(opts) if opts is not None else None,
                "own": self.kind.merge_args(self.settings)}


def output_layout(output, formats: tuple[str, ...], **kwargs):
    """The io.outputs.OutputLayout of the folder `output`; for a URL (io.remote.Url, s3://…),
    io.bucket's, which stages each output on local disk and uploads it."""
    from .io.remote import is_url

    if is_url(str(output)):
        from .io.bucket import BucketLayout

        return BucketLayout(output, formats, **kwargs)
    from .io.outputs import OutputLayout

    return OutputLayout(output, formats, **kwargs)
