"""The benchmark and GPU-profile scripts, run on the tests' tiny model on the CPU.

They are what the performance figures come from, and the GPU ones otherwise run only when a
GPU is lent: a broken script found there costs that run's device time."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run_script(*args: str, timeout: int = 600) -> str:
    p = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


@pytest.mark.heavy  # a minute or more of CPU: CI runs it after the default run
def test_benchmark_quick_rows(tmp_path):
    """Every run: the rows that run sam's own command (folder: `sam auto` through the run
    engine, timed from its JSON lines as each image is written) and its core, on the tiny model."""
    out = run_script("scripts/benchmark.py", "--model", "tiny", "--rows", "encoder,auto-all,folder",
                     "--repeat", "1", "--points-per-side", "4", "--folder-images", "2",
                     "--folder-points-per-side", "4")
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    assert len(cells) == 3, out
    for c in cells:
        assert float(c[1]) > 0 and float(c[2]) > 0 and c[3].endswith("x"), c
    assert re.fullmatch(r"48/48 ref masks matched \(48 ours\), mean IoU 1\.0000", cells[1][4]), cells[1]


@pytest.mark.slow  # minutes: every row of the table (test_benchmark_quick_rows runs in every run)
def test_benchmark_table_agrees_with_the_reference(tmp_path):
    row_names = "encoder,boxes,auto-all,auto-default,folder,point-again,write-12mp,regions-12mp"
    out = run_script("scripts/benchmark.py", "--model", "tiny", "--rows", row_names,
                     "--repeat", "1", "--points-per-side", "4", "--folder-images", "2",
                     "--folder-points-per-side", "4", "--json", str(tmp_path / "b.json"),
                     "--save-checkpoint", str(tmp_path / "kept.pth"))
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    assert len(rows) == 8, out
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    for c in cells:
        assert float(c[1]) > 0 and float(c[2]) > 0 and c[3].endswith("x"), c
    l2 = float(re.search(r"rel\. L2 ([0-9.e+-]+)", cells[0][4]).group(1))
    assert l2 < 1e-4, cells[0]
    assert cells[1][4] == "100.000% pixels equal", cells[1]
    pattern = r"(\d+)/(\d+) ref masks matched \((\d+) ours\), mean IoU ([0-9.]+)"
    m = re.fullmatch(pattern, cells[2][4])
    assert m and m.group(1) == m.group(2) == m.group(3) == "48", cells[2]  # 16 points x 3 masks
    assert float(m.group(4)) >= 0.999, cells[2]
    # the default weights are made confident: masks pass the default filters, as in a real run
    m = re.fullmatch(pattern, cells[3][4])
    assert m and m.group(1) == m.group(2) == m.group(3) and int(m.group(1)) >= 1, cells[3]
    assert float(m.group(4)) >= 0.999, cells[3]
    assert "confident weights: mask logits x" in out
    # another point in a new process: sam from its embedding cache, the same mask
    assert cells[5][4] == "100.000% pixels equal", cells[5]
    assert re.search(r"--embedding-cache`, warm; [0-9.]+ s and [0-9]+ MB for the call", cells[5][0]), cells[5]
    # a 12 MP photo's masks written as PNGs: the same pixels as the reference's way
    assert cells[6][4] == "100.000% pixels equal", cells[6]
    assert "60 masks" in cells[6][0] and "threads)" in cells[6][0], cells[6]
    # --min-mask-region-area on them: every mask the same as the reference's, run for run
    m = re.fullmatch(r"(\d+)/(\d+) ref masks identical \((\d+) ours\)", cells[7][4])
    assert m and m.group(1) == m.group(2) == m.group(3) and int(m.group(1)) > 40, cells[7]
    for c in cells:  # each peak is its own process's, not the launcher's
        assert 0 < float(c[5]) < 4000 and 0 < float(c[6]) < 4000, c
    assert (tmp_path / "b.json").stat().st_size > 0
    # the kept checkpoint (gpu_check.sh profiles it) loads whole, and holds the benchmark's
    # confident weights: the tiny model's, with the mask and IoU heads changed
    from sam_cli.checkpoints import load_model, read_state_dict

    from reference import TINY, build_reference

    kept = load_model(checkpoint=tmp_path / "kept.pth")
    saved = read_state_dict(tmp_path / "kept.pth")
    own = kept.state_dict()
    assert set(saved) == set(own) and all(torch.equal(own[k], saved[k]) for k in saved)
    plain = build_reference(**TINY, seed=0).state_dict()
    changed = {k for k in saved if not torch.equal(saved[k], plain[k])}
    assert changed and all(k.startswith("mask_decoder.") for k in changed), sorted(changed)


@pytest.mark.heavy  # a minute or more of CPU: CI runs it after the default run
def test_gpu_profile_runs_on_the_cpu(tiny_ckpt):
    out = run_script("scripts/gpu_profile.py", "--device", "cpu", "--checkpoint", str(tiny_ckpt),
                     "--points-per-side", "4", "--encoder-batches", "1,2", "--decoder-batches", "8",
                     "--prompted-batch", "2")
    for what in ("decoder fp32, 16 prompts in batches of 8, all upscaled", "decoder bf16",
                 "encoder bf16, batch 2", "prompted:", "generate, 4x4, filters off",
                 "prepare_crops", "16 prompts in batches of", "layer norm bf16, image side",
                 "layer norm bf16, upscaling"):
        assert what in out, out
    # the per-step host times of generate(), from the generator's profiler labels
    for step in ("sam.prepare", "sam.encode", "sam.decode", "sam.full_res", "sam.nms", "sam.finalize"):
        assert re.search(rf"  {re.escape(step)} +\d+ calls, host +[0-9.]+ ms", out), (step, out)
    n = int(re.search(r"generate, 4x4, filters off: [0-9.]+ s/image, (\d+) masks", out).group(1))
    assert n >= 1, out


@pytest.mark.heavy  # a minute or more of CPU: CI runs it after the default run
def test_gpu_tests_pass_on_the_cpu():
    """tests/test_gpu.py's own dry run (tiny models, the CPU): the GPU tests run only where a
    GPU is lent, so a mistake in them would otherwise first show there."""
    import os

    env = {**os.environ, "SAM_GPU_TESTS_DEVICE": "cpu"}
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                        "tests/test_gpu.py"], cwd=REPO, capture_output=True, text=True, env=env,
                       timeout=900)
    assert p.returncode == 0, p.stdout[-4000:]
    assert re.search(r"\b7 passed\b", p.stdout) and "skipped" not in p.stdout, p.stdout[-2000:]


@pytest.mark.slow  # minutes: the CPU profiles behind benchmarks/cpu.md, not behaviour users see
def test_cpu_profile_decoder_and_masks_tables(tiny_ckpt):
    out = run_script("scripts/cpu_profile.py", "--decoder", "--checkpoint", str(tiny_ckpt),
                     "--decoder-batches", "4,16", "--rounds", "1")
    rows = re.findall(r"^\| (factored|plain) \| (\d+) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|$", out, re.M)
    assert [r[:2] for r in rows] == [("factored", "4"), ("factored", "16"), ("plain", "4"), ("plain", "16")], out
    assert "B×T×H×N, over T (sam on the CPU)" in out
    out = run_script("scripts/cpu_profile.py", "--decoder-ops", "--checkpoint", str(tiny_ckpt))
    assert re.search(r"^# mask decoder .*, one call of 16 point prompts, grid 43×64 \(chelsea.jpg\), all "
                     r"upscaled, \d+ threads: \d+ ms per call; matmul peak in this run \d+ GFLOP/s$", out, re.M), out
    share = re.search(r"^# matmuls: (\d+) % of the profiled time at \d+ GFLOP/s \(([0-9.]+) GFLOP per call\)", out, re.M)
    assert share and 0 < int(share[1]) < 100 and float(share[2]) > 10, out  # ~1.3 GFLOP per prompt
    assert re.search(r"^\| aten::addmm \| 256, 2752×256, 256×256 \| 16 \| [0-9.]+ \| [0-9.]+ % \| \d+ \|$", out, re.M), out
    out = run_script("scripts/cpu_profile.py", "--masks", "--tiles", "64")
    steps = re.findall(r"^\| (.+?) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+)x \|$", out, re.M)
    assert [s[0] for s in steps] == ["resize 256² logits → 12 MP", "count a mask's pixels (stability)",
                                     "rows and columns with pixels (boxes)"], out
    tiled = re.findall(r"^\| (.+?) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \|$", out, re.M)
    assert [t[0] for t in tiled][-1] == "noise (a random model's masks)" and len(tiled) == 9, out
    shares = {t[0]: float(t[2]) for t in tiled}
    assert shares["noise (a random model's masks)"] == 1.0
    assert shares["crisp, 3×4 blobs"] < shares["crisp, 24×32 blobs"] < 1.0
    out = run_script("scripts/cpu_profile.py", "--writes")
    writes = re.findall(r"^\| (coffee.jpg.*?) \| ([a-z-]+) \| ([0-9.]+|-) \| ([0-9.]+) \| ([0-9.]+x|-) \|$", out, re.M)
    assert [w[1] for w in writes] == ["png", "coco-rle", "label-map", "overlay"] * 2, out
    assert re.search(r"^\| none \(sam\) \| [0-9.]+ \| \d+ \|$", out, re.M), out
    out = run_script("scripts/cpu_profile.py", "--steps", "--checkpoint", str(tiny_ckpt), "--full-res", "dense",
                     "--points-per-side", "8")
    assert re.search(r"# automatic mode, 8x8, filters off, full resolution: dense: [0-9.]+ s, \d+ masks", out), out
    for step in ("sam.encode", "sam.decode", "sam.full_res", "sam.nms", "sam.run_edges"):
        assert re.search(rf"  {re.escape(step)} +\d+ calls, host +[0-9.]+ ms", out), (step, out)


def test_coherent_weights_make_region_masks(photo):
    """benchmark.py --weights coherent (tests/reference.make_coherent) turns a random model's
    pixel-noise masks into regions, so that the CPU's full-resolution step takes the path a
    trained model's masks take (TiledMasks upscales a minority of tiles) instead of the dense
    fallback that noise sends it to."""
    from segment_anything import SamPredictor

    from sam_cli.automatic.tiled import TiledMasks

    from reference import TINY, build_reference, make_coherent

    def logits(sam):
        pred = SamPredictor(sam)
        pred.set_image(photo)
        pts = torch.tensor([[[60.0, 80.0]], [[200.0, 150.0]], [[400.0, 250.0]]])
        coords = pred.transform.apply_coords_torch(pts, photo.shape[:2])
        with torch.no_grad():
            _, _, low = pred.predict_torch(coords, torch.ones(3, 1), multimask_output=True)
        return low.flatten(0, 1)  # 9×256×256

    def sign_changes(low):
        return float(((low[..., 1:] > 0) != (low[..., :-1] > 0)).float().mean())

    noise = logits(build_reference(**TINY, seed=0))
    regions = logits(make_coherent(build_reference(**TINY, seed=0)))
    assert sign_changes(noise) > 0.2 and sign_changes(regions) < 0.05
    # on a 12 MP photo, with the logits scaled as the benchmark's confident weights scale them
    frame = ((768, 1024), (3000, 4000), 1024)
    assert TiledMasks(noise[:, :193] * 512, *frame, 0.0, 1.0).undecided > 0.9
    assert TiledMasks(regions[:, :193] * 512, *frame, 0.0, 1.0).undecided < 0.5


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_bf16_drift_table(tiny_ckpt):
    out = run_script("scripts/bf16_drift.py", "--checkpoint", str(tiny_ckpt), "--points-per-side", "4")
    rows = re.findall(r"^\| (.+?) \| ([0-9.]+) \| ([0-9.]+) \| ([0-9.]+) \| [0-9.]+ \|$", out, re.M)
    assert [r[0] for r in rows] == [
        "encoder (attention and MLPs)", "encoder, all of it", "transformer (image side)",
        "transformer, tokens too", "upscaling", "all three (--dtype bf16)",
        "all three, all of them (--dtype bf16 before)"], out
    assert all(0.0 <= float(r[1]) <= 1.0 and float(r[3]) <= float(r[1]) for r in rows), out
    assert "48 masks in fp32" in out, out  # 4×4 points, 3 masks each, none dropped
    out = run_script("scripts/bf16_drift.py", "--checkpoint", str(tiny_ckpt), "--encoder-only",
                     "--repeat", "2")
    rows = re.findall(r"^\| (.+?) \| ([0-9.e+-]+) \| [0-9.]+ \|$", out, re.M)
    assert [r[0] for r in rows] == ["attention and MLPs (--dtype bf16)",
                                    "all of it (--dtype bf16 before)"], out
    assert all(0.0 < float(r[1]) < 0.1 for r in rows), out


@pytest.mark.heavy  # a minute of CPU: CI runs it after the default run
def test_bucket_and_scale_benches_run_and_their_outputs_agree():
    """scripts/bucket_bench.py (its own S3 server) and scripts/scale_bench.py at their smallest:
    every row's outputs byte for byte the disk run's, or the plain run's."""
    out = run_script("scripts/bucket_bench.py", "--images", "2", "--processes", "1")
    rows = [line for line in out.splitlines() if line.startswith("| 1 |")]
    assert [r.split(" | ")[1] for r in rows] == ["disk → disk", "bucket → disk", "bucket → bucket"], out
    assert all(r.rstrip(" |").endswith("identical") for r in rows[1:]), out
    out = run_script("scripts/scale_bench.py", "--model", "tiny", "--images", "2", "--no-ray")
    assert out.count("| identical |") == 2, out


@pytest.mark.heavy  # two processes loading transformers: CI runs it after the default run
def test_sam3_bench_runs_sam_beside_transformers_on_the_tiny_model():
    """scripts/sam3_bench.py at the tests' SAM 3 size (Ultralytics builds only the full size):
    every row timed for both tools, and transformers' detections paired with sam's."""
    out = run_script("scripts/sam3_bench.py", "--size", "tiny", "--tools", "sam,transformers", "--photos", "1")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    assert rows[0] == ["s/image (mean over the photos)", "sam", "transformers"], out
    timed = {r[0]: r[1:] for r in rows[1:]}  # the separator row starts "|-"
    assert list(timed)[:4] == ["image encoder", "detector, 1 phrase", "detector, 5 phrases",
                               "detector, 5 phrases, all kept"], out
    assert all(float(v) > 0 for r in timed.values() for v in r), out
    # 5 phrases × the tiny model's 12 queries, every one kept by both
    assert re.search(r"transformers beside sam, 5 phrases all kept: 60 / 60 kept; scores within \S+; "
                     r"mean mask IoU 0\.\d{4}", out), out


def test_sam2_bench_runs_sam_alone_with_no_peers():
    """--peers "" gives sam's own columns only (a rerun of sam's figures without the peers'
    minutes), in hiera_tiny's real architecture with random weights."""
    out = run_script("scripts/sam2_bench.py", "--models", "sam2.1_hiera_tiny", "--rows", "encoder",
                     "--peers", "", "--repeat", "1")
    assert "| model | row | sam s | sam peak MB |" in out, out
    assert re.search(r"^\| sam2\.1_hiera_tiny \| encoder \| [0-9.]+ \| \d+ \|$", out, re.M), out
