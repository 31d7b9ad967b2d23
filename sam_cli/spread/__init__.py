"""Spreading a run: any Job (job.py) runs plain in this process, as one shard of N
(--shard, a Slurm array, a Kubernetes Indexed Job), over one worker process per device
(--devices, devices.py) or on Ray Data (--ray, ray.py). However it is spread, the per-image
outputs are the same files, and the run-level outputs (written here at the end, or by
`sam merge` after the last shard) are the same bytes as a plain run's.

Nothing here prints: events go to `emit`, one-line messages to `note`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import PromptError


@dataclass(frozen=True)
class Spread:
    """How a run is spread: devices (more than one: a worker on each), or ray (address,
    actors); neither: in this process. A shard (shards.Shard) is chosen apart (shard_items),
    since it decides which images there are before anything runs."""

    devices: tuple[str, ...] | None = None
    ray: str | None = None
    ray_actors: int | None = None


def parse_devices(text: str) -> list[str]:
    """'cuda:0,cuda:1' → those; 'N' → cuda:0 … cuda:N-1. PromptError for anything else."""
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


def choose(devices: str | None, ray: str | None, ray_actors: int | None) -> Spread:
    """The --devices, --ray and --ray-actors options checked together."""
    if ray is None and ray_actors is not None:
        raise PromptError("--ray-actors works with --ray")
    if ray is not None and devices:
        raise PromptError("--ray and --devices both spread the work; give one (on Ray, an actor per GPU)")
    return Spread(tuple(parse_devices(devices)) if devices else None, ray, ray_actors)


def shard_items(items, option: str | None, note: Callable[[str], None]):
    """(the items of this run's shard, the shards.Shard or None): --shard's, else the Slurm
    or Kubernetes environment's (said through `note`, so an array job never shards
    unnoticed). A list stays a list (a known total for the progress bar)."""
    from ..shards import choose as choose_shard

    shard = choose_shard(option)
    if shard is None:
        return items, None
    if shard.source != "--shard":
        note(f"shard {shard} (from {shard.source}); --shard 0/1 processes every image")
    picked = shard.select(items)
    return (list(picked) if isinstance(items, list) else picked), shard


def run_job(job, items: Iterable, emit: Callable, note: Callable[[str], None], *, shard=None,
            spread: Spread = Spread(), progress: Callable[[int], None] | None = None, download=None,
            runner=None):
    """Run `job` over `items` (its shard's, when `shard` is given), each event to `emit`;
    returns the run.Runner that counted them. A shard ends with its shard record
    (shards.write_record) instead of the run-level outputs, and the record's path is said
    through `note`. progress: prompts decoded within an image (a plain run's progress bar);
    download: a fetch.ProgressFactory for the model's download in this process. runner: the
    job's run.Runner if the caller made it already (job.runner())."""
    runner = runner or job.runner()
    if shard is not None:
        runner.finish = False
    if spread.devices:  # each named device must be there: never a silent fall back to the CPU
        from ..device import resolve_device

        for d in spread.devices:
            resolve_device(d)
    if spread.ray is not None:
        from .ray import run_on_ray

        run_on_ray(runner, list(items), job, spread.ray, job.model.device, spread.ray_actors, emit, note)
    elif spread.devices is not None and len(spread.devices) > 1:
        from .devices import run_on_devices

        run_on_devices(runner, list(items), job, list(spread.devices), emit, note)
    else:
        device = spread.devices[0] if spread.devices else job.model.device
        runner.run(items, lambda: job.engine(device, note, progress, download), emit)
    if shard is not None:
        from ..shards import write_record

        layout = runner.layout
        path = layout.publish(write_record(layout.root, shard, record=runner.record, formats=layout.formats,
                                           options=layout.options, images=runner.finished, failed=runner.failed,
                                           job=job.merge_args()))
        note(f"shard {shard}: wrote {path}; once every shard has its record, `sam merge "
             f"{layout.where}` writes the run-level outputs")
    return runner
