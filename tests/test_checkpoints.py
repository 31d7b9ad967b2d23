"""Checkpoint loading (safe, strict, clear errors) and downloading (cache, hash, resume)."""

from __future__ import annotations

import hashlib
import os

import pytest
import torch

from sam_cli.checkpoints import infer_arch, load_model, read_state_dict
from sam_cli.errors import CheckpointError, DownloadError
from sam_cli.fetch import cached_path, download
from sam_cli.registry import MODELS

from httpserver import FileServer


def test_loads_reference_checkpoint_and_infers_architecture(tiny_ckpt):
    sd = read_state_dict(tiny_ckpt)
    arch = infer_arch(sd)
    assert (arch.embed_dim, arch.depth, arch.num_heads, arch.global_attn_indexes) == (64, 4, 4, (1, 3))
    net = load_model(checkpoint=tiny_ckpt)
    ours = net.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in sd.items())


def test_weights_are_the_files_tensors_in_every_format(tiny_ckpt, photo, tmp_path):
    """load_model takes the mapped file's tensors as the model's weights (no copy); files in
    torch's old format, which cannot be mapped, and half-precision files load the same way,
    as float32, and give the same embedding."""
    from sam_cli.models.sam1.sam import PIXEL_MEAN
    from sam_cli.predictor import Predictor

    sd = torch.load(tiny_ckpt, weights_only=True)
    legacy, half = tmp_path / "legacy.pth", tmp_path / "half.pth"
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, half)
    feats = {}
    for name, path in (("zip", tiny_ckpt), ("legacy", legacy), ("half", half)):
        net = load_model(checkpoint=path)
        tensors = [*net.parameters(), *net.buffers()]
        assert not any(t.is_meta for t in tensors)
        assert all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
        assert torch.equal(net.pixel_mean.flatten(), torch.tensor(PIXEL_MEAN))
        p = Predictor(net)
        p.set_image(photo)
        feats[name] = p.features["image_embed"]
    assert torch.equal(feats["zip"], feats["legacy"])
    assert (feats["half"] - feats["zip"]).norm() / feats["zip"].norm() < 1e-2  # weights rounded


def test_the_model_maps_the_file_and_takes_its_tensors(tiny_ckpt, tmp_path, monkeypatch):
    """The weights are not copied: the model's parameters are the tensors read from the file,
    and a zip-format file is mapped (so on an embedding-cache hit the image encoder's weights
    are never read from disk)."""
    import sam_cli.checkpoints as W

    mine = tmp_path / "mapped-here.pth"
    mine.write_bytes(tiny_ckpt.read_bytes())
    got = {}
    read = W.read_state_dict

    def keep(path):
        got.update(read(path))
        return dict(got)

    monkeypatch.setattr(W, "read_state_dict", keep)
    net = W.load_model(checkpoint=mine)
    for name, t in net.state_dict().items():
        assert t.data_ptr() == got[name].data_ptr(), name
    maps = "/proc/self/maps"
    if os.path.exists(maps):  # Linux: the file is mapped into this process
        assert str(mine) in open(maps).read()


def test_loading_draws_no_random_values(tiny_ckpt):
    """The model is built on the meta device without random initial values: torch's meta
    versions of normal_ and randn import torch._dynamo and more on first use, 1.4 s of every
    `sam` call. Built on the CPU, as scripts do for random weights, it is still initialised."""
    import subprocess
    import sys

    code = ("import sys; from sam_cli.checkpoints import load_model; "
            f"load_model(checkpoint={str(tiny_ckpt)!r}); print('torch._dynamo' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "False"
    from sam_cli.checkpoints import build_from_arch

    net = build_from_arch(infer_arch(read_state_dict(tiny_ckpt)))
    for t in (net.mask_decoder.iou_token.weight, net.prompt_encoder.no_mask_embed.weight,
              net.prompt_encoder.pe_layer.positional_encoding_gaussian_matrix):
        assert t.std() > 0.1


def test_wrapped_state_dict_is_unwrapped(tiny_ckpt, tmp_path):
    sd = torch.load(tiny_ckpt, weights_only=True)
    p = tmp_path / "wrapped.pth"
    torch.save({"model": sd, "epoch": 3}, p)
    load_model(checkpoint=p)


def test_safetensors(tiny_ckpt, tmp_path):
    from safetensors.torch import save_file

    sd = torch.load(tiny_ckpt, weights_only=True)
    p = tmp_path / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, p)
    net = load_model(checkpoint=p)
    assert torch.equal(net.state_dict()["mask_decoder.iou_token.weight"], sd["mask_decoder.iou_token.weight"])


def test_truncated_file(tiny_ckpt, tmp_path):
    p = tmp_path / "cut.pth"
    p.write_bytes(tiny_ckpt.read_bytes()[:5000])
    with pytest.raises(CheckpointError) as e:
        load_model(checkpoint=p)
    assert str(e.value) == f"{p}: cannot read checkpoint (file truncated or not a PyTorch checkpoint)"


def test_truncated_safetensors(tiny_ckpt, tmp_path):
    from safetensors.torch import save_file

    sd = torch.load(tiny_ckpt, weights_only=True)
    p = tmp_path / "cut.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, p)
    p.write_bytes(p.read_bytes()[:-1000])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(checkpoint=p)


def test_missing_and_unexpected_keys_are_named(tiny_ckpt, tmp_path):
    sd = torch.load(tiny_ckpt, weights_only=True)
    del sd["mask_decoder.iou_token.weight"]
    sd["extra.weight"] = torch.zeros(1)
    p = tmp_path / "keys.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError) as e:
        load_model(checkpoint=p)
    assert str(e.value) == (
        f"{p}: checkpoint does not fit the SAM model: missing keys: mask_decoder.iou_token.weight; "
        "unexpected keys: extra.weight"
    )


def test_wrong_shape_is_named(tiny_ckpt, tmp_path):
    sd = torch.load(tiny_ckpt, weights_only=True)
    sd["mask_decoder.iou_token.weight"] = torch.zeros(1, 128)
    p = tmp_path / "shape.pth"
    torch.save(sd, p)
    want = r"wrong shape for mask_decoder.iou_token.weight: \(1, 128\) in file, \(1, 256\) expected"
    with pytest.raises(CheckpointError, match=want):
        load_model(checkpoint=p)


def test_not_a_sam_checkpoint(tmp_path):
    p = tmp_path / "other.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, p)
    with pytest.raises(CheckpointError, match="not a SAM checkpoint"):
        load_model(checkpoint=p)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch /tmp/sam-test-pwned",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = "/tmp/sam-test-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    p = tmp_path / "evil.pth"
    torch.save({"x": _RunsCode()}, p)
    with pytest.raises(CheckpointError, match="refused"):
        load_model(checkpoint=p)
    assert not os.path.exists(marker)


def test_missing_checkpoint_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        load_model(checkpoint=tmp_path / "nope.pth")


# ------------------------------------------------------------------------- downloads

NAME = MODELS["vit_b"].weights.file_name


@pytest.fixture
def payload(tiny_ckpt):
    return tiny_ckpt.read_bytes()


def _serve(monkeypatch, srv, data):
    monkeypatch.setenv("SAM_BASE_URL", srv.url)
    monkeypatch.setenv("SAM_SHA256_VIT_B", hashlib.sha256(data).hexdigest())


def test_download_good_hash_then_cached(monkeypatch, payload, tmp_path):
    with FileServer({NAME: payload}) as srv:
        _serve(monkeypatch, srv, payload)
        seen = []

        def progress(total, have):
            seen.append((total, have))
            return lambda n: None

        path = download(MODELS["vit_b"], progress=progress)
        assert path.read_bytes() == payload
        assert path.parent == tmp_path / "cache"
        assert not list(path.parent.glob("*.part"))
        assert seen == [(len(payload), 0)]
        download(MODELS["vit_b"])  # cached: no second request
        assert len(srv.requests) == 1
        net = load_model(model="vit_b")  # the whole path: download → verify → load
        assert net.image_encoder.patch_embed.proj.weight.shape[0] == 64


def test_download_bad_hash_is_refused_and_removed(monkeypatch, payload):
    with FileServer({NAME: payload}) as srv:
        monkeypatch.setenv("SAM_BASE_URL", srv.url)  # Meta's real hash: this file cannot match
        with pytest.raises(DownloadError) as e:
            download(MODELS["vit_b"])
    assert f"download failed: {srv.url}{NAME}: sha256 " in str(e.value)
    assert MODELS["vit_b"].weights.sha256 in str(e.value)
    cache = os.environ["SAM_CACHE_DIR"]
    assert [f for f in os.listdir(cache) if not f.endswith(".lock")] == []


def test_download_resumes_after_interruption(monkeypatch, payload):
    with FileServer({NAME: payload}) as srv:
        _serve(monkeypatch, srv, payload)
        srv.cut_after = len(payload) // 3
        with pytest.raises(DownloadError):
            download(MODELS["vit_b"])
        part = str(cached_path(MODELS["vit_b"])) + ".part"
        assert os.path.getsize(part) == len(payload) // 3
        srv.cut_after = None
        path = download(MODELS["vit_b"])
        assert path.read_bytes() == payload
        assert srv.requests[-1]["range"] == f"bytes={len(payload) // 3}-"


def test_no_network_error_names_url_and_checkpoint_option(monkeypatch):
    monkeypatch.setenv("SAM_BASE_URL", "http://127.0.0.1:9/mirror/")
    with pytest.raises(DownloadError) as e:
        download(MODELS["vit_h"])
    assert str(e.value).startswith(f"download failed: http://127.0.0.1:9/mirror/{MODELS['vit_h'].weights.file_name}: ")
    assert "--checkpoint PATH" in e.value.hint


def test_http_404(monkeypatch):
    with FileServer({}) as srv:
        monkeypatch.setenv("SAM_BASE_URL", srv.url)
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(MODELS["vit_l"])


def test_a_cached_file_that_is_not_the_expected_one_is_never_used(monkeypatch, payload, tmp_path):
    """Random weights left under Meta's name (a mirror recipe run without its variable) are
    refused, not loaded; `sam models download` (replace=True) fetches the right file. A
    mirror's own weights are cached under a name that holds their hash."""
    meta = cached_path(MODELS["vit_b"])
    assert meta.name == NAME
    meta.parent.mkdir(parents=True)
    meta.write_bytes(payload)
    with pytest.raises(CheckpointError, match=r"the cached file's sha256 is [0-9a-f]{64}, not the expected ec2df627"):
        load_model(model="vit_b")
    with FileServer({NAME: payload}) as srv:
        _serve(monkeypatch, srv, payload)
        mirror = cached_path(MODELS["vit_b"])
        assert mirror.name == f"sam_vit_b_01ec64.sha256-{hashlib.sha256(payload).hexdigest()[:16]}.pth"
        assert download(MODELS["vit_b"]) == mirror and mirror.read_bytes() == payload
        mirror.write_bytes(payload[:-3] + b"bad")  # corrupted in the cache
        with pytest.raises(CheckpointError, match="not the expected"):
            download(MODELS["vit_b"])
        assert download(MODELS["vit_b"], replace=True).read_bytes() == payload
        assert len(srv.requests) == 2


def test_two_downloads_into_one_cache_take_turns(monkeypatch, payload):
    import threading

    with FileServer({NAME: payload}) as srv:
        _serve(monkeypatch, srv, payload)
        got, errors = [], []

        def fetch():
            try:
                got.append(download(MODELS["vit_b"]).read_bytes())
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=fetch) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors and got == [payload] * 3 and len(srv.requests) == 1


def test_a_stalling_server_is_given_up(monkeypatch, payload):
    from sam_cli import fetch as weights

    monkeypatch.setattr(weights, "STALL_SECONDS", 0.5)
    with FileServer({NAME: payload}) as srv:
        _serve(monkeypatch, srv, payload)
        srv.trickle = 0.1
        with pytest.raises(DownloadError, match=r"stalled \(less than 1 MiB in 0 s\)"):
            download(MODELS["vit_b"])


def test_a_body_larger_than_the_file_is_refused(monkeypatch, payload):
    import dataclasses

    small = dataclasses.replace(MODELS["vit_b"], weights=dataclasses.replace(
        MODELS["vit_b"].weights, size=len(payload), sha256=hashlib.sha256(payload).hexdigest()))
    with FileServer({NAME: payload + b"x"}) as srv:
        monkeypatch.setenv("SAM_BASE_URL", srv.url)
        with pytest.raises(DownloadError, match=f"sends {len(payload) + 1} bytes, but the file has {len(payload)}"):
            download(small)
    with FileServer({NAME: payload}) as srv:  # Content-Length right, then more bytes
        srv.extra = b"more"
        monkeypatch.setenv("SAM_BASE_URL", srv.url)
        assert download(small).read_bytes() == payload  # the extra bytes are never read


def test_a_full_disk_is_reported_as_a_full_disk(monkeypatch, payload):
    import builtins
    import errno

    real_open = builtins.open

    class Full:
        def __init__(self, f):
            self.f = f

        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device", self.f.name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *a, **kw):
        f = real_open(path, mode, *a, **kw)
        return Full(f) if str(path).endswith(".part") else f

    with FileServer({NAME: payload}) as srv:
        _serve(monkeypatch, srv, payload)
        monkeypatch.setattr(builtins, "open", fake_open)
        with pytest.raises(DownloadError) as e:
            download(MODELS["vit_b"])
    assert str(e.value).endswith(".part: the disk is full (No space left on device)")
    assert "SAM_CACHE_DIR" in e.value.hint


def _safetensors(header: dict, body: bytes) -> bytes:
    import json

    h = json.dumps(header).encode()
    return len(h).to_bytes(8, "little") + h + body


@pytest.mark.parametrize("header, body, problem", [
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "tensor a: bad data_offsets [8, 0]"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 8]}}, b"\0" * 8, "tensor a: bad data_offsets [-8, 8]"),
    ({"a": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}}, b"\0" * 8, "tensor a: bad shape ['2']"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "tensor a: 8 bytes for shape [3] F32"),
    ({"a": {"dtype": "C64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8, "tensor a: unsupported dtype 'C64'"),
    ({"a": [1, 2]}, b"", "tensor a: its entry is not an object"),
    ([1, 2], b"", "the header is not an object"),
])
def test_malformed_safetensors_are_named(tmp_path, header, body, problem):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(_safetensors(header, body))
    with pytest.raises(CheckpointError) as e:
        read_state_dict(p)
    assert str(e.value) == f"{p}: not a valid safetensors file ({problem})"
    p.write_bytes((10**9).to_bytes(8, "little") + b"{}")
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        read_state_dict(p)


def test_integer_weights_are_refused_by_name(tmp_path, tiny_reference):
    from cli_helpers import run_sam

    sd = {k: v.clone() for k, v in tiny_reference.state_dict().items()}
    sd["mask_decoder.iou_token.weight"] = sd["mask_decoder.iou_token.weight"].to(torch.int32)
    p = tmp_path / "int.pth"
    torch.save(sd, p)
    with pytest.raises(CheckpointError, match=r"mask_decoder.iou_token.weight: torch.int32 in file, floating point expected"):
        load_model(checkpoint=p)
    from conftest import EXAMPLES

    r = run_sam("segment", EXAMPLES / "chelsea.jpg", "-p", "1,1", "-o", tmp_path / "m.png", "-c", p)
    assert r.returncode == 4 and "floating point expected" in r.stderr.decode()
