"""SAM 2.1's decoder (sam_cli/models/sam2/decoder.py) and SAM 1's prompt encoder as SAM 2 uses it,
against Meta's sam2 1.1.0: the same random weights, strictly by key name, the same prompts (clicks,
a box with clicks, a mask), both multimask choices (the single one through the dynamic
stability fallback, hit both ways) give the same logits, IoUs and object scores."""

from __future__ import annotations

import pytest
import sam2.modeling.sam.mask_decoder  # noqa: F401  (the oracle: a missing one fails, never skips)
import torch

SEEN: list[int] = []  # per case, how many prompts' single mask fell back to the best of three


def reference(seed: int):
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.prompt_encoder import PromptEncoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    torch.manual_seed(seed)
    pe = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(1024, 1024), mask_in_chans=16)
    dec = MaskDecoder(num_multimask_outputs=3, transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048,
                                                                             num_heads=8),
                      transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256, use_high_res_features=True,
                      iou_prediction_use_sigmoid=True, pred_obj_scores=True, pred_obj_scores_mlp=True,
                      use_multimask_token_for_obj_ptr=True, dynamic_multimask_via_stability=True,
                      dynamic_multimask_stability_delta=0.05, dynamic_multimask_stability_thresh=0.98)
    with torch.no_grad():  # tokens and embeddings start at ordinary values; make the logits larger too
        for p in dec.output_hypernetworks_mlps.parameters():
            p.mul_(3.0)
    return pe.eval(), dec.eval()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("prompt", ["clicks", "box and clicks", "mask"])
def test_decoder_matches_the_reference(seed, prompt):
    from sam_cli.models.sam1.prompt_encoder import PromptEncoder
    from sam_cli.models.sam2.decoder import Sam2Decoder

    ref_pe, ref_dec = reference(seed)
    pe, dec = PromptEncoder(), Sam2Decoder()
    pe.load_state_dict(ref_pe.state_dict(), strict=True)
    dec.load_state_dict(ref_dec.state_dict(), strict=True)
    pe.eval(), dec.eval()
    g = torch.Generator().manual_seed(seed)
    b = 3
    embed = torch.randn(1, 256, 64, 64, generator=g)
    level0, level1 = torch.randn(1, 256, 256, 256, generator=g), torch.randn(1, 256, 128, 128, generator=g)
    clicks = torch.rand(b, 2, 2, generator=g) * 1000
    labels = torch.tensor([[1, 0], [1, 1], [0, 1]])
    mask = torch.randn(b, 1, 256, 256, generator=g) if prompt == "mask" else None
    if prompt == "box and clicks":  # SAM 2: the corners as points labelled 2 and 3, before the clicks
        corners = torch.sort(torch.rand(b, 2, 2, generator=g) * 1000, dim=1).values
        points = torch.cat([corners, clicks], 1), torch.cat([torch.tensor([[2, 3]]).expand(b, -1), labels], 1)
    else:
        points = clicks, labels
    with torch.no_grad():
        s0, s1 = ref_dec.conv_s0(level0), ref_dec.conv_s1(level1)
        sparse_r, dense_r = ref_pe(points=points, boxes=None, masks=mask)
        sparse, dense = pe(points, None, mask)
        torch.testing.assert_close(sparse, sparse_r, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dense.expand_as(dense_r), dense_r, rtol=1e-5, atol=1e-5)
        ours_s0, ours_s1 = dec.high_res(level0, level1)
        torch.testing.assert_close(ours_s0, s0)
        all_masks, all_iou, obj = dec.predict_masks(embed, pe.get_dense_pe(), sparse, dense, ours_s0, ours_s1)
        fallbacks = 0
        for multimask in (True, False):
            want_m, want_iou, _, want_obj = ref_dec(embed, ref_pe.get_dense_pe(), sparse_r, dense_r, multimask,
                                                    repeat_image=True, high_res_features=[s0, s1])
            got_m, got_iou = dec.choose(all_masks, all_iou, multimask)
            torch.testing.assert_close(got_m, want_m, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(got_iou, want_iou, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(obj, want_obj, rtol=1e-5, atol=1e-5)
            if not multimask:
                fallbacks = int((~torch.isclose(got_m, all_masks[:, :1]).all(-1).all(-1)).sum())
    SEEN.append(fallbacks)


def test_both_dynamic_multimask_branches_were_compared():
    """The cases above (run first, in file order) hit the stable single mask and the fallback."""
    assert len(SEEN) == 6 and min(SEEN) == 0 and max(SEEN) > 0
