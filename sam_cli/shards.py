"""Shards: one run's images split over processes, GPUs and machines, then merged.

An image belongs to shard I of N when the SHA-256 of its output key (io: "a/x.jpg"), read as a
number, is I modulo N: stable across machines, reruns and input order; the shards are disjoint
and together hold every image. The shard comes from `--shard I/N` or, without it, from the
environment of a Slurm array job or a Kubernetes Indexed Job (`from_env`).

A sharded run writes each of its images' outputs as a plain run does, but not the run-level
outputs (coco.json, the yolo-seg labels, …): at its end it writes a shard record,
`sam-shards/I-of-N.json` (the run record, the formats and their options, the output keys of
its images with outputs, those that failed). `merge` builds the run-level outputs once every
shard has its record, over the union of their images, in output-key order: the result depends
on the set of images, never on which shard finished first, and is byte for byte a plain run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import OutputError, PromptError
from .io import writers

SHARDS_DIR = "sam-shards"

#: The environment variables a shard is read from, in this order (documented in the README).
#: Slurm numbers array tasks from SLURM_ARRAY_TASK_MIN in steps of SLURM_ARRAY_TASK_STEP.
SLURM = ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT")
#: A Kubernetes Indexed Job sets the index; its completions count is not in the environment:
#: set SAM_SHARD_COUNT to it in the pod spec.
KUBERNETES = ("JOB_COMPLETION_INDEX", "SAM_SHARD_COUNT")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int
    source: str = "--shard"  # where it came from, for the user: "--shard", "SLURM_ARRAY_TASK_ID=3", …

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def has(self, rel: str) -> bool:
        return shard_of(rel, self.count) == self.index

    def select(self, items: Iterable) -> Iterator:
        """The items (with an output key `rel`) of this shard, lazily; a tar shard's members
        go together (their `group`, the tar's key)."""
        return (it for it in items if self.has(getattr(it, "group", "") or it.rel))

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"


def shard_of(rel: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "big") % count


def parse(text: str, source: str = "--shard") -> Shard:
    """'I/N' → Shard; PromptError (a usage error) naming `source` for anything else."""
    try:
        i, n = (int(s) for s in text.split("/"))
    except ValueError:
        raise PromptError(f"{source}: {text!r} is not I/N (e.g. 0/4: the first of 4 shards)") from None
    if n < 1 or not 0 <= i < n:
        raise PromptError(f"{source}: {text!r}: I must be 0 to N-1 and N at least 1")
    return Shard(i, n, source)


def from_env(env: Mapping[str, str] = os.environ) -> Shard | None:
    """The shard of a Slurm array task or a Kubernetes Indexed Job's pod; None outside both."""
    if env.get(SLURM[0]) and env.get(SLURM[1]):
        task, first, step = (_env_int(env, name, default) for name, default in
                             ((SLURM[0], None), ("SLURM_ARRAY_TASK_MIN", 0), ("SLURM_ARRAY_TASK_STEP", 1)))
        if step < 1:
            raise PromptError(f"SLURM_ARRAY_TASK_STEP={step}: must be at least 1",
                              hint="pass --shard I/N to choose the shard yourself")
        return parse(f"{(task - first) // step}/{env[SLURM[1]]}",
                     f"{SLURM[0]}={task} of {SLURM[1]}={env[SLURM[1]]}")
    if env.get(KUBERNETES[0]):
        if not env.get(KUBERNETES[1]):
            raise PromptError(f"{KUBERNETES[0]} is set (a Kubernetes Indexed Job) but not {KUBERNETES[1]}",
                              hint=f"set {KUBERNETES[1]} to the Job's completions, or pass --shard I/N "
                              "(--shard 0/1: every image)")
        return parse(f"{env[KUBERNETES[0]]}/{env[KUBERNETES[1]]}",
                     f"{KUBERNETES[0]}={env[KUBERNETES[0]]} of {KUBERNETES[1]}={env[KUBERNETES[1]]}")
    return None


def _env_int(env: Mapping[str, str], name: str, default: int | None) -> int:
    text = env.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(text)
    except (TypeError, ValueError):
        raise PromptError(f"{name}={text!r}: not a whole number",
                          hint="pass --shard I/N to choose the shard yourself") from None


def choose(option: str | None, env: Mapping[str, str] = os.environ) -> Shard | None:
    """--shard's value, else the environment's shard; None for a plain run. `--shard 0/1`
    is a plain run too (inside an array job that should not shard)."""
    shard = parse(option) if option is not None else from_env(env)
    return None if shard is None or shard.count == 1 else shard


# ------------------------------------------------------------------------------ records
def write_record(root: Path, shard: Shard, *, record: dict | None, formats: tuple[str, ...], options,
                 images: list[str], failed: list[str], job: dict | None = None) -> Path:
    """The shard record of a finished sharded run (see the module doc). job: what `sam merge`
    needs of the run's Job to rebuild its run-level outputs (job.Job.merge_args)."""
    path = root / SHARDS_DIR / f"{shard.name}.json"
    writers.write_json(path, {"shard": [shard.index, shard.count], "record": record, "formats": list(formats),
                              "options": asdict(options) if options is not None else None,
                              "job": job, "images": sorted(images), "failed": sorted(failed)})
    return path


def _malformed(rec: object, root: Path) -> str | None:
    """What makes a shard record unusable, or None. Records sit in a folder others write to:
    every field is checked, and every image key must name a place inside `root`."""
    if not isinstance(rec, dict):
        return f"a JSON {type(rec).__name__}, not an object"
    shard = rec.get("shard")
    if not (isinstance(shard, list) and len(shard) == 2 and all(type(v) is int for v in shard)
            and 0 <= shard[0] < shard[1]):
        return f"shard {shard!r} is not [I, N] with 0 <= I < N"
    if not (rec.get("record") is None or isinstance(rec.get("record"), dict)):
        return "its run record is not an object"
    if not (isinstance(rec.get("formats"), list) and all(isinstance(f, str) for f in rec["formats"])):
        return "formats is not a list of names"
    for key in ("options", "job"):
        if not (rec.get(key) is None or isinstance(rec.get(key), dict)):
            return f"{key} is not an object"
    for key in ("images", "failed"):
        keys = rec.get(key)
        if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys)):
            return f"{key} is not a list of image names"
        for k in keys:
            if bad := _unsafe_key(k, root):
                return f"image {k!r} in {key}: {bad}"
    return None


def _unsafe_key(key: str, root: Path) -> str | None:
    """Why an output key from a shard record may not be used under root, or None."""
    if not key or "\0" in key or "\\" in key:
        return "empty, or holds a NUL or a backslash"
    if os.path.isabs(key) or key.startswith("~"):
        return "not a relative path"
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "not a normalised relative path"
    real_root = os.path.realpath(root)
    if os.path.commonpath([real_root, os.path.realpath(os.path.join(real_root, key))]) != real_root:
        return "outside the output folder"
    return None


@dataclass
class Merge:
    formats: tuple[str, ...]
    options: dict | None
    job: dict | None  # job.Job.merge_args of the run
    images: list[str]  # output keys of every image with outputs, sorted
    failed: list[str]  # output keys that failed in their shard
    count: int  # shards


def gather(root: Path, where: str | None = None) -> Merge:
    """Read and check the shard records under root: one N, every shard 0..N-1 there, one run
    record (the folder's own), one set of formats and options. PromptError (usage) naming what
    is missing or differs. where: the folder as the user named it, in messages (a bucket URL
    whose records were downloaded to root)."""
    from .inputs import RUN_RECORD

    shown_root = where.rstrip("/") if where else str(root)

    def shown(p: Path) -> str:
        return f"{shown_root}/{p.relative_to(root).as_posix()}" if where else str(p)

    folder = root / SHARDS_DIR
    paths = sorted(folder.glob("*-of-*.json")) if folder.is_dir() else []
    if not paths:
        raise PromptError(f"{shown_root}: no shard records ({SHARDS_DIR}/I-of-N.json) to merge",
                          hint="sam merge builds the run-level outputs of a run made with --shard, "
                          "--devices or --ray; a plain run writes its own")
    recs = {}
    for p in paths:
        try:
            recs[p.name] = json.loads(p.read_bytes().decode("utf-8"))
        except (OSError, ValueError) as e:
            raise OutputError(f"{shown(p)}: cannot read this shard record ({e})") from None
        if bad := _malformed(recs[p.name], root):
            raise PromptError(f"{shown(p)}: not a shard record sam wrote ({bad})",
                              hint="remove it, and rerun its shard")
    counts = sorted({r["shard"][1] for r in recs.values()})
    if len(counts) > 1:
        raise PromptError(f"{shown(folder)}: records of runs split {' and '.join(map(str, counts))} ways",
                          hint="remove the records of the split you no longer use")
    n = counts[0]
    have = {r["shard"][0] for r in recs.values()}
    if missing := [i for i in range(n) if i not in have]:
        listed = ", ".join(f"{i}/{n}" for i in missing)
        raise PromptError(f"{shown_root}: shard{'s' if len(missing) > 1 else ''} {listed} not finished "
                          f"(no record in {SHARDS_DIR}/)", hint="run them (a rerun resumes), then merge")
    try:
        folder_record = json.loads((root / RUN_RECORD).read_text())
    except (OSError, ValueError):
        folder_record = None
    first = recs[paths[0].name]
    for name, r in recs.items():
        if r["record"] != folder_record:
            raise PromptError(f"{shown(folder / name)}: made by another run than {shown(root / RUN_RECORD)} says",
                              hint="rerun that shard with the folder's settings")
        if (r["formats"], r["options"], r.get("job")) != (first["formats"], first["options"], first.get("job")):
            raise PromptError(f"{shown(folder / name)}: other formats or format options than {paths[0].name}",
                              hint="rerun the shards with the same -f and format options")
    images = sorted({rel for r in recs.values() for rel in r["images"]})
    failed = sorted({rel for r in recs.values() for rel in r["failed"]} - set(images))
    return Merge(tuple(first["formats"]), first["options"], first.get("job"), images, failed, n)
