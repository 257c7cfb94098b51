"""Binary ROC-AUC from the positive-class score, by the rank-sum (Mann-Whitney U) identity.

AUC = (sum of the positives' ranks - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with tied scores given
their average rank; it equals the area under the ROC curve. Undefined (None) when the references hold
only one class. A local evaluate module (evaluate's own fetch from the hub fails offline).
"""

import datasets
import evaluate
import numpy as np


def _average_ranks(values):
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=float)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


class RocAuc(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="",
            inputs_description="references: 0/1 labels; prediction_scores: score of class 1",
            features=datasets.Features({"prediction_scores": datasets.Value("float64"),
                                        "references": datasets.Value("int64")}))

    def _compute(self, prediction_scores, references):
        scores, references = np.asarray(prediction_scores, dtype=float), np.asarray(references)
        positives = int(np.sum(references == 1))
        negatives = len(references) - positives
        if positives == 0 or negatives == 0:
            return {"roc_auc": None}
        rank_sum = _average_ranks(scores)[references == 1].sum()
        return {"roc_auc": float((rank_sum - positives * (positives + 1) / 2) / (positives * negatives))}
