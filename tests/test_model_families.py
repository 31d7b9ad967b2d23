"""The model-family seam (models/__init__.py): a family is one module plus registry entries.
The toy family of tests/toy_family.py, registered here, runs through the real loader, the
download code, the embedding cache and every engine, in this process."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sam_cli import models
from sam_cli.registry import MODELS

from cli_helpers import lines, sam_here
from conftest import EXAMPLES
from httpserver import FileServer
from toy_family import FAMILY, save_toy_checkpoint

CHELSEA = EXAMPLES / "chelsea.jpg"  # 451×300: the input frame is 1024/451 of it


@pytest.fixture()
def toy(tmp_path, monkeypatch):
    monkeypatch.setitem(models._extra, "toy", FAMILY)
    return save_toy_checkpoint(tmp_path / "toy.pt")


def one(root, name):
    (path,) = root.rglob(name)
    return path


def test_the_loader_recognises_the_family_and_drops_only_its_ignored_keys(toy, tmp_path):
    from sam_cli.checkpoints import load
    from sam_cli.errors import CheckpointError

    loaded = load(checkpoint=toy)
    assert loaded.family == "toy" and type(loaded.net).__name__ == "ToyNet"
    assert loaded.ignored == ("video.memory.weight",)
    assert loaded.net.arch.channels == 4 and loaded.net.img_size == 1024  # read from shapes
    # any other unknown key is refused, as for SAM 1
    sd = torch.load(toy, weights_only=True)["model"]
    sd["stray.weight"] = torch.zeros(1)
    torch.save({"model": sd}, tmp_path / "stray.pt")
    with pytest.raises(CheckpointError, match=r"unexpected keys: stray\.weight"):
        load(checkpoint=tmp_path / "stray.pt")
    # without the family, the file is no checkpoint sam knows
    models._extra.pop("toy")
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        load(checkpoint=toy)


def test_a_click_gives_the_family_s_masks_at_the_image_s_size(toy, tmp_path):
    p = sam_here("segment", CHELSEA, "--point", "200,150", "-o", tmp_path / "m.png", "-c", toy, "--multimask")
    assert p.returncode == 0, p.stderr
    import cv2

    recs = lines(p)
    assert [r["mask_index"] for r in recs] == [0, 1, 2]
    # the toy's IoU head: sigmoid of its biases, mask order by the decoder's picks (1, 2, 0)
    assert [r["predicted_iou"] for r in recs] == pytest.approx([1 / (1 + np.exp(-b)) for b in (2.0, 0.5, 1.0)],
                                                                abs=1e-6)
    scale = 1024 / 451
    for r, radius in zip(recs, (80, 120, 40)):
        m = cv2.imread(r["file"], cv2.IMREAD_UNCHANGED) > 0
        assert m.shape == (300, 451) and m[150, 200]
        # a disc of the toy's radius (grown by at most 10 %) in the input frame, at the photo's scale
        r_px = np.sqrt(m.sum() / np.pi)
        assert radius / scale * 0.95 <= r_px <= radius * 1.1 / scale * 1.05, (radius, r_px)


def test_automatic_prompts_and_cache_run_the_family(toy, tmp_path):
    out = tmp_path / "auto"
    fast = ["--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
    first = sam_here("auto", CHELSEA, "-o", out, "-c", toy, "-f", "coco-rle", *fast,
                     "--embedding-cache", tmp_path / "emb")
    assert first.returncode == 0, first.stderr
    (rec,) = lines(first)
    assert rec["status"] == "ok" and rec["masks"] >= 1
    entry = next((tmp_path / "emb").rglob("*.npz"))
    with np.load(entry, allow_pickle=False) as e:  # both of the family's tensors, and its name
        assert sorted(e.files) == ["__family__", "coarse", "fine"] and str(e["__family__"]) == "toy"
        assert e["coarse"].shape == (1, 4, 64, 64) and e["fine"].shape == (1, 4, 128, 128)
    again = sam_here("auto", CHELSEA, "-o", tmp_path / "again", "-c", toy, "-f", "coco-rle", *fast,
                     "--embedding-cache", tmp_path / "emb")
    assert again.returncode == 0 and "embedding cache: 1 of 1" in again.stderr.decode()
    assert one(out, "chelsea.jpg.json").read_bytes() == one(tmp_path / "again", "chelsea.jpg.json").read_bytes()

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"image": str(CHELSEA), "objects": [{"box": [100, 50, 300, 250]}]}) + "\n")
    p = sam_here("segment", "--prompts", prompts, "-o", tmp_path / "pr", "-c", toy, "-f", "coco-rle")
    assert p.returncode == 0, p.stderr
    got = json.loads(one(tmp_path / "pr", "chelsea.jpg.json").read_text())
    (ann,) = got["annotations"]
    x, y, w, h = ann["bbox"]  # the toy's box mask: the box itself
    assert abs(x - 100) <= 2 and abs(y - 50) <= 2 and abs(x + w - 300) <= 2 and abs(y + h - 250) <= 2


def test_a_registry_entry_downloads_and_verifies_the_family_s_weights(toy, tmp_path, monkeypatch):
    from toy_family import registry_entry

    entry = registry_entry(toy)
    monkeypatch.setitem(MODELS, entry.name, entry)
    with FileServer({"toy.pt": toy.read_bytes()}) as srv:
        monkeypatch.setenv("SAM_BASE_URL", srv.url)
        p = sam_here("segment", CHELSEA, "--box", "100,50,300,250", "-o", tmp_path / "m.png", "-m", "toy_small")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cache" / "toy.pt").read_bytes() == toy.read_bytes()


def test_a_family_without_an_onnx_export_is_a_usage_error(toy, tmp_path):
    pytest.importorskip("onnx")
    p = sam_here("export", "onnx", "-c", toy, "-o", tmp_path / "x")
    assert p.returncode == 2
    assert p.stderr.decode().startswith(f"Error: sam export onnx: {toy}: a toy model, which has no ONNX export")
