"""Text and exemplar prompts over many images (`sam segment IMAGES --text dog`): every instance
of each phrase's concept, with SAM 3's scores, streamed like the other modes.

    read + decode + resize   worker threads, a bounded number of images ahead (squashed to the
                             model's square, as SAM 3's processor does; an image the embedding
                             cache has skips it)
    image encoder            several images per batch (--batch-size); the ViT's output is what
                             the embedding cache keeps
    detector                 an image's phrases together, one prompt row each; each phrase's
                             text features computed once for the whole run
    masks                    only the detections kept (score above --min-score) upsampled to
                             the image, a few at a time, run-length encoded

Each mask's record is a PromptedMask: its category the phrase (category_id its position among
the phrases, from 1), its score SAM 3's (sigmoid(logit) × sigmoid(presence)), object_index the
phrase's index and mask_index the detector's query.
"""

from __future__ import annotations

import time
import unicodedata
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
#: Longest phrase taken, in characters: a noun phrase, not a paragraph (SAM 3 reads 32 tokens)
MAX_PHRASE = 300
#: The phrase SAM 3's processor pairs exemplar boxes with when no text is given
VISUAL = "visual"
#: Kept detections whose full-size masks are made at once (each H×W float32)
MASKS_AT_ONCE = 16
#: Phrases through the detector at once: each row holds the pyramid and every query's mask
#: logits at 288² (about 0.2 GB a row at full size), so 80 class names do not take 16 GB
PHRASES_AT_ONCE = 8


def check_phrase(text: str, where: str = "--text") -> str:
    """A phrase as given, or PromptError saying what is wrong with it (empty, control
    characters, longer than MAX_PHRASE)."""
    if not text.strip():
        raise PromptError(f"{where}: the phrase is empty")
    bad = next((c for c in text if unicodedata.category(c) in ("Cc", "Cf")), None)
    if bad is not None:
        raise PromptError(f"{where} {text[:40]!r}: holds a control character (U+{ord(bad):04X})")
    if len(text) > MAX_PHRASE:
        raise PromptError(f"{where}: a phrase of {len(text)} characters; SAM 3 reads a short noun phrase "
                          f"(at most {MAX_PHRASE} characters here, 32 tokens in the model)")
    return text


@dataclass(frozen=True)
class TextSettings:
    """phrases: each a category (in order: category ids 1, 2, …); exemplars: boxes X0,Y0,X1,Y1 in
    the image's pixels with a label each (1 positive, 0 negative), given with every phrase (one
    image: their pixels are that image's); min_score: detections at or below it are left out."""

    phrases: tuple[str, ...]
    min_score: float = DEFAULT_MIN_SCORE
    exemplars: tuple[tuple[float, float, float, float], ...] = ()
    exemplar_labels: tuple[int, ...] = ()


@dataclass
class _Loaded:
    item: object
    image: np.ndarray | None
    x: torch.Tensor | None  # 1×3×S×S for the encoder; None if cached
    key: str
    cached: ImageFeatures | None  # the embedding cache's
    error: SamError | None
    started: float


class TextSegmenter:
    """A SAM 3 network's detections of phrases on images. on_phrases: called with the number
    of phrase rows decoded (progress)."""

    def __init__(self, net, settings: TextSettings, *, cache=None,
                 on_phrases: Callable[[int], None] | None = None) -> None:
        from .models.sam3.tokenizer import Tokenizer
        from .predictor import Predictor

        self.net, self.s, self.cache = net, settings, cache
        self.on_phrases = on_phrases or (lambda n: None)
        rows = list(settings.phrases) or [VISUAL]
        with torch.inference_mode():  # once for the run: every image reads the same phrases
            pad, feats = net.detector.encode_text(Tokenizer()(rows).to(net.device))
        self.text_pad, self.text = pad, feats
        self.size = net.img_size
        self.lookup = Predictor(net, cache).lookup  # an image's cache key and cached features

    def load(self, item) -> _Loaded:
        t = time.perf_counter()
        try:
            if getattr(item, "error", None) is not None:
                raise item.error
            img = read_input(item)
            key, _, cached = self.lookup(img)
            x = None if cached is not None else self.net.prepare(torch.from_numpy(np.ascontiguousarray(img)))
            return _Loaded(item, img, x, key, cached, None, t)
        except SamError as e:
            err = e
        except Exception as e:  # noqa: BLE001 - any decoder failure is this file's failure
            err = InputError(f"{item.path}: {type(e).__name__}: {e}")
        return _Loaded(item, None, None, "", None, err, t)

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
            else:
                out.append(ld.cached["trunk"].to(self.net.device))
        return out

    @torch.inference_mode()
    def detect(self, image: np.ndarray, trunk: torch.Tensor, rows: slice = slice(None), levels=None):
        """One image's Detections (models/sam3/model.py), a prompt row per phrase (those of
        `rows`): the phrase's text with the exemplar boxes (cx, cy, w, h in [0, 1] of the image,
        as Meta's processor sends them). levels: the pyramid of `trunk`, if made already."""
        pad, text = self.text_pad[rows], self.text[rows]
        n = text.shape[0]
        levels = [lv.expand(n, -1, -1, -1) for lv in (levels or self.net.pyramid(trunk))]
        boxes = labels = None
        if self.s.exemplars:
            h, w = image.shape[:2]
            b = torch.tensor(self.s.exemplars, dtype=torch.float32, device=self.net.device)
            cxcywh = torch.stack(((b[:, 0] + b[:, 2]) / 2 / w, (b[:, 1] + b[:, 3]) / 2 / h,
                                  (b[:, 2] - b[:, 0]) / w, (b[:, 3] - b[:, 1]) / h), -1)
            boxes = cxcywh[None].expand(n, -1, -1)
            labels = torch.tensor(self.s.exemplar_labels, dtype=torch.float32, device=self.net.device)[None].expand(n, -1)
        return self.net.detector.detect(levels, pad, text, boxes=boxes, box_labels=labels)

    @torch.inference_mode()
    def segment(self, image: np.ndarray, trunk: torch.Tensor) -> list[M.PromptedMask]:
        """One image's detections of every phrase, phrase by phrase, each in query order."""
        from .models.sam3.model import postprocess

        hw = (image.shape[0], image.shape[1])
        levels = self.net.pyramid(trunk)
        records: list[M.PromptedMask] = []
        n = self.text.shape[0]
        for first in range(0, n, PHRASES_AT_ONCE):  # each row holds its own copy of the finest level
            det = self.detect(image, trunk, slice(first, first + PHRASES_AT_ONCE), levels)
            for i in range(det.logits.shape[0]):
                queries = torch.nonzero(det.scores[i] > self.s.min_score).flatten().tolist()
                for k in range(0, len(queries), MASKS_AT_ONCE):
                    part = queries[k : k + MASKS_AT_ONCE]
                    found = postprocess(_rows(det, i, part), 0, hw, -1.0)
                    rles = M.masks_to_rle(found.masks)
                    boxes_px = M.masks_to_boxes(found.masks).tolist()
                    for q, rle, box, score in zip(part, rles, boxes_px, found.scores.float().tolist()):
                        records.append(self._record(first + i, q, rle, box, score))
                self.on_phrases(1)
            del det
        return records

    def _record(self, row: int, query: int, rle: dict, box: list[int], score: float) -> M.PromptedMask:
        phrase = self.s.phrases[row] if self.s.phrases else None
        prompt: dict = {"text": phrase} if phrase is not None else {}
        if self.s.exemplars:
            prompt["exemplars"] = [list(b) for b in self.s.exemplars]
            prompt["exemplar_labels"] = list(self.s.exemplar_labels)
        source = {"category_id": row + 1, "category": phrase, "score": round(score, 6)} if phrase is not None else \
            {"score": round(score, 6)}
        # SAM 3 has no IoU head: predicted_iou repeats the detection's score
        return M.PromptedMask(rle, box, round(score, 6), row, query, prompt, source)


def _rows(det, row: int, queries: list[int]):
    """One prompt row's detections cut to `queries` (a Detections of one row)."""
    from .models.sam3.model import Detections

    q = torch.tensor(queries, dtype=torch.long, device=det.logits.device)
    return Detections(det.logits[row : row + 1, q], det.presence[row : row + 1], det.boxes[row : row + 1, q],
                      det.masks[row : row + 1, q])


def segment_texts(
    seg: TextSegmenter, jobs: Iterable[object], *, batch_size: int = 1, workers: int = 2, ahead: int = 4,
    reads: int = 0,
) -> Iterator[ImageResult | object]:
    """An ImageResult per InputItem of `jobs`, in order; any other object comes back in its place."""

    def flush(batch: list[_Loaded]) -> Iterator[ImageResult]:
        t0 = time.perf_counter()
        if any(ld.x is not None for ld in batch):
            seg.on_phrases(ENCODING)
        yield from each_image(batch, seg.embed(batch), lambda ld, trunk: seg.segment(ld.image, trunk), t0)

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


KIND = EngineKind("text", _build, _record, prompted=True, unit="phrases decoded")
