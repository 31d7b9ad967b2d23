"""Expand the inputs of `sam auto` (files, folders, globs, `-` for paths on stdin) into a
stream of images, each with the relative name its outputs are stored under."""

from __future__ import annotations

import glob
import os
import sys
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .errors import InputError, SamError
from .io.images import decode_image, read_image
from .io.remote import RemoteFile, Url, expand_url, is_url, reader_filesystem
from .io.tars import TarMember, expand_braces, has_braces, image_members, is_input, is_tar


@dataclass(frozen=True)
class InputItem:
    path: Path | Url  # where to read it (a URL: io.remote.Url, which prints as given)
    rel: str  # output key: POSIX path relative to the output folder, with the extension kept
    error: SamError | None = None  # a problem known before reading it (a bad prompt row)
    image_id: int | None = None  # the dataset's id for the image (a COCO prompts file)
    where: str = ""  # where it was named, for messages: "dets.jsonl line 12"
    #: what to read in place of a local file (path then names it): an image inside a tar
    #: shard, or an object in a bucket / a file on the web (io.remote.RemoteFile)
    member: TarMember | RemoteFile | None = None
    group: str = ""  # what --shard splits by when not rel: a tar member's tar (its output key)


def read_input(item) -> np.ndarray:
    """An input item's image (H×W×3 uint8 RGB): a file's, or its member's bytes (a tar member,
    a bucket's object) decoded."""
    member = getattr(item, "member", None)
    if member is None:
        return read_image(item.path)
    return decode_image(member.read_bytes(), str(member))


def under(root, name: str) -> tuple[Path | Url, RemoteFile | None]:
    """Where the image `name` (as a prompt file or a dataset names it) is read from under
    `root`, a folder or a bucket's prefix (io.remote.Url): (its path, the RemoteFile to read
    for a URL, else None). An absolute local name stays as it is."""
    if is_url(str(root)):
        url = Url(str(root).rstrip("/") + "/" + name.lstrip("/"))
        return url, RemoteFile(url, reader_filesystem(url))
    return (Path(name) if os.path.isabs(name) else Path(root) / name), None


def safe_rel(p: str) -> str:
    """A path as given → a relative output key that cannot escape the output folder."""
    parts = [("__" if s == ".." else s) for s in PurePosixPath(p.replace(os.sep, "/")).parts
             if s not in ("/", ".", "")]
    return "/".join(parts) if parts else "image"


#: What made a folder's outputs (sam version, weights, precision, settings), written into
#: it at the start of a run (io.outputs.OutputLayout.claim). A folder holding one is sam's
#: output, never an input.
RUN_RECORD = "sam-run.json"


class Exclusions:
    """Where inputs are never taken from: the run's own output folder, and any folder that
    holds a run record (another run's outputs). `skipped` lists what was left out, and
    `other_files` counts the files in input folders that are not images, for the run's
    summary: nothing is left out without a word."""

    def __init__(self, output: Path | None = None) -> None:
        url = output is not None and is_url(str(output))
        #: a bucket's output prefix ("s3://b/out/"): inputs listed under it are left out
        self.output_url = str(output).rstrip("/") + "/" if url else None
        self.output = os.path.realpath(output) if output is not None and not url else None
        self.skipped: list[str] = []
        self.other_files: Counter[str] = Counter()  # files in folders that are not images, by extension

    def folder(self, path: str) -> bool:
        """True (and noted) for a folder to leave out, with everything under it."""
        if (self.output is not None and os.path.realpath(path) == self.output) or \
                os.path.isfile(os.path.join(path, RUN_RECORD)):
            self.skipped.append(path)
            return True
        return False

    def file(self, path: str) -> bool:
        """True (and noted) for a file inside the output folder (or under its bucket prefix)."""
        if self.output_url is not None and is_url(path):
            if path.startswith(self.output_url):
                self.skipped.append(path)
                return True
            return False
        if self.output is not None and os.path.realpath(path).startswith(self.output + os.sep):
            self.skipped.append(path)
            return True
        return False


def walk_images(folder: Path, ex: Exclusions) -> Iterator[Path]:
    """Image files (and .tar shards) under folder, recursive, sorted by path, hidden entries
    and sam's output folders skipped."""
    for root, dirs, files in os.walk(folder):
        if ex.folder(root):
            dirs[:] = []
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for f in sorted(files):
            if f.startswith("."):
                continue
            if is_input(f):
                yield Path(root) / f
            else:
                ex.other_files[Path(f).suffix.lower() or "(none)"] += 1


def _under_cwd(p: str) -> str | None:
    """An absolute path inside the working folder, relative to it; None for any other."""
    if not os.path.isabs(p):
        return None
    try:
        rel = os.path.relpath(p, os.getcwd())
    except ValueError:  # another drive (Windows)
        return None
    return None if rel == ".." or rel.startswith(".." + os.sep) else rel


def _glob_base(pattern: str) -> str:
    """The folder part of a glob before its first wildcard: '/data/shots/**/*.jpg' → '/data/shots'."""
    parts = []
    for part in PurePosixPath(pattern.replace(os.sep, "/")).parts[:-1]:
        if glob.has_magic(part):
            break
        parts.append(part)
    return str(PurePosixPath(*parts)) if parts else "."


def expand_inputs(
    args: Iterable[str], stdin: Iterable[str] | None = None, exclude: Exclusions | None = None,
) -> Iterator[InputItem]:
    """Folders recurse (outputs relative to the folder). A relative file, glob match or stdin
    path keeps its path as given. An absolute file argument keeps its path relative to the
    working folder when it lies inside it, else its file name alone (`sam auto /tmp/x.jpg -o
    out` writes out/x.jpg.*); an absolute glob's matches are relative to the glob's folder
    part, like a folder argument's files; an absolute stdin path is made relative to the
    working folder when inside it, else kept whole. Missing paths are yielded too, so the
    reader reports them as failed inputs. Nothing is taken from `exclude`'s folders."""
    ex = exclude or Exclusions()
    for item in _expand(args, stdin, ex):
        if not ex.file(str(item.path)):
            yield item


def _expand(args: Iterable[str], stdin: Iterable[str] | None, ex: Exclusions) -> Iterator[InputItem]:
    for arg in args:
        if arg == "-":
            for line in stdin if stdin is not None else sys.stdin:
                line = line.rstrip("\r\n")
                if line:  # absolute paths outside the working folder keep their folders
                    yield InputItem(Path(line), safe_rel(_under_cwd(line) or line))
            continue
        p = Path(arg)
        if not p.exists() and has_braces(arg):  # shards/{00000..00099}.tar
            try:
                names = expand_braces(arg)
            except InputError as e:
                yield InputItem(p, safe_rel(p.name), error=e)
                continue
            if names != [arg]:
                yield from _expand(names, stdin, ex)
                continue
        if is_url(arg):  # s3://bucket/photos/, a glob under a prefix, https://…/x.jpg
            try:
                found = expand_url(arg, RUN_RECORD, ex.skipped)  # other runs' outputs left out, noted
            except InputError as e:
                yield InputItem(Url(arg), safe_rel(Url(arg).name), error=e)
                continue
            for f, key in found:
                yield from _file_items(f, safe_rel(key))
            continue
        if p.is_dir():
            for f in walk_images(p, ex):
                yield from _file_items(f, f.relative_to(p).as_posix())
        elif not p.exists() and glob.has_magic(arg):
            base = _glob_base(arg) if os.path.isabs(arg) else None
            for m in sorted(glob.glob(arg, recursive=True)):
                mp = Path(m)
                if mp.is_file() and is_input(mp):
                    yield from _file_items(mp, safe_rel(m if base is None else os.path.relpath(m, base)))
        elif os.path.isabs(arg):
            yield from _file_items(p, safe_rel(_under_cwd(arg) or p.name))
        else:
            yield from _file_items(p, safe_rel(arg))


def _file_items(path: Path | RemoteFile, rel: str) -> Iterator[InputItem]:
    """A file's input item; a .tar shard's, one per image member (outputs under the tar's
    key: shards/00000.tar/000123.jpg.json), or one failed item naming the tar when it cannot
    be read (the members read before a corrupt part stay)."""
    local = isinstance(path, Path)
    shown = path if local else Url(path.url)  # the path messages and JSON lines name it by
    if not is_tar(shown):
        yield InputItem(shown, rel, member=None if local else path)
        return
    try:
        for m in image_members(path):
            yield InputItem(Path(str(m)) if local else Url(str(m)), f"{rel}/{safe_rel(m.name)}", member=m, group=rel)
    except InputError as e:
        yield InputItem(shown, rel, error=e, group=rel)
