"""Entity-level precision, recall and F1 of BIO-tagged sequences, overall (micro-averaged over entities) and per
entity type, with conlleval's semantics: an entity counts as found only when its span and type both match
exactly (Tjong Kim Sang and De Meulder, "Introduction to the CoNLL-2003 Shared Task", 2003). Computed by the
``seqeval`` package (Nakayama, 2018), in its default mode, which reads tags as conlleval does; the accuracy of
the tags of the scored tokens is reported too. A local evaluate module: the hub's seqeval module needs network.
"""

import datasets
import evaluate
from seqeval.metrics import accuracy_score, classification_report


class Seqeval(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions, references: lists of BIO tags",
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("string")),
                                        "references": datasets.Sequence(datasets.Value("string"))}))

    def _compute(self, predictions, references):
        report = classification_report(references, predictions, output_dict=True, zero_division=0)
        overall = report.pop("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
        for average in ("macro avg", "weighted avg"):
            report.pop(average, None)
        per_type = {name: {"precision": float(scores["precision"]), "recall": float(scores["recall"]),
                           "f1": float(scores["f1-score"]), "number": int(scores["support"])}
                    for name, scores in sorted(report.items())}
        return {"precision": float(overall["precision"]), "recall": float(overall["recall"]),
                "f1": float(overall["f1-score"]), "token_accuracy": float(accuracy_score(references, predictions)),
                "per_type": per_type}
