"""Text and exemplar prompts over many images (`sam segment IMAGES --text dog`): every instance
of each phrase's concept, with SAM 3's scores, streamed like the other modes.

    read + decode + resize   worker threads, a bounded number of images ahead (squashed to the
                             model's square, as SAM 3's processor does; an image the embedding
                             cache has skips it)
    image encoder            several images per batch (--batch-size); the ViT's output is what
                             the embedding cache keeps
    detector                 an image's phrases together, one prompt row each; each phrase's
                             text features computed once for the whole run
    masks                    the segmentation head (and the pyramid's finer levels) only
                             for a phrase with detections kept (score above --min-score),
                             masks only for those, upsampled to the image a few at a time,
                             run-length encoded

Each mask's record is a PromptedMask: its category the phrase (category_id its position among
the phrases, from 1), its score SAM 3's (sigmoid(logit) × sigmoid(presence)), object_index the
phrase's index and mask_index the detector's query.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from . import masks as M
from .engines import EngineKind
from .errors import InputError, PromptError, SamError
from .inputs import read_input
from .models.features import ImageFeatures
from .stream import ENCODING, ImageResult, each_image, in_batches, read_ahead

#: SAM 3's processor keeps detections above this score (Sam3Processor's confidence_threshold)
DEFAULT_MIN_SCORE = 0.5
#: The phrase SAM 3's processor pairs exemplar boxes with when no text is given
VISUAL = "visual"
#: Kept detections whose full-size masks are made at once (each H×W float32)
MASKS_AT_ONCE = 16
#: Phrases through the detector at once: each row holds its own fusion-encoder memory and
#: attention over the image's tokens, so 80 class names are not all held together (masks are
#: made after, per phrase with detections kept)
PHRASES_AT_ONCE = 8


@dataclass(frozen=True)
class TextSettings:
    """phrases: each a category (in order: category ids 1, 2, …); exemplars: boxes X0,Y0,X1,Y1 in
    the image's pixels with a label each (1 positive, 0 negative), given with every phrase (one
    image: their pixels are that image's); min_score: detections at or below it are left out."""

    phrases: tuple[str, ...]
    min_score: float = DEFAULT_MIN_SCORE
    exemplars: tuple[tuple[float, float, float, float], ...] = ()
    exemplar_labels: tuple[int, ...] = ()


@dataclass(frozen=True)
class Concept:
    """One prompt row of an image: a phrase (None: exemplars alone, sent with VISUAL, as Meta's
    processor does) with its exemplar boxes (XYXY in the image's pixels) and their labels;
    index: the row's object_index in the records; source: what the records say of it
    (category, category_id, object_id)."""

    phrase: str | None
    exemplars: tuple[tuple[float, float, float, float], ...] = ()
    labels: tuple[int, ...] = ()
    index: int = 0
    source: tuple[tuple[str, object], ...] = ()


def settings_concepts(s: TextSettings) -> list[Concept]:
    """`--text`'s rows: each phrase (category id its place, from 1) with the run's exemplars;
    none without either (a prompt file's run, whose images bring their own)."""
    if not s.phrases:
        return [Concept(None, s.exemplars, s.exemplar_labels)] if s.exemplars else []
    return [Concept(p, s.exemplars, s.exemplar_labels, i, (("category_id", i + 1), ("category", p)))
            for i, p in enumerate(s.phrases)]


def object_concepts(objects, hw: tuple[int, int], image: str) -> list[Concept]:
    """A prompt file's objects of one image as rows (their exemplars checked against the
    image); PromptError for an object that is not a concept (a box, point or mask prompt)."""
    out = []
    for i, o in enumerate(objects):
        if not o.concept:
            raise PromptError(f"{o.where}: a box, point or mask object in a file read as SAM 3's phrases (its "
                              "first image has them); give boxes and points in a file of their own")
        boxes = tuple(tuple(float(v) for v in b) for b in o.in_pixels(hw, image).exemplars)
        source = (("category_id", o.category_id), ("category", o.category if o.category is not None else o.text),
                  ("object_id", o.object_id))
        out.append(Concept(o.text, boxes, o.exemplar_labels, i, source))
    return out


@dataclass
class _Loaded:
    item: object
    image: np.ndarray | None
    concepts: list[Concept]
    x: torch.Tensor | None  # 1×3×S×S for the encoder; None if cached or without concepts
    key: str
    cached: ImageFeatures | None  # the embedding cache's
    error: SamError | None
    started: float


class TextSegmenter:
    """A SAM 3 network's detections of concepts (phrases, exemplars) on images: `--text`'s
    for every image, or each prompt-file image's own. A phrase's text features are computed
    once for the run. on_phrases: called with the number of rows decoded (progress)."""

    def __init__(self, net, settings: TextSettings, *, cache=None,
                 on_phrases: Callable[[int], None] | None = None) -> None:
        from .models.sam3.tokenizer import Tokenizer
        from .predictor import Predictor

        self.net, self.s, self.cache = net, settings, cache
        self.on_phrases = on_phrases or (lambda n: None)
        self.tokenizer = Tokenizer()
        self._text: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # phrase → (padding, features)
        self.concepts = settings_concepts(settings)
        if self.concepts:  # before the first image
            self.text_features([c.phrase for c in self.concepts])
        self.size = net.img_size
        self.lookup = Predictor(net, cache).lookup  # an image's cache key and cached features

    @torch.inference_mode()
    def text_features(self, phrases: list[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        """(padding, features) rows for the phrases (None: VISUAL), each phrase encoded once."""
        rows = [VISUAL if p is None else p for p in phrases]
        new = list(dict.fromkeys(p for p in rows if p not in self._text))
        if new:
            pad, feats = self.net.detector.encode_text(self.tokenizer(new).to(self.net.device))
            self._text.update({p: (pad[i], feats[i]) for i, p in enumerate(new)})
        return (torch.stack([self._text[p][0] for p in rows]), torch.stack([self._text[p][1] for p in rows]))

    def load(self, item) -> _Loaded:
        t = time.perf_counter()
        try:
            if getattr(item, "error", None) is not None:
                raise item.error
            img = read_input(item)
            objects = getattr(item, "objects", None)  # a prompt file's item: its own concepts
            concepts = self.concepts if objects is None else object_concepts(objects, img.shape[:2], str(item.path))
            key, cached, x = "", None, None
            if concepts:
                key, _, cached = self.lookup(img)
                if cached is None:
                    x = self.net.prepare(torch.from_numpy(np.ascontiguousarray(img)))
            return _Loaded(item, img, concepts, x, key, cached, None, t)
        except SamError as e:
            err = e
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's failure
            err = InputError(f"{item.path}: {type(e).__name__}: {e}")
        return _Loaded(item, None, [], None, "", None, err, t)

    @torch.inference_mode()
    def embed(self, batch: list[_Loaded]) -> list[torch.Tensor]:
        """Each image's ViT output (1×C×g×g on the device): the cache's, or one encoder call."""
        todo = [ld for ld in batch if ld.x is not None]
        new = iter(self.net.encode(torch.cat([ld.x for ld in todo]))["trunk"].split(1) if todo else [])
        out = []
        for ld in batch:
            if ld.x is not None:
                t = next(new)
                ld.x = None
                if self.cache is not None:
                    self.cache.save(ld.key, ImageFeatures(self.net.family, {"trunk": t.cpu()}, (self.size,) * 2,
                                                          tuple(ld.image.shape[:2])))
                out.append(t)
            elif ld.cached is not None:
                out.append(ld.cached["trunk"].to(self.net.device))
            else:
                out.append(None)  # no concept to find
        return out

    @torch.inference_mode()
    def detect(self, image: np.ndarray, trunk: torch.Tensor, concepts: list[Concept] | None = None, levels=None,
               masks: bool = True):
        """One image's Detections (models/sam3/model.py), a prompt row per concept (default:
        `--text`'s), all with the same number of exemplars: the phrase's text with the exemplar
        boxes (cx, cy, w, h in [0, 1] of the image, as Meta's processor sends them). levels: the
        pyramid of `trunk`, if made already. masks=False: none yet (Sam3Detector.masks_of)."""
        concepts = self.concepts if concepts is None else concepts
        pad, text = self.text_features([c.phrase for c in concepts])
        n = len(concepts)
        levels = [lv.expand(n, -1, -1, -1) for lv in (levels or self.net.pyramid(trunk))]
        boxes = labels = None
        if concepts[0].exemplars:
            h, w = image.shape[:2]
            dev = self.net.device
            b = torch.tensor([c.exemplars for c in concepts], dtype=torch.float32, device=dev)  # n×E×4
            boxes = torch.stack(((b[..., 0] + b[..., 2]) / 2 / w, (b[..., 1] + b[..., 3]) / 2 / h,
                                 (b[..., 2] - b[..., 0]) / w, (b[..., 3] - b[..., 1]) / h), -1)
            labels = torch.tensor([c.labels for c in concepts], dtype=torch.float32, device=dev)
        return self.net.detector.detect(levels, pad, text, boxes=boxes, box_labels=labels, masks=masks)

    @torch.inference_mode()
    def segment(self, image: np.ndarray, trunk: torch.Tensor | None,
                concepts: list[Concept] | None = None) -> list[M.PromptedMask]:
        """One image's detections of every concept (default: `--text`'s), concept by concept,
        each in query order."""
        from .models.sam3.model import postprocess

        concepts = self.concepts if concepts is None else concepts
        if not concepts:
            return []
        hw = (image.shape[0], image.shape[1])
        levels = self.net.pyramid(trunk, (2,))  # the finer two only once a phrase has detections kept
        fine: list[torch.Tensor] = []
        groups: dict[int, list[Concept]] = {}  # rows with as many exemplars go through together
        for c in concepts:
            groups.setdefault(len(c.exemplars), []).append(c)
        found: dict[int, list[M.PromptedMask]] = {}
        for group in groups.values():
            for first in range(0, len(group), PHRASES_AT_ONCE):
                part = group[first : first + PHRASES_AT_ONCE]
                det = self.detect(image, trunk, part, levels, masks=False)
                for i, c in enumerate(part):
                    queries = torch.nonzero(det.scores[i] > self.s.min_score).flatten().tolist()
                    recs = found.setdefault(c.index, [])
                    # the pixel decoder only for a row with detections kept, masks only for those
                    if queries and not fine:
                        fine = self.net.pyramid(trunk, (0, 1))
                    pixels = self.net.detector.pixel_embeddings(det, i, fine) if queries else None
                    for k in range(0, len(queries), MASKS_AT_ONCE):
                        chunk = queries[k : k + MASKS_AT_ONCE]
                        kept = postprocess(_rows(det, i, chunk, self.net.detector.masks_of(det, i, chunk, pixels)),
                                           0, hw, -1.0)
                        rles = M.masks_to_rle(kept.masks)
                        boxes_px = M.masks_to_boxes(kept.masks).tolist()
                        for q, rle, box, score in zip(chunk, rles, boxes_px, kept.scores.float().tolist()):
                            recs.append(_mask_record(c, q, rle, box, score))
                    self.on_phrases(1)
                del det
        return [r for c in concepts for r in found.get(c.index, [])]


def _mask_record(c: Concept, query: int, rle: dict, box: list[int], score: float) -> M.PromptedMask:
    prompt: dict = {"text": c.phrase} if c.phrase is not None else {}
    if c.exemplars:
        prompt["exemplars"] = [[round(v, 3) for v in b] for b in c.exemplars]
        prompt["exemplar_labels"] = list(c.labels)
    source = {k: v for k, v in c.source if v is not None}
    source["score"] = round(score, 6)
    # SAM 3 has no IoU head: predicted_iou repeats the detection's score
    return M.PromptedMask(rle, box, round(score, 6), c.index, query, prompt, source)


def _rows(det, row: int, queries: list[int], masks: torch.Tensor):
    """One prompt row's detections cut to `queries`, with their mask logits 1×K×H×W (a
    Detections of one row)."""
    from .models.sam3.model import Detections

    q = torch.tensor(queries, dtype=torch.long, device=det.logits.device)
    return Detections(det.logits[row : row + 1, q], det.presence[row : row + 1], det.boxes[row : row + 1, q], masks)


def segment_texts(
    seg: TextSegmenter, jobs: Iterable[object], *, batch_size: int = 1, workers: int = 2, ahead: int = 4,
    reads: int = 0,
) -> Iterator[ImageResult | object]:
    """An ImageResult per InputItem of `jobs`, in order; any other object comes back in its place."""

    def flush(batch: list[_Loaded]) -> Iterator[ImageResult]:
        t0 = time.perf_counter()
        if any(ld.x is not None for ld in batch):
            seg.on_phrases(ENCODING)
        yield from each_image(batch, seg.embed(batch), lambda ld, trunk: seg.segment(ld.image, trunk, ld.concepts),
                              t0)

    loaded = read_ahead(seg.load, jobs, workers, max(ahead, 2 * batch_size), reads)
    yield from in_batches(loaded, _Loaded, flush, lambda b: len(b) >= batch_size)


def require_text(loaded) -> None:
    """PromptError when the model takes no text prompts (SAM 1, SAM 2), before any image is read."""
    if not getattr(loaded.net, "text_prompts", False):
        raise PromptError(f"--text needs a SAM 3 model (--model sam3): {loaded.checkpoint.name} is a "
                          f"{loaded.net.family} model")


class TextEngine:
    """Text prompts over many images (run.Engine). batch_size None: 1 on the CPU, 4 on a GPU."""

    def __init__(self, loaded, settings: TextSettings, *, batch_size: int | None = None, workers: int = 2,
                 embedding_cache=None, warn: Callable[[str], None] = lambda text: None,
                 on_phrases: Callable[[int], None] | None = None, reads: int = 0) -> None:
        from .embedding_cache import EmbeddingCache

        require_text(loaded)
        net = loaded.net
        self.cache = None
        if embedding_cache is not None:
            self.cache = EmbeddingCache(embedding_cache, net, warn=warn, weights_id=loaded.weights_id)
        self.seg = TextSegmenter(net, settings, cache=self.cache, on_phrases=on_phrases)
        self.batch_size = batch_size or (1 if net.device.type == "cpu" else 4)
        self.workers, self.reads = workers, reads

    def __call__(self, jobs: Iterable[object]) -> Iterator[ImageResult | object]:
        return segment_texts(self.seg, jobs, batch_size=self.batch_size, workers=self.workers, reads=self.reads)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()


def _build(job, loaded, note, progress) -> TextEngine:
    r = job.run
    return TextEngine(loaded, job.settings, batch_size=r.batch_size, workers=r.workers, reads=r.reads,
                      embedding_cache=r.embedding_cache, warn=note, on_phrases=progress)


def _record(s: TextSettings) -> dict:
    out: dict = {"text": list(s.phrases), "min_score": s.min_score}
    if s.exemplars:
        out["exemplars"] = [list(b) for b in s.exemplars]
        out["exemplar_labels"] = list(s.exemplar_labels)
    return out


def _from_prompt_file(job, loaded, note, progress) -> TextEngine:
    """A prompt file's phrases and exemplars (engines.PromptSettings): each image's own concepts,
    detections kept above --min-score (default SAM 3's 0.5)."""
    s, r = job.settings, job.run
    if s.choice != "first" or s.refine:
        raise PromptError("--multimask, --best-mask and --refine choose among SAM 1 and SAM 2's masks; SAM 3 gives "
                          "one mask per instance found")
    return TextEngine(loaded, TextSettings((), DEFAULT_MIN_SCORE if s.min_score is None else s.min_score),
                      batch_size=r.batch_size, workers=r.workers, reads=r.reads, embedding_cache=r.embedding_cache,
                      warn=note, on_phrases=progress)


KIND = EngineKind("text", _build, _record, prompted=True, unit="phrases decoded", from_prompt_file=_from_prompt_file)
