"""What a new user ran into: messages that name the problem and what to do, exit codes as
the table says, help a person can scan, stdout for data alone."""

from __future__ import annotations

import json

import pytest

from cli_helpers import lines, run_sam
from conftest import EXAMPLES

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]


def test_inputs_that_are_all_missing_are_exit_3_before_anything_is_written(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    p = run_sam("auto", tmp_path / "nothere.jpg", tmp_path / "nor.jpg", "-o", out, "-c", tiny_ckpt)
    assert p.returncode == 3 and p.stdout == b""
    assert p.stderr.decode() == f"Error: {tmp_path / 'nothere.jpg'}: no such file (nor is the other image)\n"
    assert not out.exists()
    # one there, one missing: the run goes on and says which failed (exit 5)
    p = run_sam("auto", tmp_path / "nothere.jpg", EXAMPLES / "chelsea.jpg", "-o", out, "-c", tiny_ckpt, *FAST)
    assert p.returncode == 5 and [r["status"] for r in lines(p)] == ["failed", "ok"]


def test_a_coco_file_without_images_suggests_images(tiny_ckpt, tmp_path):
    doc = {"images": [{"id": 1, "file_name": "chelsea.jpg", "width": 451, "height": 300}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 100]}],
           "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    p = run_sam("segment", "--prompts", tmp_path / "ann.json", "-o", out, "-c", tiny_ckpt)
    assert p.returncode == 3 and not out.exists()
    err = p.stderr.decode()
    assert err.count("\n") == 1 and err.startswith(f"Error: {tmp_path / 'chelsea.jpg'}: no such file (the image paths")
    assert "pass --images DIR" in err
    p = run_sam("segment", "--prompts", tmp_path / "ann.json", "--images", EXAMPLES, "-o", out, "-c", tiny_ckpt)
    assert p.returncode == 0 and lines(p)[0]["status"] == "ok"


def test_prompts_output_that_looks_like_a_file_is_refused(tiny_ckpt, tmp_path):
    p = run_sam("segment", "--prompts", tmp_path / "p.jsonl", "-o", tmp_path / "o15.png", "-c", tiny_ckpt)
    assert p.returncode == 2 and "with --prompts, -o is an output folder" in p.stderr.decode()
    assert not (tmp_path / "o15.png").exists()


def test_a_run_that_keeps_no_mask_says_why(tiny_ckpt, tmp_path):
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, "--points-per-side", "4")
    assert p.returncode == 0 and lines(p)[0]["masks"] == 0
    assert ("no mask kept: all 48 candidate masks were below --pred-iou-thresh 0.88 (random or untrained weights? "
            "--pred-iou-thresh 0 --stability-score-thresh 0 keep them)") in p.stderr.decode()


def test_an_empty_shard_says_so(tiny_ckpt, tmp_path):
    # chelsea.jpg's output key hashes to shard 1 of 2 (shards.shard_of)
    from sam_cli.shards import shard_of

    assert shard_of("chelsea.jpg", 2) == 1
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, "--shard", "0/2",
                cwd=EXAMPLES)
    assert p.returncode == 0
    assert "no images in shard 0/2 (images go to shards by a hash of their output names)" in p.stderr.decode()
    assert "no images found" not in p.stderr.decode()


def test_a_file_that_is_no_checkpoint_is_not_blamed_on_pickles(tmp_path):
    (tmp_path / "notes.md").write_text("# notes\n")
    p = run_sam("segment", EXAMPLES / "chelsea.jpg", "--point", "5,5", "-o", tmp_path / "m.png",
                "-c", tmp_path / "notes.md")
    assert p.returncode == 4
    assert p.stderr.decode() == (f"Error: {tmp_path / 'notes.md'}: not a checkpoint (neither a PyTorch file nor "
                                 ".safetensors) (pass Meta's .pth file, or a .safetensors file)\n")


def test_download_hints_follow_the_mirror_setting(tmp_path, monkeypatch):
    from httpserver import FileServer

    with FileServer({}) as srv:  # a mirror without the file
        p = run_sam("models", "download", "vit_b", env={"SAM_BASE_URL": srv.url})
    assert p.returncode == 6
    err = p.stderr.decode()
    assert "HTTP 404" in err and f"SAM_BASE_URL is set to {srv.url}" in err and "set SAM_BASE_URL to a mirror" not in err
    assert not list((tmp_path / "cache").glob("*.lock"))  # no lock file left behind


def test_objects_below_min_score_are_counted(tiny_ckpt, tmp_path):
    rows = [{"image": "chelsea.jpg", "objects": [{"box": [10, 10, 100, 100], "score": 0.9},
                                                 {"box": [20, 20, 120, 120], "score": 0.1},
                                                 {"box": [30, 30, 130, 130], "score": 0.2}]}]
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    p = run_sam("segment", "--prompts", tmp_path / "p.jsonl", "--images", EXAMPLES, "-o", tmp_path / "o",
                "-c", tiny_ckpt, "--min-score", "0.5")
    assert p.returncode == 0 and lines(p)[0]["masks"] == 1
    assert "2 objects left out: scored below --min-score 0.5" in p.stderr.decode()


def test_eval_prints_json_lines_alone_on_stdout(tiny_ckpt, tmp_path):
    import cv2
    import numpy as np
    from pycocotools import mask as coco_mask

    m = np.zeros((300, 451), np.uint8)
    cv2.circle(m, (200, 150), 50, 1, -1)
    rle = coco_mask.encode(np.asfortranarray(m))
    doc = {"images": [{"id": 1, "file_name": "chelsea.jpg", "width": 451, "height": 300}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [150, 100, 100, 100],
                            "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()}}],
           "categories": [{"id": 1, "name": "disc"}]}
    (tmp_path / "gt.json").write_text(json.dumps(doc))
    p = run_sam("eval", tmp_path / "gt.json", "--images", EXAMPLES, "-o", tmp_path / "r", "-c", tiny_ckpt,
                "--clicks", "1,2")
    assert p.returncode == 0
    assert [json.loads(x)["status"] for x in p.stdout.decode().splitlines()] == ["ok"]  # jq reads every line
    assert "1 click (most confident, first click center): mIoU" in p.stderr.decode()


def test_help_is_grouped_and_the_command_list_is_whole():
    top = run_sam("--help").stdout.decode()
    assert max(len(x) for x in top.splitlines()) <= 80
    listed = [x.split()[0] for x in top.split("Commands:\n")[1].splitlines() if x.strip()]
    assert listed == ["segment", "auto", "eval", "edges", "merge", "export", "models", "info"]
    assert "..." not in top.split("Commands:\n")[1]
    seg = run_sam("segment", "--help").stdout.decode()
    titles = [x[:-1] for x in seg.splitlines() if x.endswith(":") and not x.startswith(" ")]
    assert titles[:5] == ["Arguments", "Prompts (one image)", "Text prompts (SAM 3, many images)", "Masks", "Output"]
    assert {"Model", "Run", "Spreading over GPUs and machines", "Output formats"} <= set(titles)
    auto = run_sam("auto", "--help").stdout.decode()
    assert "Automatic settings:\n  --points-per-side N" in auto
    assert "[default: 0.3413 (512/1500)]" in " ".join(auto.split())
    for cmd in (["info"], ["models", "download"], ["models", "verify"]):
        assert "Examples:" in run_sam(*cmd, "--help").stdout.decode(), cmd


@pytest.mark.parametrize("args", [["--prompts", "p.jsonl", "--box", "1,2,3,4"], ["x.jpg", "--category", "dog"],
                                  ["x.jpg", "--workers", "3"], ["x.jpg", "--devices", "cpu,cpu"]])
def test_segment_options_of_the_other_mode_are_usage_errors(args, tmp_path):
    p = run_sam("segment", *args, "-o", tmp_path / "o.png")
    assert p.returncode == 2 and ("is for one image" in p.stderr.decode()
                                  or "works with --prompts FILE" in p.stderr.decode())


def test_a_format_option_no_asked_format_reads_is_a_usage_error(tiny_ckpt, tmp_path):
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, "--yolo-parts", "split")
    assert p.returncode == 2 and not (tmp_path / "o").exists()
    assert p.stderr.decode() == ("Error: --yolo-parts is read by yolo-seg, and none of them is asked for (-f png) "
                                 "(add -f yolo-seg, or leave the option out)\n")
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, *FAST, "--polygons",
                "-f", "coco", "-f", "png")
    assert p.returncode == 0, p.stderr


def test_the_bar_shows_encoding_as_a_phase_and_the_end_of_run_steps(tiny_ckpt, tmp_path):
    p = run_sam("auto", EXAMPLES / "chelsea.jpg", EXAMPLES / "coffee.jpg", "-o", tmp_path / "o", "-c", tiny_ckpt, *FAST,
                "-f", "coco", "--progress")
    err = p.stderr.decode()
    assert p.returncode == 0 and "encoding…" in err and "prompts decoded" in err
    assert "writing coco over 2 images…" in err and err.index("writing coco") < err.index("wrote ")


def test_json_lines_on_a_terminal_are_never_glued_to_the_bar(tiny_ckpt, tmp_path):
    """stdout and stderr on one terminal (a pty): each JSON line starts a line of its own."""
    import fcntl
    import os
    import pty
    import re
    import struct
    import subprocess
    import termios

    from cli_helpers import SAM

    main, sub = pty.openpty()
    fcntl.ioctl(sub, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    env = {**os.environ, "TERM": "xterm", "COLUMNS": "100"}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([str(SAM), "auto", str(EXAMPLES / "chelsea.jpg"), str(EXAMPLES / "coffee.jpg"),
                             "-o", str(tmp_path / "o"), "-c", str(tiny_ckpt), *FAST], stdout=sub, stderr=sub, env=env)
    os.close(sub)
    out = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the other end closed
            break
        if not chunk:
            break
        out += chunk
    assert proc.wait(timeout=120) == 0
    text = out.decode(errors="replace")
    starts = [m.start() for m in re.finditer(r'\{"input"', text)]
    assert len(starts) == 2 and ("img/s" in text or "s/img" in text), text  # the bar was drawn
    assert all(text[k - 1] in "\r\n" for k in starts), text  # after the cleared bar, never on it


def test_coco_says_what_file_names_are_relative_to_and_names_each_image(tiny_ckpt, tmp_path):
    p = run_sam("auto", EXAMPLES, "-o", tmp_path / "o", "-c", tiny_ckpt, *FAST, "-f", "coco")
    assert p.returncode == 0, p.stderr
    doc = json.loads((tmp_path / "o" / "coco.json").read_text())
    assert "relative to the folder given as input" in doc["info"]["file_name"]
    assert all(im["name"] == im["file_name"] and "/" not in im["file_name"] for im in doc["images"])
    assert len({im["name"] for im in doc["images"]}) == len(doc["images"]) == 4


def test_the_man_page_has_a_date_and_no_empty_defaults():
    from conftest import REPO

    man = (REPO / "man" / "sam.1").read_text()
    th = man.splitlines()[0]
    assert th.startswith('.TH SAM 1 "20') and '""' not in th
    assert "Default: ." not in man and not any(line != line.rstrip() for line in man.splitlines())
    assert "\n.SH EXAMPLES\n.PP" not in man  # no paragraph macro right after a section heading
