"""Macro-averaged precision, recall and F1 over the classes present in references or predictions.

Per class c: precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = their harmonic mean, each 0
when its denominator is 0; then the unweighted mean over classes. This matches scikit-learn's
``average="macro"`` with ``zero_division=0``. A local evaluate module (evaluate's own fetch from the
hub, which fails offline).
"""

import datasets
import evaluate
import numpy as np


def _ratio(numerator, denominator):
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=float), where=denominator > 0)


class MacroPRF(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions, references: class ids",
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        predictions, references = np.asarray(predictions), np.asarray(references)
        classes = np.union1d(predictions, references)
        hits = np.array([np.sum((predictions == c) & (references == c)) for c in classes], dtype=float)
        predicted = np.array([np.sum(predictions == c) for c in classes], dtype=float)
        actual = np.array([np.sum(references == c) for c in classes], dtype=float)
        precision, recall = _ratio(hits, predicted), _ratio(hits, actual)
        f1 = _ratio(2 * precision * recall, precision + recall)
        return {"precision": float(precision.mean()), "recall": float(recall.mean()), "f1": float(f1.mean())}
