"""The spatial part of a referring expression (issue 18, item 1).

`parse_spatial("the second red circle from the left")` says *what* is meant (the target phrase
with its spatial words removed, for CLIP to score) and *where* (an absolute position, an ordinal,
a relation to one or two landmarks, a size). It reads spaCy's tokens, parts of speech and noun
chunks, and corrects the small model where it is known to be wrong with phrase rules: "left" is
often tagged a verb ("left guy") or a noun ("on the left"), "top" an adverb, and "the second one
from the right" has no noun chunk of its own.

A parse that finds nothing spatial (`spatial == False`) has the target that `text.noun_phrase`
gives (the official rule), so a caller can fall back exactly. Plain "big"/"small" are attribute
words the demo world's CLIP scores: they are recorded as a relative `Size` but stay in the target
and do not make a parse spatial on their own; comparatives and superlatives do, and are removed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from ..text import DEFAULT_SPACY_MODEL, load_spacy, noun_phrase

Axis = Literal["x", "y", "xy"]
RelationKind = Literal["left_of", "right_of", "above", "below", "near", "far_from", "between"]
SizeKind = Literal["relative", "comparative", "superlative"]
OrdinalKind = Literal["rank", "middle", "last"]


@dataclass(frozen=True)
class Position:
    """An absolute place in the image: `axis` "x" (side left/right/middle), "y" (top/bottom) or
    "xy" (side "top left", y side first); `extreme` for superlatives (leftmost, highest, far
    right)."""

    axis: Axis
    side: str
    extreme: bool = False

    @property
    def x(self) -> str | None:
        return self.side.split()[-1] if "x" in self.axis else None

    @property
    def y(self) -> str | None:
        return self.side.split()[0] if "y" in self.axis else None


@dataclass(frozen=True)
class Ordinal:
    """The `rank`-th (1-based) counted from `side` along `axis` ("second from the left": rank 2,
    "x", "left"); kind "middle" ("the middle one", no rank) and "last" (no rank; `side` is where
    the row ends when the expression says, "the last one on the right"). Axis and side are None
    when the expression gives no direction ("the second circle")."""

    kind: OrdinalKind
    rank: int | None
    axis: Literal["x", "y"] | None
    side: str | None


@dataclass(frozen=True)
class Relation:
    """The target relative to landmark phrases (two for "between"); `superlative` for "closest
    to", "nearest", "farthest from". "nearest"/"closest" with nothing after them has no
    landmark (near the viewer)."""

    kind: RelationKind
    landmarks: tuple[str, ...]
    superlative: bool = False


@dataclass(frozen=True)
class Size:
    """`value` "big" or "small"; kind "relative" (big, small, large, tiny: kept in the target),
    "comparative" (bigger than X: `landmark` X when given) or "superlative" (biggest)."""

    kind: SizeKind
    value: Literal["big", "small"]
    landmark: str | None = None


@dataclass(frozen=True)
class SpatialParse:
    target: str
    position: Position | None = None
    ordinal: Ordinal | None = None
    relation: Relation | None = None
    size: Size | None = None
    words: tuple[str, ...] = ()

    @property
    def spatial(self) -> bool:
        """False when nothing spatial was found (a relative size alone is an attribute)."""
        return (self.position is not None or self.ordinal is not None
                or self.relation is not None
                or (self.size is not None and self.size.kind != "relative"))


# --- vocabulary --------------------------------------------------------------------------------

SIDES: dict[str, tuple[Literal["x", "y"], str]] = {
    "left": ("x", "left"), "right": ("x", "right"),
    "top": ("y", "top"), "upper": ("y", "top"), "up": ("y", "top"),
    "bottom": ("y", "bottom"), "lower": ("y", "bottom"),
    "middle": ("x", "middle"), "center": ("x", "middle"), "centre": ("x", "middle"),
}
EXTREMES: dict[str, tuple[Literal["x", "y"], str]] = {
    "leftmost": ("x", "left"), "rightmost": ("x", "right"),
    "topmost": ("y", "top"), "uppermost": ("y", "top"), "highest": ("y", "top"),
    "bottommost": ("y", "bottom"), "lowermost": ("y", "bottom"), "lowest": ("y", "bottom"),
}
ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6,
            "seventh": 7, "eighth": 8, "ninth": 9, "tenth": 10, "1st": 1, "2nd": 2, "3rd": 3,
            "4th": 4, "5th": 5, "6th": 6}
SIZE_WORDS: dict[str, tuple[SizeKind, Literal["big", "small"]]] = {
    "big": ("relative", "big"), "large": ("relative", "big"), "huge": ("relative", "big"),
    "small": ("relative", "small"), "little": ("relative", "small"),
    "tiny": ("relative", "small"),
    "bigger": ("comparative", "big"), "larger": ("comparative", "big"),
    "smaller": ("comparative", "small"),
    "biggest": ("superlative", "big"), "largest": ("superlative", "big"),
    "smallest": ("superlative", "small"), "tiniest": ("superlative", "small"),
}
# words that only finish a side phrase: "bottom left corner plate", "on the left side"
SIDE_NOUNS = {"side", "corner", "end", "edge", "part", "half", "area", "row"}
PLACE_PREPS = {"on", "at", "in", "to", "towards", "toward", "from"}
DETS = {"the", "a", "an", "this", "that", "its"}
# words dropped from the target: articles and the glue of relative clauses
FILLER = DETS | {"which", "who", "is", "are", "was", "one's", "of", "thing", ",", ".", "-", "!",
                 "?", ";", ":", "'s", "and"}
# where a landmark phrase stops when the noun chunks do not say
BOUNDARY = {",", ";", ".", "that", "which", "who", "with", "wearing", "holding", "and", "but"}

# (words, kind, superlative), tried longest first at each token
_RELATIONS: list[tuple[tuple[str, ...], RelationKind, bool]] = []
for _side, _kind in (("left", "left_of"), ("right", "right_of")):
    for _words in (("to", "the", _side, "of"), ("on", "the", _side, "of"), ("to", _side, "of"),
                   ("on", _side, "of"), ("to", "the", _side, "side", "of"),
                   ("on", "the", _side, "side", "of"), (_side, "of")):
        _RELATIONS.append((_words, _kind, False))  # type: ignore[arg-type]
_RELATIONS += [
    (("on", "top", "of"), "above", False), (("above",), "above", False),
    (("over",), "above", False), (("atop",), "above", False),
    (("below",), "below", False), (("under",), "below", False),
    (("underneath",), "below", False), (("beneath",), "below", False),
    (("next", "to"), "near", False), (("beside",), "near", False),
    (("besides",), "near", False), (("near", "to"), "near", False), (("near",), "near", False),
    (("close", "to"), "near", False), (("by", "the"), "near", False),
    (("closest", "to"), "near", True), (("nearest", "to"), "near", True),
    (("closest",), "near", True), (("nearest",), "near", True),
    (("far", "from"), "far_from", False), (("away", "from"), "far_from", False),
    (("farthest", "from"), "far_from", True), (("furthest", "from"), "far_from", True),
    (("farthest", "away", "from"), "far_from", True),
    (("furthest", "away", "from"), "far_from", True),
    (("between",), "between", False), (("in", "between"), "between", False),
]
_RELATIONS.sort(key=lambda r: -len(r[0]))

_HYPHENS = re.compile(r"\b(top|bottom|upper|lower|left|right|far)\s*-\s*(left|right|most|middle)\b")


def _normalise(text: str) -> str:
    text = _HYPHENS.sub(lambda m: m[1] + ("most" if m[2] == "most" else " " + m[2]), text)
    return " ".join(text.split())


# --- the parser --------------------------------------------------------------------------------

class _Scan:
    """One pass over the tokens of one expression, marking the spatial ones."""

    def __init__(self, doc: Any) -> None:
        self.doc = doc
        self.w = [t.text for t in doc]
        self.used = [False] * len(self.w)
        self.words: list[str] = []
        self.position: Position | None = None
        self.ordinal: Ordinal | None = None
        self.relation: Relation | None = None
        self.size: Size | None = None
        self.stop = len(self.w)  # where the target's region ends (a relation starts)

    def at(self, i: int, words: tuple[str, ...]) -> bool:
        return tuple(self.w[i:i + len(words)]) == words

    def take(self, start: int, end: int) -> None:
        for j in range(start, end):
            self.used[j] = True
        self.words.append(" ".join(self.w[start:end]))

    # landmarks -----------------------------------------------------------------------------

    def phrase(self, start: int, end: int) -> str:
        words = [w for w in self.w[start:end] if w not in DETS and w not in {",", "."}]
        return " ".join(words)

    def landmark_end(self, start: int, limit: int) -> int:
        """Where the landmark phrase starting at `start` ends: at the end of the noun chunk
        holding its first noun, or at a boundary word when the chunks say nothing."""
        for chunk in self.doc.noun_chunks:
            if chunk.start <= start < chunk.end or (start <= chunk.start < limit and all(
                    self.w[j] in DETS or self.doc[j].pos_ in ("ADJ", "NUM", "PROPN", "NOUN")
                    or self.w[j] in SIZE_WORDS for j in range(start, chunk.start))):
                end = min(chunk.end, limit)
                # "of" phrases belong to the landmark: "the left side of the table"
                return end
        end = start
        while end < limit and self.w[end] not in BOUNDARY:
            end += 1
        return end

    def relation_at(self, i: int) -> bool:
        for words, kind, superlative in _RELATIONS:
            if not self.at(i, words):
                continue
            if words == ("by", "the"):
                words = ("by",)
            start = i + len(words)
            if kind == "between":
                self.take(i, start)
                first_end = self.landmark_end(start, len(self.w))
                first = self.phrase(start, first_end)
                second = ""
                if first_end < len(self.w) and self.w[first_end] == "and":
                    second_end = self.landmark_end(first_end + 1, len(self.w))
                    second = self.phrase(first_end + 1, second_end)
                    first_end = second_end
                elif " and " in f" {first} ":  # the chunk held both: "the star and the ring"
                    first, second = (s.strip() for s in f" {first} ".split(" and ", 1))
                landmarks = tuple(s for s in (first, second) if s)
                self.relation = Relation("between", landmarks)
                self.mark_landmark(start, first_end)
                return True
            if superlative and words in (("closest",), ("nearest",)):
                # "the nearest chair" (before the noun): near the viewer, no landmark
                nxt = self.w[start] if start < len(self.w) else ""
                if nxt not in DETS:
                    self.take(i, start)
                    self.relation = Relation(kind, (), True)
                    return True
            self.take(i, start)
            end = self.landmark_end(start, len(self.w))
            landmark = self.phrase(start, end)
            self.relation = Relation(kind, (landmark,) if landmark else (), superlative)
            self.mark_landmark(start, end)
            return True
        return False

    def mark_landmark(self, start: int, end: int) -> None:
        for j in range(start, end):
            self.used[j] = True
        self.stop = min(self.stop, start)
        self.landmark_span = (start, end)

    # positions and ordinals ----------------------------------------------------------------

    def side_phrase(self, i: int) -> tuple[int, Axis, str, bool] | None:
        """A side phrase at token i: "[prep] [the] [far|very] SIDE [SIDE] [side-noun]" or a
        superlative ("furthest left", "leftmost", "left most"). Returns (end, axis, side,
        extreme)."""
        j = i
        prep = j < len(self.w) and self.w[j] in PLACE_PREPS
        if prep:
            j += 1
        if j < len(self.w) and self.w[j] == "the":
            j += 1
        extreme = False
        if j < len(self.w) and self.w[j] in ("far", "furthest", "farthest", "very", "extreme",
                                              "most"):
            extreme = self.w[j] != "very"
            j += 1
        if j < len(self.w) and self.w[j] in EXTREMES:
            axis, side = EXTREMES[self.w[j]]
            return j + 1, axis, side, True
        sides: list[tuple[Literal["x", "y"], str]] = []
        while j < len(self.w) and self.w[j] in SIDES and len(sides) < 2:
            word = self.w[j]
            if word == "up" and not sides:
                return None
            if word == "middle" and not prep:
                return None  # "the middle one": an ordinal
            if word == "top" and j + 1 < len(self.w) and self.w[j + 1] == "of":
                return None  # "the top of the table" is a part, not a place
            sides.append(SIDES[word])
            j += 1
        if not sides:
            return None
        if j < len(self.w) and self.w[j] in ("most",):
            extreme = True
            j += 1
        if j < len(self.w) and self.w[j] in SIDE_NOUNS:
            j += 1
            if self.at(j, ("of", "the")) and j + 2 < len(self.w) and self.w[j + 2] in (
                    "picture", "image", "photo", "pic", "frame", "screen"):
                j += 3
        if len(sides) == 2 and sides[0][0] != sides[1][0]:
            ys = [s for a, s in sides if a == "y"]
            xs = [s for a, s in sides if a == "x"]
            return j, "xy", f"{ys[0]} {xs[0]}", extreme
        return j, sides[-1][0], sides[-1][1], extreme

    def ordinal_at(self, i: int) -> bool:
        word = self.w[i]
        if word in ORDINALS or word == "last":
            # look ahead for the side: "second [words] from the left", "first one on the right"
            for j in range(i + 1, min(len(self.w), i + 7)):
                if self.w[j] in BOUNDARY or any(self.at(j, r[0]) for r in _RELATIONS):
                    break
                if self.w[j] in PLACE_PREPS:
                    found = self.side_phrase(j)
                    if found is not None and found[1] != "xy" and found[2] != "middle":
                        end, axis, side, _ = found
                        self.take(i, i + 1)
                        self.take(j, end)
                        rank = ORDINALS.get(word)
                        self.ordinal = Ordinal("rank" if rank else "last", rank,
                                               axis, side)  # type: ignore[arg-type]
                        return True
                if j + 1 < len(self.w) and self.w[j] in SIDES and self.w[j + 1] in ("most",):
                    break
            self.take(i, i + 1)
            rank = ORDINALS.get(word)
            self.ordinal = Ordinal("rank" if rank else "last", rank, None, None)
            return True
        if word == "middle":
            prev = self.w[i - 1] if i else ""
            prev2 = self.w[i - 2] if i > 1 else ""
            if prev in PLACE_PREPS or (prev == "the" and prev2 in PLACE_PREPS):
                return False  # "in the middle": a position
            self.take(i, i + 1)
            self.ordinal = Ordinal("middle", None, "x", "middle")
            return True
        return False

    def position_at(self, i: int) -> bool:
        found = self.side_phrase(i)
        if found is None:
            return False
        end, axis, side, extreme = found
        first_side = next(j for j in range(i, end)
                          if self.w[j] in SIDES or self.w[j] in EXTREMES)
        token = self.doc[first_side]
        # "the man who left": a verb with a subject of its own is not a side
        if token.pos_ == "VERB" and any(c.dep_ in ("nsubj", "nsubjpass") for c in token.children):
            return False
        if self.position is None:
            self.position = Position(axis, side, extreme)
        self.take(i, end)
        return True

    def size_at(self, i: int) -> bool:
        found = SIZE_WORDS.get(self.w[i])
        if found is None:
            return False
        kind, value = found
        if self.size is not None and (kind == "relative" or self.size.kind != "relative"):
            return True  # the first strong size word wins
        if kind == "relative":
            self.size = Size(kind, value)
            self.words.append(self.w[i])
            return True  # kept in the target
        landmark = None
        end = i + 1
        if kind == "comparative" and self.at(end, ("than",)):
            lm_end = self.landmark_end(end + 1, len(self.w))
            landmark = self.phrase(end + 1, lm_end) or None
            self.mark_landmark(end + 1, lm_end)
            self.used[end] = True
        self.size = Size(kind, value, landmark)
        self.take(i, i + 1)
        return True

    def run(self) -> None:
        i = 0
        while i < len(self.w):
            if self.used[i]:
                i += 1
                continue
            if (self.relation is None and self.relation_at(i)) or (
                    self.ordinal is None and self.ordinal_at(i)) or self.size_at(i):
                i += 1
                continue
            if self.position_at(i):
                continue
            i += 1

    def target(self) -> str:
        # the target is before the relation; words after its landmark are not the target's
        words = [w for j, w in enumerate(self.w) if not self.used[j] and j < self.stop]
        if not [w for w in words if w not in FILLER]:
            words = [w for j, w in enumerate(self.w) if not self.used[j]]
        # "the second one of the circles": the head noun is the "of" phrase's
        if "one" in words and "of" in words[words.index("one"):]:
            after = words[words.index("of", words.index("one")) + 1:]
            after = [w for w in after if w not in FILLER]
            if after:
                return " ".join(after)
        return " ".join(w for w in words if w not in FILLER)


def parse_spatial(doc_or_text: Any, nlp: Any = None) -> SpatialParse:
    """The spatial parse of one expression (a string or a spaCy Doc). Never raises on odd input:
    anything unparseable is a non-spatial parse of the expression's noun phrase."""
    text = doc_or_text.text if hasattr(doc_or_text, "text") and not isinstance(
        doc_or_text, str) else str(doc_or_text or "")
    if nlp is None:
        nlp = load_spacy(DEFAULT_SPACY_MODEL)
    # text.py's own steps: lower-case, spaCy's tokens joined by single spaces
    sentence = " ".join(t.text for t in nlp(text.lower()) if t.text.strip())
    if not sentence:
        return SpatialParse(target="")
    sentence_doc = nlp(sentence)
    try:
        official = noun_phrase(sentence_doc)
    except Exception:  # noqa: BLE001 - a parse without a root: the text itself
        official = sentence
    normalised = _normalise(sentence)
    scan = _Scan(sentence_doc if normalised == sentence else nlp(normalised))
    scan.run()
    result = SpatialParse(scan.target(), scan.position, scan.ordinal, scan.relation, scan.size,
                          tuple(scan.words))
    if not result.spatial:
        return SpatialParse(official, size=scan.size, words=tuple(scan.words))
    return result
