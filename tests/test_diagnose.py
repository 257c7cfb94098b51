"""Domain-shift diagnostics: proxy A-distance and vocabulary overlap."""

from __future__ import annotations

import random

import pytest

from xdt.diagnose import proxy_a_distance, vocabulary_overlap

WORDS = [f"w{i}" for i in range(400)]


def sample(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(12)) for _ in range(n)]


def test_pad_is_near_zero_for_one_distribution_and_near_two_for_disjoint_ones():
    same = proxy_a_distance(sample(WORDS, 400, 0), sample(WORDS, 400, 1))
    disjoint = proxy_a_distance(sample(WORDS[:200], 400, 0), sample(WORDS[200:], 400, 1))
    partly = proxy_a_distance(sample(WORDS[:300], 400, 0), sample(WORDS[100:], 400, 1))
    assert same < 0.3 and disjoint > 1.9
    assert same < partly < disjoint


def test_vocabulary_overlap_counts_types_and_unseen_tokens():
    figures = vocabulary_overlap(["good pan", "bad lid"], ["good plot", "good good"])
    # types: source {good, pan, bad, lid}, target {good, plot}: 1 shared of 5; target tokens: 1 of 4 unseen
    assert figures["vocab_jaccard"] == pytest.approx(1 / 5)
    assert figures["target_oov_rate"] == pytest.approx(1 / 4)


def test_pad_needs_enough_text():
    with pytest.raises(ValueError, match="at least 10 texts"):
        proxy_a_distance(["a"] * 5, ["b"] * 5)
