"""scripts/peers_bench.py, on the tests' tiny model: the peers get the reference's weights and
the table's agreement column can tell a faithful peer from a drifting one. Needs the `bench`
extra (Ultralytics, transformers), so it is marked `bench` and left out of the default run:

    pip install -e '.[test,bench]' && python -m pytest -m bench
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

pytestmark = pytest.mark.bench


def test_transformers_gets_the_reference_weights(tmp_path, tiny_reference):
    """Every tensor of Meta's layout lands in SamModel under its own name (strictly: nothing
    missing, nothing left over), and SamModel then gives the reference's embedding and box mask."""
    from peers_bench import hf_state_dict
    from segment_anything import SamPredictor
    from transformers import SamConfig, SamModel

    from reference import TINY

    ref = tiny_reference.eval()
    cfg = SamConfig(vision_config=dict(hidden_size=TINY["embed_dim"], num_hidden_layers=TINY["depth"],
                                       num_attention_heads=TINY["num_heads"],
                                       global_attn_indexes=list(TINY["global_attn_indexes"])))
    hf = SamModel(cfg).eval()
    hf.load_state_dict(hf_state_dict(ref.state_dict()), strict=True)

    img = np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    pred = SamPredictor(ref)
    pred.set_image(img)
    box = np.array([50, 40, 250, 220])
    ref_masks, ref_iou, _ = pred.predict(box=box, multimask_output=True)
    with torch.no_grad():
        x = pred.model.preprocess(torch.as_tensor(pred.transform.apply_image(img)).permute(2, 0, 1)[None].float())
        emb = hf.get_image_embeddings(x)
        tb = pred.transform.apply_boxes(box[None], img.shape[:2])
        out = hf(image_embeddings=emb, input_boxes=torch.as_tensor(tb[None], dtype=torch.float))
    torch.testing.assert_close(emb, pred.features, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.iou_scores[0, 0], torch.as_tensor(ref_iou), rtol=1e-4, atol=1e-5)
    low = out.pred_masks[0, 0]  # (3, 256, 256) logits, the reference's low-resolution masks
    ref_low = pred.predict(box=box, multimask_output=True, return_logits=True)[2]
    torch.testing.assert_close(low, torch.as_tensor(ref_low), rtol=1e-3, atol=1e-3)


def test_peers_table_on_the_tiny_model(tmp_path):
    """Every tool gives every row, and the agreement column measures: transformers' embedding is
    the reference's, Ultralytics' (letterbox padded with grey before normalising) is not."""
    import json
    import subprocess

    res = tmp_path / "peers.json"
    p = subprocess.run([sys.executable, "scripts/peers_bench.py", "--model", "tiny", "--rows", "encoder,boxes",
                        "--repeat", "1", "--folder-images", "1", "--json", str(res)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"^\| image encoder .*\| embedding rel\. L2", p.stdout, re.M), p.stdout
    rows = json.loads(res.read_text())["rows"]
    l2 = {k: float(re.search(r"rel\. L2 (\S+)", v["agreement"]).group(1))
          for k, v in rows["encoder"].items() if k != "ref"}
    assert l2["ours"] < 1e-4 and l2["transformers"] < 1e-4, l2
    assert l2["ultralytics"] > 1e-2, l2
    for impl in ("ours", "ultralytics", "transformers"):
        assert rows["boxes"][impl]["seconds"] > 0
        assert "pixels equal" in rows["boxes"][impl]["agreement"]


def test_sam2_bench_gives_ultralytics_and_transformers_columns_with_meta_s_weights():
    """scripts/sam2_bench.py with Ultralytics and transformers installed: Ultralytics' SAM 2.1
    loads Meta's file strictly under its own name, transformers' Sam2Model loads its tensors
    strictly under its key names, and each one's boxes row is timed and compared with sam's."""
    import subprocess

    p = subprocess.run([sys.executable, "scripts/sam2_bench.py", "--models", "sam2.1_hiera_tiny", "--rows",
                        "encoder,boxes", "--repeat", "1"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    head = next(line for line in p.stdout.splitlines() if line.startswith("| model"))
    for peer in ("Meta", "Ultralytics", "transformers"):
        assert f"{peer} s" in head and f"agreement, {peer}" in head, p.stdout
    boxes = next(line for line in p.stdout.splitlines() if "| boxes |" in line)
    cells = [c.strip() for c in boxes.strip("|").split("|")]
    assert all(float(cells[i]) > 0 for i in (2, 3, 5, 7)), cells  # sam's, Meta's, Ultralytics', transformers'
    assert all(c.endswith("% pixels equal") for c in cells[-3:]), cells
    assert "failed" not in p.stderr, p.stderr[-3000:]
