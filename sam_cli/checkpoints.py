"""Checkpoints: read a file's tensors without running code from it, recognise the model
family they belong to, read its architecture from tensor shapes, build the network and load
the tensors into it strictly. Downloading is fetch.py's."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from . import models
from .errors import CheckpointError
from .fetch import ProgressFactory, _file_stat, download, fetch_remote
from .io.remote import is_url
from .registry import DEFAULT_MODEL, DTYPES, MODELS


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Minimal safetensors reader (8-byte header length, JSON header, raw little-endian data)."""
    dtypes = {
        "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "I16": torch.int16,
        "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
    }
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError(f"{path}: file is truncated (not a safetensors file)")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        raise CheckpointError(f"{path}: file is truncated or not a safetensors file (header of {n} bytes)")
    try:
        header = json.loads(data[8 : 8 + n])
    except (ValueError, UnicodeDecodeError):
        raise CheckpointError(f"{path}: not a valid safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a valid safetensors file (the header is not an object)")
    body = memoryview(data)[8 + n :]
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        bad = _bad_safetensors_entry(info, dtypes)
        if bad:
            raise CheckpointError(f"{path}: not a valid safetensors file (tensor {name}: {bad})")
        start, end = info["data_offsets"]
        dtype = dtypes[info["dtype"]]
        if end > len(body):
            raise CheckpointError(f"{path}: file is truncated (tensor {name} is cut off)")
        if end - start != math.prod(info["shape"]) * dtype.itemsize:
            raise CheckpointError(f"{path}: not a valid safetensors file (tensor {name}: "
                                  f"{end - start} bytes for shape {info['shape']} {info['dtype']})")
        raw = body[start:end]
        t = torch.frombuffer(bytearray(raw), dtype=dtype) if end > start else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"])
    return out


def _bad_safetensors_entry(info, dtypes: dict) -> str | None:
    """What is wrong with one tensor's header entry, or None."""
    if not isinstance(info, dict):
        return "its entry is not an object"
    if info.get("dtype") not in dtypes:
        return f"unsupported dtype {info.get('dtype')!r}"
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        return f"bad shape {shape!r}"
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        return f"bad data_offsets {offsets!r}"
    return None


def _torch_load(path: Path):
    """torch.load, tensors mapped from the file (mmap) where its format allows: nothing is read
    until a tensor is used, and a model can use the mapped tensors as its weights
    (`load_state_dict_into(..., assign=True)`) instead of copying them. Files in the old
    (pre-zip) format are read whole."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def _looks_like_torch(path: Path) -> bool:
    """A PyTorch file by its first bytes: a zip archive (torch.save since 1.6) or a pickle
    (the legacy format starts with its protocol marker)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot read ({e.strerror})") from None
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without ever executing code from the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if path.suffix == ".safetensors":
        sd = _read_safetensors(path)
    elif not _looks_like_torch(path):
        raise CheckpointError(f"{path}: not a checkpoint (neither a PyTorch file nor .safetensors)",
                              hint="pass Meta's .pth file, or a .safetensors file")
    else:
        try:
            sd = _torch_load(path)
        except Exception as e:  # noqa: BLE001 - torch raises many kinds here
            text = str(e)
            if "Weights only load failed" in text or "weights_only" in text:
                raise CheckpointError(
                    f"{path}: refused: the file holds objects other than tensors "
                    "(loading it could run code)",
                    hint="re-save a plain state dict, or use a .safetensors file",
                ) from None
            raise CheckpointError(
                f"{path}: cannot read checkpoint (file truncated or not a PyTorch checkpoint)"
            ) from None
    for wrapper in ("model", "state_dict"):
        if isinstance(sd, dict) and isinstance(sd.get(wrapper), dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: not a state dict of tensors")
    return sd


def infer_arch(sd: dict[str, torch.Tensor], source: str = "checkpoint"):
    """The architecture of the family whose checkpoint `sd` is (models.detect), read from
    tensor shapes."""
    return models.detect(sd, source).infer_arch(sd, source)


def build_from_arch(arch, device: str | torch.device = "cpu", family: str = "sam1"):
    """`family`'s network of architecture `arch` (weights uninitialised)."""
    return models.get(family).build(arch, device)


def load_state_dict_into(
    model: torch.nn.Module, sd: dict[str, torch.Tensor], source: str, *, assign: bool = False,
) -> None:
    """Strict load: missing, unexpected and mis-shaped keys are named in the error.
    assign: the model takes sd's tensors as its own (a model built on the meta device), as
    float32 where they are floating point in another dtype (a half-precision fine-tune)."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    kinds = sorted(k for k in set(own) & set(sd)
                   if own[k].is_floating_point() and not sd[k].is_floating_point())

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    if missing or unexpected or wrong or kinds:
        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if wrong:
            k = wrong[0]
            parts.append(
                f"wrong shape for {k}: {tuple(sd[k].shape)} in file, {tuple(own[k].shape)} expected"
                + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")
            )
        if kinds:
            parts.append(f"{few(kinds)}: {sd[kinds[0]].dtype} in file, floating point expected")
        raise CheckpointError(f"{source}: checkpoint does not fit the SAM model: " + "; ".join(parts))
    if assign:
        sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    model.load_state_dict(sd, strict=True, assign=assign)


@dataclass(frozen=True)
class LoadedModel:
    net: torch.nn.Module  # a family's network (models/__init__.py: the operations engines use)
    #: Names the weights for the embedding cache (and a run's record of what made its
    #: outputs): the checkpoint file's real path, size and modification time, taken before
    #: it was read, so another file put in its place has another id.
    weights_id: str | None
    checkpoint: Path
    #: keys of the file that the family's image path does not use, dropped by name
    ignored: tuple[str, ...] = ()

    @property
    def family(self) -> str:
        return self.net.family


def load(
    *, model: str | None = None, checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu", progress: ProgressFactory | None = None,
    dtype: str = "fp32",
) -> LoadedModel:
    """Load a model from a local checkpoint, or from the cache (downloading on first use):
    the family is recognised from the file's key names, the architecture read from its
    tensor shapes. dtype "bf16" runs the heavy parts in bfloat16 (the network's
    set_precision says which); prompts, IoU head and output logits stay float32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if checkpoint is None:
        name = model or DEFAULT_MODEL
        if name not in MODELS:
            raise CheckpointError(
                f"unknown model {name!r}", hint=f"choose one of {', '.join(MODELS)}"
            )
        checkpoint = download(MODELS[name], progress=progress)
    weights_id = None
    if checkpoint is not None and is_url(str(checkpoint)):  # s3://…: copied into the cache while the object is the same
        url = str(checkpoint)
        checkpoint, ident = fetch_remote(url, progress)
        weights_id = f"{url} {ident}"  # the same on every machine (a shared embedding cache)
    weights_id = weights_id or _file_identity(checkpoint)
    sd = read_state_dict(checkpoint)
    family = models.detect(sd, str(checkpoint))
    arch = family.infer_arch(sd, str(checkpoint))
    ignored = tuple(family.ignored_keys(sd))
    if ignored:
        dropped = set(ignored)
        sd = {k: v for k, v in sd.items() if k not in dropped}
    # Built on the meta device, the model takes the file's tensors as its weights: no second
    # copy of them in memory, and with a mapped file (most .pth files) a weight is read from
    # disk only when first used; an embedding-cache hit never reads the image encoder's.
    net = family.build(arch, "meta")
    load_state_dict_into(net, sd, str(checkpoint), assign=True)
    net.init_constants()  # what checkpoints do not hold (pixel mean and std)
    left = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"not loaded from the checkpoint: {', '.join(left[:3])}")
    net = net.to(device).eval()
    if dtype == "bf16":
        net.set_precision(torch.bfloat16)
    return LoadedModel(net, weights_id, Path(checkpoint), ignored)


def load_model(**kwargs) -> torch.nn.Module:
    """load(...)'s model alone (same arguments)."""
    return load(**kwargs).net


def _file_identity(path: str | Path) -> str | None:
    """A checkpoint's _file_stat as a string, taken before it is read: another file put in its
    place changes it. None if it cannot be read (loading then fails with its own error)."""
    st = _file_stat(path)
    return None if st is None else repr(st)


