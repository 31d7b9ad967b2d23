"""Helpers the commands share: messages, progress, model loading with a download bar."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path


class PipeClosed(Exception):
    """stdout's reader went away (`sam … | head`). Not an OSError, which Click would turn
    into exit 1: main() ends the run quietly with exit 0."""


#: Where data lines go while sys.stdout is lent to stderr (stdout_for_data_only); else stdout.
_DATA: list = []


def out_line(text: str) -> None:
    """One line of data on stdout, now."""
    try:
        print(text, file=_DATA[-1] if _DATA else sys.stdout, flush=True)
    except BrokenPipeError:
        raise PipeClosed() from None


@contextmanager
def stdout_for_data_only():
    """For a block that runs a library printing to sys.stdout (Ray prints its raylet's error
    messages there): its prints go to stderr, and stdout keeps sam's data lines alone."""
    saved = sys.stdout
    _DATA.append(saved)
    sys.stdout = sys.stderr
    try:
        yield
    finally:
        sys.stdout = saved
        _DATA.pop()


def out_bytes(data: bytes) -> None:
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        raise PipeClosed() from None


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
    """Resolve the device, then load (downloading if needed) the model in `dtype`: a
    weights.LoadedModel. The option values are already checked against the registries."""
    from ..device import configure_threads, resolve_device, slow_bf16_note, tune_allocator
    from ..weights import load

    dev = resolve_device(device)
    if dtype == "bf16" and (note := slow_bf16_note(dev)):
        message(note, quiet)
    configure_threads()
    tune_allocator()
    return load(model=model, checkpoint=checkpoint, device=dev, dtype=dtype,
                progress=download_progress(quiet))


class EventPrinter:
    """Renders a run's events (run.py): one JSON line per image on stdout, errors and notes on
    stderr (through the progress bar, when there is one), and the summary at the end."""

    def __init__(self, total: int | None, quiet: bool, progress: bool | None,
                 unit: str = "prompts decoded") -> None:
        """unit: what points() counts, as the progress bar says it."""
        self.quiet = quiet
        self.unit = unit
        self.decoded = 0  # point prompts of the image in progress
        self.bar = None
        if not quiet and (progress if progress is not None else stderr_is_tty()):
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", file=sys.stderr, dynamic_ncols=True)

    def points(self, n: int) -> None:
        """Prompts (objects) decoded since the last image's event: the bar moves within an image."""
        self.decoded += n
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.decoded} {self.unit}", refresh=True)

    def note(self, text: str, error: bool = False) -> None:
        """A line on stderr (through the bar, if any); errors are said even with --quiet."""
        if self.quiet and not error:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            message(text)

    def event(self, ev) -> None:
        from ..io.writers import json_text
        from ..run import Done, Failed, RunOutput, RunOutputFailed, Skipped

        if isinstance(ev, RunOutput):
            self.note(f"wrote {ev.path}" + (f" ({ev.note})" if ev.note else ""))
            return
        if isinstance(ev, RunOutputFailed):
            self.note(f"Error: {ev.error}", error=True)
            return
        line: dict = {"input": str(ev.item.path)}
        if isinstance(ev, Done):
            line.update(status="ok", outputs=ev.outputs, masks=ev.masks, seconds=round(ev.seconds, 3))
        elif isinstance(ev, Skipped):
            line.update(status="skipped", outputs=ev.outputs, masks=ev.masks)
        elif isinstance(ev, Failed):
            self.note(f"Error: {ev.error}", error=True)
            line.update(status="failed", error=str(ev.error), seconds=round(ev.seconds, 3))
        out_line(json_text(line))
        self.decoded = 0
        if self.bar is not None:
            self.bar.set_postfix_str("", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def summary(self, runner, inputs: list[str], excluded=None, empty: str | None = None) -> bool:
        """The run's summary on stderr; True when some inputs failed. runner: the run.Runner
        that ran (its engine's embedding cache, if any, is reported); excluded: the run's
        inputs.Exclusions (what was not read, and why); empty: what to say when there was
        nothing to do (default: no images found in the inputs)."""
        counts = runner.counts
        cache = getattr(runner.engine, "cache", None)
        if runner.stale:
            message(f"removed {len(runner.stale)} temporary file(s) that a killed run left in "
                    f"{runner.layout.root}", self.quiet)
        if counts.total == 0 and empty:
            message(empty, self.quiet)
        elif counts.total == 0:  # nothing to do is not an error (exit 0), but say so
            from ..io.images import IMAGE_EXTENSIONS

            message(f"no images found in {' '.join(inputs)} "
                    f"(extensions: {', '.join(sorted(IMAGE_EXTENSIONS))})", self.quiet)
        else:
            message(f"{counts.done} done, {counts.skipped} skipped (already done), "
                    f"{counts.failed} failed", self.quiet)
        if excluded is not None and excluded.skipped:
            skipped = excluded.skipped
            more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
            message(f"not read as inputs (sam's own outputs): {', '.join(skipped[:3])}{more}",
                    self.quiet)
        if excluded is not None and excluded.other_files:
            n = sum(excluded.other_files.values())
            kinds = ", ".join(f"{c} {ext}" for ext, c in sorted(excluded.other_files.items()))
            what = "file that is not an image" if n == 1 else "files that are not images"
            message(f"not read: {n} {what} ({kinds})", self.quiet)
        if cache is not None and cache.hits + cache.misses:
            message(f"embedding cache: {cache.hits} of {cache.hits + cache.misses} embeddings "
                    f"read from {cache.root}", self.quiet)
        if counts.failures:
            message("failed inputs:\n  " + "\n  ".join(counts.failures), self.quiet)
        return bool(counts.failures)


def run_to_end(runner, items, engine, out: EventPrinter, inputs: list[str], *, excluded=None,
               empty: str | None = None, shard=None, spec=None, devices: list[str] | None = None,
               ray: tuple | None = None) -> None:
    """Run `runner` over `items` with `out` rendering the events, then the summary; exit 5
    (partial) when some inputs failed. engine: the factory Runner.run calls when needed.
    shard: a shards.Shard whose images `items` already are (shard_items): the run ends with
    its shard record instead of the run-level outputs. devices: more than one, a worker
    process on each (workers.py), making its engine from `spec` (workers.EngineSpec). ray:
    (address, device, actors), the run on Ray Data (ray_run.py) instead."""
    import typer

    from .exitcodes import ExitCode

    if shard is not None:
        runner.finish = False
    try:
        if ray is not None:
            from .ray_run import run_on_ray

            with stdout_for_data_only():
                run_on_ray(runner, list(items), spec, *ray, out.event, out.note)
        elif devices is not None and len(devices) > 1:
            from .workers import run_on_devices

            run_on_devices(runner, list(items), spec, devices, out.event, out.note)
        else:
            runner.run(items, engine, out.event)
    finally:
        out.close()
    if shard is not None:
        from ..shards import write_record

        layout = runner.layout
        path = write_record(layout.root, shard, record=runner.record, formats=layout.formats,
                            options=layout.options, images=runner.finished, failed=runner.failed)
        message(f"shard {shard}: wrote {path}; once every shard has its record, `sam merge "
                f"{layout.root}` writes the run-level outputs", out.quiet)
    if out.summary(runner, inputs, excluded, empty):
        raise typer.Exit(ExitCode.PARTIAL)


def shard_items(items, option: str | None, quiet: bool):
    """(the items of this run's shard, the shards.Shard or None): --shard's, else the Slurm
    or Kubernetes environment's (said on stderr, so an array job never shards unnoticed).
    A list stays a list (a known total for the progress bar)."""
    from ..shards import choose

    shard = choose(option)
    if shard is None:
        return items, None
    if shard.source != "--shard":
        message(f"shard {shard} (from {shard.source}); --shard 0/1 processes every image", quiet)
    picked = shard.select(items)
    return (list(picked) if isinstance(items, list) else picked), shard
