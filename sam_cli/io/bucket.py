"""Outputs in a bucket (`-o s3://bucket/out/`, gs://, az://): the layout of io.outputs over an
object store, through fsspec (io.remote).

Every output is made exactly as on a disk, in a private staging folder on local disk, then
uploaded a file at a time. An object store has no rename, but a single upload is all or
nothing: an object appears whole, with its new bytes, or not at all (S3, GCS and Azure block
blobs alike, multipart uploads included). So a file in the bucket is never half-written. What a
bucket cannot do is show a folder of files at once (png's x.jpg.masks/): its files go up first
and its manifest (metadata.csv) last, the file whose presence says the image is complete (a
format's `markers`); a rerun redoes an image whose manifest is missing. The staged copies are
removed once uploaded, except the per-image files an end-of-run step reads (coco-rle's JSON for
coco.json); that step downloads what earlier runs or other shards put in the bucket, runs on
local disk, and uploads what it wrote. A killed run's staging folder is removed by the next run
on that machine (sweep_stale_stages).

Resume reads the bucket's listing of the output prefix once per process, at the start: an image
whose markers are all there is skipped. A failed upload (the server gone, access denied) fails
that image, naming the object, and the run goes on; a rerun finishes it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import weakref
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import OutputError
from .outputs import OutputLayout, markers_of
from .remote import Url, _why, filesystem

#: Transfers in flight at once: an object store answers each request after tens of
#: milliseconds, so a folder of masks (or the per-image files an end-of-run output reads) goes
#: up and down many objects at a time.
TRANSFERS = 16


#: a staging folder's name: this prefix, the pid of the process that made it, "-", random letters
STAGE_PREFIX = "sam-stage-"


def sweep_stale_stages(tmp: Path) -> None:
    """Remove the staging folders of earlier runs whose process is gone: a run removes its own
    when it ends, but one killed (SIGKILL, SIGTERM, a lost machine) cannot. A folder whose
    process is alive, or whose name gives none, is left alone."""
    if not hasattr(os, "kill") or os.name == "nt":  # os.kill(pid, 0) probes a process on POSIX only
        return
    for d in tmp.glob(f"{STAGE_PREFIX}*-*"):
        pid = d.name[len(STAGE_PREFIX):].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:  # no such process: its run is over
            shutil.rmtree(d, ignore_errors=True)
        except (PermissionError, OSError):  # alive (another user's), or unknowable: keep it
            continue


class BucketLayout(OutputLayout):
    """OutputLayout whose folder is the URL `url`: root is a local staging folder."""

    def __init__(self, url: str, formats: tuple[str, ...], *, listing: set[str] | None = None, **kwargs) -> None:
        """listing: the keys under the prefix, when the caller has just listed it and nothing
        else writes there any more (sam merge, once every shard has finished): not listed
        again, here or before the run-level outputs."""
        self.url = Url(str(url).rstrip("/"))
        self.fs = filesystem(self.url)
        self._base = self.fs._strip_protocol(self.url).rstrip("/")  # "bucket/out"
        self.keys: set[str] = set()
        self._children: dict[str, set[str]] = defaultdict(set)  # "a/x.jpg.masks" → its keys
        self._lock = threading.Lock()  # the two indexes, updated from the transfer threads
        self._index(self._list() if listing is None else listing)  # fails before any model is loaded
        self._relist = listing is None  # before the run-level outputs: others may have written since
        self._pool = ThreadPoolExecutor(TRANSFERS, thread_name_prefix="sam-bucket")
        sweep_stale_stages(Path(tempfile.gettempdir()))
        stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-"))
        self._cleanup = weakref.finalize(self, shutil.rmtree, stage, True)
        super().__init__(stage, formats, **kwargs)
        finishing = [m for m in self.modules.values() if hasattr(m, "finish")]
        # per-image outputs an end-of-run step reads: kept staged after their upload
        self._kept = {d for m in finishing for d in getattr(m, "REQUIRES", ())} | {
            n for n, m in self.modules.items() if hasattr(m, "finish") and not hasattr(m, "REQUIRES")}

    # ------------------------------------------------------------------ the bucket
    def _list(self) -> set[str]:
        """The keys under the output prefix, relative to it."""
        bucket = self._base.split("/", 1)[0]
        try:
            self.fs.info(bucket)  # not exists(), which says False for a bucket it cannot read
            found = self.fs.find(self._base)
        except FileNotFoundError:
            raise OutputError(f"{self.url}: no bucket {bucket!r} (or no access to it)",
                              hint="create it first (sam makes folders, never buckets), or check the URL") from None
        except Exception as e:  # noqa: BLE001 - any backend failure names the URL
            raise OutputError(f"{self.url}: cannot write there ({_why(e)})") from None
        return {p[len(self._base) + 1:] for p in found if p.startswith(self._base + "/")}

    def _index(self, keys: set[str]) -> None:
        self.keys = set(keys)
        self._children.clear()
        for k in keys:
            self._children[k.rpartition("/")[0]].add(k)

    def _key(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _remote(self, key: str) -> str:
        return f"{self.url}/{key}"

    def _each(self, fn, items: list) -> None:
        """fn(item) for every item, TRANSFERS at a time; the first error is raised once all
        have ended (an OutputError naming its object)."""
        errors = [e for e in self._pool.map(_caught(fn), items) if e is not None]
        if errors:
            raise errors[0]

    def _put(self, paths: list[Path]) -> None:
        """Upload staged files, each one object (whole or not at all), all at once."""
        def put(p: Path) -> None:
            key = self._key(p)
            try:
                self.fs.put_file(str(p), self._remote(key))
            except Exception as e:  # noqa: BLE001 - a failed upload fails what it was for
                raise OutputError(f"{self._remote(key)}: cannot upload ({_why(e)})") from None
            with self._lock:
                self.keys.add(key)
                self._children[key.rpartition("/")[0]].add(key)

        self._each(put, paths)

    def _delete(self, keys: list[str]) -> None:
        def delete(key: str) -> None:
            try:
                self.fs.rm_file(self._remote(key))
            except FileNotFoundError:
                pass
            except Exception as e:  # noqa: BLE001
                raise OutputError(f"{self._remote(key)}: cannot remove ({_why(e)})") from None
            with self._lock:
                self.keys.discard(key)
                self._children[key.rpartition("/")[0]].discard(key)

        self._each(delete, keys)

    def fetch(self, keys: list[str]) -> None:
        """Download those of `keys` that are in the bucket and not staged yet, all at once."""
        def get(key: str) -> None:
            local = self.root / key
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.fs.get_file(self._remote(key), str(local))
            except Exception as e:  # noqa: BLE001
                local.unlink(missing_ok=True)
                raise OutputError(f"{self._remote(key)}: cannot download ({_why(e)})") from None

        self._each(get, [k for k in dict.fromkeys(keys) if k in self.keys and not (self.root / k).exists()])

    # ------------------------------------------------------------ OutputLayout's API
    @property
    def where(self) -> str:
        return self.url

    def shown(self, rel: str) -> list[str]:
        return [self._remote(self._key(p)) for p in self.outputs(rel)]

    def publish(self, path: Path) -> str:
        self._put([path])
        return self._remote(self._key(path))

    def is_complete(self, rel: str) -> bool:
        return all(self._key(p) in self.keys for p in self.markers(rel))

    def count(self, rel: str) -> int | None:
        """Counted from the per-image files an end-of-run output downloads anyway (coco-rle's
        JSON with -f coco); None otherwise, rather than a request per skipped image."""
        base = self.root / rel
        for name in self._kept:
            mod = self.modules[name]
            if hasattr(mod, "count"):
                self.fetch([self._key(p) for p in markers_of(mod, base)])
                if (n := mod.count(base)) is not None:
                    return n
        return None

    def write(self, rel: str, image, records, image_id=None, source=None) -> list[str]:
        super().write(rel, image, records, image_id, source)
        base = self.root / rel
        for name, mod in self.modules.items():
            markers = set(markers_of(mod, base))
            for out in mod.outputs(base):
                if out.is_dir():
                    files = sorted(p for p in out.rglob("*") if p.is_file())
                    old = sorted(self._children.get(self._key(out), ()))
                    self._delete([self._key(m) for m in markers if self._key(m) in self.keys])
                    self._put([p for p in files if p not in markers])
                    self._delete([k for k in old if self.root / k not in files])  # an earlier run's extra masks
                    self._put([p for p in files if p in markers])
                else:
                    self._put([out])
                if name not in self._kept:
                    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
        return self.shown(rel)

    def claim(self, record: dict, overwrite: bool):
        from ..inputs import RUN_RECORD

        self.fetch([RUN_RECORD])
        before = (self.root / RUN_RECORD).read_bytes() if (self.root / RUN_RECORD).is_file() else None
        undo_stage = super().claim(record, overwrite)
        path = self.root / RUN_RECORD
        if path.read_bytes() == before:
            return undo_stage
        self._put([path])

        def undo() -> None:
            undo_stage()
            try:
                self._put([path]) if path.is_file() else self._delete([RUN_RECORD])
            except OutputError:
                pass
        return undo

    def remove_stale_temps(self) -> list[Path]:
        return []  # nothing goes into the bucket under a temporary name

    def finish_one(self, name: str, rels: list[str]) -> tuple[Path, str]:
        mod = self.modules[name]
        if self._relist:
            self._index(self._list())  # what other processes (workers, actors, shards) wrote since
        for dep in getattr(mod, "REQUIRES", None) or (name,):
            self.fetch([self._key(p) for rel in sorted(set(rels)) for p in self.modules[dep].outputs(self.root / rel)])
        before = _snapshot(self.root)
        path, note = super().finish_one(name, rels)
        after = _snapshot(self.root)
        self._put(sorted(p for p, stamp in after.items() if before.get(p) != stamp))
        return Url(self._remote(self._key(Path(path)))), note


def _snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file under root (links followed) → (size, mtime), hidden temporary files left out."""
    seen = {}
    for folder, _dirs, files in os.walk(root, followlinks=True):
        for f in files:
            if not f.startswith("."):
                p = Path(folder) / f
                st = p.stat()
                seen[p] = (st.st_size, st.st_mtime_ns)
    return seen


def _caught(fn):
    """fn, returning its OutputError instead of raising it (for ThreadPoolExecutor.map)."""
    def call(item):
        try:
            fn(item)
        except OutputError as e:
            return e
        return None
    return call
