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
    """A fetch.ProgressFactory drawing a tqdm bar on stderr (terminals only)."""
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
    checkpoints.LoadedModel, for commands that run no Job (sam segment on one image, sam
    export). The option values are already checked against the registries."""
    from ..job import ModelSpec, load

    return load(ModelSpec(model, checkpoint, device, dtype), device, lambda text: message(text, quiet),
                download_progress(quiet))


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
        """Prompts (objects) decoded since the last image's event: the bar moves within an image;
        stream.ENCODING while the image encoder works on a batch."""
        from ..stream import ENCODING

        if n == ENCODING:
            if self.bar is not None:
                self.bar.set_postfix_str("encoding…", refresh=True)
            return
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
        from ..run import Done, Failed, RunOutput, RunOutputFailed, RunOutputStarted, Skipped

        if isinstance(ev, RunOutputStarted):
            self.close()  # the images are done: the bar gives way to the end-of-run steps
            self.note(f"writing {ev.name} over {ev.images} image{'s' if ev.images != 1 else ''}…")
            return
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
        if self.bar is not None and sys.stdout.isatty():  # one terminal: the line above the bar
            self.bar.clear()
            out_line(json_text(line))
            self.bar.refresh()
        else:
            out_line(json_text(line))
        self.decoded = 0
        if self.bar is not None:
            self.bar.set_postfix_str("", refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def summary(self, runner, inputs: list[str], excluded=None, empty: str | None = None) -> bool:
        """The run's summary on stderr; True when some inputs failed. runner: the run.Runner
        that ran (its engine's embedding cache, if any, is reported); excluded: the run's
        inputs.Exclusions (what was not read, and why); empty: what to say when there was
        nothing to do (default: no images found in the inputs)."""
        counts = runner.counts
        cache = getattr(runner.engine, "cache", None)
        if runner.stale:
            message(f"removed {len(runner.stale)} temporary file(s) that a killed run left in "
                    f"{runner.layout.where}", self.quiet)
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
        notes = getattr(runner.engine, "notes", None)
        for note in notes() if notes is not None and counts.done else []:
            message(note, self.quiet)
        if cache is not None and cache.hits + cache.misses:
            message(f"embedding cache: {cache.hits} of {cache.hits + cache.misses} embeddings "
                    f"read from {cache.root}", self.quiet)
        outputs_failed = len(counts.failures) - counts.failed  # each named on its own line above
        if outputs_failed > 0:
            message(f"{outputs_failed} end-of-run output{'s' if outputs_failed > 1 else ''} could not be written "
                    "(named above)", self.quiet)
        return bool(counts.failures)


def run_to_end(job, runner, items, out: EventPrinter, inputs: list[str], *, excluded=None,
               empty: str | None = None, shard=None, spread=None) -> None:
    """Run `job` (job.Job) over `items` through spread.run_job, with `out` rendering the
    events, then the summary; exit 5 (partial) when some inputs failed. runner: the job's
    run.Runner, made by the command before its inputs were listed (its output folder checked
    first). shard: a shards.Shard whose images `items` already are (shard_items). spread:
    a spread.Spread (--devices, --ray)."""
    import contextlib

    import typer

    from ..spread import Spread, run_job
    from .exitcodes import ExitCode

    spread = spread or Spread()
    if shard is not None and empty is None:  # said only if this shard has no image
        empty = f"no images in shard {shard} (images go to shards by a hash of their output names)"
    try:
        with stdout_for_data_only() if spread.ray is not None else contextlib.nullcontext():
            runner = run_job(job, items, out.event, out.note, shard=shard, spread=spread, progress=out.points,
                             download=download_progress(out.quiet), runner=runner)
    finally:
        out.close()
    if out.summary(runner, inputs, excluded, empty):
        raise typer.Exit(ExitCode.PARTIAL)


def run_over_inputs(job, runner, inputs: list[str], *, shard: str | None, progress: bool | None, spread,
                    unit: str = "prompts decoded") -> None:
    """A command over files, folders, globs or stdin (sam auto, sam edges, sam segment --text):
    `inputs` listed (the output folder left out; whole, for a known total, unless one is - for
    stdin), refused when none exists, cut to --shard's part, then run_to_end."""
    from ..inputs import Exclusions, expand_inputs

    excluded = Exclusions(job.output)
    items = expand_inputs(inputs, exclude=excluded)
    if "-" not in inputs:  # a known total for the progress bar
        items = list(items)
    refuse_all_missing(items)
    items, part = shard_items(items, shard, job.quiet)
    out = EventPrinter(len(items) if isinstance(items, list) else None, job.quiet, progress, unit=unit)
    run_to_end(job, runner, items, out, inputs, excluded=excluded, shard=part, spread=spread)


def refuse_all_missing(items, hint: str | None = None) -> None:
    """Exit 3 (InputError) before the output folder is claimed or a model loaded, when not one
    of the run's images exists: a typo, or image paths read from the wrong folder. A run with
    some images there goes on, each missing one failing on its own (exit 5)."""
    from ..errors import InputError
    from ..io.remote import Url

    if not isinstance(items, list) or not items:
        return

    def absent(it) -> bool:
        err = getattr(it, "error", None)
        if err is not None:  # a bucket whose listing failed (missing, no credentials) is missing too
            return isinstance(it.path, Url) and isinstance(err, InputError)
        return getattr(it, "member", None) is None and not Path(it.path).exists()

    missing = [it for it in items if absent(it)]
    if len(missing) < len(items):
        return
    n = len(missing) - 1
    more = "" if not n else " (nor is the other image)" if n == 1 else f" (nor are the other {n} images)"
    first = missing[0]
    said = str(first.error) if getattr(first, "error", None) is not None else f"{first.path}: no such file"
    raise InputError(f"{said}{more}", hint=hint)


def shard_items(items, option: str | None, quiet: bool):
    """spread.shard_items, its note on stderr."""
    from ..spread import shard_items as pick

    return pick(items, option, lambda text: message(text, quiet))
