"""One worker process per device (`--devices cuda:0,cuda:1` or a count): each runs the run
engine (run.Runner) over every N-th of the run's images with its own model on its own
device, never two on one GPU; the parent prints every worker's events as they come, then
writes the run-level outputs over all their images, as a plain run does.

Workers are started with `spawn` (CUDA cannot be forked). A worker that dies (killed, out of
host memory) is started again, up to RESTARTS times, over the images it had not reported:
whatever it wrote is kept and skipped as done, and nothing half-written is taken (io.writers).
"""

from __future__ import annotations

import os
import queue
from dataclasses import dataclass, field
from pathlib import Path

RESTARTS = 2


@dataclass(frozen=True)
class EngineSpec:
    """How to make a run's engine (engines.py), in this process or a worker: picklable."""

    kind: str  # "automatic" or "prompts"
    model: str | None
    checkpoint: Path | None
    dtype: str
    quiet: bool
    kwargs: dict = field(default_factory=dict)  # the engine's own (settings, batch_size, …)

    def make(self, device: str, warn, progress):
        from ..engines import AutomaticEngine, PromptEngine
        from .common import load_sam

        loaded = load_sam(self.model, self.checkpoint, device, self.dtype, self.quiet)
        if self.kind == "automatic":
            return AutomaticEngine(loaded, warn=warn, on_points=progress, **self.kwargs)
        return PromptEngine(loaded, warn=warn, on_objects=progress, **self.kwargs)


def parse_devices(text: str) -> list[str]:
    """'cuda:0,cuda:1' → those; 'N' → cuda:0 … cuda:N-1. PromptError for anything else."""
    from ..errors import PromptError

    text = text.strip()
    if text.isdigit():
        if int(text) < 1:
            raise PromptError(f"--devices {text}: give at least 1")
        return [f"cuda:{k}" for k in range(int(text))]
    devices = [d.strip().lower() for d in text.split(",") if d.strip()]
    for d in devices:
        if not (d in ("cpu", "cuda", "mps") or (d.startswith("cuda:") and d[5:].isdigit())):
            raise PromptError(f"--devices {text}: {d!r} is not cpu, cuda:N or mps")
    gpus = [d for d in devices if d != "cpu"]
    if len(set(gpus)) != len(gpus):
        raise PromptError(f"--devices {text}: a GPU named twice (several sam processes on one GPU slow "
                          "each other down; give each GPU once)")
    if not devices:
        raise PromptError("--devices: no device given")
    return devices


def spread_on_ray(address: str | None, device: str, actors: int | None, devices: str | None) -> tuple | None:
    """--ray's (address, device, actors) for common.run_to_end; None without --ray."""
    from ..errors import PromptError

    if address is None:
        if actors is not None:
            raise PromptError("--ray-actors works with --ray")
        return None
    if devices:
        raise PromptError("--ray and --devices both spread the work; give one (on Ray, an actor per GPU)")
    return address, device, actors


def _worker(spec: EngineSpec, layout_args: tuple, run_args: dict, items: list, device: str, threads: int | None,
            events, parent: int) -> None:
    """A worker process: its shard's items through a Runner without run-level outputs; each
    event, note and its end (or the error that stopped it) put on `events`."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the workers
    _end_with_parent(parent)
    if threads:
        os.environ["SAM_THREADS"] = str(threads)
    from ..io.outputs import OutputLayout
    from ..run import Runner

    root, formats, prompted, options = layout_args
    runner = Runner(OutputLayout(root, formats, prompted=prompted, options=options), finish=False, **run_args)
    try:
        runner.run(items, lambda: spec.make(device, lambda text: events.put(("note", text)), None),
                   lambda ev: events.put(("event", ev)))
    except Exception as e:  # noqa: BLE001 - handed to the parent, which decides
        events.put(("error", e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}")))
        return
    events.put(("end", None))


def _end_with_parent(parent: int) -> None:
    """On Linux, have this worker sent SIGTERM when its parent dies (a killed driver must not
    leave workers writing behind a rerun's back); elsewhere the parent's exit ends them."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call
        os._exit(1)


def _picklable(e: BaseException) -> bool:
    import pickle

    try:
        pickle.loads(pickle.dumps(e))
        return True
    except Exception:  # noqa: BLE001
        return False


def run_on_devices(runner, items: list, spec: EngineSpec, devices: list[str], emit, note) -> None:
    """Run `items` over one worker per device, round robin; `runner` (not run itself) counts
    the events and writes the run-level outputs at the end. emit: each event, as it comes;
    note: a worker's message. A worker's SamError (a bad checkpoint) stops the run with it."""
    import multiprocessing as mp

    from ..errors import SamError
    from ..run import Done, Failed, Skipped

    ctx = mp.get_context("spawn")
    n = len(devices)
    cpus = sum(d == "cpu" for d in devices)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, cores // cpus) if cpus and "SAM_THREADS" not in os.environ else None
    layout = runner.layout
    layout_args = (layout.root, layout.formats, layout.prompted, layout.options)
    run_args = {"overwrite": runner.overwrite, "record": runner.record}
    runner.begin()
    items = runner.triage(items, emit)  # collisions across workers; done images load no model
    shards = [items[w::n] for w in range(n)]  # round robin: even work, whatever the order
    procs: list = [None] * n
    restarts = [0] * n
    reported = [0] * n  # events a worker has sent: a restart starts after them
    queues = [ctx.Queue() for _ in range(n)]  # per worker, so a dead one's messages stay its own

    def start(w: int) -> None:
        procs[w] = ctx.Process(target=_worker, args=(spec, layout_args, run_args, shards[w][reported[w]:],
                                                     devices[w], threads if devices[w] == "cpu" else None,
                                                     queues[w], os.getpid()), daemon=True)
        procs[w].start()

    live = set()
    for w in range(n):
        if shards[w]:
            start(w)
            live.add(w)
    try:
        while live:
            progressed = False
            for w in sorted(live):
                try:
                    kind, value = queues[w].get(timeout=0.05)
                except queue.Empty:
                    if procs[w].is_alive():
                        continue
                    try:  # it may have put its last messages just before it ended
                        kind, value = queues[w].get(timeout=0.5)
                    except queue.Empty:
                        code = procs[w].exitcode
                        if restarts[w] < RESTARTS:
                            restarts[w] += 1
                            note(f"worker on {devices[w]} ended (exit code {code}); starting it again "
                                 f"over its {len(shards[w]) - reported[w]} images not reported")
                            start(w)
                        else:
                            for item in shards[w][reported[w]:]:
                                ev = Failed(item, SamError(f"{item.path}: its worker on {devices[w]} ended "
                                                           f"{RESTARTS + 1} times (exit code {code})"))
                                runner.tally(ev)
                                emit(ev)
                            live.discard(w)
                        continue
                progressed = True
                if kind == "event":
                    reported[w] += 1
                    if isinstance(value, (Done, Skipped, Failed)):
                        runner.tally(value)
                    emit(value)
                elif kind == "note":
                    note(value)
                elif kind == "error":
                    raise value
                else:  # end
                    procs[w].join()
                    live.discard(w)
            if not progressed and not live:
                break
    finally:
        for p in procs:
            if p is not None and p.is_alive():
                p.terminate()
        for p in procs:
            if p is not None:
                p.join()
    if runner.finish:
        runner.write_run_outputs(emit)
