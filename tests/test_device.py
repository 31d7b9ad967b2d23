"""device.tune_allocator: on by default on glibc Linux, off when the user asks or already tunes
malloc. Run in subprocesses, since it changes the process's allocator settings."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "from sam_cli.device import tune_allocator; print(tune_allocator())"


def run(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD", "SAM_MALLOC")}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True,
                          text=True, check=True).stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc is Linux-only")
def test_tunes_glibc_by_default():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc")
    assert run({}) == "True"


@pytest.mark.parametrize("env", [
    {"SAM_MALLOC": "system"}, {"MALLOC_ARENA_MAX": "2"}, {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"},
])
def test_left_alone_when_the_user_chooses(env):
    assert run(env) == "False"


def test_slow_bf16_note_only_for_cpus_that_emulate_it(monkeypatch):
    import torch

    from sam_cli.device import slow_bf16_note

    assert slow_bf16_note(torch.device("cuda")) is None
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert slow_bf16_note(torch.device("cpu")) is None
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    note = slow_bf16_note(torch.device("cpu"))
    assert note is not None and "slower than fp32" in note and "\n" not in note
