"""SAM 2.1's image encoder (sam_cli/models/sam2/hiera.py) against Meta's sam2 1.1.0 (the oracle,
test-only): the same random weights in both, loaded by key name strictly, give the same three
feature levels. Configs drawn apart: the tiny model's stages and global blocks, and a small
made-up one with two heads, other windows and a non-square input."""

from __future__ import annotations

import pytest
import sam2.modeling.backbones.hieradet  # noqa: F401  (the oracle, as the README installs it: a missing one fails)
import torch

CONFIGS = {
    # sam2.1_hiera_t.yaml's trunk at a quarter of the input size (the same blocks and windows)
    "tiny": dict(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_blocks=(5, 7, 9),
                 window_spec=(8, 4, 14, 7), pos_bkg=(7, 7), hw=(256, 256)),
    # two heads, other windows and background size, a global first block, a non-square input
    "other": dict(embed_dim=32, num_heads=2, stages=(2, 1, 3, 1), global_blocks=(0, 4),
                  window_spec=(4, 2, 6, 3), pos_bkg=(5, 6), hw=(192, 320)),
}


def reference(c):
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
    from sam2.modeling.position_encoding import PositionEmbeddingSine

    trunk = Hiera(embed_dim=c["embed_dim"], num_heads=c["num_heads"], stages=c["stages"],
                  global_att_blocks=c["global_blocks"], window_spec=c["window_spec"],
                  window_pos_embed_bkg_spatial_size=c["pos_bkg"])
    neck = FpnNeck(PositionEmbeddingSine(num_pos_feats=256, normalize=True, temperature=10000), d_model=256,
                   backbone_channel_list=trunk.channel_list, fpn_top_down_levels=[2, 3], fpn_interp_model="nearest")
    return ImageEncoder(trunk, neck, scalp=1).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_image_encoder_matches_the_reference(name):
    from sam_cli.models.sam2.hiera import Hiera, ImageEncoder

    c = CONFIGS[name]
    torch.manual_seed(0)
    ref = reference(c)
    with torch.no_grad():  # positional embeddings start at zero: give them values to test
        ref.trunk.pos_embed.normal_(0, 0.5)
        ref.trunk.pos_embed_window.normal_(0, 0.5)
    ours = ImageEncoder(Hiera(**{k: v for k, v in c.items() if k != "hw"})).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)  # every key by its name, nothing left over
    x = torch.randn(2, 3, *c["hw"])
    with torch.no_grad():
        want = ref(x)["backbone_fpn"]
        got = ours(x)
    assert [tuple(t.shape) for t in got] == [tuple(t.shape) for t in want]
    assert [t.shape[-2:] for t in got] == [(c["hw"][0] // s, c["hw"][1] // s) for s in (4, 8, 16)]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)
