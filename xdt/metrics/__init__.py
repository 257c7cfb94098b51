"""Classification and entity metrics through the ``evaluate`` library, from modules shipped in this package."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

MODULES = Path(__file__).parent / "modules"

# The metric names every evaluation reports, in table order.
METRIC_NAMES = ("accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc")


@cache
def load_module(name: str):
    """A local evaluate module by folder name (loaded once per process)."""
    import evaluate  # slow to import (it pulls in transformers.pipelines); only evaluation needs it

    return evaluate.load(str(MODULES / name))


def classification_metrics(references: np.ndarray, probabilities: np.ndarray) -> dict[str, float | None]:
    """Accuracy, macro precision/recall/F1 and, for two classes, ROC-AUC of the class-1 probability."""
    predictions = probabilities.argmax(axis=1)
    prf = load_module("macro_prf").compute(predictions=predictions, references=references)
    result = {
        "accuracy": load_module("accuracy").compute(predictions=predictions, references=references)["accuracy"],
        "f1_macro": prf["f1"],
        "precision_macro": prf["precision"],
        "recall_macro": prf["recall"],
        "roc_auc": None,
    }
    if probabilities.shape[1] == 2:
        result["roc_auc"] = load_module("roc_auc").compute(prediction_scores=probabilities[:, 1],
                                                           references=references)["roc_auc"]
    return result


# The entity metrics of token classification (per set; ``per_type`` holds the same per entity type).
ENTITY_METRIC_NAMES = ("f1", "precision", "recall", "token_accuracy")


def entity_metrics(references: list[list[str]], predictions: list[list[str]]) -> dict:
    """Entity-level micro precision, recall and F1 (exact span and type), token accuracy, and the same per type."""
    return load_module("seqeval").compute(predictions=predictions, references=references)
