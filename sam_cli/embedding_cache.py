"""Image embeddings kept on disk, so that another prompt or other automatic-mode settings on
an image already seen skip the image encoder, most of a `sam segment` call on a CPU (on a
2-core machine, vit_b: 7.9 s for a call that fills the cache, 1.7 s for one that reads it;
vit_h: 34.9 and 1.9 s: `scripts/benchmark.py --rows point-again`, benchmarks/cpu.md).

An entry is one .npy file, 1×256×64×64 float32 (4 MB), named by a SHA-256 over everything
the embedding depends on: the pixels of the image (or crop) before the resize, the size it is
resized to, and the model (`model_identity`). A hit is the very array the encoder produced,
so results with and without the cache are the same bit for bit. Entries are written under a
temporary name and renamed, so a reader never sees half a file; an unreadable or malformed
entry is reported and computed again. Nothing is ever evicted: the folder is the user's to
clear.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import OutputError
from .io.writers import WriteBehind, atomic_open
from .modeling import Sam

#: Bumped when what an entry holds changes meaning, so old entries are never read.
FORMAT = "sam-embedding-1"


def model_identity(net: Sam, weights_id: str | None = None) -> str:
    """What, besides the pixels, decides an embedding: the weights, the encoder's precision,
    the device type (a GPU's kernels round differently from a CPU's), whether the encoder is
    compiled (`sam auto --compile`: its kernels round differently too) and the sam and torch
    versions. The weights are named by `weights_id` (weights.LoadedModel.weights_id: the
    checkpoint file's path, size and modification time), or, for a model built in memory,
    by a hash of the encoder's weights."""
    enc = net.image_encoder
    parts = [FORMAT, __version__, torch.__version__, net.device.type,
             str(enc.blocks[0].attn.qkv.weight.dtype), str(enc.img_size)]
    if net.encoder_compiled:
        parts.append("compiled")
    if weights_id is not None:
        parts.append(weights_id)
    else:
        h = hashlib.sha256()
        for name, t in enc.state_dict().items():
            h.update(name.encode())
            h.update(t.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        parts.append(h.hexdigest())
    return "\n".join(parts)


def check_folder(root: Path) -> None:
    """Refuse a cache path that is a file (before any model is loaded); a missing folder
    is made on the first write."""
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
        self, root: Path, net: Sam, warn: Callable[[str], None] | None = None,
        weights_id: str | None = None,
    ) -> None:
        self.root = Path(root)
        check_folder(self.root)
        self.model_id = model_identity(net, weights_id)
        pe = net.prompt_encoder
        self.shape = (1, pe.embed_dim, *pe.image_embedding_size)
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

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.npy"

    # ---------------------------------------------------------------------------- read
    def load(self, key: str) -> torch.Tensor | None:
        """The cached 1×C×h×w float32 embedding (on the CPU), or None."""
        p = self.path(key)
        try:
            arr = np.load(p, allow_pickle=False)
        except (FileNotFoundError, NotADirectoryError):  # no such entry (yet)
            arr = None
        except Exception as e:  # noqa: BLE001 - any bad entry (np.load raises many kinds) is recomputed
            self.warn(f"embedding cache: {p}: unreadable ({_reason(e)}); computing it again")
            arr = None
        if arr is not None and (arr.shape != self.shape or arr.dtype != np.float32):
            self.warn(f"embedding cache: {p}: holds {arr.dtype} {arr.shape}, not float32 "
                      f"{self.shape}; computing it again")
            arr = None
        with self._lock:
            if arr is None:
                self.misses += 1
            else:
                self.hits += 1
        return None if arr is None else torch.from_numpy(arr)

    # --------------------------------------------------------------------------- write
    def save(self, key: str, features: torch.Tensor) -> None:
        """Queue features (1×C×h×w, any device) to be written under key."""
        if self._write_failed:
            return
        if self._writer is None:
            self._writer = WriteBehind(self._save_queued, depth=8, name="sam-embed-cache")
        self._writer.submit((key, features.detach()))

    def save_now(self, key: str, features: torch.Tensor) -> None:
        """Write one entry on this thread."""
        if self._write_failed:
            return
        arr = features.to("cpu", torch.float32).contiguous().numpy()
        if arr.shape != self.shape:
            raise ValueError(f"embedding of shape {arr.shape}, expected {self.shape}")
        try:
            with atomic_open(self.path(key)) as f:
                np.save(f, arr, allow_pickle=False)
        except OutputError as e:
            self._stop_writing(e.__context__ or e)  # the OSError, for its one-word reason

    def _stop_writing(self, e: BaseException) -> None:
        """Say once that the folder cannot be written, and write nothing more."""
        self._write_failed = True
        self.warn(f"embedding cache: {self.root}: cannot write ({_reason(e)}); "
                  "embeddings of this run are not kept")

    def _save_queued(self, job: tuple[str, torch.Tensor]) -> None:
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
