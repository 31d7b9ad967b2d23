"""The embedding cache (--embedding-cache): hits are the encoder's own arrays, keys change with
everything an embedding depends on, bad entries and folders never stop a run."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from sam_cli.embedding_cache import EmbeddingCache, model_identity
from sam_cli.predictor import Predictor
from sam_cli.transforms import target_size

from cli_helpers import run_sam
from conftest import EXAMPLES

FAST = ["--points-per-side", "3", "--pred-iou-thresh", "0", "--stability-score-thresh", "0",
        "--box-nms-thresh", "1.0"]


def entries(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_second_image_embedding_comes_from_the_cache_unchanged(tiny_model, photo, tmp_path):
    root = tmp_path / "emb"
    with EmbeddingCache(root, tiny_model) as cache:
        first = Predictor(tiny_model, cache)
        first.set_image(photo)
        assert (cache.hits, cache.misses) == (0, 1)
        files = entries(root)
        assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary left behind
        again = Predictor(tiny_model, cache)
        again.set_image(photo)
        assert (cache.hits, cache.misses) == (1, 1)
    assert torch.equal(again.features["image_embed"], first.features["image_embed"])
    assert again.features.tensors.keys() == first.features.tensors.keys() == {"image_embed"}
    assert again.features.family == first.features.family == "sam1"
    assert again.input_hw == first.input_hw and again.orig_hw == first.orig_hw == photo.shape[:2]
    plain = Predictor(tiny_model)
    plain.set_image(photo)
    assert torch.equal(plain.features["image_embed"], first.features["image_embed"])
    with np.load(files[0], allow_pickle=False) as entry:  # every tensor, and the family
        assert sorted(entry.files) == ["__family__", "image_embed"] and str(entry["__family__"]) == "sam1"
    # the prompts' results are the same too
    a = first.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]))
    b = again.predict(point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]))
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.iou, b.iou)


def test_keys_follow_pixels_size_and_model(tiny_ckpt, photo, tmp_path):
    from sam_cli.checkpoints import load

    loaded = load(checkpoint=tiny_ckpt)
    cache = EmbeddingCache(tmp_path / "emb", loaded.net, weights_id=loaded.weights_id)
    hw = target_size(*photo.shape[:2], loaded.net.img_size)
    key = cache.key(photo, hw)
    assert cache.key(photo.copy(), hw) == key
    changed = photo.copy()
    changed[10, 10, 0] ^= 1
    assert cache.key(changed, hw) != key
    assert cache.key(photo, (hw[0] - 1, hw[1])) != key
    assert cache.key(np.ascontiguousarray(photo[:, ::-1]), hw) != key

    def identity(**kw) -> str:
        m = load(**kw)
        return model_identity(m.net, m.weights_id)

    # the same file loaded again is the same model; a copy of it elsewhere or bf16 is not
    assert identity(checkpoint=tiny_ckpt) == cache.model_id
    copy = tmp_path / "copy.pth"
    shutil.copy(tiny_ckpt, copy)
    compiled = load(checkpoint=tiny_ckpt)
    compiled.net.compile_parts(backend="eager")
    ids = {cache.model_id, identity(checkpoint=copy), identity(checkpoint=tiny_ckpt, dtype="bf16"),
           # `sam auto --compile`: a compiled encoder rounds differently from the eager one
           model_identity(compiled.net, compiled.weights_id)}
    assert len(ids) == 4


def test_models_built_in_memory_are_named_by_their_weights(tiny_reference):
    from sam_cli.checkpoints import build_from_arch, infer_arch, load_state_dict_into

    sd = tiny_reference.state_dict()
    nets = []
    for bump in (0.0, 0.0, 1e-3):
        net = build_from_arch(infer_arch(sd))
        load_state_dict_into(net, sd, "test")
        with torch.no_grad():
            net.image_encoder.neck[0].weight += bump
        nets.append(net)
    ids = [model_identity(n) for n in nets]
    assert ids[0] == ids[1] != ids[2]


def test_bad_entries_are_reported_and_computed_again(tiny_model, photo, tmp_path):
    root = tmp_path / "emb"
    told: list[str] = []
    cache = EmbeddingCache(root, tiny_model, warn=told.append)
    good = Predictor(tiny_model, cache)
    good.set_image(photo)
    path = entries(root)[0]
    want = good.features["image_embed"]
    wrong = [  # valid .npz files that are not this model's entry
        {"__family__": np.array("sam1"), "image_embed": np.zeros((1, 3, 4, 4), np.float32)},  # shape
        {"__family__": np.array("sam2"), "image_embed": want.numpy()},  # another family's
        {"image_embed": want.numpy()},  # no family
        {"__family__": np.array("sam1"), "image_embed": want.numpy(), "extra": want.numpy()},  # tensors
        {"__family__": np.array("sam1"), "image_embed": want.numpy().astype(np.float64)},  # dtype
    ]
    for bad in (b"not numpy", b"PK\x03\x04 not a zip either", *wrong):
        if isinstance(bad, dict):
            with open(path, "wb") as f:
                np.savez(f, **bad)
        else:
            path.write_bytes(bad)
        told.clear()
        p = Predictor(tiny_model, cache)
        p.set_image(photo)
        assert len(told) == 1 and str(path) in told[0] and "computing it again" in told[0], (bad, told)
        assert torch.equal(p.features["image_embed"], want)
        with np.load(path, allow_pickle=False) as entry:  # rewritten
            assert torch.equal(torch.from_numpy(entry["image_embed"]), want)


def test_a_folder_that_cannot_be_written_warns_once(tiny_model, photo, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    told: list[str] = []
    cache = EmbeddingCache(blocker / "emb", tiny_model, warn=told.append)
    for _ in range(2):
        p = Predictor(tiny_model, cache)
        p.set_image(photo)
        assert p.features is not None
    assert len(told) == 1 and "cannot write" in told[0]
    # the background writer of sam auto reports the same way
    told.clear()
    cache = EmbeddingCache(blocker / "emb2", tiny_model, warn=told.append)
    cache.save("ab" * 32, p.features)
    cache.save("cd" * 32, p.features)
    cache.close()
    assert len(told) == 1 and "cannot write" in told[0]


def test_segment_reuses_the_embedding(tiny_ckpt, tmp_path):
    img = EXAMPLES / "chelsea.jpg"
    root = tmp_path / "emb"
    plain = tmp_path / "plain.png"
    p = run_sam("segment", img, "--point", "100,80", "-o", plain, "-c", tiny_ckpt)
    assert p.returncode == 0, p.stderr
    first = tmp_path / "first.png"
    p = run_sam("segment", img, "--point", "300,200", "-o", first, "-c", tiny_ckpt,
                "--embedding-cache", root)
    assert p.returncode == 0, p.stderr
    assert len(entries(root)) == 1
    # the environment variable names the same folder; this run is a hit
    second = tmp_path / "second.png"
    p = run_sam("segment", img, "--point", "100,80", "-o", second, "-c", tiny_ckpt,
                env={"SAM_EMBEDDING_CACHE": str(root)})
    assert p.returncode == 0, p.stderr
    assert second.read_bytes() == plain.read_bytes()
    assert len(entries(root)) == 1
    # a hit is really read: another image's embedding planted in its place changes the mask
    other = tmp_path / "other"
    p = run_sam("segment", EXAMPLES / "coffee.jpg", "--point", "10,10", "-o", tmp_path / "o.png",
                "-c", tiny_ckpt, "--embedding-cache", other)
    assert p.returncode == 0, p.stderr
    shutil.copy(entries(other)[0], entries(root)[0])
    planted = tmp_path / "planted.png"
    p = run_sam("segment", img, "--point", "100,80", "-o", planted, "-c", tiny_ckpt,
                "--embedding-cache", root)
    assert p.returncode == 0, p.stderr
    assert not np.array_equal(cv2.imread(str(planted), 0), cv2.imread(str(plain), 0))


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_auto_reuses_embeddings_of_every_crop(tiny_ckpt, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(EXAMPLES / "chelsea.jpg", src / "x.jpg")
    shutil.copy(EXAMPLES / "coffee.jpg", src / "y.jpg")
    root = tmp_path / "emb"
    args = ["-c", tiny_ckpt, *FAST, "--crop-n-layers", "1", "-f", "coco-rle"]
    p = run_sam("auto", src, "-o", tmp_path / "plain", *args)
    assert p.returncode == 0, p.stderr
    p = run_sam("auto", src, "-o", tmp_path / "first", *args, "--embedding-cache", root)
    assert p.returncode == 0, p.stderr
    assert "embedding cache: 0 of 10 embeddings read" in p.stderr.decode()
    assert len(entries(root)) == 10  # 2 images × (the whole image + 4 crops)
    p = run_sam("auto", src, "-o", tmp_path / "second", *args, "--embedding-cache", root)
    assert p.returncode == 0, p.stderr
    assert "embedding cache: 10 of 10 embeddings read" in p.stderr.decode()
    # a damaged entry costs that crop its encoder run, never the image
    entries(root)[3].write_bytes(b"PK\x03\x04 damaged")
    p = run_sam("auto", src, "-o", tmp_path / "third", *args, "--embedding-cache", root)
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "unreadable" in err and "embedding cache: 9 of 10 embeddings read" in err
    for name in ("x.jpg.json", "y.jpg.json"):
        want = json.loads((tmp_path / "plain" / name).read_text())
        for run in ("first", "second", "third"):
            assert json.loads((tmp_path / run / name).read_text()) == want


def test_a_cache_path_that_is_a_file_is_refused_before_loading(tiny_ckpt, tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    for cmd in (["segment", EXAMPLES / "chelsea.jpg", "--point", "1,1", "-o", tmp_path / "m.png"],
                ["auto", EXAMPLES / "chelsea.jpg", "-o", tmp_path / "out"]):
        p = run_sam(*cmd, "-c", tmp_path / "missing.pth", "--embedding-cache", f)
        err = p.stderr.decode()
        assert p.returncode == 7, err
        assert err.strip() == f"Error: {f}: exists and is not a folder (--embedding-cache)"
        assert "Traceback" not in err
    assert os.path.isfile(f)
