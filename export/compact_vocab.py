"""CLIP's BPE tokenizer cut down to the words a small model is trained on.

A full CLIP vocabulary is 49 408 rows of token embedding: 12.6 MB at width 64, more than the rest
of the demo pack together. Keeping the 512 byte symbols, only the merges CLIP's BPE applies to the
given words (in CLIP's order) and the two specials gives a few hundred entries that cut those words
into exactly CLIP's tokens, and any other text into smaller pieces; nothing is ever unknown, since
every byte has a symbol. The two specials stay last, so the end token is still the largest id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer

from .tokenizer_build import (
    END,
    START,
    bytes_to_unicode,
    clip_pre_tokenizer,
    clip_tokenizer,
    clip_vocab_and_merges,
)

END_OF_WORD = "</w>"


def merges_applied(piece: str, ranks: dict[tuple[str, str], int]) -> list[tuple[str, str]]:
    """The merges CLIP's BPE applies to one pre-tokenised piece, in the order it applies them:
    always the lowest-ranked adjacent pair, every occurrence at once, left to right."""
    symbols = [*piece[:-1], piece[-1] + END_OF_WORD]
    applied = []
    while len(symbols) > 1:
        pairs = [(ranks[p], p) for p in zip(symbols, symbols[1:], strict=False) if p in ranks]
        if not pairs:
            break
        pair = min(pairs)[1]
        applied.append(pair)
        merged, i = [], 0
        while i < len(symbols):
            if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
                merged.append(symbols[i] + symbols[i + 1])
                i += 2
            else:
                merged.append(symbols[i])
                i += 1
        symbols = merged
    return applied


def compact_clip_tokenizer(texts: Iterable[str], merges_path: Path | None = None) -> Tokenizer:
    """A CLIP BPE tokenizer whose vocabulary covers `texts` (the words the model will see)."""
    vocab, merges = clip_vocab_and_merges(merges_path)
    ranks = {pair: rank for rank, pair in enumerate(merges)}
    pre_tokenizer = clip_pre_tokenizer()
    needed: set[tuple[str, str]] = set()
    for text in texts:
        for piece, _ in pre_tokenizer.pre_tokenize_str(text.lower()):
            if piece not in (START, END):
                needed.update(merges_applied(piece, ranks))
    kept = [pair for pair in merges if pair in needed]
    symbols = list(bytes_to_unicode().values())
    symbols += [s + END_OF_WORD for s in symbols]
    symbols += ["".join(pair) for pair in kept] + [START, END]
    return clip_tokenizer({s: i for i, s in enumerate(symbols)}, kept)
