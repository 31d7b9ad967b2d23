"""Expand the inputs of `sam auto` (files, folders, globs, `-` for paths on stdin) into a
stream of images, each with the relative name its outputs are stored under."""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .io.images import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class InputItem:
    path: Path  # where to read it
    rel: str  # output key: POSIX path relative to the output folder, with the extension kept


def _safe_rel(p: str) -> str:
    """A path as given → a relative output key that cannot escape the output folder."""
    parts = [("__" if s == ".." else s) for s in PurePosixPath(p.replace(os.sep, "/")).parts
             if s not in ("/", ".", "")]
    return "/".join(parts) if parts else "image"


def _walk(folder: Path) -> Iterator[Path]:
    """Image files under folder, recursive, sorted by path, hidden entries skipped."""
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS:
                yield Path(root) / f


def expand_inputs(args: Iterable[str], stdin: Iterable[str] | None = None) -> Iterator[InputItem]:
    """Folders recurse (outputs relative to the folder); a file, a glob match or a path read
    from stdin keeps its path as given (made relative). Missing paths are yielded too, so the
    reader reports them as failed inputs."""
    for arg in args:
        if arg == "-":
            for line in stdin if stdin is not None else sys.stdin:
                line = line.rstrip("\r\n")
                if line:
                    yield InputItem(Path(line), _safe_rel(line))
            continue
        p = Path(arg)
        if p.is_dir():
            for f in _walk(p):
                yield InputItem(f, f.relative_to(p).as_posix())
        elif not p.exists() and glob.has_magic(arg):
            for m in sorted(glob.glob(arg, recursive=True)):
                mp = Path(m)
                if mp.is_file() and mp.suffix.lower() in IMAGE_EXTENSIONS:
                    yield InputItem(mp, _safe_rel(m))
        else:
            yield InputItem(p, _safe_rel(arg))
