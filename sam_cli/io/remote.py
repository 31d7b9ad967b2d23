"""Inputs from object storage and the web: `s3://`, `gs://`, `az://` (through fsspec and the
backend's own package, optional extras imported only when a URL needs them) and `https://`
single files (the standard library). Credentials come the way each backend's own tools take
them (environment, profiles, instance roles); sam never prints or records them.

A URL input is read whole into memory when its image is decoded, like a local file; a tar
shard in a bucket is read a member at a time by ranged reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, PromptError
from .tars import is_input

_URL = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
#: scheme → (the package fsspec needs for it, sam's extra that installs it)
BACKENDS = {"s3": ("s3fs", "s3"), "gs": ("gcsfs", "gcs"), "gcs": ("gcsfs", "gcs"), "az": ("adlfs", "azure"),
            "abfs": ("adlfs", "azure")}
WEB = ("http", "https")


def scheme(text: str) -> str | None:
    """A URL's scheme ("s3"), None for a local path (a Windows drive letter is one)."""
    m = _URL.match(text)
    return m.group(1).lower() if m else None


def is_url(text: str) -> bool:
    return scheme(str(text)) is not None


def looks_like_mangled_url(path) -> bool:
    """A URL that went through pathlib (`s3://b/x` → `s3:/b/x`): an option typed as a path.
    A scheme has two characters or more, so a drive letter (`C:/x`) is none."""
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:/[^/]", str(path)) is not None


class Url(str):
    """A URL where an input's path goes: prints as itself (pathlib would fold its `//`)."""

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]


def filesystem(url: str):
    """The fsspec filesystem for url's scheme; PromptError (a usage error) naming what to
    install when fsspec or the backend's package is missing, or the scheme is unknown."""
    s = scheme(url)
    if s not in BACKENDS:
        raise PromptError(f"{url}: sam reads {', '.join(sorted({*BACKENDS, *WEB}))} URLs, not {s}://")
    package, extra = BACKENDS[s]
    try:
        import fsspec
    except ImportError:
        raise PromptError(f"{url}: reading {s}:// needs fsspec and {package}, which are not installed",
                          hint=f"pip install 'segment-anything-cli[{extra}]'") from None
    try:
        return fsspec.filesystem(s, skip_instance_cache=True)  # each run lists afresh
    except ImportError:
        raise PromptError(f"{url}: reading {s}:// needs {package}, which is not installed",
                          hint=f"pip install 'segment-anything-cli[{extra}]'") from None


_READERS: dict[str, Any] = {}


def reader_filesystem(url: str):
    """One filesystem per scheme for the objects a run reads one by one (a prompt file's
    images in a bucket), instead of one per object."""
    s = scheme(url)
    if s not in _READERS:
        _READERS[s] = filesystem(url)
    return _READERS[s]


def local_copy(url: str, option: str) -> Path:
    """A small file in a bucket (a prompt file, a dataset) copied into a temporary folder of
    this process, under its own name (formats are told by it); removed when the process ends.
    PromptError (a usage error) naming `option` and the URL when it cannot be read."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="sam-copy-"))
    atexit.register(shutil.rmtree, folder, True)
    dest = folder / Url(url).name
    try:
        if scheme(url) in WEB:
            dest.write_bytes(RemoteFile(url).read_bytes())
        else:
            filesystem(url).get_file(url, str(dest))
    except PromptError:
        raise
    except Exception as e:  # noqa: BLE001 - any backend failure names the URL
        why = str(e).split(": cannot read (", 1)[-1].rstrip(")") if isinstance(e, InputError) else _why(e)
        raise PromptError(f"{option} {url}: cannot read it ({why})") from None
    return dest


def _why(e: BaseException) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such object (or no access to it)"
    if isinstance(e, PermissionError):
        return "access denied (check the credentials your backend's tools use)"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


@dataclass(frozen=True)
class RemoteFile:
    """An object in a bucket, or a file on the web, read when its image is decoded."""

    url: str
    fs: Any = field(default=None, compare=False, repr=False)  # None: https through urllib

    def read_bytes(self) -> bytes:
        try:
            if self.fs is None:
                import urllib.request

                with urllib.request.urlopen(self.url, timeout=60) as r:  # noqa: S310 - a URL the user gave
                    return r.read()
            return self.fs.cat_file(self.url)
        except Exception as e:  # noqa: BLE001 - any backend failure is this input's
            raise InputError(f"{self.url}: cannot read ({_why(e)})") from None

    def open(self):
        """A seekable binary file (ranged reads) for tar shards."""
        if self.fs is None:
            raise InputError(f"{self.url}: a tar shard over http(s) cannot be read a member at a time; "
                             "put it in a bucket or on disk")
        return self.fs.open(self.url, "rb")

    def __str__(self) -> str:
        return self.url


def expand_url(arg: str, run_record: str | None = None, skipped: list[str] | None = None) -> list[tuple[RemoteFile, str]]:
    """A URL argument → (file, output key) per input: a prefix ending in `/` or naming a
    "folder" lists everything under it (keys relative to it, as a local folder's), a glob its
    matches (keys relative to its part before the first wildcard), anything else one file
    (keyed by its name). Image files and .tar shards only, sorted. PromptError for a missing
    backend, InputError for a listing that fails (a missing bucket, no credentials). Listing a
    prefix, a "folder" under it that holds `run_record` (another run's outputs) is left out with
    everything under it, as a local folder's is, and named in `skipped`."""
    s = scheme(arg)
    if s in WEB:
        return [(RemoteFile(arg), Url(arg).name)]
    fs = filesystem(arg)
    proto = f"{s}://"

    def full(p: str) -> str:
        return p if is_url(p) else proto + p

    try:
        if any(c in arg for c in "*?["):
            base = arg[: min(arg.index(c) for c in "*?[" if c in arg)].rsplit("/", 1)[0]
            found = sorted(full(p) for p in fs.glob(arg) if is_input(p))
            return [(RemoteFile(p, fs), p[len(base):].lstrip("/")) for p in found]
        if arg.endswith("/") or fs.isdir(arg):
            base = arg.rstrip("/")
            listed = [full(p) for p in fs.find(base)]
            runs = sorted({p.rsplit("/", 1)[0] + "/" for p in listed if run_record and p.rsplit("/", 1)[-1] == run_record})
            if skipped is not None:
                skipped.extend(r.rstrip("/") for r in runs)
            found = sorted(p for p in listed if is_input(p) and not any(p.startswith(r) for r in runs))
            return [(RemoteFile(p, fs), p[len(base):].lstrip("/")) for p in found]
    except PromptError:
        raise
    except Exception as e:  # noqa: BLE001 - a listing that fails names the URL
        raise InputError(f"{arg}: cannot list ({_why(e)})") from None
    return [(RemoteFile(arg, fs), Url(arg).name)]
