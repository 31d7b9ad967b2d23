"""Pick the compute device and thread count."""

from __future__ import annotations

import ctypes
import os
import sys

import torch

from .errors import SamError


class DeviceError(SamError):
    """The requested device is not available here."""


def resolve_device(name: str) -> torch.device:
    """'auto' → cuda if present, else mps, else cpu; a named device must be available."""
    name = name.lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: no CUDA device is available", hint="use --device cpu")
    if name.startswith("cuda:") and name[5:].isdigit() and int(name[5:]) >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise DeviceError(f"--device {name}: this machine has {n} CUDA device{'s' if n != 1 else ''} "
                          f"(cuda:0 to cuda:{n - 1})")
    if name == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise DeviceError("--device mps: Apple MPS is not available", hint="use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name}: unknown device", hint="use auto, cpu, cuda or mps") from None


def slow_bf16_note(device: torch.device) -> str | None:
    """A one-line note when bfloat16 would run slower than float32 on `device`: a CPU without
    native bfloat16 arithmetic (AVX512-BF16 or AMX on x86) emulates it. None otherwise."""
    if device.type != "cpu":
        return None
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        native = False
    if native:
        return None
    return ("note: this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX), so "
            "--dtype bf16 will be slower than fp32 here")


def configure_threads() -> int:
    """Use every core for intra-op work unless the user set OMP_NUM_THREADS / SAM_THREADS."""
    env = os.environ.get("SAM_THREADS")
    if env and env.isdigit() and int(env) > 0:
        torch.set_num_threads(int(env))
    elif "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
    return torch.get_num_threads()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters


def tune_allocator() -> bool:
    """Let glibc malloc keep large freed blocks for reuse instead of unmapping them.

    glibc serves every allocation above its mmap threshold (at most 32 MB, adjusted as blocks
    are freed) with fresh pages from the kernel, which are faulted in and zeroed again each
    time. The decoder's activations for a batch of prompts and the mask tensors are that size
    and are allocated thousands of times per image, so on the CPU this costs a fifth or more
    of automatic mode. Raising the mmap threshold to 256 MiB (trim threshold 512 MiB) puts
    such blocks on the heap, where freed memory is reused. Measured on a 12 MP automatic run
    (benchmarks/cpu.md): 46.6 s against 58–66 s with glibc's defaults, peak 2.6 GB against
    2.3 GB; with thresholds of 1 GiB / 2 GiB the peak varied from 2.3 to 4.3 GB between runs.
    Skipped when the user already tunes malloc (MALLOC_* or
    GLIBC_TUNABLES), preloads another allocator (LD_PRELOAD), sets SAM_MALLOC=system, or the
    C library is not glibc. Returns whether it changed anything.
    """
    env = os.environ
    if (
        not sys.platform.startswith("linux")
        or env.get("SAM_MALLOC", "").lower() == "system"
        or "GLIBC_TUNABLES" in env
        or env.get("LD_PRELOAD")
        or any(k.startswith("MALLOC_") for k in env)
    ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 256 << 20)) and bool(mallopt(_M_TRIM_THRESHOLD, 512 << 20))


def environment_info() -> dict:
    """Versions, the device 'auto' picks, threads, cache and download source."""
    import platform

    from . import __version__
    from .fetch import base_url, cache_dir

    cuda = torch.cuda.is_available()
    return {
        "sam": __version__, "python": platform.python_version(), "torch": torch.__version__,
        "device": str(resolve_device("auto")), "cuda": cuda,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "threads": configure_threads(), "cache": str(cache_dir()), "base_url": base_url(),
    }
