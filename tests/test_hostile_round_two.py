"""Hostile input on the newer surfaces: shard records are untrusted, output names that nest
never replace each other's files, and the Label Studio encoder stays linear."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_helpers import lines, run_sam
from conftest import EXAMPLES

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


@pytest.fixture()
def sharded(tiny_ckpt, tmp_path):
    """A folder with one finished shard of two (the other to be forged)."""
    out = tmp_path / "out"
    p = run_sam("auto", EXAMPLES, "-o", out, "-c", tiny_ckpt, *FAST, "-f", "coco", "-f", "yolo-seg",
                "--shard", "1/2", cwd=EXAMPLES)
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.parametrize("record, why", [
    ({}, "shard None is not [I, N]"),
    ([], "a JSON list, not an object"),
    ("x", "a JSON str, not an object"),
    ({"shard": "0/2"}, "shard '0/2' is not [I, N]"),
    ({"shard": [0, 2], "record": None, "formats": ["coco"], "options": None, "job": None,
      "images": ["../../evil.jpg"], "failed": []}, "image '../../evil.jpg' in images: not a normalised relative path"),
    ({"shard": [0, 2], "record": None, "formats": ["coco"], "options": None, "job": None,
      "images": ["/etc/passwd"], "failed": []}, "image '/etc/passwd' in images: not a relative path"),
    ({"shard": [0, 2], "record": None, "formats": ["coco"], "options": None, "job": None,
      "images": ["a/./b.jpg"], "failed": []}, "not a normalised relative path"),
    ({"shard": [0, 2], "record": None, "formats": "coco", "options": None, "job": None,
      "images": [], "failed": []}, "formats is not a list of names"),
])
def test_merge_refuses_forged_or_malformed_shard_records(sharded, record, why):
    path = sharded / "sam-shards" / "0-of-2.json"
    path.write_text(json.dumps(record))
    p = run_sam("merge", sharded)
    assert p.returncode == 2
    err = p.stderr.decode()
    assert err.startswith(f"Error: {path}: not a shard record sam wrote (") and why in err and err.count("\n") == 1
    assert not (sharded / "coco.json").exists() and not (sharded.parent / "evil.txt").exists()


def test_merge_of_a_record_that_is_not_json_text(sharded):
    path = sharded / "sam-shards" / "0-of-2.json"
    path.write_bytes(b"\xff\xfe{not json")
    p = run_sam("merge", sharded)
    assert p.returncode == 7 and p.stderr.decode().startswith(f"Error: {path}: cannot read this shard record")


def test_output_names_that_nest_never_replace_another_image_s(tiny_ckpt, tmp_path):
    """x.png's png outputs are the folder x.png.masks/; an image called x.png.masks/0.png would
    write inside it (and the other's folder replace would remove it). The second is refused,
    whichever order they come in, and the first's files are whole."""
    src = tmp_path / "in"
    (src / "a.png.masks").mkdir(parents=True)
    photo = cv2.imread(str(EXAMPLES / "chelsea.jpg"))
    cv2.imwrite(str(src / "a.png"), photo)
    cv2.imwrite(str(src / "a.png.masks" / "0.png"), photo)
    for order in ([src / "a.png", src / "a.png.masks" / "0.png"], [src / "a.png.masks" / "0.png", src / "a.png"]):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        p = run_sam("auto", *order, "-o", out, "-c", tiny_ckpt, *FAST, cwd=src)
        assert p.returncode == 5
        got = lines(p)
        assert [r["status"] for r in got] == ["ok", "failed"]
        assert "would lie inside those of" in got[1]["error"] or "would hold those of" in got[1]["error"]
        folder = Path(got[0]["outputs"][0])  # the first image's png folder, whole
        assert (folder / "metadata.csv").is_file() and (folder / "0.png").is_file()
        assert not (folder / "0.png.masks").exists()


def test_brush_rle_is_linear_and_exact_on_a_noisy_mask():
    """800×800 pixel noise: 320,000 runs (the encoder was quadratic in them: 74 s); decoded
    back by Label Studio's own decoder."""
    from label_studio_converter.brush import decode_rle

    from sam_cli.io.formats.labelstudio import brush_rle

    mask = np.random.default_rng(0).random((800, 800)) < 0.5
    got = np.reshape(decode_rle(brush_rle(mask)), (800, 800, 4))[:, :, 3] > 0
    assert np.array_equal(got, mask)


# ------------------------------------------------------------ names that must survive their formats
NASTY = ["a, b", "c # d", "quote \" and ' both", "émoji 😀 𝄞", "<xml> & \"stuff\"", "back\\slash", "  spaced  "]


def test_nasty_names_come_back_from_every_format_s_reader(tiny_ckpt, tmp_path):
    import csv
    import xml.etree.ElementTree as ET

    yaml = pytest.importorskip("yaml")  # PyYAML, which Ultralytics reads data.yaml with
    from sam_cli.io.sources.yolo import read_names

    rows = [{"image": "chelsea.jpg", "objects": [{"box": [10 + 9 * k, 10, 200, 200], "category": n}
                                                 for k, n in enumerate(NASTY)]}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    p = run_sam("segment", "--prompts", tmp_path / "p.jsonl", "--images", EXAMPLES, "-o", out, "-c", tiny_ckpt,
                "-f", "png", "-f", "coco", "-f", "cvat", "-f", "yolo-seg", "-f", "labelstudio", "--yolo-images", "none")
    assert p.returncode == 0, p.stderr
    want = sorted(NASTY)
    coco = json.loads((out / "coco.json").read_text(encoding="utf-8"))
    assert sorted(c["name"] for c in coco["categories"]) == want
    cvat = ET.parse(out / "annotations.xml").getroot()  # well-formed, every name as written
    assert sorted(lab.findtext("name") for lab in cvat.iter("label")) == want
    assert sorted(yaml.safe_load((out / "data.yaml").read_text(encoding="utf-8"))["names"].values()) == want
    assert sorted(read_names(out / "data.yaml").values()) == want  # --names reads it back too
    tasks = json.loads((out / "labelstudio.json").read_text(encoding="utf-8"))
    got = {r["value"]["brushlabels"][0] for t in tasks for r in t["predictions"][0]["result"]}
    assert sorted(got) == want
    config = ET.fromstring((out / "labelstudio-config.xml").read_text(encoding="utf-8"))
    assert sorted(x.get("value") for x in config.iter("Label")) == want
    with open(out / "chelsea.jpg.masks" / "metadata.csv", newline="", encoding="utf-8") as f:
        assert sorted({r["category"] for r in csv.DictReader(f)}) == want


@pytest.mark.parametrize("name", ["bell\x07", "new\nline", "nul\x00", "c1\x85", "lone \ud800"])
def test_names_no_format_can_hold_are_refused_where_they_come_in(tiny_ckpt, tmp_path, name):
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, "--category", name)
    assert p.returncode == 2 and "which the output formats cannot hold" in p.stderr.decode()
    rows = [{"image": "chelsea.jpg", "objects": [{"box": [1, 1, 50, 50], "category": name}]},
            {"image": "coffee.jpg", "objects": [{"box": [1, 1, 50, 50], "category": "fine"}]}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    p = run_sam("segment", "--prompts", tmp_path / "p.jsonl", "--images", EXAMPLES, "-o", tmp_path / "o2",
                "-c", tiny_ckpt, "-f", "cvat")
    assert p.returncode == 5
    got = lines(p)
    assert [r["status"] for r in got] == ["failed", "ok"] and "the category name" in got[0]["error"]
    import xml.etree.ElementTree as ET

    ET.parse(tmp_path / "o2" / "annotations.xml")  # well-formed


def test_an_image_name_no_format_can_hold_fails_alone(tiny_ckpt, tmp_path):
    rows = [{"image": "nul\x00.jpg", "objects": [{"box": [1, 1, 50, 50]}]},
            {"image": "chelsea.jpg", "objects": [{"box": [1, 1, 50, 50]}]}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    p = run_sam("segment", "--prompts", tmp_path / "p.jsonl", "--images", EXAMPLES, "-o", tmp_path / "o", "-c", tiny_ckpt)
    assert p.returncode == 5 and [r["status"] for r in lines(p)] == ["failed", "ok"]
    assert "U+0000" in lines(p)[0]["error"]


# ------------------------------------------------------------ inputs taken wrongly, crashes, hangs
def coco(tmp_path, images, annotations, name="ann.json"):
    (tmp_path / name).write_text(json.dumps({"images": images, "annotations": annotations,
                                             "categories": [{"id": 1, "name": "cat"}]}))
    return tmp_path / name


IM = {"id": 1, "file_name": "chelsea.jpg", "width": 451, "height": 300}


def test_coco_prompts_are_taken_as_written_or_refused(tiny_ckpt, tmp_path):
    f = coco(tmp_path, [IM, {**IM, "file_name": "coffee.jpg", "width": 600, "height": 400}], [])
    p = run_sam("segment", "--prompts", f, "--images", EXAMPLES, "-o", tmp_path / "o", "-c", tiny_ckpt)
    assert p.returncode == 2 and "images[1] has the id 1 of images[0]" in p.stderr.decode()
    box = {"id": 5, "image_id": 1, "category_id": 1, "bbox": [10, 10, 50, 50]}
    for ann, why in (({**box, "category_id": "1"}, "category_id must be an integer, got '1'"),
                     ({**box, "image_id": True}, "image_id True is not one of the dataset's images"),
                     ({**box, "image_id": [1]}, "image_id [1] is not one of the dataset's images")):
        f = coco(tmp_path, [IM], [ann])
        p = run_sam("segment", "--prompts", f, "--images", EXAMPLES, "-o", tmp_path / "o", "-c", tiny_ckpt,
                    "--overwrite")
        assert p.returncode == 5 and why in p.stderr.decode(), p.stderr.decode()


@pytest.mark.parametrize("label, why", [("-1 0.5 0.5 0.2 0.2", "class -1 is not an index"),
                                        (f"{2**66} 0.5 0.5 0.2 0.2", "is not an index from 0 to")])
def test_yolo_classes_out_of_range_fail_their_image(tiny_ckpt, tmp_path, label, why):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "chelsea.txt").write_text(label + "\n")
    p = run_sam("segment", "--prompts", tmp_path / "labels", "--images", EXAMPLES, "-o", tmp_path / "o",
                "-c", tiny_ckpt)
    assert p.returncode == 5 and why in p.stderr.decode()


@pytest.mark.parametrize("text", ["names: {0: a, x: b}\n", 'names: ["a", \n', 'names: ["\\q"]\n'])
def test_malformed_yolo_names_are_a_usage_error(tiny_ckpt, tmp_path, text):
    (tmp_path / "labels").mkdir()
    (tmp_path / "data.yaml").write_text(text)
    p = run_sam("segment", "--prompts", tmp_path / "labels", "--images", EXAMPLES, "--names", tmp_path / "data.yaml",
                "-o", tmp_path / "o", "-c", tiny_ckpt)
    assert p.returncode == 2 and p.stderr.decode().startswith(f"Error: --names {tmp_path / 'data.yaml'}: ")


def test_prompt_files_with_bad_bytes_or_excel_s_bom(tiny_ckpt, tmp_path):
    good = json.dumps({"image": "chelsea.jpg", "objects": [{"box": [1, 1, 50, 50]}]}).encode()
    (tmp_path / "p.jsonl").write_bytes(b'{"image": "x\xff.jpg", "objects": []}\n' + good + b"\n")
    p = run_sam("segment", "--prompts", tmp_path / "p.jsonl", "--images", EXAMPLES, "-o", tmp_path / "o", "-c", tiny_ckpt)
    assert p.returncode == 5 and [r["status"] for r in lines(p)] == ["failed", "ok"]
    assert lines(p)[0]["error"] == f"{tmp_path / 'p.jsonl'} line 1: not UTF-8 text"
    (tmp_path / "p.csv").write_bytes(b"\xef\xbb\xbfimage,x0,y0,x1,y1\nchelsea.jpg,1,2,30,40\n")  # Excel's "CSV UTF-8"
    p = run_sam("segment", "--prompts", tmp_path / "p.csv", "--images", EXAMPLES, "-o", tmp_path / "o2", "-c", tiny_ckpt)
    assert p.returncode == 0 and lines(p)[0]["masks"] == 1
    (tmp_path / "q.jsonl").write_text(json.dumps({"image": "chelsea.jpg", "box": [1, 1, 50, 50]}) + "\n")
    p = run_sam("segment", "--prompts", tmp_path / "q.jsonl", "--images", EXAMPLES, "-o", tmp_path / "o3", "-c", tiny_ckpt)
    assert p.returncode == 5 and "unknown key 'box'" in p.stderr.decode()  # not an image without objects


@pytest.mark.parametrize("env, why", [({"SLURM_ARRAY_TASK_ID": "abc", "SLURM_ARRAY_TASK_COUNT": "2"},
                                       "SLURM_ARRAY_TASK_ID='abc': not a whole number"),
                                      ({"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_COUNT": "2",
                                        "SLURM_ARRAY_TASK_STEP": "0"}, "SLURM_ARRAY_TASK_STEP=0: must be at least 1")])
def test_a_broken_slurm_environment_is_a_usage_error(tiny_ckpt, tmp_path, env, why):
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, env=env)
    assert p.returncode == 2 and why in p.stderr.decode() and not (tmp_path / "o").exists()


def test_mask_prompts_that_are_not_what_they_claim(tiny_ckpt, tmp_path):
    import os

    def seg(mask):
        return run_sam("segment", EXAMPLES / "chelsea.jpg", "--mask-input", mask, "-o", tmp_path / "m.png",
                       "-c", tiny_ckpt)

    os.mkfifo(tmp_path / "fifo.npy")  # reading it would block for ever
    p = seg(tmp_path / "fifo.npy")
    assert p.returncode == 3 and "not a regular file (a pipe, device or socket)" in p.stderr.decode()
    np.save(tmp_path / "c.npy", np.zeros((256, 256), complex))
    p = seg(tmp_path / "c.npy")
    assert p.returncode == 3 and "mask logits must be real numbers, not complex128" in p.stderr.decode()
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (100000, 100000, 100000), }"
    header += b" " * (117 - len(header)) + b"\n"
    (tmp_path / "big.npy").write_bytes(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
    p = seg(tmp_path / "big.npy")
    assert p.returncode == 3 and p.stderr.decode().startswith(f"Error: {tmp_path / 'big.npy'}: mask logits must be")


def test_devices_that_are_not_there_are_refused(tiny_ckpt, tmp_path):
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, "--devices", "cuda:7")
    assert p.returncode == 2 and "cuda:7" in p.stderr.decode() and not (tmp_path / "o").exists()


def test_an_unreachable_ray_address_is_said_at_once(tiny_ckpt, tmp_path):
    pytest.importorskip("ray")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, "--ray", f"ray://127.0.0.1:{port}")
    assert p.returncode == 2 and f"cannot reach 127.0.0.1:{port}" in p.stderr.decode()


def gt(tmp_path, ann, name="gt.json"):
    return coco(tmp_path, [IM], [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [10, 10, 50, 50],
                                  **ann}], name)


@pytest.mark.parametrize("ann, why", [
    ({"segmentation": [[1, 2, 3, 4]]}, "a polygon of its segmentation has 4 values"),
    ({"segmentation": []}, "its segmentation is an empty list"),
    ({"segmentation": {"size": [300, 451], "counts": "not rle{"}}, "is not COCO's compressed RLE"),
    ({"segmentation": {"size": [30, 45], "counts": [1350]}}, "its RLE is 45x30, the image 451x300"),
    ({"iscrowd": 1, "segmentation": {"size": [300, 451], "counts": [5, 10]}}, "its RLE counts cover 15 pixels"),
])
def test_malformed_ground_truth_is_refused_before_pycocotools_sees_it(tiny_ckpt, tmp_path, ann, why):
    p = run_sam("eval", gt(tmp_path, ann), "--images", EXAMPLES, "-o", tmp_path / "r", "-c", tiny_ckpt, "--box")
    assert p.returncode == 3 and why in p.stderr.decode() and p.stderr.decode().count("\n") == 1


def test_box_mode_needs_ids_and_boxes_and_empty_objects_are_left_out(tiny_ckpt, tmp_path):
    poly = {"segmentation": [[100, 100, 200, 100, 200, 200, 100, 200]]}
    for drop, why in (("id", "needs an integer id"), ("bbox", "bbox must be [x, y, width, height]")):
        ann = {k: v for k, v in {"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 100, 100], **poly}.items()
               if k != drop}
        f = coco(tmp_path, [IM], [ann])
        p = run_sam("eval", f, "--images", EXAMPLES, "-o", tmp_path / "r", "-c", tiny_ckpt, "--box")
        assert p.returncode == 3 and why in p.stderr.decode()
    f = coco(tmp_path, [IM], [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 0, 0],
                               "segmentation": {"size": [300, 451], "counts": [300 * 451]}},
                              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [100, 100, 100, 100], **poly}])
    p = run_sam("eval", f, "--images", EXAMPLES, "-o", tmp_path / "e", "-c", tiny_ckpt, "--clicks", "1")
    assert p.returncode == 0, p.stderr
    report = json.loads((tmp_path / "e" / "eval.json").read_text())
    assert report["summary"]["objects"] == 1 and report["summary"]["empty_left_out"] == 1
    assert "1 object of no pixels left out" in p.stderr.decode()


@pytest.mark.parametrize("args, code, why", [(["--opset", "11"], 2, "greater than or equal to 14"),
                                             (["--opset", "99"], 2, "knows opsets up to"),
                                             ([], 7, "exists and is not a folder")])
def test_onnx_export_options_and_outputs(tiny_ckpt, tmp_path, args, code, why):
    pytest.importorskip("onnx")
    (tmp_path / "afile").write_text("x")
    p = run_sam("export", "onnx", "-c", tiny_ckpt, "-o", tmp_path / ("afile" if code == 7 else "x"), *args)
    assert p.returncode == code and why in p.stderr.decode()


def test_an_image_name_longer_than_a_temporary_name_allows(tiny_ckpt, tmp_path):
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    name = "a" * 220 + ".jpg"  # the png folder's temporary name would pass 255 bytes
    shutil.copy(EXAMPLES / "chelsea.jpg", src / name)
    shutil.copy(EXAMPLES / "coffee.jpg", src / "b.jpg")
    p = run_sam("auto", src, "-o", tmp_path / "o", "-c", tiny_ckpt, *FAST, "-f", "png")
    assert p.returncode == 0 and [r["status"] for r in lines(p)] == ["ok", "ok"]
    assert (tmp_path / "o" / f"{name}.masks" / "metadata.csv").is_file()


def test_an_end_of_run_output_that_fails_leaves_the_others_written(tiny_ckpt, tmp_path):
    """coco.json cannot be written (a folder in its way, as a full disk would stop it): it is
    named, yolo-seg's labels/ and cvat's XML after it are written all the same, exit 5."""
    out = tmp_path / "out"
    (out / "coco.json").mkdir(parents=True)
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", out, "-c", tiny_ckpt, *FAST, "-f", "coco", "-f", "yolo-seg",
                "-f", "cvat", cwd=EXAMPLES)
    assert p.returncode == 5
    err = p.stderr.decode()
    assert f"Error: {out / 'coco.json'}: cannot write" in err
    assert f"wrote {out / 'labels'}" in err and f"wrote {out / 'annotations.xml'}" in err
    assert (out / "labels" / "chelsea.txt").is_file() and (out / "annotations.xml").is_file()
    assert "1 end-of-run output could not be written (named above)" in err
