"""SAM 3's text tokenizer: OpenAI CLIP's byte-pair encoding, as Meta's sam3 and open_clip apply it.

A phrase is cleaned (ftfy's fix_text, HTML entities unescaped twice, runs of white space made
one space, lower case), split into words, numbers one digit at a time and runs of other
characters (a regular expression over Unicode letter and number classes), each piece's UTF-8
bytes mapped to printable characters and merged by the vocabulary's ranked byte pairs. A
sequence is [start] + tokens + [end], cut to the context length (32) with the last token made
[end], then padded with 0.

The merges ship with sam (`bpe_simple_vocab_16e6.txt.gz`, MIT, from open_clip_torch; its sha256
is checked when it is read). Cleaning and splitting need `ftfy` and `regex`, the `sam3` extra:
imported when a tokenizer is made, a missing one is a usage error naming the extra.
"""

from __future__ import annotations

import gzip
import hashlib
import html
from functools import lru_cache
from pathlib import Path

import torch

from ...errors import CheckpointError, PromptError

VOCAB = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
VOCAB_SHA256 = "924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"
#: merges read from the file: its lines 1 … 48894 (line 0 is a header)
MERGES = 49152 - 256 - 2
START, END = "<start_of_text>", "<end_of_text>"
CONTEXT = 32


@lru_cache(maxsize=1)
def byte_chars() -> dict[int, str]:
    """Each byte → a printable character standing for it (printable Latin-1 bytes for
    themselves, the rest for characters from U+0100 on), as CLIP's vocabulary spells bytes. The
    order is the vocabulary's: the printable bytes first, then the others."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in keep}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def read_merges(path: Path = VOCAB) -> list[tuple[str, str]]:
    """The ranked byte pairs of the vocabulary file, its sha256 checked first."""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != VOCAB_SHA256:
        raise CheckpointError(f"{path}: not the CLIP vocabulary sam ships (sha256 differs); reinstall sam")
    lines = gzip.decompress(data).decode("utf-8").split("\n")[1:MERGES + 1]
    return [tuple(line.split()) for line in lines]


@lru_cache(maxsize=2)
def _tables(vocab: Path) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """(symbol → token id, byte pair → merge rank) of a vocabulary file, read once per process."""
    merges = read_merges(vocab)
    symbols = list(byte_chars().values())
    symbols += [s + "</w>" for s in symbols]
    symbols += ["".join(m) for m in merges]
    symbols += [START, END]
    return {s: i for i, s in enumerate(symbols)}, {m: i for i, m in enumerate(merges)}


class Tokenizer:
    """Phrases → token ids (LongTensor N×context), as SAM 3's reference tokenizes them."""

    def __init__(self, vocab: Path = VOCAB, context: int = CONTEXT) -> None:
        try:
            import ftfy
            import regex
        except ImportError as e:
            raise PromptError(f"text prompts need {e.name}, which is not installed",
                              hint="pip install 'segment-anything-cli[sam3]'") from None
        self._fix = ftfy.fix_text
        self._regex = regex
        self.ids, self.ranks = _tables(vocab)
        self.start, self.end = self.ids[START], self.ids[END]
        self.context = context
        self._pieces = regex.compile(
            rf"{START}|{END}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+", regex.IGNORECASE)
        self._space = regex.compile(r"\s+")
        self._cache: dict[str, list[int]] = {START: [self.start], END: [self.end]}

    def clean(self, text: str) -> str:
        text = html.unescape(html.unescape(self._fix(text))).strip()
        return self._space.sub(" ", text).strip().lower()

    def encode(self, text: str) -> list[int]:
        """The phrase's token ids, without the start and end tokens."""
        chars = byte_chars()
        out: list[int] = []
        for piece in self._pieces.findall(self.clean(text)):
            if piece not in self._cache:
                self._cache[piece] = self._merge("".join(chars[b] for b in piece.encode("utf-8")))
            out += self._cache[piece]
        return out

    def _merge(self, word: str) -> list[int]:
        """One piece's symbols merged pair by pair, the best-ranked pair first."""
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pair = min(zip(parts, parts[1:]), key=lambda p: self.ranks.get(p, MERGES))
            if pair not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == pair:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return [self.ids[p] for p in parts]

    def __call__(self, texts: list[str]) -> torch.Tensor:
        out = torch.zeros(len(texts), self.context, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.start, *self.encode(text), self.end]
            if len(ids) > self.context:
                ids = ids[:self.context]
                ids[-1] = self.end
            out[row, :len(ids)] = torch.tensor(ids)
        return out
