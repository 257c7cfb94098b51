"""Model-selection criteria: which evaluation of a run (and so which checkpoint) a number comes from.

Every evaluation record in ``metrics.jsonl`` carries the scores each criterion reads, so a criterion
can be applied after the fact to any finished run: one run serves every criterion.

* ``source_val`` (default): best source validation metric. Uses no target labels.
* ``last``: the last evaluation.
* ``target_oracle``: best target validation metric. Uses target labels, so the target scores it picks
  are optimistic; allowed only on request and flagged wherever it is reported.
* ``entropy``: lowest mean prediction entropy on target validation text, labels unused
  (Morerio et al., "Minimal-Entropy Correlation Alignment", ICLR 2018).
* ``im``: highest information maximisation on target validation text, labels unused: entropy of the
  mean prediction minus mean entropy of the predictions, so confident *and* diverse predictions win
  (Gomes et al., NIPS 2010; the IM validator of pytorch-adapt, Musgrave et al., "Benchmarking
  Validation Methods for Unsupervised Domain Adaptation", 2021).
* ``dev``: lowest deep embedded validation risk, the source validation error importance-weighted towards the
  target by a domain classifier on the model's features (You et al., ICML 2019), labels of target unused.
* ``reverse_val``: highest reverse validation accuracy, a classifier trained on target validation text labeled by
  the model's predictions and scored on source validation (Zhong et al., ECML PKDD 2010), labels of target unused.
  Both are computed at every evaluation by :mod:`xdt.transfer_validation`.

Every criterion but ``target_oracle`` (and ``last``) can also be what a hyperparameter search maximises
(:func:`xdt.sweep.objective`), so trials are chosen as checkpoints are, without target labels.

One criterion is recorded by runs but is not a training setting of that name: ``target_val``, the best target
validation metric of a run whose protocol trains on the targets' labels (token classification with
``task.train_on`` target, both or source_then_target), for which that split is its own validation split, not an
oracle. It reads the same scores as ``target_oracle``; which name a number carries depends on the run.
``entropy`` and ``im`` read predicted class distributions, which only sequence classification records.
"""

from __future__ import annotations

import math

import numpy as np

from xdt.errors import XdtError

CRITERIA = {
    "source_val": "best source validation {metric}",
    "last": "last evaluation",
    "target_oracle": "best target validation {metric} (TARGET LABELS USED: optimistic)",
    "entropy": "lowest prediction entropy on unlabeled target validation text",
    "im": "highest information maximisation on unlabeled target validation text",
    "dev": "lowest deep embedded validation risk (source validation error weighted towards unlabeled target text)",
    "reverse_val": "highest reverse validation accuracy (a classifier of target text labeled by the model, "
                   "scored on source validation)",
}
# Recorded by runs (and applied by xdt report), never chosen by ``selection=`` in a training config.
RECORDED = {
    "target_val": "best target validation {metric} (the protocol trains on target labels: its own validation split)",
}
NEEDS_TARGETS = ("target_oracle", "target_val", "entropy", "im", "dev", "reverse_val")
# Read unlabeled target text through class distributions and features, which only sequence classification records.
LABEL_FREE = ("entropy", "im", "dev", "reverse_val")
# What a hyperparameter search may maximise: every criterion that reads no target label and scores a model.
SEARCH_OBJECTIVES = ("source_val", *LABEL_FREE)


def unsupervised_scores(probabilities: np.ndarray) -> dict[str, float]:
    """Label-free scores of a set of predicted class distributions (rows of ``probabilities``)."""
    p = np.clip(probabilities, 1e-12, 1.0)
    entropy = float(np.mean(-(p * np.log(p)).sum(axis=1)))
    mean = p.mean(axis=0)
    diversity = float(-(mean * np.log(mean)).sum())
    return {"entropy": entropy, "im": diversity - entropy}


def describe(criterion: str, metric: str = "accuracy") -> str:
    """A caption for numbers chosen by ``criterion``, e.g. 'best source validation accuracy'."""
    if criterion in RECORDED:
        return RECORDED[criterion].format(metric=metric)
    check(criterion)
    return CRITERIA[criterion].format(metric=metric)


def check(criterion: str) -> None:
    if criterion not in CRITERIA:
        raise XdtError(f"selection={criterion!r} is not a model-selection criterion; choose one of "
                       f"{', '.join(CRITERIA)}")


def _mean(results: dict[str, dict], role: str, split: str, key: str) -> float | None:
    values = [scores[key] for name, scores in results.items()
              if name.startswith(f"{role}/") and name.endswith(f"/{split}") and scores.get(key) is not None]
    return float(np.mean(values)) if values else None


def score(results: dict[str, dict], criterion: str, metric: str = "accuracy") -> float | None:
    """How good one evaluation's ``results`` ({set name: scores}) is under ``criterion``; higher is better.

    None when the evaluation lacks what the criterion reads (for example no target domain).
    """
    if criterion not in RECORDED:
        check(criterion)
    if criterion == "source_val":
        return _mean(results, "source", "validation", metric)
    if criterion in ("target_oracle", "target_val"):
        return _mean(results, "target", "validation", metric)
    if criterion == "entropy":
        entropy = _mean(results, "target", "validation", "entropy")
        return None if entropy is None else -entropy
    if criterion == "im":
        return _mean(results, "target", "validation", "im")
    if criterion == "dev":
        risk = _mean(results, "target", "validation", "dev_risk")
        return None if risk is None else -risk
    if criterion == "reverse_val":
        return _mean(results, "target", "validation", "reverse_accuracy")
    return 0.0  # "last": every evaluation ties, and select() keeps the latest


def select(records: list[dict], criterion: str, metric: str = "accuracy") -> dict:
    """The evaluation record ``criterion`` picks from a run's ``metrics.jsonl`` records (ties: the earliest,
    except for ``last``)."""
    if not records:
        raise XdtError("no evaluation records to select from")
    if criterion == "last":
        return max(records, key=lambda r: r["step"])
    scored = [(score(r["eval"], criterion, metric), r) for r in sorted(records, key=lambda r: r["step"])]
    scored = [(value, r) for value, r in scored if value is not None and not math.isnan(value)]
    if not scored:
        raise XdtError(f"selection={criterion}: the evaluation records hold no scores it can read "
                       f"(it needs {'target validation sets' if criterion in NEEDS_TARGETS else 'source validation'})")
    best = max(value for value, _ in scored)
    return next(r for value, r in scored if value == best)
