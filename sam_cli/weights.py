"""Find, download, verify and load checkpoints; infer the architecture from tensor shapes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import json
import math
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import CheckpointError, DownloadError
from .modeling.sam import Sam
from .registry import DEFAULT_BASE_URL, DEFAULT_MODEL, DTYPES, MODELS, ArchSpec, ModelType

ENV_CACHE = "SAM_CACHE_DIR"
ENV_BASE_URL = "SAM_BASE_URL"
ENV_SHA_PREFIX = "SAM_SHA256_"  # + model name upper-cased, e.g. SAM_SHA256_VIT_B

# progress(total_bytes_or_None, already_have) -> update(n_bytes) callable, closed by calling
# it with -1. The CLI passes a tqdm-backed one; the library never prints.
ProgressFactory = Callable[[int | None, int], Callable[[int], None]]


def cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sam"


def base_url() -> str:
    url = os.environ.get(ENV_BASE_URL) or DEFAULT_BASE_URL
    return url if url.endswith("/") else url + "/"


def expected_sha256(model: ModelType) -> str:
    """Meta's hash, unless the user names the hash of the file their mirror serves."""
    return os.environ.get(ENV_SHA_PREFIX + model.name.upper(), model.weights.sha256).lower()


def describe(model: str | None, checkpoint: str | Path | None) -> str:
    """Names the weights a run uses without loading (or downloading) them: a checkpoint file
    by its real path, size and modification time; a model type by the sha256 its file must
    have."""
    if checkpoint is not None:
        st = _file_stat(checkpoint)
        size = f"{st[1]} bytes, modified {st[2]}" if st else "missing"
        return f"checkpoint {os.path.realpath(checkpoint)} ({size})"
    name = model or DEFAULT_MODEL
    return f"{name} sha256 {expected_sha256(MODELS[name])}"


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_path(model: ModelType) -> Path:
    """Meta's file name for Meta's weights. A mirror's other weights (SAM_SHA256_*) are kept
    under a name holding their hash, so they never pass for Meta's once the variable is gone."""
    name = model.weights.file_name
    want = expected_sha256(model)
    if want != model.weights.sha256:
        stem, _, ext = name.rpartition(".")
        name = f"{stem}.sha256-{want[:16]}.{ext}"
    return cache_dir() / name


#: A download that receives less than STALL_BYTES in STALL_SECONDS is given up (a server that
#: trickles a byte now and then would otherwise hold it for ever; it resumes on the next try).
STALL_SECONDS = 120.0
STALL_BYTES = 1 << 20


def download(
    model: ModelType, *, progress: ProgressFactory | None = None, timeout: float = 60.0,
    replace: bool = False,
) -> Path:
    """Download `model`'s checkpoint into the cache and verify its sha256.

    Bytes go to `<file>.part`, which a later call resumes with an HTTP Range request; the
    verified file is renamed into place, so the cache never holds a partial checkpoint
    under its real name. A cached file is used only if its hash is the expected one (as
    recorded when it was verified, else hashed again now): another file there is refused
    (CheckpointError), or, with `replace` (`sam models download`), fetched again.
    Two processes downloading into one cache take turns (a lock file beside it): the second
    finds the first's verified file.
    """
    dest = cached_path(model)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _locked(dest.with_name(dest.name + ".lock")):
        return _download(model, dest, progress, timeout, replace)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock held while the block runs (POSIX flock; none where there is none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _download(
    model: ModelType, dest: Path, progress: ProgressFactory | None, timeout: float, replace: bool,
) -> Path:
    want = expected_sha256(model)
    if dest.exists():
        if cache_status(model)["verified"]:
            return dest
        digest = sha256_file(dest)
        if digest == want:
            _record_verified(dest, digest)
            return dest
        if not replace:
            raise CheckpointError(
                f"{dest}: the cached file's sha256 is {digest}, not the expected {want}",
                hint=f"run `sam models download {model.name}` to fetch it again, or pass --checkpoint PATH",
            )
        dest.unlink()
        _stamp(dest).unlink(missing_ok=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    url = base_url() + model.weights.file_name
    # Meta's files have a known size; a mirror's other weights at most Content-Length
    limit = model.weights.size if want == model.weights.sha256 else None
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "sam-cli"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            if have and resp.status != 206:
                have = 0  # server ignored the range: start again
            length = resp.headers.get("Content-Length")
            total = have + int(length) if length is not None else None
            if limit is not None and total is not None and total > limit:
                raise DownloadError(f"download failed: {url}: the server sends {total} bytes, "
                                    f"but the file has {limit}", hint="is SAM_BASE_URL a SAM mirror?")
            update = progress(total, have) if progress else None
            got = have
            mark, since = got, time.monotonic()
            with open(part, "ab" if have else "wb") as f:
                while block := resp.read1(1 << 20):
                    f.write(block)
                    got += len(block)
                    if update:
                        update(len(block))
                    if (total or limit) is not None and got > (total or limit):
                        raise DownloadError(f"download failed: {url}: more than the "
                                            f"{total or limit} bytes expected")
                    now = time.monotonic()
                    if got - mark >= STALL_BYTES:
                        mark, since = got, now
                    elif now - since > STALL_SECONDS:
                        raise DownloadError(
                            f"download failed: {url}: stalled (less than {STALL_BYTES >> 20} MiB "
                            f"in {STALL_SECONDS:.0f} s)", hint="run the command again to resume it")
            if update:
                update(-1)
            if total is not None and got < total:
                raise DownloadError(
                    f"download failed: {url}: connection closed after {got} of {total} bytes",
                    hint="run the command again to resume the download",
                )
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # range past the end: the .part is already whole
            pass
        else:
            raise DownloadError(
                f"download failed: {url}: HTTP {e.code} {e.reason}",
                hint="pass a local file with --checkpoint PATH, or set SAM_BASE_URL to a mirror",
            ) from None
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk, not the network
            raise DownloadError(f"download failed: {part}: the disk is full ({e.strerror})",
                                hint="free some space, or set SAM_CACHE_DIR to another disk; "
                                "the download resumes") from None
        if not isinstance(e, (urllib.error.URLError, TimeoutError, ConnectionError)) and e.filename:
            raise DownloadError(f"download failed: {e.filename}: cannot write ({e.strerror})",
                                hint="set SAM_CACHE_DIR to a folder you can write") from None
        reason = getattr(e, "reason", e)
        raise DownloadError(
            f"download failed: {url}: {reason}",
            hint="no network? download the file elsewhere and pass --checkpoint PATH, "
            "or set SAM_BASE_URL to a mirror",
        ) from None
    except http.client.HTTPException:
        raise DownloadError(
            f"download failed: {url}: {reason}",
            hint="no network? download the file elsewhere and pass --checkpoint PATH, "
            "or set SAM_BASE_URL to a mirror",
        ) from None
    digest = sha256_file(part)
    want = expected_sha256(model)
    if digest != want:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"download failed: {url}: sha256 {digest} does not match the expected {want}",
            hint="the file was corrupted or is not Meta's; the partial file was removed",
        )
    os.replace(part, dest)
    _record_verified(dest, digest)
    return dest


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _record_verified(path: Path, digest: str) -> None:
    """Remember that `path` (as it is now: size and mtime) hashed to `digest`."""
    st = path.stat()
    _stamp(path).write_text(f"{digest} {st.st_size} {st.st_mtime_ns}\n")


def cache_status(model: ModelType) -> dict:
    """What the cache holds for `model`: path, present, bytes, verified (its recorded hash
    matches the expected one and the file has not changed since it was hashed)."""
    path = cached_path(model)
    out = {"model": model.name, "file": str(path), "cached": path.is_file(), "bytes": 0,
           "verified": False}
    if out["cached"]:
        st = path.stat()
        out["bytes"] = st.st_size
        try:
            digest, size, mtime = _stamp(path).read_text().split()
            out["verified"] = (
                digest == expected_sha256(model) and int(size) == st.st_size
                and int(mtime) == st.st_mtime_ns
            )
        except (OSError, ValueError):
            pass
    return out


def verify_cached(model: ModelType) -> bool:
    """Hash the cached file again; record and return whether it matches."""
    path = cached_path(model)
    if not path.is_file():
        raise CheckpointError(f"{path}: not downloaded", hint=f"run: sam models download {model.name}")
    digest = sha256_file(path)
    ok = digest == expected_sha256(model)
    if ok:
        _record_verified(path, digest)
    else:
        _stamp(path).unlink(missing_ok=True)
    return ok


# ---------------------------------------------------------------------------- loading


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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint's tensors without ever executing code from the file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if path.suffix == ".safetensors":
        sd = _read_safetensors(path)
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


def infer_arch(sd: dict[str, torch.Tensor], source: str = "checkpoint") -> ArchSpec:
    """Read the encoder architecture back from tensor shapes."""
    try:
        patch = sd["image_encoder.patch_embed.proj.weight"]  # dim×3×p×p
        pos = sd["image_encoder.pos_embed"]  # 1×g×g×dim
        neck = sd["image_encoder.neck.0.weight"]  # out×dim×1×1
    except KeyError as e:
        raise CheckpointError(
            f"{source}: not a SAM checkpoint (missing key {e.args[0]})"
        ) from None
    dim, patch_size, grid = patch.shape[0], patch.shape[-1], pos.shape[1]
    block_ids = sorted(
        {int(m.group(1)) for k in sd if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", k))}
    )
    if not block_ids or block_ids != list(range(len(block_ids))):
        raise CheckpointError(f"{source}: image encoder blocks are missing or not numbered 0..N-1")
    head_dim = None
    global_idx: list[int] = []
    window = 14
    for i in block_ids:
        key = f"image_encoder.blocks.{i}.attn.rel_pos_h"
        if key not in sd:
            raise CheckpointError(f"{source}: missing key {key}")
        rows, head_dim = sd[key].shape
        if rows == 2 * grid - 1:
            global_idx.append(i)
        else:
            window = (rows + 1) // 2
    assert head_dim is not None
    if dim % head_dim:
        raise CheckpointError(f"{source}: embed dim {dim} is not a multiple of head dim {head_dim}")
    return ArchSpec(
        embed_dim=dim, depth=len(block_ids), num_heads=dim // head_dim,
        global_attn_indexes=tuple(global_idx), img_size=grid * patch_size,
        patch_size=patch_size, window_size=window, prompt_embed_dim=neck.shape[0],
    )


def build_from_arch(arch: ArchSpec, device: str | torch.device = "cpu"):
    from .modeling import build_sam

    with torch.device(device):
        return build_sam(
            embed_dim=arch.embed_dim, depth=arch.depth, num_heads=arch.num_heads,
            global_attn_indexes=arch.global_attn_indexes, img_size=arch.img_size,
            patch_size=arch.patch_size, window_size=arch.window_size,
            prompt_embed_dim=arch.prompt_embed_dim,
        )


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
    net: Sam
    #: Names the weights for the embedding cache (and a run's record of what made its
    #: outputs): the checkpoint file's real path, size and modification time, taken before
    #: it was read, so another file put in its place has another id.
    weights_id: str | None
    checkpoint: Path


def load(
    *, model: str | None = None, checkpoint: str | Path | None = None,
    device: str | torch.device = "cpu", progress: ProgressFactory | None = None,
    dtype: str = "fp32",
) -> LoadedModel:
    """Load a SAM from a local checkpoint, or from the cache (downloading on first use).
    dtype "bf16" runs the heavy parts in bfloat16 (Sam.set_precision says which); prompts,
    IoU head and output logits stay float32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if checkpoint is None:
        name = model or DEFAULT_MODEL
        if name not in MODELS:
            raise CheckpointError(
                f"unknown model {name!r}", hint=f"choose one of {', '.join(MODELS)}"
            )
        checkpoint = download(MODELS[name], progress=progress)
    weights_id = _file_identity(checkpoint)
    sd = read_state_dict(checkpoint)
    arch = infer_arch(sd, str(checkpoint))
    # Built on the meta device, the model takes the file's tensors as its weights: no second
    # copy of them in memory, and with a mapped file (most .pth files) a weight is read from
    # disk only when first used; an embedding-cache hit never reads the image encoder's.
    net = build_from_arch(arch, "meta")
    load_state_dict_into(net, sd, str(checkpoint), assign=True)
    # pixel_mean/std are not in checkpoints
    from .modeling.sam import PIXEL_MEAN, PIXEL_STD

    net.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(-1, 1, 1), False)
    net.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(-1, 1, 1), False)
    left = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"not loaded from the checkpoint: {', '.join(left[:3])}")
    net = net.to(device).eval()
    if dtype == "bf16":
        net.set_precision(torch.bfloat16)
    return LoadedModel(net, weights_id, Path(checkpoint))


def load_model(**kwargs) -> Sam:
    """load(...)'s model alone (same arguments)."""
    return load(**kwargs).net


def _file_identity(path: str | Path) -> str | None:
    """A checkpoint's _file_stat as a string, taken before it is read: another file put in its
    place changes it. None if it cannot be read (loading then fails with its own error)."""
    st = _file_stat(path)
    return None if st is None else repr(st)


def _file_stat(path: str | Path) -> tuple[str, int, int] | None:
    """(real path, size, modification time in ns) of a file, or None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (os.path.realpath(path), st.st_size, st.st_mtime_ns)
