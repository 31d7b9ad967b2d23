"""Object proposals, the paper's way (Kirillov et al. 2023, §7.3 and appendix D.3): automatic
mode on a 64×64 grid without crops, without the predicted-IoU or stability filters and with a
looser NMS (0.9), every mask ranked by the mean of its predicted IoU and stability score, the
best 1000 kept. `sam auto --proposals` (the run record keeps the number kept, which changes
the outputs)."""

from __future__ import annotations

from dataclasses import replace

from ..masks import MaskRecord

#: The settings that make automatic mode the paper's proposal generator; options the user
#: gives explicitly win (a smaller grid on a CPU, another NMS threshold).
PRESET = {"points_per_side": 64, "crop_n_layers": 0, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0,
          "box_nms_thresh": 0.9}
DEFAULT_MAX = 1000


def score(r: MaskRecord) -> float:
    """A proposal's score: the mean of its predicted IoU and its stability score."""
    return (float(r.predicted_iou) + float(r.stability_score)) / 2


def rank(records: list[MaskRecord], keep: int) -> list[MaskRecord]:
    """The `keep` best records by score, best first (ties in the generator's order), each with
    its score set (it is COCO's `score` in every format that writes one)."""
    order = sorted(range(len(records)), key=lambda i: -score(records[i]))
    return [replace(records[i], score=score(records[i])) for i in order[:keep]]
