"""CLIP BPE tokenisation from a pack's `tokenizer.json`, OpenAI's text cleaning applied first."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import ftfy
import numpy as np
from tokenizers import Tokenizer


def clean(text: str) -> str:
    """OpenAI's `basic_clean` + `whitespace_clean` (ftfy, HTML entities twice, folded spaces)."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return re.sub(r"\s+", " ", text).strip()


@dataclass
class TokenBatch:
    ids: np.ndarray  # B×context int64, padded with the pad token
    end_index: np.ndarray  # B int64: position of the end token, computed in integers
    truncated: list[bool]


class ClipTokenizer:
    def __init__(self, path: Path, context_length: int = 77, start_token: int = 49406,
                 end_token: int = 49407, pad_token: int = 0) -> None:
        self._tok = Tokenizer.from_file(str(path))
        self.context_length = context_length
        self.start_token, self.end_token, self.pad_token = start_token, end_token, pad_token

    def encode(self, texts: list[str]) -> TokenBatch:
        """Tokenise; an expression longer than the context is cut, keeping the end token."""
        n = self.context_length
        ids = np.full((len(texts), n), self.pad_token, dtype=np.int64)
        end = np.empty(len(texts), dtype=np.int64)
        truncated = []
        # Lower-cased here, by Python as OpenAI does: the Rust normaliser maps a word-final Σ to σ.
        cleaned = [clean(t).lower() for t in texts]
        for row, enc in enumerate(self._tok.encode_batch(cleaned)):
            tokens = enc.ids
            truncated.append(len(tokens) > n)
            if len(tokens) > n:
                tokens = tokens[: n - 1] + [self.end_token]
            ids[row, : len(tokens)] = tokens
            end[row] = len(tokens) - 1
        return TokenBatch(ids, end, truncated)
