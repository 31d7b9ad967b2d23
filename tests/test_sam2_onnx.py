"""`sam export onnx` with a SAM 2.1 model: onnxruntime's SAM 2 interface (input and output names,
dtypes, the padding point added inside), run in onnxruntime on a photo and compared with Meta's
SAM2ImagePredictor (sam2 1.1.0, the oracle) on the same weights: the same masks, IoUs and
low-res logits for clicks, a box with a click, a mask fed back, one and three masks."""

from __future__ import annotations

import numpy as np
import onnxruntime  # noqa: F401  (the test extra installs it: a missing one fails, never skips)
import pytest
import sam2.sam2_image_predictor  # noqa: F401  (the oracle: a missing one fails, never skips)
import torch

from conftest import EXAMPLES

ORT_DECODER_INPUTS = ["image_features_0", "image_features_1", "image_embeddings", "point_coords", "point_labels",
                      "input_masks", "has_input_masks", "original_image_size"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from sam_cli.checkpoints import load_model

    from reference import build_sam2_tiny

    ref, path = build_sam2_tiny(tmp_path_factory.mktemp("sam2onnx") / "sam2.1_tiny_random.pt", seed=2)
    return ref, load_model(checkpoint=path), path


def _session(path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("single", [False, pytest.param(True, marks=pytest.mark.heavy)])
def test_decoder_in_onnxruntime_matches_sam2_image_predictor(models, tmp_path, single):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from sam_cli.export import sam2 as X
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    ref_model, net, _ = models
    sess = _session(X.export_decoder(net, tmp_path / "decoder.onnx", single_mask=single))
    assert [i.name for i in sess.get_inputs()] == ORT_DECODER_INPUTS
    assert [o.name for o in sess.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]
    assert sess.get_inputs()[4].type == "tensor(int32)" and sess.get_inputs()[7].type == "tensor(int32)"

    img = read_image(EXAMPLES / "coffee.jpg")  # 400×600: x and y scale apart
    h, w = img.shape[:2]
    feats = Predictor(net)
    feats.set_image(img)
    f = feats.features
    ref = SAM2ImagePredictor(ref_model)
    with torch.no_grad():
        ref.set_image(img)
    scale = np.array([1024 / w, 1024 / h])
    low_prev = None
    for kw in (dict(point_coords=np.array([[320.0, 200.0], [100, 90]]), point_labels=np.array([1, 0])),
               dict(box=np.array([120.0, 60, 480, 350]), point_coords=np.array([[300.0, 200.0]]),
                    point_labels=np.array([1]))):
        coords = kw["point_coords"] * scale
        labels = kw["point_labels"]
        if "box" in kw:
            coords = np.concatenate([kw["box"].reshape(2, 2) * scale, coords])
            labels = np.concatenate([[2, 3], labels])
        for mask_in in (None, low_prev):
            with torch.no_grad():
                m, iou, low = ref.predict(multimask_output=not single, mask_input=mask_in, **kw)
            got = sess.run(None, {
                "image_features_0": f["feat_s0"].numpy(), "image_features_1": f["feat_s1"].numpy(),
                "image_embeddings": f["image_embed"].numpy(),
                "point_coords": coords[None].astype(np.float32), "point_labels": labels[None].astype(np.int32),
                "input_masks": (np.zeros((1, 1, 256, 256), np.float32) if mask_in is None
                                else mask_in[None].astype(np.float32)),
                "has_input_masks": np.array([0.0 if mask_in is None else 1.0], np.float32),
                "original_image_size": np.array([h, w], np.int32)})
            assert got[0].dtype == bool and got[0].shape == (1, 1 if single else 3, h, w)
            assert np.abs(got[1][0] - iou).max() <= 1e-4
            assert np.abs(got[2][0] - low).max() <= 1e-3
            assert (got[0][0] == m.astype(bool)).mean() >= 0.999
            low_prev = low[int(iou.argmax())][None]


def test_sam1_only_options_are_refused_for_sam_2(models, tmp_path):
    from cli_helpers import run_sam

    p = run_sam("export", "onnx", "-c", models[2], "-o", tmp_path / "x", "--use-stability-score")
    assert p.returncode == 2
    assert "--use-stability-score is for SAM 1's export" in p.stderr.decode()
    assert not (tmp_path / "x" / "decoder.onnx").exists()


@pytest.mark.heavy  # tracing the Hiera trunk takes a while: CI runs it after the default run
def test_cli_exports_the_encoder_and_it_matches_sams_features(models, tmp_path):
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    from cli_helpers import run_sam

    _, net, path = models
    p = run_sam("export", "onnx", "-c", path, "-o", tmp_path / "o", "--encoder")
    assert p.returncode == 0, p.stderr
    err = p.stderr.decode()
    assert "wrote" in err and "encoder outputs relative L2" in err
    img = read_image(EXAMPLES / "chelsea.jpg")
    x = net.preprocess(net.resize(torch.from_numpy(img), (1024, 1024)))  # as the module doc says an app prepares it
    got = _session(tmp_path / "o" / "encoder.onnx").run(None, {"image": x.numpy()})
    pred = Predictor(net)
    pred.set_image(img)
    for name, g in zip(("feat_s0", "feat_s1", "image_embed"), got):
        want = pred.features[name].numpy()
        assert np.linalg.norm(g - want) / np.linalg.norm(want) <= 1e-4, name
