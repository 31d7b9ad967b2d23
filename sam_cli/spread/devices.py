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

RESTARTS = 2


def _worker(job, items: list, device: str, threads: int | None, events, parent: int) -> None:
    """A worker process: its shard's items through a Runner without run-level outputs; each
    event, note and its end (or the error that stopped it) put on `events`."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it ends the workers
    _end_with_parent(parent)
    if threads:
        os.environ["SAM_THREADS"] = str(threads)
    runner = job.runner(finish=False)
    try:
        runner.run(items, lambda: job.engine(device, lambda text: events.put(("note", text))),
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


def run_on_devices(runner, items: list, job, devices: list[str], emit, note) -> None:
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
    runner.begin()
    items = runner.triage(items, emit)  # collisions across workers; done images load no model
    shards = [items[w::n] for w in range(n)]  # round robin: even work, whatever the order
    procs: list = [None] * n
    restarts = [0] * n
    reported = [0] * n  # events a worker has sent: a restart starts after them
    queues = [ctx.Queue() for _ in range(n)]  # per worker, so a dead one's messages stay its own

    def start(w: int) -> None:
        procs[w] = ctx.Process(target=_worker, args=(job, shards[w][reported[w]:],
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
