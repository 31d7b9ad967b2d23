"""Image features kept on disk, so that another prompt or other automatic-mode settings on
an image already seen skip the image encoder, most of a `sam segment` call on a CPU (on a
2-core machine, vit_b: 7.9 s for a call that fills the cache, 1.7 s for one that reads it;
vit_h: 34.9 and 1.9 s: `scripts/benchmark.py --rows point-again`, benchmarks/cpu.md).

An entry is one .npz file holding an image's ImageFeatures (models/features.py): each of the
family's tensors as float32 (SAM 1: "image_embed" 1×256×64×64, 4 MB) and the family's name
under "__family__". It is named by a SHA-256 over everything the features depend on: the
pixels of the image (or crop) before the resize, the size it is resized to, and the model
(`model_identity`, which names the family). A hit is the very arrays the encoder produced,
so results with and without the cache are the same bit for bit. Entries are written under a
temporary name and renamed, so a reader never sees half a file; an unreadable or malformed
entry is reported and computed again. Nothing is ever evicted: the folder is the user's to
clear. The folder may be a bucket's prefix (s3://…, through io.remote): an entry is then one
object, read whole and written in one upload (all or nothing), shared by every machine.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import OutputError
from .io.writers import WriteBehind, atomic_open
from .models.features import ImageFeatures

#: Bumped when what an entry holds changes meaning, so old entries are never read.
FORMAT = "sam-embedding-2"


def model_identity(net: torch.nn.Module, weights_id: str | None = None) -> str:
    """What, besides the pixels, decides an embedding: the weights, the encoder's precision,
    the device type (a GPU's kernels round differently from a CPU's), whether the encoder is
    compiled (`sam auto --compile`: its kernels round differently too) and the sam and torch
    versions. The weights are named by `weights_id` (checkpoints.LoadedModel.weights_id: the
    checkpoint file's path, size and modification time), or, for a model built in memory,
    by a hash of the encoder's weights."""
    parts = [FORMAT, __version__, torch.__version__, net.family, net.device.type,
             str(net.encoder_dtype), str(net.img_size)]
    if net.encoder_compiled:
        parts.append("compiled")
    if weights_id is not None:
        parts.append(weights_id)
    else:
        h = hashlib.sha256()
        for name, t in net.encoder_state().items():
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        parts.append(h.hexdigest())
    return "\n".join(parts)


def check_folder(root: Path) -> None:
    """Refuse a cache path that is a file (before any model is loaded); a missing folder
    is made on the first write. A bucket's prefix is taken as it is."""
    from .io.remote import is_url

    if is_url(str(root)):
        return
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise OutputError(f"{root}: exists and is not a folder (--embedding-cache)")


class EmbeddingCache:
    """A folder of image embeddings for one model (see the module doc).

    `load` may run on any thread (the pipeline's readers look entries up ahead of the
    encoder). `save` writes on a background thread, so the encoder never waits for the disk;
    `close` waits for the writes still queued. A folder that cannot be written is reported
    once through `warn`, and the run goes on without saving."""

    def __init__(
        self, root: Path, net: torch.nn.Module, warn: Callable[[str], None] | None = None,
        weights_id: str | None = None,
    ) -> None:
        from .io.remote import Url, filesystem, is_url

        self.fs = filesystem(str(root)) if is_url(str(root)) else None  # a bucket's prefix
        self.root = Url(str(root).rstrip("/")) if self.fs is not None else Path(root)
        check_folder(self.root)
        self.model_id = model_identity(net, weights_id)
        self.family = net.family
        self.shapes = {k: (1, *v) for k, v in net.feature_shapes().items()}
        self.warn = warn or (lambda text: None)
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()
        self._write_failed = False
        self._writer: WriteBehind | None = None

    # ---------------------------------------------------------------------------- keys
    def key(self, pixels: np.ndarray, input_hw: tuple[int, int]) -> str:
        """pixels: H×W×3 uint8, the image or crop before the resize; input_hw: its size
        after the resize to the encoder's input."""
        h = hashlib.sha256()
        h.update(self.model_id.encode())
        h.update(repr((pixels.shape, str(pixels.dtype), tuple(input_hw))).encode())
        h.update(memoryview(np.ascontiguousarray(pixels)).cast("B"))
        return h.hexdigest()

    def path(self, key: str) -> Path | str:
        if self.fs is not None:
            return f"{self.root}/{key[:2]}/{key}.npz"
        return self.root / key[:2] / f"{key}.npz"

    # ---------------------------------------------------------------------------- read
    def load(self, key: str, input_hw: tuple[int, int], orig_hw: tuple[int, int]) -> ImageFeatures | None:
        """The cached features (on the CPU) of the image or crop of size orig_hw resized to
        input_hw, or None."""
        p = self.path(key)
        tensors = None
        try:
            with np.load(p if self.fs is None else io.BytesIO(self.fs.cat_file(p)), allow_pickle=False) as entry:
                arrays = {k: entry[k] for k in entry.files}
        except (FileNotFoundError, NotADirectoryError):  # no such entry (yet)
            arrays = None
        except Exception as e:  # noqa: BLE001 - any bad entry (np.load raises many kinds) is recomputed
            self.warn(f"embedding cache: {p}: unreadable ({_reason(e)}); computing it again")
            arrays = None
        if arrays is not None:
            bad = self._bad_entry(arrays)
            if bad:
                self.warn(f"embedding cache: {p}: {bad}; computing it again")
            else:
                tensors = {k: torch.from_numpy(v) for k, v in arrays.items() if k != "__family__"}
        with self._lock:
            if tensors is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if tensors is None else ImageFeatures(self.family, tensors, tuple(input_hw), tuple(orig_hw))

    def _bad_entry(self, arrays: dict[str, np.ndarray]) -> str | None:
        """What makes an entry unusable for this model, or None."""
        fam = arrays.get("__family__")
        if fam is None or fam.shape != () or fam.dtype.kind != "U" or str(fam) != self.family:
            return f"not an entry of a {self.family} model"
        names = sorted(k for k in arrays if k != "__family__")
        if names != sorted(self.shapes):
            return f"holds {', '.join(names) or 'no tensors'}, not {', '.join(sorted(self.shapes))}"
        for k, shape in self.shapes.items():
            a = arrays[k]
            if a.shape != shape or a.dtype != np.float32:
                return f"holds {k} as {a.dtype} {a.shape}, not float32 {shape}"
        return None

    # --------------------------------------------------------------------------- write
    def save(self, key: str, features: ImageFeatures) -> None:
        """Queue features (any device) to be written under key."""
        if self._write_failed:
            return
        if self._writer is None:
            self._writer = WriteBehind(self._save_queued, depth=8, name="sam-embed-cache")
        self._writer.submit((key, features))

    def save_now(self, key: str, features: ImageFeatures) -> None:
        """Write one entry on this thread."""
        if self._write_failed:
            return
        arrays = {k: v.detach().to("cpu", torch.float32).contiguous().numpy() for k, v in features.tensors.items()}
        for k, shape in self.shapes.items():
            if k not in arrays or arrays[k].shape != shape:
                raise ValueError(f"features {k} of shape {arrays[k].shape if k in arrays else None}, expected {shape}")
        if self.fs is not None:  # one upload: the object appears whole or not at all
            buf = io.BytesIO()
            np.savez(buf, __family__=np.array(features.family), **arrays)
            try:
                self.fs.pipe_file(self.path(key), buf.getvalue())
            except Exception as e:  # noqa: BLE001 - any backend failure: the run goes on without saving
                self._stop_writing(e)
            return
        try:
            with atomic_open(self.path(key)) as f:
                np.savez(f, __family__=np.array(features.family), **arrays)
        except OutputError as e:
            self._stop_writing(e.__context__ or e)  # the OSError, for its one-word reason

    def _stop_writing(self, e: BaseException) -> None:
        """Say once that the folder cannot be written, and write nothing more."""
        self._write_failed = True
        self.warn(f"embedding cache: {self.root}: cannot write ({_reason(e)}); "
                  "embeddings of this run are not kept")

    def _save_queued(self, job: tuple[str, ImageFeatures]) -> None:
        try:
            self.save_now(*job)
        except Exception as e:  # noqa: BLE001 - a cache write never stops the run
            self._stop_writing(e)

    def close(self) -> None:
        """Wait for the queued writes."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
