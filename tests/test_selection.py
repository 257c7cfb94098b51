"""Model-selection criteria: the label-free scores, and which evaluation each criterion picks."""

from __future__ import annotations

import numpy as np
import pytest

from xdt import selection
from xdt.errors import XdtError


def record(step: int, source_val: float, target_val: float, entropy: float, im: float) -> dict:
    return {"step": step, "eval": {
        "source/a/validation": {"accuracy": source_val},
        "target/b/validation": {"accuracy": target_val, "entropy": entropy, "im": im},
        "target/b/test": {"accuracy": target_val - 0.01}}}


RECORDS = [record(10, 0.80, 0.60, 0.50, 0.10), record(20, 0.90, 0.55, 0.60, 0.05),
           record(30, 0.85, 0.70, 0.20, 0.30), record(40, 0.90, 0.65, 0.40, 0.20)]


@pytest.mark.parametrize("criterion,step", [("source_val", 20), ("last", 40), ("target_oracle", 30),
                                            ("entropy", 30), ("im", 30)])
def test_each_criterion_picks_its_evaluation(criterion, step):
    assert selection.select(RECORDS, criterion)["step"] == step  # source_val ties at 0.90: the earlier wins


def test_unsupervised_scores_reward_confident_and_diverse_predictions():
    confident_diverse = np.array([[0.99, 0.01], [0.01, 0.99]])
    confident_collapsed = np.array([[0.99, 0.01], [0.99, 0.01]])
    unsure = np.array([[0.5, 0.5], [0.5, 0.5]])
    scores = {name: selection.unsupervised_scores(p) for name, p in
              [("diverse", confident_diverse), ("collapsed", confident_collapsed), ("unsure", unsure)]}
    assert scores["unsure"]["entropy"] == pytest.approx(np.log(2))
    assert scores["diverse"]["entropy"] == pytest.approx(scores["collapsed"]["entropy"])
    assert scores["diverse"]["im"] == pytest.approx(np.log(2) - scores["diverse"]["entropy"])
    assert scores["diverse"]["im"] > scores["collapsed"]["im"] > scores["unsure"]["im"] - 1e-9


def test_a_criterion_without_its_scores_says_so():
    source_only = [{"step": 10, "eval": {"source/a/validation": {"accuracy": 0.8}}}]
    with pytest.raises(XdtError, match="selection=im: the evaluation records hold no scores"):
        selection.select(source_only, "im")
    with pytest.raises(XdtError, match="selection='best' is not a model-selection criterion"):
        selection.select(RECORDS, "best")


def test_oracle_is_named_as_such():
    assert "TARGET LABELS USED" in selection.describe("target_oracle")
    assert selection.describe("source_val", "f1_macro") == "best source validation f1_macro"
