"""Nothing silently wrong, on the real CLI: reruns with other settings, sam's outputs read as
inputs, a file named twice, non-finite numbers, outputs that cannot be written, bad values,
signals and closed pipes, errors under --quiet."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess

import numpy as np
import pytest
import torch

from cli_helpers import SAM, four_photo_run, lines, run_sam
from conftest import EXAMPLES

FAST = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
        "--box-nms-thresh", "1.0"]


@pytest.fixture
def photos(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(EXAMPLES / name, d / name)
    return d


def test_a_rerun_with_other_settings_is_refused_unless_overwrite(photos, tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    first = run_sam("auto", photos, "-o", out, "-c", tiny_ckpt, *FAST, "-f", "coco-rle")
    assert first.returncode == 0
    record = json.loads((out / "sam-run.json").read_text())
    assert record["settings"]["pred_iou_thresh"] == 0.0 and record["dtype"] == "fp32"
    assert record["weights"].startswith(f"checkpoint {tiny_ckpt.resolve()} (")
    before = (out / "chelsea.jpg.json").read_bytes()
    # the same settings resume (another points-per-batch changes only speed)
    p = run_sam("auto", photos, "-o", out, "-c", tiny_ckpt, *FAST, "-f", "coco-rle", "--points-per-batch", "7")
    assert p.returncode == 0 and [(r["status"], r["masks"]) for r in lines(p)] == [("skipped", 27)] * 2
    p = run_sam("auto", photos, "-o", out, "-c", tiny_ckpt, *FAST, "-f", "coco-rle", "--pred-iou-thresh", "0.3")
    assert p.returncode == 2 and p.stdout == b""
    assert p.stderr.decode() == (
        f"Error: {out}: its outputs were made by another run (--pred-iou-thresh 0.0 there, 0.3 now) "
        "(add --overwrite to redo them with these settings, or choose another -o)\n")
    assert (out / "chelsea.jpg.json").read_bytes() == before
    p = run_sam("auto", photos, "-o", out, "-c", tiny_ckpt, *FAST, "-f", "coco-rle", "--pred-iou-thresh", "0.3",
                "--overwrite")
    assert p.returncode == 0 and [r["status"] for r in lines(p)] == ["ok"] * 2
    assert json.loads((out / "sam-run.json").read_text())["settings"]["pred_iou_thresh"] == 0.3


def test_a_run_whose_model_fails_to_load_leaves_the_folder_unclaimed(photos, tmp_path, tiny_ckpt):
    """The run record is written before the model loads; a model that does not load (a bad
    file, a failed download) writes no outputs, so the folder is not that run's: a new one is
    removed again, an existing one gets its record back, and a retry with other weights runs."""
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint" * 100)
    out = tmp_path / "out"
    p = run_sam("auto", photos, "-o", out, "-c", bad, *FAST)
    assert p.returncode == 4 and f"Error: {bad}: " in p.stderr.decode()
    assert not out.exists()
    p = run_sam("auto", photos, "-o", out, "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0 and [r["status"] for r in lines(p)] == ["ok"] * 2
    record = (out / "sam-run.json").read_bytes()
    # --overwrite with weights that fail: the folder keeps its outputs and its record
    p = run_sam("auto", photos, "-o", out, "-c", bad, *FAST, "--overwrite")
    assert p.returncode == 4
    assert (out / "sam-run.json").read_bytes() == record
    p = run_sam("auto", photos, "-o", out, "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0 and [r["status"] for r in lines(p)] == ["skipped"] * 2


def test_outputs_are_never_read_as_inputs(photos, tiny_ckpt):
    """`sam auto p -o p/masks` twice: the second run reads the two photos, not the masks."""
    for status in ("ok", "skipped"):
        p = run_sam("auto", photos, "-o", photos / "masks", "-c", tiny_ckpt, *FAST)
        assert p.returncode == 0, p.stderr
        assert [(r["input"], r["status"], r["masks"]) for r in lines(p)] == [
            (str(photos / "chelsea.jpg"), status, 27), (str(photos / "coffee.jpg"), status, 27)]
    assert f"not read as inputs (sam's own outputs): {photos / 'masks'}" in p.stderr.decode()
    # another run's output folder elsewhere in the inputs is left out too
    shutil.copytree(photos / "masks", photos / "old")
    p = run_sam("auto", photos, "-o", photos / "masks", "-c", tiny_ckpt, *FAST)
    assert len(lines(p)) == 2


def test_the_same_file_named_three_times_is_one_image(tmp_path, tiny_ckpt):
    shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / "a.jpg")
    p = run_sam("auto", "a.jpg", "a.jpg", "./a.jpg", "-o", "out", "-c", tiny_ckpt, *FAST, "-f", "coco", cwd=tmp_path)
    assert p.returncode == 0
    assert [r["status"] for r in lines(p)] == ["ok", "skipped", "skipped"]
    coco = json.loads((tmp_path / "out/coco.json").read_text())
    assert len(coco["images"]) == 1 and len(coco["annotations"]) == lines(p)[0]["masks"]


def strict_json(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")
    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_never_reach_json(tmp_path, tiny_reference):
    """A checkpoint whose IoU head gives NaN: the records say null, every JSON is valid; a
    mask prompt holding NaN is refused as bad input."""

    sd = {k: v.clone() for k, v in tiny_reference.state_dict().items()}
    sd["mask_decoder.iou_prediction_head.layers.2.bias"][:] = float("nan")
    ck = tmp_path / "nan.pth"
    torch.save(sd, ck)
    p = run_sam("segment", EXAMPLES / "chelsea.jpg", "-p", "100,100", "-o", tmp_path / "m.json", "-c", ck)
    assert p.returncode == 0, p.stderr
    assert strict_json(p.stdout.decode().splitlines()[0])["predicted_iou"] is None
    assert strict_json((tmp_path / "m.json").read_text())[0]["predicted_iou"] is None
    bad = np.zeros((256, 256), np.float32)
    bad[3, 4] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    p = run_sam("segment", EXAMPLES / "chelsea.jpg", "--mask-input", tmp_path / "bad.npy", "-o", tmp_path / "m.png",
                "-c", ck)
    assert p.returncode == 3
    assert p.stderr.decode() == f"Error: {tmp_path / 'bad.npy'}: mask logits must be finite numbers (it holds NaN or infinity)\n"
    for arr in (np.zeros(0, np.float32), np.zeros(3, dtype=[("a", "i4"), ("b", "f4")])):
        np.save(tmp_path / "odd.npy", arr)
        p = run_sam("segment", EXAMPLES / "chelsea.jpg", "--mask-input", tmp_path / "odd.npy", "-o",
                    tmp_path / "m.png", "-c", ck)
        assert p.returncode == 3 and "odd.npy: " in p.stderr.decode() and "report it" not in p.stderr.decode()
    from sam_cli.io.writers import json_bytes

    assert json_bytes({"a": [1.5, math.inf, {"b": math.nan}]}) == b'{"a":[1.5,null,{"b":null}]}'


def test_outputs_that_cannot_be_written_fail_before_the_model_loads(tmp_path, photos):
    """A checkpoint that does not exist would fail with exit 4: the output's exit 7 comes first."""
    missing = tmp_path / "missing.pth"
    (tmp_path / "file").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    cases = [
        (["auto", photos, "-o", tmp_path / "file/out"], f"{tmp_path / 'file/out'}: {tmp_path / 'file'} is a file, not a folder"),
        (["auto", photos, "-o", tmp_path / "dangling"],
         f"{tmp_path / 'dangling'}: a link to {tmp_path / 'nowhere'}, which does not exist"),
        (["segment", photos / "chelsea.jpg", "-p", "1,1", "-o", tmp_path / "file/m.png"],
         f"{tmp_path / 'file/m.png'}: its folder {tmp_path / 'file'}: exists and is not a folder"),
    ]
    for args, err in cases:
        p = run_sam(*args, "-c", missing)
        assert (p.returncode, p.stderr.decode()) == (7, f"Error: {err}\n")


@pytest.mark.parametrize("args, err", [
    (["--box-nms-thresh", "nan"], "--box-nms-thresh nan: must be a finite number"),
    (["--pred-iou-thresh", "1.5"], "--pred-iou-thresh 1.5: must be from 0 (off) to 1"),
    (["--crop-nms-thresh", "0"], "--crop-nms-thresh 0.0: must be above 0 and at most 1 (1: off)"),
    (["--crop-overlap-ratio", "1"], "--crop-overlap-ratio 1.0: must be from 0 to below 1"),
    (["--crop-n-layers", "9"], "--crop-n-layers 9: must be at most 3 (85 crops an image)"),
    (["--points-per-side", "100000"], "--points-per-side 100000: must be at most 1024"),
])
def test_bad_settings_are_usage_errors(photos, tmp_path, args, err):
    p = run_sam("auto", photos, "-o", tmp_path / "out", *args)
    assert (p.returncode, p.stderr.decode()) == (2, f"Error: {err}\n")
    assert not (tmp_path / "out").exists()


def test_sigterm_stops_like_ctrl_c_and_the_rerun_finishes(tmp_path, tiny_ckpt):
    args = [*four_photo_run(tmp_path, tiny_ckpt), "-o", tmp_path / "out"]
    proc = subprocess.Popen([str(SAM), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert json.loads(proc.stdout.readline())["status"] == "ok"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.decode().endswith("Terminated.\n")
    assert not list((tmp_path / "out").rglob(".*")), "no temporary files left"
    p = run_sam(*args)
    assert p.returncode == 0 and sorted({r["status"] for r in lines(p)}) in (["ok", "skipped"], ["skipped"])
    assert len(list((tmp_path / "out").glob("*.jpg.json"))) == 4


def test_a_closed_pipe_ends_quietly(photos, tiny_ckpt):
    for cmd in (f"auto '{photos}' -o '{photos}/out'", f"segment '{photos}/chelsea.jpg' -b 1,1,90,90 -b 5,5,99,99 -o m.png"):
        p = subprocess.run(["bash", "-c", f"'{SAM}' {cmd} -c '{tiny_ckpt}' {' '.join(FAST) if 'auto' in cmd else ''} "
                            "| head -c 1; exit ${PIPESTATUS[0]}"], capture_output=True, timeout=300, cwd=photos)
        assert p.stdout == b"{" and b"Traceback" not in p.stderr and b"Error" not in p.stderr, p.stderr
        assert p.returncode == 0, p.stderr


def test_quiet_still_says_which_inputs_failed_and_debug_goes_anywhere(photos, tiny_ckpt):
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    p = run_sam("auto", photos, "-o", photos.parent / "out", "-c", tiny_ckpt, *FAST, "-q", "--debug")
    assert p.returncode == 5
    assert p.stderr.decode() == f"Error: {photos / 'broken.jpg'}: cannot read image (unsupported format or corrupt file)\n"


def test_help_shows_defaults_as_written_and_whole_examples():
    text = run_sam("auto", "--help").stdout.decode()
    flat = " ".join(text.split())
    assert text.startswith("Usage: sam auto [OPTIONS] INPUTS...\n") and "{" not in text.splitlines()[0]
    assert "0.3413333" not in text and "[default: 0.3413 (512/1500)]" in flat
    assert "\n    find photos -name '*.jpg' | sam auto - -o out --format coco\n" in text
    seg = run_sam("segment", "--help").stdout.decode()
    assert "    sam segment photo.jpg --point 320,240 --multimask -o mask.png   # mask_0.png … mask_2.png\n" in seg


def test_readme_exit_codes_are_the_programs():
    from sam_cli.cli.exitcodes import DESCRIPTIONS

    from conftest import REPO

    rows = [line for line in (REPO / "README.md").read_text().splitlines() if line.startswith("| ")]
    table = {int(c): d.replace("`", "") for c, d in
             (r.strip("| ").split(" | ", 1) for r in rows if r.split("|")[1].strip().isdigit())}
    assert table == {int(c): d for c, d in DESCRIPTIONS.items()}


def _png_declaring(w: int, h: int) -> bytes:
    """A PNG whose header declares w×h gray pixels, with a few rows of real data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * ((w + 1) * 4))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def test_decompression_bombs_are_refused_from_the_header(photos, tiny_ckpt, tmp_path):
    (photos / "bomb.png").write_bytes(_png_declaring(30000, 30000))
    p = run_sam("auto", photos, "-o", tmp_path / "out", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 5
    assert [r["status"] for r in lines(p)] == ["failed", "ok", "ok"]
    assert (f"Error: {photos / 'bomb.png'}: 30000×30000 pixels is more than the limit of 200,000,000 "
            "(--max-pixels or SAM_MAX_PIXELS raises it)") in p.stderr.decode()
    (tmp_path / "huge.png").write_bytes(_png_declaring(50000, 50000))
    p = run_sam("segment", tmp_path / "huge.png", "-p", "1,1", "-o", tmp_path / "m.png", "-c", tiny_ckpt,
                "--max-pixels", "3000000000")  # raised past OpenCV's own limit: still one line
    assert (p.returncode, p.stderr.decode()) == (
        3, f"Error: {tmp_path / 'huge.png'}: cannot read image (too large for OpenCV, or corrupt)\n")


def test_a_killed_runs_leftovers_are_removed_by_the_next_run(tmp_path, tiny_ckpt, photos):
    """SIGKILL leaves temporary files and folders (.x.jpg.masks.HOST.PID.TID.tmp); the next
    run removes those whose process is gone, and leaves a live writer's alone."""
    from sam_cli.io import writers

    out = tmp_path / "out"
    assert run_sam("auto", photos, "-o", out, "-c", tiny_ckpt, *FAST).returncode == 0
    dead = subprocess.Popen(["true"])  # a process that has ended
    dead.wait()
    host = writers._HOST
    (out / f".chelsea.jpg.masks.{host}.{dead.pid}.1.tmp").mkdir()
    (out / f".chelsea.jpg.masks.{host}.{dead.pid}.1.tmp/0.png").write_bytes(b"half")
    (out / f".coffee.jpg.json.{host}.{dead.pid}.7.tmp").write_bytes(b"{half")
    live = out / f".other.json.{host}.{os.getpid()}.7.tmp"  # this test's own: alive
    live.write_bytes(b"{")
    elsewhere = out / f".x.json.otherhost.{dead.pid}.7.tmp"  # another machine's: not ours to judge
    elsewhere.write_bytes(b"{")
    p = run_sam("auto", photos, "-o", out, "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0
    assert f"removed 2 temporary file(s) that a killed run left in {out}" in p.stderr.decode()
    assert sorted(x.name for x in out.iterdir() if x.name.startswith(".")) == sorted([live.name, elsewhere.name])


def test_a_full_disk_fails_the_image_and_the_run_reports_it(photos, tmp_path, tiny_ckpt, monkeypatch, capsys):
    import errno

    from sam_cli.cli import app
    from sam_cli.io import writers

    real = writers.write_json

    def full(path, obj):
        if "coffee" in str(path):
            raise writers.OutputError(f"{path}: cannot write ({errno.errorcode[errno.ENOSPC]})")
        return real(path, obj)

    monkeypatch.setattr(writers, "write_json", full)
    with pytest.raises(SystemExit) as e:
        app.main(["auto", str(photos), "-o", str(tmp_path / "out"), "-c", str(tiny_ckpt), "--device", "cpu",
                  "-f", "coco-rle", *FAST])
    assert e.value.code == 5
    err = capsys.readouterr().err
    assert "1 done, 0 skipped (already done), 1 failed" in err
    # named once, where it happened, not again in the summary
    assert err.count(f"Error: {tmp_path / 'out/coffee.jpg.json'}: cannot write (ENOSPC)\n") == 1
    assert err.count("coffee.jpg.json") == 1


def test_an_end_of_run_output_that_cannot_be_written_is_reported(photos, tmp_path, tiny_ckpt):
    (tmp_path / "out").mkdir()
    (tmp_path / "out/coco.json").mkdir()  # in the way of the file
    p = run_sam("auto", photos, "-o", tmp_path / "out", "-c", tiny_ckpt, *FAST, "-f", "coco")
    assert p.returncode == 5 and [r["status"] for r in lines(p)] == ["ok", "ok"]
    err = p.stderr.decode()
    assert f"Error: {tmp_path / 'out/coco.json'}: cannot write" in err
    assert "2 done, 0 skipped (already done), 0 failed\n1 end-of-run output could not be written (named above)" in err


def test_gifs_are_read_in_folders_and_other_files_are_counted(photos, tmp_path, tiny_ckpt):
    from PIL import Image

    Image.open(EXAMPLES / "chelsea.jpg").save(photos / "anim.gif")
    (photos / "notes.txt").write_text("not an image")
    (photos / "README").write_text("not an image either")
    p = run_sam("auto", photos, "-o", tmp_path / "out", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0
    assert [(r["input"], r["status"]) for r in lines(p)][0] == (str(photos / "anim.gif"), "ok")
    assert "not read: 2 files that are not images (1 (none), 1 .txt)" in p.stderr.decode()


def test_many_boxes_are_upscaled_and_written_a_chunk_at_a_time(tmp_path, tiny_ckpt, monkeypatch, capsys):
    """sam segment with 40 boxes: no upscale holds more than one decoder call's objects
    (16 on the CPU), and the masks are those of one whole predict() call."""
    from sam_cli import upscale as P  # the models' upscale() calls it
    from sam_cli.checkpoints import load_model
    from sam_cli.cli import app
    from sam_cli.io.images import read_image

    boxes = [f"{10 + i * 9},{20 + i % 7},{60 + i * 9},{120 + i % 5}" for i in range(40)]
    sizes = []
    real = P.upscale_logits
    monkeypatch.setattr(P, "upscale_logits", lambda low, *a, **k: sizes.append(low.shape[0]) or real(low, *a, **k))
    args = ["segment", str(EXAMPLES / "chelsea.jpg"), "-o", str(tmp_path / "m.json"), "-c", str(tiny_ckpt),
            "--device", "cpu", "--overlay", str(tmp_path / "o.png")]
    for b in boxes:
        args += ["--box", b]
    with pytest.raises(SystemExit) as e:
        app.main(args)
    assert e.value.code == 0 and sizes == [16, 16, 8]
    recs = json.loads((tmp_path / "m.json").read_text())
    assert [r["object_index"] for r in recs] == list(range(40))
    from sam_cli.predictor import Predictor

    p = Predictor(load_model(checkpoint=tiny_ckpt))
    p.set_image(read_image(EXAMPLES / "chelsea.jpg"))
    whole = p.predict(boxes=np.array([[float(v) for v in b.split(",")] for b in boxes]), multimask=False,
                      low_res=False)
    from sam_cli import masks as M

    assert [r["segmentation"] for r in recs] == [M.mask_to_coco(m[0]) for m in whole.masks]
    assert [json.loads(x)["object_index"] for x in capsys.readouterr().out.splitlines()] == list(range(40))


def test_the_hosts_allocator_failing_is_out_of_memory(tmp_path, tiny_ckpt, monkeypatch, capsys):
    from sam_cli import upscale as P
    from sam_cli.cli import app

    def refuse(*a, **kw):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 12884901888 bytes.")

    monkeypatch.setattr(P, "upscale_logits", refuse)
    with pytest.raises(SystemExit) as e:
        app.main(["segment", str(EXAMPLES / "chelsea.jpg"), "-p", "10,10", "-o", str(tmp_path / "m.png"),
                  "-c", str(tiny_ckpt), "--device", "cpu"])
    assert e.value.code == 8 and capsys.readouterr().err.startswith("Error: out of memory: ")


def test_readme_environment_variables_are_the_man_pages():
    """The README's table names the variables the man page (scripts/gen_docs.py) documents."""
    import re
    import sys

    from conftest import REPO

    sys.path.insert(0, str(REPO / "scripts"))
    from gen_docs import ENVIRONMENT

    text = (REPO / "README.md").read_text()
    section = text[text.index("## Environment"):text.index("## Development")]
    readme = set(re.findall(r"`((?:SAM|NO)_[A-Z0-9_]+)`", section)) | {
        "SAM_SHA256" + s for s in re.findall(r"`(_VIT_[LH])`", section)}
    man = {v.strip() for names, _ in ENVIRONMENT for v in names.split(",")}
    man = {v if v.startswith(("SAM", "NO")) else "SAM_SHA256" + v for v in man}
    assert readme == man


def test_two_runs_writing_one_folder_leave_whole_outputs(photos, tmp_path, tiny_ckpt):
    """Two processes on the same inputs and folder (as shards that overlap would be): each
    file is written under its own temporary name and renamed, so whatever order they finish
    in, every output is whole and a third run finds everything done."""
    args = [str(SAM), "auto", str(photos), "-o", str(tmp_path / "out"), "-c", str(tiny_ckpt), *FAST,
            "-f", "png", "-f", "coco-rle", "-q"]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert not list((tmp_path / "out").rglob(".*"))
    for name in ("chelsea.jpg", "coffee.jpg"):
        doc = strict_json((tmp_path / f"out/{name}.json").read_text())
        assert len(doc["annotations"]) == 27
        meta = (tmp_path / f"out/{name}.masks/metadata.csv").read_text().splitlines()
        assert len(meta) == 28 and len(list((tmp_path / f"out/{name}.masks").glob("*.png"))) == 27
    p = run_sam(*args[1:])
    assert [r["status"] for r in lines(p)] == ["skipped", "skipped"]


def test_segment_overlay_draws_the_prompts(tmp_path, tiny_ckpt):
    import cv2

    p = run_sam("segment", EXAMPLES / "chelsea.jpg", "-p", "100,80", "-n", "300,200", "-b", "20,30,400,250",
                "-o", tmp_path / "m.png", "--overlay", tmp_path / "o.png", "-c", tiny_ckpt)
    assert p.returncode == 0, p.stderr
    o = cv2.cvtColor(cv2.imread(str(tmp_path / "o.png")), cv2.COLOR_BGR2RGB)
    assert tuple(o[80, 100]) == (0, 200, 0) and tuple(o[200, 300]) == (220, 0, 0)  # fg green, bg red
    assert tuple(o[30, 200]) == (255, 255, 255) and tuple(o[140, 20]) == (255, 255, 255)  # the box


def test_models_verify_with_an_empty_cache_says_so(tmp_path):
    p = run_sam("models", "verify", env={"SAM_CACHE_DIR": str(tmp_path / "c")})
    assert (p.returncode, p.stdout.decode()) == (0, f"no checkpoints in the cache ({tmp_path / 'c'})\n")
