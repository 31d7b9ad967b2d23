"""Shards (--shard I/N, the Slurm and Kubernetes environments) and `sam merge`: the outputs of
shards merged are byte for byte those of one plain run; a merge never builds on a missing
shard, a stale record or another run's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sam_cli.errors import PromptError
from sam_cli.shards import choose, from_env, parse, shard_of

from cli_helpers import run_sam, same_trees
from conftest import EXAMPLES

RUN_FORMATS = ("-f", "coco", "-f", "png", "-f", "yolo-seg", "-f", "cvat", "-f", "labelstudio")


def settings(ckpt) -> list:
    return ["-c", ckpt, "--points-per-side", "8", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
            "--polygons", *RUN_FORMATS]


def test_shard_of_is_stable_disjoint_and_complete():
    # a fixed hash, not Python's salted hash(): the same shard on every machine and rerun
    assert [shard_of(f"a/{k}.jpg", 4) for k in range(8)] == [shard_of(f"a/{k}.jpg", 4) for k in range(8)]
    assert shard_of("a/x.jpg", 7) == int.from_bytes(__import__("hashlib").sha256(b"a/x.jpg").digest()[:8],
                                                    "big") % 7
    rels = [f"d{k // 10}/img{k}.jpg" for k in range(300)]
    parts = [[r for r in rels if parse(f"{i}/3").has(r)] for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(rels) and all(40 < len(p) < 160 for p in parts)


def test_shard_from_option_and_environment():
    assert str(parse("2/5")) == "2/5"
    for bad in ("5/5", "-1/2", "1/0", "a/b", "3"):
        with pytest.raises(PromptError, match="--shard"):
            parse(bad)
    assert choose("0/1") is None and choose(None, {}) is None
    # Slurm numbers tasks from SLURM_ARRAY_TASK_MIN, in steps (--array=1-7:2 gives 1, 3, 5, 7)
    s = from_env({"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "1",
                  "SLURM_ARRAY_TASK_STEP": "2"})
    assert (s.index, s.count) == (2, 4) and "SLURM_ARRAY_TASK_ID=5" in s.source
    k = from_env({"JOB_COMPLETION_INDEX": "3", "SAM_SHARD_COUNT": "8"})
    assert (k.index, k.count) == (3, 8)
    with pytest.raises(PromptError, match="SAM_SHARD_COUNT"):
        from_env({"JOB_COMPLETION_INDEX": "3"})
    assert choose("1/2", {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "4"}).count == 2  # the option wins


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_shards_then_merge_equal_a_plain_run(coherent_ckpt, tmp_path):
    """(a) one plain run, (b) three shards, the second given by a Slurm array's environment,
    then `sam merge`: the same files, byte for byte (per-image outputs, coco.json, yolo-seg's
    labels, CVAT's XML, Label Studio's tasks). Every process on one thread: a CPU's float sums
    follow its thread count (a score's last digits), and --devices cpu,cpu splits the cores."""
    one = {"SAM_THREADS": "1"}
    plain, split = tmp_path / "plain", tmp_path / "split"
    p = run_sam("auto", EXAMPLES, "-o", plain, *settings(coherent_ckpt), env=one)
    assert p.returncode == 0, p.stderr
    lines = []
    for i in range(3):
        env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "3", **one} if i == 1 else one
        args = [] if i == 1 else ["--shard", f"{i}/3"]
        p = run_sam("auto", EXAMPLES, "-o", split, *settings(coherent_ckpt), *args, env=env)
        assert p.returncode == 0, p.stderr
        err = p.stderr.decode()
        assert f"shard {i}/3: wrote {split / 'sam-shards' / f'{i}-of-3.json'}" in err and "coco.json" not in err
        if i == 1:
            assert "shard 1/3 (from SLURM_ARRAY_TASK_ID=1 of SLURM_ARRAY_TASK_COUNT=3)" in err
        lines += [json.loads(x) for x in p.stdout.decode().splitlines()]
    assert sorted(x["input"] for x in lines) == sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
    assert not (split / "coco.json").exists()
    p = run_sam("merge", split)
    assert p.returncode == 0, p.stderr
    assert f"wrote {split / 'coco.json'}" in p.stderr.decode() and "merged 3 shards: 4 images" in p.stderr.decode()
    assert same_trees(plain, split) == []
    # (c) two worker processes, two CPUs standing in for two GPUs: the run-level outputs at its end
    workers = tmp_path / "workers"
    p = run_sam("auto", EXAMPLES, "-o", workers, *settings(coherent_ckpt), "--devices", "cpu,cpu", env=one)
    assert p.returncode == 0, p.stderr
    assert sorted(json.loads(x)["input"] for x in p.stdout.decode().splitlines()) == \
        sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
    assert same_trees(plain, workers) == []
    # (d) on a local Ray (started by sam, in the test's process tree; usage stats off)
    on_ray = tmp_path / "ray"
    p = run_sam("auto", EXAMPLES, "-o", on_ray, *settings(coherent_ckpt), "--ray", "local",
                env={"RAY_USAGE_STATS_ENABLED": "0", **one})
    assert p.returncode == 0, p.stderr
    assert p.stderr.decode().startswith("ray: 1 actor, 0 GPU and ")
    assert sorted(json.loads(x)["input"] for x in p.stdout.decode().splitlines()) == \
        sorted(str(p) for p in EXAMPLES.glob("*.jpg"))
    assert same_trees(plain, on_ray) == []


def _launch(cmd: list[str]):
    import os
    import subprocess

    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1", "RAY_USAGE_STATS_ENABLED": "0"})


def _copies(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for k in range(n):
        shutil.copy(EXAMPLES / "chelsea.jpg", src / f"c{k:02d}.jpg")
    return src


@pytest.mark.heavy  # workers killed and started again: CI runs it after the default run
def test_a_killed_ray_actor_is_restarted_and_the_job_completes(tiny_ckpt, tmp_path):
    """--ray local over 9 images (3 batches), the actor killed (SIGKILL) once the first batch
    is reported: Ray restarts it and retries the batch it held; every image is reported once
    and the outputs are a plain run's, nothing half-written."""
    import os
    import signal
    import sys

    src = _copies(tmp_path, 8)
    (src / "broken.jpg").write_bytes(b"not a jpeg")  # a failed row, not a failed job
    args = [src, "-c", tiny_ckpt, "--points-per-side", "10", "-f", "coco", "-f", "png"]
    plain = run_sam("auto", *args, "-o", tmp_path / "plain")
    assert plain.returncode == 5, plain.stderr
    proc = _launch([sys.executable, "-m", "sam_cli", "auto", *map(str, args), "-o", str(tmp_path / "out"),
                    "--ray", "local"])
    before = []  # up to the first image done (the broken file may come first)
    while not before or b'"status": "ok"' not in before[-1]:
        before.append(proc.stdout.readline())
        assert before[-1], proc.stderr.read()
    actors = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()
              and b"MapBatches(Segmenter)" in _cmdline(p)]
    assert len(actors) == 1
    os.kill(actors[0], signal.SIGKILL)
    out, err = _rest(proc)
    assert proc.returncode == 5, err
    assert not [x for x in before + out.splitlines() if not x.startswith(b"{")], out  # stdout: JSON alone
    rows = [json.loads(x) for x in before + out.splitlines()]
    assert sorted(r["input"] for r in rows) == sorted(str(p) for p in src.glob("*.jpg"))  # each once
    assert [r["input"] for r in rows if r["status"] == "failed"] == [str(src / "broken.jpg")]
    assert same_trees(tmp_path / "plain", tmp_path / "out") == []
    assert not [p for p in (tmp_path / "out").rglob(".*") if p.name.endswith(".tmp")]


def _rest(proc) -> tuple[bytes, bytes]:
    """What a process still writes, once it ends: read through the same buffered files as the
    lines read before (communicate() would read the pipes beneath them and lose what they
    had buffered). Its stderr is small, so reading stdout first cannot block it."""
    out = proc.stdout.read()
    err = proc.stderr.read()
    proc.wait(timeout=300)
    return out, err


def _cmdline(p: Path) -> bytes:
    try:
        return (p / "cmdline").read_bytes()
    except OSError:
        return b""


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_collisions_are_caught_across_workers(tiny_ckpt, tmp_path):
    """Two folders with an x.jpg each: their outputs would share a name. A plain run fails the
    second; so does a run over two workers, which could otherwise each write it."""
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / d / "x.jpg")
    p = run_sam("auto", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out", "-c", tiny_ckpt,
                "--points-per-side", "4", "--devices", "cpu,cpu")
    assert p.returncode == 5
    assert f"{tmp_path / 'b' / 'x.jpg'}: its outputs (x.jpg) would overwrite those of" in p.stderr.decode()
    assert [json.loads(x)["status"] for x in p.stdout.decode().splitlines()] == ["failed", "ok"]


def test_ray_missing_is_a_clear_error(tiny_ckpt, tmp_path):
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    import os

    p = run_sam("auto", EXAMPLES, "-o", tmp_path / "out", "-c", tiny_ckpt, "--ray", "local",
                env={"PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])})
    assert p.returncode == 2
    assert p.stderr.decode().strip().splitlines()[-1] == \
        "Error: --ray needs Ray, which is not installed (pip install 'segment-anything-cli[ray]')"
    p = run_sam("auto", EXAMPLES, "-o", tmp_path / "out", "-c", tiny_ckpt, "--ray", "local", "--devices", "cpu,cpu")
    assert p.returncode == 2 and "--ray and --devices both spread the work" in p.stderr.decode()


@pytest.mark.heavy  # workers killed and started again: CI runs it after the default run
def test_a_killed_worker_is_started_again(tiny_ckpt, tmp_path):
    """--devices cpu,cpu over 8 images, one worker killed (SIGKILL) once the first image is
    done: it is started again over the images it had not reported, and the run ends whole,
    each image reported once, with the outputs of a plain run (every process on one thread, as in
    test_shards_then_merge_equal_a_plain_run)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    src = _copies(tmp_path, 8)
    args = [src, "-c", tiny_ckpt, "--points-per-side", "10", "-f", "coco", "-f", "png"]
    one = {"SAM_THREADS": "1"}
    plain = run_sam("auto", *args, "-o", tmp_path / "plain", env=one)
    assert plain.returncode == 0, plain.stderr
    cmd = [sys.executable, "-m", "sam_cli", "auto", *map(str, args), "-o", str(tmp_path / "out"), "--devices", "cpu,cpu"]
    env = {**os.environ, "NO_COLOR": "1", **one}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()
    assert b'"status": "ok"' in first

    def workers() -> list[int]:
        kids = []
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            kids += [int(k) for k in (task / "children").read_text().split()]
        return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]

    victims = workers()
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    out, err = _rest(proc)
    lines = [first] + out.splitlines()
    assert proc.returncode == 0, err
    assert "ended (exit code -9); starting it again" in err.decode()
    inputs = [json.loads(x)["input"] for x in lines]
    assert sorted(inputs) == sorted(str(p) for p in src.glob("*.jpg"))  # each once
    assert same_trees(tmp_path / "plain", tmp_path / "out") == []
    # the parent (the driver) killed instead: its workers end with it, and a rerun resumes
    proc = subprocess.Popen([*cmd[:-4], "-o", str(tmp_path / "again"), "--devices", "cpu,cpu"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    assert b'"status": "ok"' in proc.stdout.readline()
    victims = workers()
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 20
    while any(Path(f"/proc/{v}").exists() and b"spawn_main" in _cmdline(Path(f"/proc/{v}")) for v in victims):
        assert time.monotonic() < deadline, "workers outlived their killed parent"
        time.sleep(0.1)
    p = run_sam("auto", *args, "-o", tmp_path / "again", "--devices", "cpu,cpu", env=one)
    assert p.returncode == 0, p.stderr
    statuses = [json.loads(x)["status"] for x in p.stdout.decode().splitlines()]
    assert len(statuses) == 8 and "skipped" in statuses and "ok" in statuses
    assert same_trees(tmp_path / "plain", tmp_path / "again") == []


def test_merge_refuses_missing_stale_or_foreign_shards(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    base = ["-c", tiny_ckpt, "--points-per-side", "4", "-f", "coco"]
    p = run_sam("merge", out)
    assert p.returncode == 2 and "no shard records" in p.stderr.decode()
    for i in (0, 2):
        assert run_sam("auto", EXAMPLES, "-o", out, *base, "--shard", f"{i}/3").returncode == 0
    p = run_sam("merge", out)
    assert p.returncode == 2 and "shard 1/3 not finished" in p.stderr.decode(), p.stderr
    assert not (out / "coco.json").exists()
    assert run_sam("auto", EXAMPLES, "-o", out, *base, "--shard", "1/2").returncode == 0
    p = run_sam("merge", out)
    assert p.returncode == 2 and "split 2 and 3 ways" in p.stderr.decode(), p.stderr
    (out / "sam-shards/1-of-2.json").unlink()
    assert run_sam("auto", EXAMPLES, "-o", out, *base, "--shard", "1/3", "-f", "cvat").returncode == 0
    p = run_sam("merge", out)
    assert p.returncode == 2 and "other formats" in p.stderr.decode(), p.stderr
    # a shard of other settings: refused at its start, the folder's record unchanged
    p = run_sam("auto", EXAMPLES, "-o", out, *base, "--shard", "1/3", "--points-per-side", "5")
    assert p.returncode == 2 and "made by another run" in p.stderr.decode()


def test_merge_of_shards_with_a_failed_image(tiny_ckpt, tmp_path):
    src = tmp_path / "in"
    shutil.copytree(EXAMPLES, src)
    (src / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out"
    codes = [run_sam("auto", src, "-o", out, "-c", tiny_ckpt, "--points-per-side", "4", "-f", "coco",
                     "--shard", f"{i}/2").returncode for i in range(2)]
    assert sorted(codes) == [0, 5]  # the shard holding the broken file says so
    p = run_sam("merge", out)
    err = p.stderr.decode()
    assert p.returncode == 5 and "merged 2 shards: 4 images, 1 failed" in err and "broken.jpg" in err
    coco = json.loads((out / "coco.json").read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == sorted(x.name for x in EXAMPLES.glob("*.jpg"))
