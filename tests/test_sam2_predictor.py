"""SAM 2.1 through sam's loader and predictor against Meta's SAM2ImagePredictor (sam2 1.1.0, the
oracle): a checkpoint in Meta's layout (under "model", with video keys the image path never
reads), the tiny config's trunk with random weights, the same prompts (clicks, a box with a
click, a mask fed back), both mask choices: the same masks, IoUs and low-res logits."""

from __future__ import annotations

import numpy as np
import pytest
import sam2.sam2_image_predictor  # noqa: F401  (the oracle: a missing one fails, never skips)
import torch

from conftest import EXAMPLES  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from reference import build_sam2_tiny

    return build_sam2_tiny(tmp_path_factory.mktemp("sam2") / "sam2.1_tiny_random.pt")


def test_the_loader_builds_sam_2_from_the_file(models):
    from sam_cli.checkpoints import load

    loaded = load(checkpoint=models[1])
    assert loaded.family == "sam2" and loaded.net.arch.stages == (1, 2, 7, 2)
    assert set(loaded.ignored) == {"memory_encoder.fuser.layers.0.weight", "obj_ptr_proj.layers.0.weight"}


@pytest.mark.parametrize("multimask", [True, False])
def test_predictions_match_sam2_image_predictor(models, multimask):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    ref_model, path = models
    img = read_image(EXAMPLES / "coffee.jpg")  # 600×400: the square resize scales x and y apart
    ref = SAM2ImagePredictor(ref_model)
    ours = Predictor(load_model(checkpoint=path))
    with torch.no_grad():
        ref.set_image(img)
    ours.set_image(img)
    torch.testing.assert_close(ours.features["image_embed"], ref._features["image_embed"], rtol=1e-4, atol=1e-4)
    cases = [dict(point_coords=np.array([[320.0, 200.0], [100, 90]]), point_labels=np.array([1, 0])),
             dict(box=np.array([120.0, 60, 480, 350]), point_coords=np.array([[300.0, 200.0]]), point_labels=np.array([1]))]
    for kw in cases:
        with torch.no_grad():
            m, iou, low = ref.predict(multimask_output=multimask, **kw)
        box = kw.pop("box", None)
        got = ours.predict(boxes=None if box is None else box[None], multimask=multimask, **kw)
        assert np.abs(got.iou[0] - iou).max() <= 1e-4
        assert np.abs(got.low_res[0] - low).max() <= 1e-3
        assert (got.masks[0] == m.astype(bool)).mean() >= 0.999
        # the most confident low-res mask fed back as a mask prompt
        k = int(iou.argmax())
        with torch.no_grad():
            m2, iou2, _ = ref.predict(mask_input=low[k : k + 1], multimask_output=False, **kw, **(
                {} if box is None else {"box": box}))
        got2 = ours.predict(boxes=None if box is None else box[None], mask_input=got.low_res[0, k][None],
                            multimask=False, **kw)
        assert np.abs(got2.iou[0] - iou2).max() <= 1e-4 and (got2.masks[0] == m2.astype(bool)).mean() >= 0.999


def test_the_cli_segments_with_sam_2_and_says_what_it_left_out_under_debug(models, tmp_path):
    from cli_helpers import lines, run_sam

    p = run_sam("segment", EXAMPLES / "chelsea.jpg", "--box", "50,40,300,250", "-o", tmp_path / "m.png", "-c", models[1],
                "--debug")
    assert p.returncode == 0, p.stderr
    assert lines(p)[0]["file"] == str(tmp_path / "m.png")
    assert ("2 keys the image model does not use, left out by name: memory_encoder.fuser.layers.0.weight, "
            "obj_ptr_proj.layers.0.weight") in p.stderr.decode()


def test_a_sam_2_model_name_downloads_from_a_mirror_with_its_own_hash_variable(models, tmp_path, monkeypatch):
    """`-m sam2.1_hiera_tiny`: Meta's file name under SAM_BASE_URL, a mirror's other weights named
    by SAM_SHA256_SAM2_1_HIERA_TINY (the name's dots as underscores), cached under a name that
    holds that hash."""
    import hashlib

    from sam_cli.fetch import base_url, sha_variable
    from sam_cli.registry import MODELS

    from cli_helpers import run_sam
    from httpserver import FileServer

    m = MODELS["sam2.1_hiera_tiny"]
    monkeypatch.delenv("SAM_BASE_URL")  # Meta's own folder for SAM 2.1 files (the tests' is a dead port)
    assert base_url(m) == "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
    assert sha_variable(m) == "SAM_SHA256_SAM2_1_HIERA_TINY"
    data = models[1].read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    with FileServer({"sam2.1_hiera_tiny.pt": data}) as srv:
        env = {"SAM_BASE_URL": srv.url, "SAM_SHA256_SAM2_1_HIERA_TINY": digest}
        p = run_sam("segment", EXAMPLES / "chelsea.jpg", "--point", "100,80", "-o", tmp_path / "m.png",
                    "-m", "sam2.1_hiera_tiny", env=env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "cache" / f"sam2.1_hiera_tiny.sha256-{digest[:16]}.pt").read_bytes() == data


@pytest.mark.parametrize("change", ["missing", "foreign", "shape"])
def test_a_sam_2_checkpoint_with_a_missing_or_foreign_tensor_is_refused_naming_it(models, tmp_path, change):
    from cli_helpers import run_sam

    sd = torch.load(models[1], weights_only=True)["model"]
    name = {"missing": "sam_mask_decoder.conv_s0.weight", "foreign": "image_encoder.trunk.blocks.0.extra.weight",
            "shape": "sam_mask_decoder.iou_prediction_head.layers.0.weight"}[change]
    if change == "missing":
        del sd[name]
    elif change == "foreign":
        sd[name] = torch.zeros(3)
    else:
        sd[name] = torch.zeros(7, 7)
    bad = tmp_path / "bad.pt"
    torch.save({"model": sd}, bad)
    p = run_sam("segment", EXAMPLES / "chelsea.jpg", "--point", "100,80", "-o", tmp_path / "m.png", "-c", bad)
    err = p.stderr.decode()
    assert p.returncode == 4, err
    assert name in err and str(bad) in err and "Traceback" not in err
    assert not (tmp_path / "m.png").exists()


def test_a_mask_image_lands_where_each_model_puts_the_image(models, tmp_path):
    """--mask-input with a mask image: resized as the model resizes the photo. On a 600×400 photo
    a mask of its left half is the left half of SAM 2's square 256² frame, every row; in SAM 1's
    padded frame it is the left half of the top 171 rows (the rest is padding, outside). Through
    the CLI with SAM 2: the masks Meta's SAM2ImagePredictor gives for those logits."""
    import cv2
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image
    from sam_cli.prompts import load_mask_prompt

    from cli_helpers import run_sam

    img = read_image(EXAMPLES / "coffee.jpg")
    h, w = img.shape[:2]
    half = np.zeros((h, w), np.uint8)
    half[:, : w // 2] = 255
    cv2.imwrite(str(tmp_path / "half.png"), half)
    net = load_model(checkpoint=models[1])
    sam2 = load_mask_prompt(tmp_path / "half.png", (h, w), net)[0]
    assert sam2.shape == (256, 256)
    assert (sam2[:, :127] > 0).all() and (sam2[:, 129:] < 0).all()
    sam1 = load_mask_prompt(tmp_path / "half.png", (h, w))[0]
    assert (sam1[:170, :127] > 0).all() and (sam1[:170, 129:] < 0).all() and (sam1[172:] < 0).all()
    ref = SAM2ImagePredictor(models[0])
    with torch.no_grad():
        ref.set_image(img)
        m, _, _ = ref.predict(mask_input=sam2[None], point_coords=np.array([[100.0, 200.0]]),
                              point_labels=np.array([1]), multimask_output=False)
    p = run_sam("segment", EXAMPLES / "coffee.jpg", "--mask-input", tmp_path / "half.png", "--point", "100,200",
                "-o", tmp_path / "m.png", "-c", models[1])
    assert p.returncode == 0, p.stderr
    got = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert (got == m[0].astype(bool)).mean() >= 0.999
    np.save(tmp_path / "wrong.npy", np.zeros((288, 288), np.float32))
    p = run_sam("segment", EXAMPLES / "coffee.jpg", "--mask-input", tmp_path / "wrong.npy", "-o", tmp_path / "x.png",
                "-c", models[1])
    assert p.returncode != 0 and b"must be 256\xc3\x97256" in p.stderr, p.stderr


@pytest.mark.heavy  # TorchDynamo traces three parts (a CPU is not what --compile is for): CI runs it after the default run
def test_compiled_parts_are_traced_whole_and_give_the_eager_outputs(models):
    """Sam2.compile_parts (`sam auto --compile` with SAM 2): TorchDynamo traces the Hiera encoder
    with its neck, the decoder's transformer and one prompt's upscaling into one graph each (a
    graph break would make more), and the graphs give the eager model's features and masks.
    The backend runs each traced graph as it is (Inductor's code generation needs minutes on
    this CPU; tests/test_gpu.py runs Inductor itself)."""
    import copy

    from sam_cli.checkpoints import load_model
    from sam_cli.io.images import read_image
    from sam_cli.predictor import Predictor

    torch._dynamo.reset()
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    eager = load_model(checkpoint=models[1])
    img = read_image(EXAMPLES / "coffee.jpg")
    boxes = np.array([[120.0, 60, 480, 350], [10, 10, 200, 150], [300, 100, 590, 390]])
    outs = []
    for net in (eager, copy.deepcopy(eager).compile_parts(backend=record)):
        assert net.encoder_compiled == (net is not eager)
        p = Predictor(net)
        p.set_image(img)
        outs.append((p.features, p.predict(boxes=boxes, multimask=True)))
    torch._dynamo.reset()
    assert len(graphs) == 3, [len(g.graph.nodes) for g in graphs]  # encoder, transformer, upscaling
    assert all(sum(n.op == "call_function" for n in g.graph.nodes) >= 6 for g in graphs)
    (fa, a), (fb, b) = outs
    assert set(fa.tensors) == {"image_embed", "feat_s0", "feat_s1"}
    for key in fa.tensors:
        torch.testing.assert_close(fa[key], fb[key], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(a.low_res, b.low_res, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(a.iou, b.iou, rtol=1e-5, atol=1e-5)
    assert (a.masks == b.masks).mean() >= 0.9999
