"""The local evaluate modules against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from xdt.metrics import classification_metrics, load_module


def test_accuracy_and_macro_scores_by_hand():
    references = np.array([0, 0, 0, 1, 1, 2])
    predictions = np.array([0, 0, 1, 1, 2, 2])
    # class 0: P 2/2 R 2/3; class 1: P 1/2 R 1/2; class 2: P 1/2 R 1/1
    prf = load_module("macro_prf").compute(predictions=predictions, references=references)
    assert prf["precision"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert prf["recall"] == pytest.approx((2 / 3 + 0.5 + 1) / 3)
    f1 = [2 * p * r / (p + r) for p, r in [(1, 2 / 3), (0.5, 0.5), (0.5, 1)]]
    assert prf["f1"] == pytest.approx(np.mean(f1))
    assert load_module("accuracy").compute(predictions=predictions, references=references)["accuracy"] == 4 / 6


def test_a_class_never_predicted_scores_zero_not_nan():
    prf = load_module("macro_prf").compute(predictions=[0, 0, 0, 0], references=[0, 0, 1, 1])
    assert prf["precision"] == pytest.approx((0.5 + 0) / 2) and prf["recall"] == pytest.approx((1 + 0) / 2)


def test_roc_auc_counts_pairs_and_ties():
    roc = load_module("roc_auc")
    # positives 0.8, 0.4; negatives 0.4, 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4 -> 1/2, 0.4>0.1) = 3.5/4
    assert roc.compute(prediction_scores=[0.8, 0.4, 0.4, 0.1], references=[1, 1, 0, 0])["roc_auc"] == 3.5 / 4
    assert roc.compute(prediction_scores=[0.1, 0.9], references=[1, 0])["roc_auc"] == 0.0
    assert roc.compute(prediction_scores=[0.1, 0.9], references=[1, 1])["roc_auc"] is None


def test_classification_metrics_reports_auc_for_binary_only():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    result = classification_metrics(np.array([0, 1, 1]), probs)
    assert result["accuracy"] == pytest.approx(2 / 3) and result["roc_auc"] == 1.0
    three = classification_metrics(np.array([0, 1, 2]), np.eye(3))
    assert three["accuracy"] == 1.0 and three["roc_auc"] is None
