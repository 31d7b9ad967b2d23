"""`sam segment IMAGES... --text PHRASE`: every instance of each phrase's concept (SAM 3) over
files, folders, globs or stdin, through the run engine (text_prompts.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path


def segment_texts(
    inputs: list[str], output, *, phrases: list[str], exemplars: list[str], neg_exemplars: list[str],
    min_score: float | None, formats: tuple[str, ...], format_options, batch_size: int | None, workers: int,
    read_ahead: int | None, overwrite: bool, progress: bool | None, model: str | None, checkpoint: Path | None,
    device: str, dtype: str, embedding_cache: Path | None, quiet: bool, shard: str | None = None,
    devices: str | None = None, ray: str | None = None, ray_actors: int | None = None,
) -> None:
    from ..embedding_cache import check_folder
    from ..errors import PromptError
    from ..job import Job, ModelSpec, RunOptions
    from ..prompts import check_phrase, parse_numbers
    from ..registry import DEFAULT_TEXT_MODEL
    from ..spread import choose
    from ..text_prompts import DEFAULT_MIN_SCORE, TextSettings
    from .common import run_over_inputs
    from .options import read_ahead as default_read_ahead

    if not inputs:
        raise PromptError("missing IMAGES: the images (files, folders, globs, or - for stdin) to find the phrases in")
    phrases = tuple(dict.fromkeys(check_phrase(p) for p in phrases))  # a phrase given twice is one category
    boxes, labels = [], []
    for opt, given, label in (("--exemplar", exemplars, 1), ("--neg-exemplar", neg_exemplars, 0)):
        for t in given:
            b = parse_numbers(t, 4, opt)
            if b[2] <= b[0] or b[3] <= b[1]:
                raise PromptError(f"{opt} {t!r}: X1,Y1 must be right of and below X0,Y0")
            boxes.append(tuple(b))
            labels.append(label)
    if boxes and (len(inputs) != 1 or inputs[0] == "-" or Path(inputs[0]).is_dir() or any(c in inputs[0] for c in "*?[")):
        raise PromptError("--exemplar boxes are in one image's pixels: give that one image")
    if boxes and len(phrases) > 1:
        raise PromptError("--exemplar boxes go with one --text phrase (or none)")
    if not phrases and not labels.count(1):
        raise PromptError("--neg-exemplar needs a --text phrase or an --exemplar box beside it")
    score = DEFAULT_MIN_SCORE if min_score is None else min_score
    if not 0 <= score < 1:
        raise PromptError(f"--min-score {score:g}: SAM 3's scores are between 0 and 1")
    settings = TextSettings(phrases, score, tuple(boxes), tuple(labels))
    format_options = replace(format_options, categories=phrases)
    job = Job("text", settings, output, ModelSpec(model if model or checkpoint else DEFAULT_TEXT_MODEL, checkpoint,
                                                  device, dtype),
              formats, format_options,
              RunOptions(batch_size, workers, False, embedding_cache, default_read_ahead(read_ahead, inputs)),
              overwrite, quiet)
    runner = job.runner()
    if embedding_cache is not None:
        check_folder(embedding_cache)
    run_over_inputs(job, runner, inputs, shard=shard, progress=progress, spread=choose(devices, ray, ray_actors),
                    unit="phrases decoded")
