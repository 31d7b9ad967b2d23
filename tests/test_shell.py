"""A citizen of the shell: man page, completions, streams, models, info."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from cli_helpers import run_sam
from conftest import EXAMPLES, REPO
from httpserver import FileServer

IN_CI = os.environ.get("CI") == "true"


def need(shell: str) -> str:
    path = shutil.which(shell)
    if path is None:
        if IN_CI:
            pytest.fail(f"{shell} must be installed in CI (.ci/run installs it)")
        pytest.skip(f"{shell} is not installed here")
    return path


def test_docs_are_generated_from_the_live_app():
    p = subprocess.run([sys.executable, REPO / "scripts/gen_docs.py", "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_man_page_renders_without_warnings():
    groff = shutil.which("groff")
    if groff is None and not IN_CI:
        pytest.skip("groff is not installed here")
    p = subprocess.run([groff, "-man", "-ww", "-z", str(REPO / "man/sam.1")], capture_output=True, text=True)
    assert p.returncode == 0 and p.stderr == ""
    text = (REPO / "man/sam.1").read_text()
    for needle in (".SH EXIT STATUS", ".SH ENVIRONMENT", ".SH FILES", ".SH EXAMPLES", "SAM_CACHE_DIR",
                   "\\-\\-points\\-per\\-side", ".B 130", "sam models"):
        assert needle in text


def test_bash_completion():
    bash = need("bash")
    script = f"""
source {REPO / 'completions/sam.bash'}
c() {{ COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _sam; echo "${{COMPREPLY[*]}}"; }}
c sam seg
c sam auto --points-per-s
c sam auto --model ''
c sam auto -f coco
c sam models ''
"""
    out = subprocess.run([bash, "-c", script], capture_output=True, text=True, cwd=REPO).stdout.splitlines()
    from sam_cli.registry import MODELS

    assert out == ["segment", "--points-per-side", " ".join(MODELS), "coco-rle coco", "download verify"]


def test_zsh_completion():
    zsh = need("zsh")
    script = f"""
compadd() {{ while [[ $1 == -* && $1 != -- ]]; do shift; done; [[ $1 == -- ]] && shift; print -r -- "$*"; }}
_files() {{ print -r -- FILES; }}
source {REPO / 'completions/_sam'}
words=(sam ''); CURRENT=2; _sam
words=(sam auto --device ''); CURRENT=4; _sam
words=(sam segment ''); CURRENT=3; _sam
words=(sam models download -); CURRENT=4; _sam
"""
    out = subprocess.run([zsh, "-fc", script], capture_output=True, text=True).stdout.splitlines()
    assert out == ["auto edges eval merge info segment export models", "auto cpu cuda mps", "FILES", "--quiet --help"]


def test_fish_completion():
    fish = need("fish")
    script = f"""
source {REPO / 'completions/sam.fish'}
complete -C 'sam seg'
complete -C 'sam auto --dty'
complete -C 'sam auto --dtype '
complete -C 'sam models v'
"""
    out = subprocess.run([fish, "--no-config", "-c", script], capture_output=True, text=True).stdout.splitlines()
    words = [line.split("\t")[0] for line in out]
    assert words == ["segment", "--dtype", "bf16", "fp32", "verify"]  # fish sorts


def test_help_does_not_import_torch():
    """TAB and --help must stay instant: no torch, numpy or OpenCV behind them."""
    for args in (["--help"], ["auto", "--help"], ["segment", "--help"], ["models", "--help"]):
        p = subprocess.run([sys.executable, "-X", "importtime", "-m", "sam_cli", *args],
                           capture_output=True, text=True)
        assert p.returncode == 0
        imported = {line.rsplit("|", 1)[-1].strip() for line in p.stderr.splitlines()}
        assert not imported & {"torch", "numpy", "cv2"}, args


def test_no_color():
    p = run_sam("--help", env={"NO_COLOR": "1", "FORCE_COLOR": "1", "TERM": "xterm-256color"})
    assert p.returncode == 0 and b"\x1b[" not in p.stdout
    assert b"Exit codes" in p.stdout


def test_pipeline_stdout_is_json_lines_and_progress_goes_to_stderr(tmp_path, tiny_ckpt):
    shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / "a.jpg")
    import cv2

    cv2.imwrite(str(tmp_path / "b.png"), cv2.imread(str(EXAMPLES / "coffee.jpg"))[:100, :150])
    cmd = (f"printf 'a.jpg\\nb.png\\n' | {sys.executable} -m sam_cli auto - -o out -c {tiny_ckpt} "
           "--points-per-side 2 --pred-iou-thresh 0 --stability-score-thresh 0 --box-nms-thresh 1 "
           "-f coco-rle --progress")
    p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    recs = [json.loads(line) for line in p.stdout.splitlines()]
    assert [(r["input"], r["status"], r["masks"]) for r in recs] == [("a.jpg", "ok", 12), ("b.png", "ok", 12)]
    assert "img" in p.stderr and "2 done" in p.stderr  # tqdm bar and summary on stderr
    assert "4 prompts decoded" in p.stderr  # the bar moves within an image (2×2 points)


def test_quiet_silences_stderr(tmp_path, tiny_ckpt):
    shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / "a.jpg")
    p = run_sam("auto", tmp_path / "a.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, "--points-per-side", "2", "-q")
    assert p.returncode == 0 and p.stderr == b""


def test_models_download_list_verify(tmp_path, tiny_ckpt):
    data = tiny_ckpt.read_bytes()
    with FileServer({"sam_vit_b_01ec64.pth": data}) as srv:
        env = {"SAM_BASE_URL": srv.url, "SAM_CACHE_DIR": str(tmp_path / "cache"),
               "SAM_SHA256_VIT_B": hashlib.sha256(data).hexdigest()}
        before = [json.loads(x) for x in run_sam("models", "--json", env=env).stdout.splitlines()]
        from sam_cli.registry import MODELS

        assert [(r["model"], r["cached"]) for r in before] == [(n, False) for n in MODELS]
        p = run_sam("models", "download", "vit_b", env=env)
        assert p.returncode == 0, p.stderr
        after = {r["model"]: r for r in map(json.loads, run_sam("models", "--json", env=env).stdout.splitlines())}
        assert after["vit_b"]["cached"] and after["vit_b"]["verified"] and after["vit_b"]["bytes"] == len(data)
        assert run_sam("models", "verify", env=env).stdout.decode().startswith("vit_b: ok ")
        (cached,) = (tmp_path / "cache").glob("sam_vit_b_01ec64*.pth")  # a mirror's: its hash in the name
        cached.write_bytes(data[:-10] + b"0123456789")
        p = run_sam("models", "verify", "vit_b", env=env)
        assert p.returncode == 4 and p.stdout.decode().startswith("vit_b: MISMATCH")


def test_info_json():
    """The device is the one `--device auto` picks on this host, whatever the host has."""
    from sam_cli.device import resolve_device

    p = run_sam("info", "--json")
    data = json.loads(p.stdout)
    assert data["device"] == str(resolve_device("auto")) and data["threads"] >= 1 and "cache" in data
