"""`--ray ADDRESS`: the run's images over a Ray cluster with Ray Data (`pip install
'segment-anything-cli[ray]'`; Ray is imported only here, only for --ray).

A pool of actors (ActorPoolStrategy), one GPU each on a GPU cluster, each holding a loaded
model and the run engine (run.Runner, without run-level outputs), receives batches of work
items and writes their per-image outputs itself, atomically (io.writers: Ray's own file sinks
are not atomic), to a filesystem every node sees. Each returns small status rows (the image's
event), which the driver prints as JSON Lines as they come and counts; dense masks never go
through the object store. Ray restarts failed actors and retries their tasks (at least once):
an image written before is then skipped as done, so a retry writes nothing twice. An error in
one image is its failed row; anything else a batch raises fails that batch's images, not the
job. The driver writes the run-level outputs at the end, as a plain run does.
"""

from __future__ import annotations

import os
import pickle

#: Items per batch sent to an actor: small, so work spreads evenly and a retry redoes little.
BATCH = 4


class _Keep:
    """An engine kept for the actor's life: Runner.run closes its engine after each batch."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.cache = getattr(engine, "cache", None)

    def __call__(self, jobs):
        return self.engine(jobs)

    def close(self) -> None:
        pass


class Segmenter:
    """A Ray Data actor: batches of {"item": pickled InputItem} → {"event": pickled event}."""

    def __init__(self, job, device: str) -> None:
        self.job = job
        self.device = device
        self.engine = None

    def _engine(self):
        if self.engine is None:
            self.engine = _Keep(self.job.engine(self.device, lambda text: None))
        return self.engine

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from ..errors import SamError
        from ..run import Failed

        # the driver pickled these items a moment ago; never a file's contents
        items = [pickle.loads(b) for b in batch["item"]]
        events: list = []
        runner = self.job.runner(finish=False)
        try:
            runner.run(items, self._engine, events.append, begin=False)
        except Exception as e:  # noqa: BLE001 - the batch's unreported images fail, not the job
            events += [Failed(it, SamError(f"{it.path}: {type(e).__name__}: {e}")) for it in items[len(events):]]
        return {"event": np.array([pickle.dumps(ev) for ev in events], dtype=object)}


def run_on_ray(runner, items: list, job, address: str, device: str, actors: int | None, emit, note) -> None:
    """The run over Ray (see the module doc): address 'local' (a Ray on this machine, started
    here), 'auto' (the cluster this machine is part of) or ray://host:port. `runner` (not run
    itself) counts the events and writes the run-level outputs at the end."""
    from ..errors import PromptError

    try:
        import ray
        import ray.data
    except ImportError:
        raise PromptError("--ray needs Ray, which is not installed",
                          hint="pip install 'segment-anything-cli[ray]'") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Ray's own chatter (plans, timings, a note on actor restarts) is not the user's business;
    # its errors still come through
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    import logging

    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        _reachable(address)
        local = address == "local"
        kwargs = {"object_store_memory": 256 * 2**20} if local else {"address": address}
        try:
            with _quiet_stderr():  # Ray's start-up lines on fd 2, below Python
                ray.init(include_dashboard=False, log_to_driver=False, logging_level="ERROR", **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise PromptError(f"--ray {address}: cannot {'start Ray' if local else 'reach the cluster'} "
                              f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})") from None
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    size = actors or gpus or max(1, nodes)  # one per GPU; on CPUs, one per machine
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = False
    runner.begin()
    items = runner.triage(items, emit)  # collisions across actors; done images go nowhere
    rows = [{"item": pickle.dumps(it)} for it in items]
    size = max(1, min(size, -(-len(rows) // BATCH)))  # no actor without a batch to do
    per_actor = {"num_gpus": 1, "num_cpus": 1} if gpus else \
        {"num_cpus": max(1, int(resources.get("CPU", 1)) // size)}
    note(f"ray: {size} actor{'s' if size > 1 else ''}, {per_actor.get('num_gpus', 0)} GPU and "
         f"{per_actor['num_cpus']} CPU each, over {len(rows)} images")
    try:
        _run(ray, rows, job, gpus, device, size, per_actor, address, runner, emit)
    finally:
        ray.shutdown()  # Ray's threads in this process print no more (common.stdout_for_data_only)
    if runner.finish:
        runner.write_run_outputs(emit)


def _run(ray, rows, job, gpus, device, size, per_actor, address, runner, emit) -> None:
    """The Ray Data job over `rows`, each status row counted and emitted as it comes."""
    from ..errors import SamError
    from ..run import Done, Failed, Skipped

    if rows:
        ds = ray.data.from_items(rows).map_batches(
            Segmenter, fn_constructor_args=(job, "cuda" if gpus else device),
            batch_size=BATCH, batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=size), **per_actor)
        try:
            for row in ds.iter_rows():
                ev = pickle.loads(row["event"])  # written by our own actor in this job
                if isinstance(ev, (Done, Skipped, Failed)):
                    runner.tally(ev)
                emit(ev)
        except SamError:
            raise
        except Exception as e:  # noqa: BLE001 - Ray's own failures, said in one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SamError(f"--ray {address}: the Ray job failed ({type(e).__name__}: {first})") from None


#: Seconds to wait for a cluster's address to answer before saying it does not (Ray itself
#: retries for minutes without a word).
CONNECT_TIMEOUT = 10.0


def _reachable(address: str) -> None:
    """For an address naming a host and port (ray://HOST:PORT, HOST:PORT), a TCP connect within
    CONNECT_TIMEOUT seconds, else a PromptError that says so; `local` and `auto` pass."""
    import re
    import socket

    from ..errors import PromptError

    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address)
    if m is None:
        return
    host, port = m.group(1), int(m.group(2))
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        why = "no answer" if isinstance(e, TimeoutError) else (e.strerror or type(e).__name__)
        raise PromptError(f"--ray {address}: cannot reach {host}:{port} ({why} within {CONNECT_TIMEOUT:g} s)",
                          hint="is the Ray head running there? (ray start --head; ray://HOST:10001 for a client)"
                          ) from None


class _quiet_stderr:
    """File descriptor 2 to /dev/null for a block (native libraries' logging)."""

    def __enter__(self) -> None:
        import sys

        sys.stderr.flush()
        self.saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)

    def __exit__(self, *exc) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
