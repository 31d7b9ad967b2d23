"""`sam auto` end to end: formats, inputs, resume, interruption, broken files."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO

from cli_helpers import SAM, four_photo_run, lines, run_sam
from conftest import EXAMPLES

FAST = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
        "--box-nms-thresh", "1.0"]

HEADER = ("id,area,bbox_x0,bbox_y0,bbox_w,bbox_h,point_input_x,point_input_y,predicted_iou,"
          "stability_score,crop_box_x0,crop_box_y0,crop_box_w,crop_box_h")


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "in"
    (d / "a").mkdir(parents=True)
    (d / "b").mkdir()
    shutil.copy(EXAMPLES / "chelsea.jpg", d / "a" / "x.jpg")
    shutil.copy(EXAMPLES / "coffee.jpg", d / "b" / "x.jpg")
    cv2.imwrite(str(d / "b" / "x.png"), cv2.imread(str(EXAMPLES / "astronaut.jpg"))[:200, :300])
    (d / "notes.txt").write_text("not an image")
    return d


def test_all_formats(folder, tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    p = run_sam("auto", folder, "-o", out, "-c", tiny_ckpt, *FAST,
                "-f", "png", "-f", "coco-rle", "-f", "coco", "-f", "label-map", "-f", "overlay")
    assert p.returncode == 0, p.stderr
    recs = lines(p)
    assert [r["input"] for r in recs] == [str(folder / "a/x.jpg"), str(folder / "b/x.jpg"), str(folder / "b/x.png")]
    assert all(r["status"] == "ok" and r["masks"] == 27 for r in recs)
    # png: reference layout and header, masks 0/255
    meta = (out / "a/x.jpg.masks/metadata.csv").read_text().splitlines()
    assert meta[0] == HEADER and len(meta) == 28
    m0 = cv2.imread(str(out / "a/x.jpg.masks/0.png"), cv2.IMREAD_UNCHANGED)
    assert m0.shape == (300, 451) and set(np.unique(m0)) <= {0, 255}
    row = meta[1].split(",")
    assert int(row[1]) == int((m0 > 0).sum())
    # coco-rle per image, valid COCO RLE; bbox in the COCO convention
    doc = json.loads((out / "b/x.png.json").read_text())
    assert doc["image"] == {"file_name": "b/x.png", "width": 300, "height": 200}
    a = doc["annotations"][0]
    assert set(a) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
    rle = {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()}
    assert int(coco_mask.area(rle)) == a["area"]
    assert [int(v) for v in coco_mask.toBbox(rle)] == a["bbox"]
    assert a["crop_box"] == [0, 0, 300, 200]
    # one COCO dataset for the run, readable by pycocotools
    coco = COCO(str(out / "coco.json"))
    assert len(coco.getImgIds()) == 3 and len(coco.getAnnIds()) == 81
    ann = coco.loadAnns(coco.getAnnIds(imgIds=[1]))[0]
    assert coco.annToMask(ann).sum() == ann["area"]
    # label map: 16-bit, each pixel the smallest covering mask
    lm = cv2.imread(str(out / "a/x.jpg.labels.png"), cv2.IMREAD_UNCHANGED)
    assert lm.dtype == np.uint16 and lm.shape == (300, 451)
    areas = [json.loads((out / "a/x.jpg.json").read_text())["annotations"][i]["area"] for i in range(27)]
    y, x = np.argwhere(lm > 0)[0]
    covering = [i for i in range(27) if cv2.imread(str(out / f"a/x.jpg.masks/{i}.png"), 0)[y, x]]
    assert lm[y, x] - 1 == min(covering, key=lambda i: areas[i])
    assert cv2.imread(str(out / "b/x.jpg.overlay.jpg")).shape == (400, 600, 3)
    assert not list(out.rglob(".*"))  # no temporary files left


def test_stdin_paths(tmp_path, tiny_ckpt):
    shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / "c.jpg")
    (tmp_path / "d").mkdir()
    shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / "d" / "c.jpg")
    p = run_sam("auto", "-", "-o", "out", "-c", tiny_ckpt, *FAST, "-f", "coco-rle",
                input=b"c.jpg\nd/c.jpg\n./c.jpg\n", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    recs = lines(p)
    # ./c.jpg is c.jpg again: done once, then skipped
    assert [(r["input"], r["status"]) for r in recs] == [("c.jpg", "ok"), ("d/c.jpg", "ok"), ("c.jpg", "skipped")]
    assert (tmp_path / "out/c.jpg.json").exists() and (tmp_path / "out/d/c.jpg.json").exists()


def test_two_folders_with_the_same_names_collide_safely(tmp_path, tiny_ckpt):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        shutil.copy(EXAMPLES / "chelsea.jpg", tmp_path / d / "x.jpg")
    p = run_sam("auto", "a", "b", "-o", "out", "-c", tiny_ckpt, *FAST, "-f", "coco-rle", cwd=tmp_path)
    assert p.returncode == 5
    recs = lines(p)
    assert [r["status"] for r in recs] == ["ok", "failed"]
    assert recs[1]["error"] == (
        f"b/x.jpg: its outputs (x.jpg) would overwrite those of {tmp_path.resolve() / 'a/x.jpg'}"
    )
    assert "1 done, 0 skipped (already done), 1 failed" in p.stderr.decode()


def test_broken_files_do_not_stop_the_run(folder, tmp_path, tiny_ckpt):
    (folder / "a" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    p = run_sam("auto", folder, "-o", tmp_path / "out", "-c", tiny_ckpt, *FAST, "-f", "coco-rle")
    assert p.returncode == 5
    recs = lines(p)
    assert [r["status"] for r in recs] == ["failed", "ok", "ok", "ok"]
    err = p.stderr.decode()
    assert f"Error: {folder / 'a/broken.jpg'}: cannot read image (unsupported format or corrupt file)" in err
    assert "3 done, 0 skipped (already done), 1 failed" in err


def test_rerun_skips_and_overwrite_redoes(folder, tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    assert run_sam("auto", folder, "-o", out, "-c", tiny_ckpt, *FAST).returncode == 0
    p = run_sam("auto", folder, "-o", out, "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0 and [r["status"] for r in lines(p)] == ["skipped"] * 3
    p = run_sam("auto", folder, "-o", out, "-c", tiny_ckpt, *FAST, "--overwrite")
    assert [r["status"] for r in lines(p)] == ["ok"] * 3


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.heavy  # among the default run's longest (test_run_safety stops runs by signal in the default run): CI runs it after
def test_interrupted_run_resumes_to_identical_outputs(tmp_path, tiny_ckpt):
    args = four_photo_run(tmp_path, tiny_ckpt)
    whole = tmp_path / "whole"
    assert run_sam(*args, "-o", whole).returncode == 0

    part = tmp_path / "part"
    cmd = [str(SAM), *map(str, args), "-o", str(part)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()  # one image done
    assert json.loads(first)["status"] == "ok"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Interrupted." in err.decode()
    assert not list(part.rglob(".*")), "no temporary or half-written files are left"
    done = [p for p in part.glob("*.jpg.json")]
    assert 1 <= len(done) < 4

    p = run_sam(*args, "-o", part)
    assert p.returncode == 0
    assert "skipped" in [r["status"] for r in lines(p)]
    assert snapshot(part) == snapshot(whole)


def test_help_lists_every_amg_setting():
    p = run_sam("auto", "--help")
    text = p.stdout.decode()
    for flag in ("--points-per-side", "--points-per-batch", "--pred-iou-thresh", "--stability-score-thresh",
                 "--stability-score-offset", "--box-nms-thresh", "--crop-n-layers", "--crop-nms-thresh",
                 "--crop-overlap-ratio", "--crop-n-points-downscale-factor", "--min-mask-region-area"):
        assert flag in text


def test_absolute_inputs_get_short_output_keys(tmp_path, monkeypatch):
    """An absolute file outside the working folder keeps its name alone; an absolute glob's
    matches are relative to its folder part; inside the working folder, paths are relative to
    it; stdin paths outside it keep their folders (find /data … lists would collide)."""
    from sam_cli.inputs import expand_inputs

    data = tmp_path / "data"
    (data / "a" / "b").mkdir(parents=True)
    for f in ("x.jpg", "a/y.png", "a/b/z.jpg"):
        (data / f).write_bytes(b"")
    work = tmp_path / "work"
    (work / "photos").mkdir(parents=True)
    (work / "photos" / "p.jpg").write_bytes(b"")
    monkeypatch.chdir(work)

    def keys(*args, stdin=None):
        return [i.rel for i in expand_inputs(list(args), stdin=stdin)]

    assert keys(str(data / "x.jpg")) == ["x.jpg"]
    assert keys(f"{data}/**/*.jpg") == ["a/b/z.jpg", "x.jpg"]
    assert keys(f"{data}/a/*") == ["y.png"]
    assert keys(str(work / "photos" / "p.jpg"), "photos/p.jpg") == ["photos/p.jpg", "photos/p.jpg"]
    assert keys("-", stdin=[f"{data}/a/y.png\n", f"{work}/photos/p.jpg\n"]) == [
        _rel_of(data / "a" / "y.png"), "photos/p.jpg"]


def _rel_of(p):
    return p.as_posix().lstrip("/")


def test_out_of_memory_is_exit_8_with_a_hint(tiny_ckpt, folder, tmp_path, monkeypatch, capsys):
    """Running out of GPU (or host) memory is not a bug: a one-line error with what to lower,
    exit code 8, no traceback."""
    import torch

    from sam_cli.automatic import pipeline
    from sam_cli.cli import app

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        yield  # a generator, like the real one

    monkeypatch.setattr(pipeline, "generate_masks", out_of_memory)
    with pytest.raises(SystemExit) as e:
        app.main(["auto", str(folder), "-o", str(tmp_path / "out"), "-c", str(tiny_ckpt),
                  "--device", "cpu", "-q"])
    assert e.value.code == 8
    assert capsys.readouterr().err == (
        "Error: out of memory: CUDA out of memory. Tried to allocate 2.00 GiB (lower --batch-size "
        "or --points-per-batch, or use --dtype bf16 or a smaller --model)\n"
    )


def test_an_output_that_is_a_file_fails_at_once(folder, tmp_path, tiny_ckpt):
    out = tmp_path / "out.txt"
    out.write_text("keep me")
    p = run_sam("auto", folder, "-o", out, "-c", tiny_ckpt, *FAST)
    assert p.returncode == 7
    assert p.stderr.decode() == f"Error: {out}: exists and is not a folder\n"
    assert p.stdout == b"" and out.read_text() == "keep me"


def test_no_images_found_says_so_without_loading_the_model(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    p = run_sam("auto", empty, "-o", tmp_path / "out", "-c", tmp_path / "missing.pth")
    assert p.returncode == 0 and p.stdout == b""
    assert p.stderr.decode().startswith(f"no images found in {empty} (extensions: .bmp, ")


@pytest.mark.heavy  # among the default run's longest (a CPU is not what --compile is for): CI runs it after the default run
def test_compile_runs_the_compiled_model_and_gives_the_same_outputs(tiny_ckpt, folder, tmp_path, monkeypatch):
    """--compile calls Sam.compile_parts (here with a backend that runs the traced graphs as
    they are, not Inductor's generated code; see test_model_parity) and changes no output: the
    same bytes as the uncompiled plain transformer it traces, and the same masks as the default
    factored one (sam1/factored.py), whose scores differ from it at float32 rounding."""
    import json

    import torch
    from pycocotools import mask as mask_util

    import sam_cli.models.sam1.factored as factored
    from sam_cli.cli import app
    from sam_cli.models.sam1.sam import Sam

    traced = []
    original = Sam.compile_parts

    def compile_parts(self, backend="inductor", on_failure=None):
        assert backend == "inductor" and on_failure is not None
        torch._dynamo.reset()
        return original(self, backend=lambda gm, inputs: traced.append(gm) or gm.forward,
                        on_failure=on_failure)

    monkeypatch.setattr(Sam, "compile_parts", compile_parts)
    factorable = factored.factorable
    outs = {}
    for name, flag in (("default", []), ("plain", []), ("compiled", ["--compile"])):
        monkeypatch.setattr(factored, "factorable", (lambda *_: False) if name == "plain" else factorable)
        out = tmp_path / name
        with pytest.raises(SystemExit) as e:
            app.main(["auto", str(folder), "-o", str(out), "-c", str(tiny_ckpt), "--device", "cpu",
                      "-q", "-f", "coco-rle", *FAST, *flag])
        assert e.value.code == 0
        outs[name] = {p.relative_to(out): p.read_text() for p in sorted(out.rglob("*.*.json"))}
    torch._dynamo.reset()
    assert len(traced) >= 3  # encoder, transformer, upscaling
    assert len(outs["plain"]) == 3 and outs["compiled"] == outs["plain"]
    assert outs["default"].keys() == outs["plain"].keys()
    for rel, text in outs["default"].items():
        got, want = json.loads(text)["annotations"], json.loads(outs["plain"][rel])["annotations"]
        assert len(got) == len(want)
        for a, b in zip(got, want):
            assert abs(a["predicted_iou"] - b["predicted_iou"]) <= 1e-5
            ma, mb = (mask_util.decode({**x["segmentation"], "counts": x["segmentation"]["counts"].encode()})
                      for x in (a, b))
            assert (ma == mb).mean() >= 0.999


@pytest.mark.heavy  # among the default run's longest (a CPU is not what --compile is for): CI runs it after the default run
def test_compile_that_fails_says_so_once_and_runs_uncompiled(tiny_ckpt, folder, tmp_path, monkeypatch, capsys):
    import torch

    from sam_cli.cli import app
    from sam_cli.models.sam1.sam import Sam

    original = Sam.compile_parts

    def broken(gm, example_inputs):
        raise RuntimeError("InvalidCxxCompiler: No working C compiler found\nmore detail")

    monkeypatch.setattr(Sam, "compile_parts", lambda self, **kw: original(self, backend=broken, **kw))
    torch._dynamo.reset()
    with pytest.raises(SystemExit) as e:
        app.main(["auto", str(folder), "-o", str(tmp_path / "out"), "-c", str(tiny_ckpt),
                  "--device", "cpu", "-f", "coco-rle", "--no-progress", "--compile", *FAST])
    torch._dynamo.reset()
    assert e.value.code == 0
    err = capsys.readouterr().err.splitlines()
    # on a CPU it says first that --compile is for GPUs (scripts/cpu_profile.py --compile)
    assert [x for x in err if "compil" in x] == [
        "note: --compile is for GPUs; on a CPU compiling takes minutes and has not made sam "
        "measurably faster",
        "--compile: compiling the image encoder failed (InvalidCxxCompiler: No working C compiler "
        "found); it runs uncompiled, as does any other part that fails"]
    assert len(list((tmp_path / "out").rglob("*.*.json"))) == 3
