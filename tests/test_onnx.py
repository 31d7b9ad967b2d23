"""`sam export onnx`: decoder.onnx in onnxruntime against Meta's SamOnnxModel (the oracle, in
torch) and against sam's own decoder, for clicks, a box, a box with clicks and a mask input,
under every combination of the export options; encoder.onnx against sam's encoder; the
example script against `sam segment`."""

from __future__ import annotations

import copy
import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from cli_helpers import run_sam
from conftest import EXAMPLES, REPO

H, W = 480, 640  # the image: the 1024 frame holds it as 768×1024
SCALE = 1024 / 640


def kinds() -> dict[str, dict]:
    """Decoder inputs (in the 1024 frame) for each kind of prompt, as an app gives them."""
    g = torch.Generator().manual_seed(3)
    clicks = torch.tensor([[[300.0, 200.0], [700.0, 500.0]]]) * 1.0
    box = torch.tensor([[[120.0, 90.0], [800.0, 600.0]]])
    pad = torch.zeros(1, 1, 2)
    low = torch.randn(1, 1, 256, 256, generator=g) * 4
    none = torch.zeros(1, 1, 256, 256)
    return {
        "click": dict(point_coords=torch.cat([clicks[:, :1], pad], 1), point_labels=torch.tensor([[1.0, -1.0]]),
                      mask_input=none, has_mask_input=torch.tensor([0.0])),
        "clicks": dict(point_coords=torch.cat([clicks, pad], 1), point_labels=torch.tensor([[1.0, 0.0, -1.0]]),
                       mask_input=none, has_mask_input=torch.tensor([0.0])),
        "box": dict(point_coords=box, point_labels=torch.tensor([[2.0, 3.0]]), mask_input=none,
                    has_mask_input=torch.tensor([0.0])),
        "box+clicks": dict(point_coords=torch.cat([clicks, box], 1), point_labels=torch.tensor([[1.0, 0.0, 2.0, 3.0]]),
                           mask_input=none, has_mask_input=torch.tensor([0.0])),
        "mask": dict(point_coords=torch.cat([clicks[:, :1], pad], 1), point_labels=torch.tensor([[1.0, -1.0]]),
                     mask_input=low, has_mask_input=torch.tensor([1.0])),
    }


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def embedding(tiny_reference):
    from segment_anything import SamPredictor

    from sam_cli.io.images import read_image

    img = read_image(EXAMPLES / "coffee.jpg")
    pred = SamPredictor(tiny_reference)
    pred.set_image(img)
    return pred.get_image_embedding()


def example_script():
    """scripts/onnx_segment.py as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("onnx_segment", REPO / "scripts/onnx_segment.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


COMBOS = list(itertools.product([False, True], repeat=4))
#: four of the sixteen in the default run, each option on in two and off in two; the rest under
#: `heavy` (CI runs it after the default run)
DEFAULT_COMBOS = {(False, False, False, False), (True, True, False, False), (False, False, True, True),
                  (True, True, True, True)}


@pytest.mark.parametrize("single,stability,extra,gelu",
                         [c if c in DEFAULT_COMBOS else pytest.param(*c, marks=pytest.mark.heavy) for c in COMBOS],
                         ids=["-".join(n for n, on in zip(("single", "stability", "extra", "gelu"), c) if on) or "plain"
                              for c in COMBOS])
def test_decoder_matches_meta_onnx_model(tiny_model, tiny_reference, embedding, tmp_path, single, stability, extra,
                                         gelu):
    from segment_anything.utils.onnx import SamOnnxModel

    from sam_cli.export.onnx import DecoderOptions, decoder_outputs, export_decoder

    o = DecoderOptions(return_single_mask=single, use_stability_score=stability, return_extra_metrics=extra,
                       gelu_approximate=gelu)
    path = export_decoder(tiny_model, tmp_path / "decoder.onnx", o)
    ref = copy.deepcopy(tiny_reference)
    if gelu:
        for m in ref.modules():
            if isinstance(m, torch.nn.GELU):
                m.approximate = "tanh"
    oracle = SamOnnxModel(ref, return_single_mask=single, use_stability_score=stability,
                          return_extra_metrics=extra)
    sess = session(path)
    names = decoder_outputs(o)
    assert [x.name for x in sess.get_outputs()] == names
    for kind, ins in kinds().items():
        ins = {"image_embeddings": embedding, **ins, "orig_im_size": torch.tensor([float(H), float(W)])}
        got = dict(zip(names, sess.run(names, {k: v.numpy() for k, v in ins.items()})))
        with torch.no_grad():
            want = oracle(*ins.values())
        # Meta's order: masks, scores, [stability, areas], low-res
        want = dict(zip(names, [w.numpy() for w in want]))
        m = 1 if single else 4
        assert got["masks"].shape == (1, m, H, W) and got["low_res_masks"].shape == (1, m, 256, 256), kind
        assert rel(got["low_res_masks"], want["low_res_masks"]) <= 1e-4, kind
        agree = ((got["masks"] > 0) == (want["masks"] > 0)).mean()
        assert agree >= 0.999, (kind, agree)
        np.testing.assert_allclose(got["iou_predictions"], want["iou_predictions"], atol=1e-4, err_msg=kind)
        if extra:
            np.testing.assert_allclose(got["stability_scores"], want["stability_scores"], atol=2e-3, err_msg=kind)
            assert np.abs(got["areas"] - want["areas"]).max() <= 0.001 * H * W, kind


def test_decoder_matches_sams_own_decoder(tiny_model, embedding, tmp_path):
    """The graph's low-res logits are those of sam's prompt encoder and mask decoder (all four
    mask tokens), for each kind of prompt, and the quantised export stays close to them."""
    from sam_cli.export.onnx import DecoderOptions, export_decoder

    net = tiny_model
    sess = session(export_decoder(net, tmp_path / "decoder.onnx"))
    quant = session(export_decoder(net, tmp_path / "q" / "decoder.onnx", DecoderOptions(quantize=True)))
    assert (tmp_path / "q/decoder.onnx").stat().st_size < 0.45 * (tmp_path / "decoder.onnx").stat().st_size
    for kind, ins in kinds().items():
        feed = {"image_embeddings": embedding.numpy(), **{k: v.numpy() for k, v in ins.items()},
                "orig_im_size": np.array([H, W], np.float32)}
        low = sess.run(["low_res_masks"], feed)[0]
        coords, labels = ins["point_coords"], ins["point_labels"]
        corners = labels[0] >= 2
        points = (coords[:, ~corners], labels[:, ~corners]) if (~corners).any() else None
        box = coords[:, corners].reshape(1, 4) if corners.any() else None
        if box is None:  # the padding point is the prompt encoder's own doing
            points = (points[0][:, :-1], points[1][:, :-1])
        with torch.no_grad():
            sparse, dense = net.prompt_encoder(points, box, ins["mask_input"] if ins["has_mask_input"][0] else None)
            want, _ = net.mask_decoder.predict_masks(embedding.to(net.device), net.prompt_encoder.get_dense_pe(),
                                                     sparse, dense)
        assert rel(low, want.numpy()) <= 1e-4, kind
        q = quant.run(["low_res_masks"], feed)[0]
        assert rel(q, low) <= 0.05 and ((q > 0) == (low > 0)).mean() >= 0.97, kind


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_encoder_export_and_external_data(tiny_model, tmp_path, monkeypatch):
    from sam_cli.export import onnx as X
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    net = tiny_model
    pred = Predictor(net)
    pred.set_image(read_image(EXAMPLES / "chelsea.jpg"))
    x, _, _ = example_script().encoder_input(read_image(EXAMPLES / "chelsea.jpg"))
    got = session(X.export_encoder(net, tmp_path / "encoder.onnx")).run(None, {"image": x})[0]
    with torch.no_grad():
        ours = net.image_encoder(torch.from_numpy(x)).numpy()
    assert rel(got, ours) <= 1e-4
    assert rel(got, pred.features["image_embed"].float().numpy()) <= 1e-4  # the script prepares the image as sam does
    monkeypatch.setattr(X, "PROTOBUF_LIMIT", 2**26 + 1024)  # as if it were vit_h's 2.5 GB
    path = X.export_encoder(net, tmp_path / "ext" / "encoder.onnx")
    assert sorted(p.name for p in path.parent.iterdir()) == ["encoder.onnx", "encoder.onnx.data"]
    assert path.stat().st_size < 1_000_000 < (path.parent / "encoder.onnx.data").stat().st_size
    assert rel(session(path).run(None, {"image": x})[0], ours) <= 1e-4


@pytest.mark.heavy  # among the default run's longest: CI runs it after the default run
def test_cli_export_then_the_example_script_as_sam_segment(coherent_ckpt, tmp_path):
    """A user's path: `sam export onnx --encoder`, then scripts/onnx_segment.py on a photo with
    onnxruntime alone gives the mask `sam segment` gives for the same click."""
    out = tmp_path / "onnx"
    p = run_sam("export", "onnx", "-c", coherent_ckpt, "--encoder", "-o", out)
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode().splitlines()
    assert err[0].startswith(f"wrote {out / 'decoder.onnx'} (onnxruntime against sam: low-res logits relative L2 ")
    assert err[1].startswith(f"wrote {out / 'encoder.onnx'} (onnxruntime against sam: embeddings relative L2 ")
    photo = EXAMPLES / "chelsea.jpg"
    for extra in ([], ["--box", "100,50,400,300"]):
        mine = tmp_path / f"onnx{len(extra)}.png"
        s = subprocess.run([sys.executable, REPO / "scripts/onnx_segment.py", out, photo, "--point", "260,180",
                            *extra, "-o", mine], capture_output=True, text=True)
        assert s.returncode == 0, s.stderr
        theirs = tmp_path / f"sam{len(extra)}.png"
        p = run_sam("segment", photo, "--point", "260,180", *extra, "-c", coherent_ckpt, "-o", theirs)
        assert p.returncode == 0, p.stderr
        from PIL import Image

        a, b = np.asarray(Image.open(mine)) > 0, np.asarray(Image.open(theirs)) > 0
        assert a.shape == b.shape and (a == b).mean() >= 0.999, (a == b).mean()
        assert 0 < a.sum() < a.size


def test_missing_extra_is_a_clear_error(tiny_ckpt, tmp_path):
    import os

    fake = tmp_path / "noonnx" / "onnxruntime"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('No module named onnxruntime')\n")
    p = run_sam("export", "onnx", "-c", tiny_ckpt, "-o", tmp_path / "x", process=True,  # a PYTHONPATH of its own
                env={"PYTHONPATH": os.pathsep.join([str(fake.parent), os.environ.get("PYTHONPATH", "")])})
    assert p.returncode == 2
    assert p.stderr.decode().strip() == ("Error: sam export onnx needs onnxruntime, which is not installed "
                                         "(pip install 'segment-anything-cli[onnx]')")
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_vit_b_encoder_export(tmp_path):
    """encoder.onnx of a full-size vit_b (random weights) against sam's encoder."""
    from sam_cli.checkpoints import load_model
    from sam_cli.export import onnx as X

    from reference import arch_kwargs, build_reference, save_checkpoint

    net = load_model(checkpoint=save_checkpoint(build_reference(**arch_kwargs("vit_b"), seed=0), tmp_path / "b.pth"))
    assert X.check_encoder(net, X.export_encoder(net, tmp_path / "encoder.onnx")) <= 1e-4
