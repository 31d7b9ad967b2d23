"""The paper's single-point valid-mask evaluation (Kirillov et al. 2023, §7.1 and appendix D.1)
on a COCO-format ground truth, object by object.

Clicks: the first is the object's "center", the pixel farthest from its boundary (a distance
transform, the image border counting as boundary; ties: the first in row-major order), or a
seeded random pixel of the object. Each next click is the pixel farthest from the boundary of
the error region: of the missed pixels (a foreground click) or of the wrongly taken ones (a
background click), whichever reaches farther (ties: foreground). The first prediction takes
the most confident of the three multimask outputs (or with `oracle` the one closest to the
ground truth); later ones the single output, with the previous low-res logits as the mask
prompt. The IoU with the ground truth is recorded after every click.

Box mode: the ground truth's box as the prompt (the single output), optionally refined once
with its own logits as the mask prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .ground_truth import GroundTruth, gt_mask, read_ground_truth

DEFAULT_CLICKS = (1, 2, 3, 5, 9)


@dataclass
class ObjectEval:
    """One ground-truth object's results."""

    image_id: int
    ann_id: int
    ious: list[float]  # after click 1, 2, … (clicks mode), or [IoU] (box mode)
    clicks: list[list[float]]  # [x, y, label] per click ([] in box mode)
    score: float  # the predicted IoU of the last mask
    rle: dict | None = None  # the last mask (box mode, for COCO AP), COCO compressed RLE
    empty: bool = False  # a ground truth of no pixels: left out of mIoU and AP, and counted


def farthest_inside(region: np.ndarray) -> tuple[int, int, float] | None:
    """(x, y, distance) of the pixel of `region` farthest from its boundary (the image border
    counts as boundary); None for an empty region."""
    if not region.any():
        return None
    d = cv2.distanceTransform(np.pad(region, 1).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    k = int(d.argmax())
    y, x = divmod(k, d.shape[1])
    return x, y, float(d[y, x])


def next_click(gt: np.ndarray, pred: np.ndarray) -> tuple[int, int, int] | None:
    """(x, y, label) of the next click, or None when the prediction is the ground truth."""
    fn = farthest_inside(gt & ~pred)
    fp = farthest_inside(pred & ~gt)
    if fn is None and fp is None:
        return None
    if fp is None or (fn is not None and fn[2] >= fp[2]):
        return fn[0], fn[1], 1
    return fp[0], fp[1], 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def _full(predictor, low: torch.Tensor) -> np.ndarray:

    net = predictor.model
    return (net.upscale(low, predictor.input_hw, predictor.orig_hw) > net.mask_threshold).cpu().numpy()


def click_eval(predictor, gt: np.ndarray, clicks: int, *, oracle: bool = False,
               first: tuple[int, int] | None = None) -> tuple[list[float], list[list[float]], float]:
    """One object, the predictor set to its image: (IoU after each click, the clicks, the
    last predicted IoU). A prediction equal to the ground truth ends the clicking: the rest
    of the IoUs are that 1.0."""
    dev = predictor.model.device
    pts: list[list[float]] = []
    ious: list[float] = []
    low = score = None
    pred = None
    for k in range(clicks):
        if k == 0:
            x, y = first if first is not None else farthest_inside(gt)[:2]
            label = 1
        else:
            nxt = next_click(gt, pred)
            if nxt is None:
                ious += [ious[-1]] * (clicks - k)
                break
            x, y, label = nxt
        pts.append([float(x), float(y), float(label)])
        arr = np.array(pts)
        p = torch.as_tensor(predictor.to_input_frame(arr[:, :2]), dtype=torch.float32, device=dev)[None]
        lab = torch.as_tensor(arr[:, 2], dtype=torch.float32, device=dev)[None]
        with torch.inference_mode():
            if k == 0:
                lows, scores = predictor.decode(p, lab, None, None, True)  # 1×3
                fulls = [_full(predictor, lows[:, j : j + 1])[0, 0] for j in range(lows.shape[1])]
                j = int(np.argmax([iou(f, gt) for f in fulls])) if oracle else int(scores[0].argmax())
                low, score, pred = lows[:, j : j + 1], float(scores[0, j]), fulls[j]
            else:
                low, s = predictor.decode(p, lab, None, low, False)
                score, pred = float(s[0, 0]), _full(predictor, low)[0, 0]
        ious.append(iou(pred, gt))
    return ious, pts, float(score)


def box_eval(predictor, gt: np.ndarray, box: list[float], *, refine: bool = False) -> tuple[float, float, np.ndarray]:
    """One object, the predictor set to its image, from its XYXY box: (IoU, predicted IoU,
    the mask)."""
    dev = predictor.model.device
    corners = predictor.to_input_frame(np.array(box, np.float64).reshape(2, 2)).reshape(1, 4)
    b = torch.as_tensor(corners, dtype=torch.float32, device=dev)
    with torch.inference_mode():
        low, s = predictor.decode(None, None, b, None, False)
        if refine:
            low, s = predictor.decode(None, None, b, low, False)
    pred = _full(predictor, low)[0, 0]
    return iou(pred, gt), float(s[0, 0]), pred


# ------------------------------------------------------------------ the ground truth
@dataclass(frozen=True)
class EvalSettings:
    clicks: int = max(DEFAULT_CLICKS)
    oracle: bool = False
    first: str = "center"  # or "random"
    seed: int = 0
    box: bool = False
    refine: bool = False
    text: bool = False  # the ground truth's category names as SAM 3 phrases: COCO mask AP


#: --text: detections scored below this are left out before COCO's 100 best per image are kept
TEXT_MIN_SCORE = 0.05
#: COCO's detections per image (COCOeval's largest maxDets)
TEXT_PER_IMAGE = 100


@dataclass
class Detection:
    """One detection of `sam eval --text`: the phrase's ground-truth category, SAM 3's score,
    the mask as COCO compressed RLE."""

    image_id: int
    category_id: int
    score: float
    rle: dict


class TextEval:
    """The ground truth's category names (in id order) as phrases on each image."""

    def __init__(self, net, gt: GroundTruth) -> None:
        from .errors import InputError, PromptError
        from .prompts import check_phrase
        from .text_prompts import TextSegmenter, TextSettings

        if not gt.categories:
            raise InputError(f"{gt.path}: no categories with names: --text takes their names as the phrases")
        self.ids = sorted(gt.categories)
        try:
            names = tuple(check_phrase(gt.categories[i], f"{gt.path}: category {i}") for i in self.ids)
        except PromptError as e:
            raise InputError(str(e)) from None
        self.seg = TextSegmenter(net, TextSettings(names, TEXT_MIN_SCORE))
        self.net = net

    @torch.inference_mode()
    def __call__(self, image: np.ndarray, image_id: int) -> list[Detection]:
        from . import masks as M

        trunk = self.net.encode(self.net.prepare(torch.from_numpy(np.ascontiguousarray(image))))["trunk"]
        recs = sorted(self.seg.segment(image, trunk), key=lambda r: -r.source["score"])[:TEXT_PER_IMAGE]
        return [Detection(image_id, self.ids[r.object_index], r.source["score"], M.rle_to_coco(r.rle)) for r in recs]


def evaluate_image(predictor, image: np.ndarray, image_id: int, anns: list[dict], s: EvalSettings) -> list[ObjectEval]:
    """Every object of one image (see the module doc)."""
    from pycocotools import mask as coco_mask

    h, w = image.shape[:2]
    predictor.set_image(image)
    out = []
    for a in anns:
        gt = gt_mask(a, h, w)
        if not gt.any():  # no pixel to click, and any mask scores 0: left out, said in the summary
            out.append(ObjectEval(image_id, int(a.get("id", 0)), [], [], 0.0, empty=True))
            continue
        if s.box:
            x, y, bw, bh = a["bbox"]
            v, score, pred = box_eval(predictor, gt, [x, y, x + bw, y + bh], refine=s.refine)
            rle = coco_mask.encode(np.asfortranarray(pred.astype(np.uint8)))
            rle["counts"] = rle["counts"].decode()
            out.append(ObjectEval(image_id, int(a.get("id", 0)), [v], [], score, rle))
            continue
        first = None
        if s.first == "random" and gt.any():
            ys, xs = np.nonzero(gt)
            k = int(np.random.default_rng([s.seed, int(a.get("id", 0))]).integers(len(xs)))
            first = (int(xs[k]), int(ys[k]))
        ious, pts, score = click_eval(predictor, gt, s.clicks, oracle=s.oracle, first=first)
        out.append(ObjectEval(image_id, int(a.get("id", 0)), ious, pts, score))
    return out


# ------------------------------------------------------------------ in the run engine
class EvalEngine:
    """Each image's objects evaluated (evaluate_image), as the image's one record: a list
    of ObjectEval."""

    def __init__(self, loaded, gt: GroundTruth, settings: EvalSettings, *, workers: int = 2,
                 reads: int = 0) -> None:
        from .engines import require_points
        from .predictor import Predictor

        self.gt, self.s, self.workers, self.reads = gt, settings, workers, reads
        if settings.text:
            from .text_prompts import require_text

            require_text(loaded)
            self.texts = TextEval(loaded.net, gt)
            return
        require_points(loaded)
        self.predictor = Predictor(loaded.net)

    def __call__(self, jobs):
        from .errors import InputError
        from .stream import image_by_image

        def check(item, img):
            want = self.gt.images[item.image_id]
            if img.shape[:2] != (want["height"], want["width"]):
                return InputError(f"{item.path}: {img.shape[1]}x{img.shape[0]} pixels, the ground truth "
                                  f"says {want['width']}x{want['height']}")
            return None

        def work(item, img):
            if self.s.text:
                return self.texts(img, item.image_id)
            return evaluate_image(self.predictor, img, item.image_id, self.gt.objects[item.image_id], self.s)

        return image_by_image(jobs, work, workers=self.workers, check=check, reads=self.reads)

    def close(self) -> None:
        pass


REPORT = "eval.json"
PLOT = "eval.png"


class EvalOutput:
    """`sam eval`'s outputs (io.outputs.OutputLayout's `own`): x.jpg.eval.json per image, and
    at the end eval.json (settings, summary, every object) and, for clicks, eval.png."""

    def __init__(self, gt: GroundTruth, settings: EvalSettings, report: tuple[int, ...]) -> None:
        self.gt, self.s, self.report = gt, settings, report

    def outputs(self, base):
        from pathlib import Path

        base = Path(base)
        return [base.with_name(base.name + ".eval.json")]

    def write(self, img) -> None:
        from dataclasses import asdict

        from .io import writers

        writers.write_json(self.outputs(img.base)[0], {"image_id": img.image_id,
                                                       "objects": [asdict(o) for o in img.records]})

    def count(self, base) -> int | None:
        import json

        try:
            return len(json.loads(self.outputs(base)[0].read_text())["objects"])
        except (OSError, ValueError, KeyError):
            return None

    def finish(self, root, rels: list[str], options=None):
        import json
        from dataclasses import asdict

        from .errors import OutputError
        from .io import writers

        objects, image_ids = [], []
        for rel in rels:
            src = self.outputs(root / rel)[0]
            try:
                doc = json.loads(src.read_text())
                objects += doc["objects"]
                image_ids.append(doc["image_id"])
            except (OSError, ValueError, KeyError) as e:
                raise OutputError(f"{src}: cannot read it back for {REPORT} ({e})") from None
        summary = text_summary(objects, image_ids, self.gt) if self.s.text else \
            summarise(objects, self.s, self.report, self.gt)
        writers.write_json(root / REPORT, {"ground_truth": self.gt.path, "settings": asdict(self.s),
                                           "summary": summary, "objects": objects})
        if not self.s.box and not self.s.text and objects:
            writers.atomic_write_bytes(root / PLOT, plot(summary["miou"], self.s.oracle))
        return root / REPORT, table(summary, self.s).replace("\n", "; ")


def summarise(objects: list[dict], s: EvalSettings, report: tuple[int, ...], gt: GroundTruth) -> dict:
    """{objects, miou: {clicks or "box": mean IoU}, and in box mode ap: {AP, AP50, AP75}}."""
    empty = sum(bool(o.get("empty")) for o in objects)
    objects = [o for o in objects if not o.get("empty")]
    out: dict = {"objects": len(objects), "crowd_left_out": gt.crowd, "empty_left_out": empty}
    if not objects:
        out["miou"] = {}
        return out
    if s.box:
        out["miou"] = {"box": float(np.mean([o["ious"][0] for o in objects]))}
        out["ap"] = coco_ap(objects, gt)
        return out
    out["miou"] = {str(k): float(np.mean([o["ious"][k - 1] for o in objects])) for k in report if k <= s.clicks}
    return out


def text_summary(detections: list[dict], image_ids: list[int], gt: GroundTruth) -> dict:
    """{images, detections, ap: {AP, AP50, AP75}}: COCO mask AP of the detections over the
    images evaluated (those with no detection count too)."""
    out: dict = {"images": len(image_ids), "detections": len(detections),
                 "objects": sum(len(gt.objects.get(i, [])) for i in image_ids), "crowd_left_out": gt.crowd,
                 "miou": {}}
    if image_ids:
        out["ap"] = _cocoeval(gt, [{"image_id": d["image_id"], "category_id": d["category_id"],
                                    "segmentation": d["rle"], "score": d["score"]} for d in detections], image_ids)
    return out


def _cocoeval(gt: GroundTruth, res: list[dict], image_ids: list[int]) -> dict:
    """pycocotools' segm AP, AP50 and AP75 of `res` on the images `image_ids`."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not res:  # nothing found: pycocotools cannot load an empty result
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO(gt.path)
        e = COCOeval(coco, coco.loadRes(res), "segm")
        e.params.imgIds = sorted(set(image_ids))
        e.evaluate()
        e.accumulate()
        e.summarize()
    return {"AP": float(e.stats[0]), "AP50": float(e.stats[1]), "AP75": float(e.stats[2])}


def coco_ap(objects: list[dict], gt: GroundTruth) -> dict:
    """COCO mask AP of the box-prompted masks (score: the predicted IoU), by pycocotools."""
    cat = {a["id"]: a["category_id"] for anns in gt.objects.values() for a in anns}
    return _cocoeval(gt, [{"image_id": o["image_id"], "category_id": cat[o["ann_id"]], "segmentation": o["rle"],
                           "score": o["score"]} for o in objects], [o["image_id"] for o in objects])


def table(summary: dict, s: EvalSettings) -> str:
    """The summary as text: a line per number of clicks (or the box line)."""
    empty = summary.get("empty_left_out", 0)
    left_out = f"\n{empty} object{'s' if empty != 1 else ''} of no pixels left out" if empty else ""
    return _lines(summary, s) + left_out


def _lines(summary: dict, s: EvalSettings) -> str:
    if s.text:
        if "ap" not in summary:
            return "no images"
        ap = summary["ap"]
        return (f"text (the category names as phrases): mask AP {ap['AP']:.4f} (AP50 {ap['AP50']:.4f}, AP75 "
                f"{ap['AP75']:.4f}) over {summary['images']} images, {summary['detections']} detections")
    if not summary["miou"]:
        return "no objects"
    if s.box:
        ap = summary["ap"]
        return (f"box{' + refine' if s.refine else ''}: mIoU {summary['miou']['box']:.4f}, mask AP {ap['AP']:.4f} "
                f"(AP50 {ap['AP50']:.4f}, AP75 {ap['AP75']:.4f}) over {summary['objects']} objects")
    how = "oracle" if s.oracle else "most confident"
    return "\n".join(f"{k} click{'s' if k != '1' else ''} ({how}, first click {s.first}): mIoU {v:.4f} "
                     f"over {summary['objects']} objects" for k, v in summary["miou"].items())


def plot(miou: dict[str, float], oracle: bool) -> bytes:
    """mIoU against clicks, a PNG drawn with OpenCV."""
    w, h, m = 480, 320, 50
    img = np.full((h, w, 3), 255, np.uint8)
    cv2.rectangle(img, (m, 20), (w - 20, h - m), (0, 0, 0), 1)
    ks = [int(k) for k in miou]
    kmax = max(max(ks), 2)

    def at(k: float, v: float) -> tuple[int, int]:
        return (int(m + (k - 1) / (kmax - 1) * (w - 20 - m)), int(h - m - v * (h - m - 20)))

    for v in (0.0, 0.25, 0.5, 0.75, 1.0):
        cv2.putText(img, f"{v:.2f}", (5, at(1, v)[1] + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for k in ks:
        cv2.putText(img, str(k), (at(k, 0)[0] - 4, h - m + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    pts = [at(int(k), v) for k, v in miou.items()]
    for a, b in zip(pts, pts[1:]):
        cv2.line(img, a, b, (200, 80, 0), 2, cv2.LINE_AA)
    for p in pts:
        cv2.circle(img, p, 4, (200, 80, 0), -1, cv2.LINE_AA)
    cv2.putText(img, "clicks", (w // 2 - 20, h - 12), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    cv2.putText(img, f"mIoU ({'oracle' if oracle else 'most confident'} first mask)", (m, 14),
                cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    ok, buf = cv2.imencode(".png", img)
    return buf.tobytes()


@dataclass(frozen=True)
class EvalRun:
    """An evaluation's settings for its Job: the ground truth (its path and the sha256 of its
    bytes, which names it in the run record), the protocol, and the click counts reported."""

    ground_truth: str
    identity: str
    settings: EvalSettings
    report: tuple[int, ...]


_GT: dict[tuple[str, str], GroundTruth] = {}


def ground_truth_of(run: EvalRun) -> GroundTruth:
    """The run's ground truth, read once per process (workers and Ray actors read their own),
    refused if the file is no longer the one the run was started with."""
    import hashlib

    from .errors import InputError

    key = (run.ground_truth, run.identity)
    if key not in _GT:
        try:
            data = open(run.ground_truth, "rb").read()
        except OSError as e:
            raise InputError(f"{run.ground_truth}: {e.strerror}") from None
        if hashlib.sha256(data).hexdigest() != run.identity:
            raise InputError(f"{run.ground_truth}: changed since this evaluation started",
                             hint="run the evaluation again with --overwrite")
        _GT[key] = read_ground_truth(run.ground_truth, data=data)  # the bytes just checked, not a second read
    return _GT[key]


def keep_ground_truth(run: EvalRun, gt: GroundTruth) -> None:
    """Keep `gt`, already read from run.ground_truth, for ground_truth_of (named by the
    run's absolute path, as every process names it)."""
    import dataclasses

    _GT[(run.ground_truth, run.identity)] = dataclasses.replace(gt, path=run.ground_truth)


def _build(job, loaded, note, progress) -> EvalEngine:
    return EvalEngine(loaded, ground_truth_of(job.settings), job.settings.settings, workers=job.run.workers,
                      reads=job.run.reads)


def _own(run: EvalRun) -> dict:
    return {"eval": EvalOutput(ground_truth_of(run), run.settings, run.report)}


def _from_merge(args: dict) -> dict:
    run = EvalRun(args["ground_truth"], args["identity"], EvalSettings(**args["settings"]), tuple(args["report"]))
    return _own(run)


def _kind():
    from dataclasses import asdict

    from .engines import EngineKind

    return EngineKind(
        "eval", _build, lambda r: {"ground_truth": r.identity, **asdict(r.settings)}, unit="objects",
        own_outputs=_own,
        merge_args=lambda r: {"ground_truth": r.ground_truth, "identity": r.identity,
                              "settings": asdict(r.settings), "report": list(r.report)},
        own_from_merge=_from_merge,
    )


KIND = _kind()
