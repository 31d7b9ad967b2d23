"""Tar shards as input (WebDataset's layout, what img2dataset writes): each image member of a
plain .tar is an input, read in place by its offset, never unpacked to disk; and the brace
ranges WebDataset names shards with (`shards/{00000..00099}.tar`).

Only uncompressed tars: a member of a compressed one cannot be read without decompressing
everything before it (WebDataset's shards are plain tars; their images are compressed already).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from .images import IMAGE_EXTENSIONS

TAR_SUFFIX = ".tar"
_BRACE = re.compile(r"\{([^{}]*)\}")
#: more names than this from one pattern is a typo ({0..99999999}), not a dataset
MAX_BRACE_NAMES = 1_000_000


@dataclass(frozen=True)
class TarMember:
    """One image in a tar shard: where its bytes lie in the file."""

    tar: Path | Any  # a local file, or an object in a bucket (io.remote.RemoteFile: ranged reads)
    name: str  # the member's path inside the tar
    offset: int  # of its data
    size: int

    def read_bytes(self) -> bytes:
        try:
            with _open(self.tar) as f:
                f.seek(self.offset)
                data = f.read(self.size)
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a local or a bucket's read error: this member's
            raise InputError(f"{self}: cannot read the tar ({getattr(e, 'strerror', None) or e})") from None
        if len(data) != self.size:
            raise InputError(f"{self}: the tar ends inside this member (truncated file)")
        return data

    def __str__(self) -> str:
        return f"{self.tar}/{self.name}"


def has_braces(pattern: str) -> bool:
    return _BRACE.search(pattern) is not None


def expand_braces(pattern: str) -> list[str]:
    """`a/{00000..00002}.tar` → a/00000.tar, a/00001.tar, a/00002.tar (zero-padded to the first
    bound's width, as WebDataset's braceexpand); `{x,y}` → both; several braces multiply.
    InputError for a range that is not two integers or that names too many."""
    m = _BRACE.search(pattern)
    if m is None:
        return [pattern]
    body = m.group(1)
    rng = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if rng:
        a, b = int(rng.group(1)), int(rng.group(2))
        if abs(b - a) + 1 > MAX_BRACE_NAMES:
            raise InputError(f"{pattern}: the range {{{body}}} names {abs(b - a) + 1:,} files "
                             f"(at most {MAX_BRACE_NAMES:,})")
        width = len(rng.group(1)) if rng.group(1).lstrip("-").startswith("0") else 0
        step = 1 if b >= a else -1
        choices = [str(i).zfill(width) for i in range(a, b + step, step)]
    elif "," in body:
        choices = body.split(",")
    else:
        return [pattern]  # a literal {name}: not a brace expression
    head, tail = pattern[: m.start()], pattern[m.end():]
    return [out for c in choices for out in expand_braces(head + c + tail)]


def _open(tar: Path | Any):
    return open(tar, "rb") if isinstance(tar, Path) else tar.open()


def is_tar(path: str | Path) -> bool:
    return str(path).lower().endswith(TAR_SUFFIX)


def is_input(name: str | Path) -> bool:
    """Whether a file is taken as input: an image by its extension, or a tar shard."""
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS or is_tar(name)


def image_members(tar: Path | Any) -> Iterator[TarMember]:
    """The image members of a plain tar, in the file's order (headers only are read: the
    data is skipped by seeking). InputError naming the tar when it cannot be read as one
    (missing, compressed, corrupt); members already yielded stay valid."""
    try:
        with _open(tar) as f, tarfile.open(fileobj=f, mode="r:") as tf:
            for m in tf:
                if m.isfile() and Path(m.name).suffix.lower() in IMAGE_EXTENSIONS:
                    yield TarMember(tar, m.name, m.offset_data, m.size)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{tar}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{tar}: is a folder, not a tar") from None
    except (tarfile.TarError, EOFError) as e:
        raise InputError(f"{tar}: cannot read it as an uncompressed tar ({e})") from None
    except OSError as e:
        raise InputError(f"{tar}: cannot read file ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - a bucket's read error names the tar
        raise InputError(f"{tar}: cannot read ({type(e).__name__}: {e})") from None
