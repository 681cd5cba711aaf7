"""ROUGE against hand-computed values, and rougeLsum's sentence splitting."""

from __future__ import annotations

import pytest

from trainables.rouge import ROUGE_TYPES, rouge_scores, split_sentences


def test_identical_strings_score_100():
    scores = rouge_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert scores == dict.fromkeys(ROUGE_TYPES, 100.0)


def test_disjoint_strings_score_0():
    scores = rouge_scores(["red green blue"], ["one two three"])
    assert scores == dict.fromkeys(ROUGE_TYPES, 0.0)


def test_partial_overlap_uses_the_stemmer():
    # Stemmed: [the, cat, are, run] vs [a, cat, run]: 2 shared unigrams, P=2/4, R=2/3,
    # F=4/7; no shared bigram; LCS = (cat, run), also 4/7. Unstemmed, nothing would match.
    scores = rouge_scores(["the cats are running"], ["a cat runs"])
    assert scores["rouge1"] == pytest.approx(400 / 7)
    assert scores["rouge2"] == 0.0
    assert scores["rougeL"] == pytest.approx(400 / 7)


def test_scores_are_the_mean_over_examples():
    scores = rouge_scores(["the cats are running", "hello there"], ["a cat runs", "hello there"])
    assert scores["rouge1"] == pytest.approx((400 / 7 + 100) / 2)


def test_rougelsum_scores_sentences_separately():
    # Swapped sentences: one LCS over the whole text covers half the words (rougeL = 50),
    # but every reference sentence is found in some predicted sentence (rougeLsum = 100).
    scores = rouge_scores(["The dog ran. The cat sat."], ["The cat sat. The dog ran."])
    assert scores["rougeL"] == pytest.approx(50.0)
    assert scores["rougeLsum"] == pytest.approx(100.0)


def test_rougelsum_treats_newlines_as_sentence_breaks():
    scores = rouge_scores(["the dog ran\nthe cat sat"], ["the cat sat\nthe dog ran"])
    assert scores["rougeLsum"] == pytest.approx(100.0)


def test_split_sentences_keeps_abbreviations_and_versions_whole():
    text = "Reads e.g. PNG and v1.2 files. It is fast! Really?\nyes"
    assert split_sentences(text) == [
        "Reads e.g. PNG and v1.2 files.",
        "It is fast!",
        "Really?",
        "yes",
    ]


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_scores(["a", "b"], ["a"])
