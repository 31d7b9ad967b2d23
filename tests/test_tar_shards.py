"""Tar shards as input (WebDataset's layout): image members read in place, outputs under each
tar's key, brace ranges, a bad member or a bad tar failing alone, resume, and --shard keeping a
tar's members together."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from sam_cli.errors import InputError
from sam_cli.io.tars import expand_braces

from cli_helpers import lines, run_sam
from conftest import EXAMPLES

FAST = ["--points-per-side", "2", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "-f", "coco-rle"]
PHOTOS = ["chelsea.jpg", "coffee.jpg", "astronaut.jpg"]


def test_brace_ranges_expand_as_webdataset_names_shards():
    assert expand_braces("s/{00000..00002}.tar") == ["s/00000.tar", "s/00001.tar", "s/00002.tar"]
    assert expand_braces("{a,b}-{8..10}.tar") == ["a-8.tar", "a-9.tar", "a-10.tar", "b-8.tar", "b-9.tar", "b-10.tar"]
    assert expand_braces("{3..1}") == ["3", "2", "1"]
    assert expand_braces("photo{x}.jpg") == ["photo{x}.jpg"]  # not a brace expression
    with pytest.raises(InputError, match="names 100,000,001 files"):
        expand_braces("{0..100000000}.tar")


def _tar(path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def shards(tmp_path):
    """imgs/ holds the photos as files; shards/ the same photos as two tars, with a JSON member
    beside each (WebDataset's sample layout) that is not an image."""
    imgs, sh = tmp_path / "imgs", tmp_path / "shards"
    imgs.mkdir()
    sh.mkdir()
    data = [(EXAMPLES / p).read_bytes() for p in PHOTOS]
    for i, d in enumerate(data):
        (imgs / f"{i:06d}.jpg").write_bytes(d)
    _tar(sh / "00000.tar", {"000000.jpg": data[0], "000000.json": b"{}", "sub/000001.jpg": data[1]})
    _tar(sh / "00001.tar", {"000002.jpg": data[2], "000002.json": b"{}"})
    return tmp_path


def test_auto_over_tar_shards_gives_the_masks_of_the_files(shards, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(shards)
    p = run_sam("auto", "imgs", "-o", "a", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    p = run_sam("auto", "shards/{00000..00001}.tar", "-o", "b", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert [(r["input"], r["status"]) for r in lines(p)] == [
        ("shards/00000.tar/000000.jpg", "ok"), ("shards/00000.tar/sub/000001.jpg", "ok"),
        ("shards/00001.tar/000002.jpg", "ok")]
    for i, key in enumerate(["shards/00000.tar/000000.jpg", "shards/00000.tar/sub/000001.jpg",
                             "shards/00001.tar/000002.jpg"]):
        got = json.loads((shards / "b" / f"{key}.json").read_text())
        want = json.loads((shards / "a" / f"{i:06d}.jpg.json").read_text())
        assert got["annotations"] == want["annotations"] and got["annotations"]
        assert got["image"]["file_name"] == key
    # a rerun finds every output and skips them all
    p = run_sam("auto", "shards/{00000..00001}.tar", "-o", "b", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert {r["status"] for r in lines(p)} == {"skipped"} and len(lines(p)) == 3
    # a folder of shards: the same members, named relative to the folder as its files are
    p = run_sam("auto", "shards", "-o", "c", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 0, p.stderr
    assert [r["input"] for r in lines(p)] == ["shards/00000.tar/000000.jpg", "shards/00000.tar/sub/000001.jpg",
                                              "shards/00001.tar/000002.jpg"]
    assert (shards / "c" / "00000.tar" / "sub" / "000001.jpg.json").is_file()


def test_a_bad_member_or_a_bad_tar_fails_alone(shards, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(shards)
    good = (EXAMPLES / "chelsea.jpg").read_bytes()
    _tar("shards/00002.tar", {"a.jpg": b"not a jpeg", "b.jpg": good})
    (shards / "shards" / "00003.tar").write_bytes(b"\x1f\x8b" + bytes(2000))  # gzip magic: not a plain tar
    p = run_sam("auto", "shards/0000{2,3}.tar", "-o", "c", "-c", tiny_ckpt, *FAST)
    assert p.returncode == 5, p.stderr  # some inputs failed, the others were processed
    got = {r["input"]: r["status"] for r in lines(p)}
    assert got == {"shards/00002.tar/a.jpg": "failed", "shards/00002.tar/b.jpg": "ok", "shards/00003.tar": "failed"}
    err = p.stderr.decode()
    assert "shards/00002.tar/a.jpg: cannot read image" in err
    assert "shards/00003.tar: cannot read it as an uncompressed tar" in err
    assert "Traceback" not in err


def test_shards_split_by_tar_file(shards, tiny_ckpt, monkeypatch):
    monkeypatch.chdir(shards)
    seen = []
    for i in range(2):
        p = run_sam("auto", "shards", "-o", "d", "-c", tiny_ckpt, *FAST, "--shard", f"{i}/2")
        assert p.returncode == 0, p.stderr
        seen.append({r["input"].split(".tar/")[0] for r in lines(p)})
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {"shards/00000", "shards/00001"}


@pytest.mark.heavy  # two worker processes, each loading the model: CI runs it after the default run
def test_tar_members_travel_to_worker_processes(shards, tiny_ckpt, monkeypatch):
    """--devices: the items (tar members, read by offset) go to worker processes whole."""
    monkeypatch.chdir(shards)
    p = run_sam("auto", "shards", "-o", "w", "-c", tiny_ckpt, *FAST, "--devices", "cpu,cpu")
    assert p.returncode == 0, p.stderr
    assert sorted((r["input"], r["status"]) for r in lines(p)) == [
        ("shards/00000.tar/000000.jpg", "ok"), ("shards/00000.tar/sub/000001.jpg", "ok"),
        ("shards/00001.tar/000002.jpg", "ok")]
    assert (shards / "w" / "00001.tar" / "000002.jpg.json").is_file()
