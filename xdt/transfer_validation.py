"""Label-free validation that reads both domains: deep embedded validation and reverse validation.

Both score one evaluation of a run from what it computed on the source validation split (features, labels,
predictions) and on the target validation split (features, predictions, the texts' token ids), with no target
label. The selection criteria ``dev`` and ``reverse_val`` (:mod:`xdt.selection`) pick checkpoints, and
hyperparameter-search trials, with them.

* **Deep embedded validation** (You, Wang, Chen, Wang and Jordan, "Towards Accurate Model Selection in Deep
  Unsupervised Domain Adaptation", ICML 2019): the source validation error weighted by the density ratio
  w(x) = p_target(x) / p_source(x) estimates the target error (importance weighting). The ratio comes from a
  domain classifier on the model's features, w = P(target | x) / P(source | x) * n_source / n_target, and a
  control variate (the weights' mean is 1 in expectation) cuts the estimate's variance:
  risk = mean(w l) + eta mean(w) - eta, eta = -Cov(w l, w) / Var(w). Lower is better. The loss l is the 0/1
  error, so the risk estimates the target error rate, the complement of the accuracy selection ranks.
  The paper trains an MLP domain classifier on source *training* features. Here a logistic regression is
  cross-fitted on the two validation splits (each source example's weight comes from a classifier that did not
  see it), its L2 strength chosen by held-out log loss, and P(target | x) is kept within [``RATIO_CLIP``,
  1 - ``RATIO_CLIP``]: no example weighs more than 99 times the prior ratio. Without a bound, features that tell
  the domains apart give a few source examples weights in the thousands, and the control variate then gives
  estimates far below zero.
* **Reverse validation** (Zhong, Fan, Yang, Verscheure and Ren, "Cross Validation Framework to Choose amongst
  Models and Datasets for Transfer Learning", ECML PKDD 2010; used to select DANN's settings by Ganin et al.,
  JMLR 2016): train a reverse classifier on target text labeled with the model's own predictions and score it
  on labeled source validation. A model whose target labeling carries back to the source's labels scores high;
  one that collapses to one class on target scores the source's share of that class. The original retrains
  the network in reverse. Here the reverse classifier is a bag-of-words logistic regression over the texts'
  token ids (hashed into ``BAG_BUCKETS`` columns), which costs milliseconds. It must not read the model's own
  features: a linear classifier of the features the model's head reads can fit the pseudo-labels with that very
  head, and then scores the model's source accuracy whatever its target labels are.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

DOMAIN_L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # the domain classifier's strengths, chosen by held-out log loss
REVERSE_L2 = 1e-2
FOLDS = 2
RATIO_CLIP = 0.01  # P(target | x) kept in [clip, 1 - clip]: a weight is at most 99 times the prior ratio
BAG_BUCKETS = 2 ** 14  # token ids hashed into this many bag-of-words columns for the reverse classifier
BAG_COLUMNS = 4096  # of which the reverse classifier reads the most frequent ones that both domains hold
MAX_EXAMPLES = 2000  # per domain (a fixed random sample beyond): cost and memory stay bounded on large splits


@dataclass
class SetOutputs:
    """What one evaluation set gives label-free validation: pooled features, predicted class distributions and
    the labels (the labels of a target set are never read here)."""

    features: np.ndarray  # (n, hidden)
    probabilities: np.ndarray  # (n, classes)
    labels: np.ndarray  # (n,)
    bags: np.ndarray  # (n, BAG_BUCKETS) uint8: which hashed token ids each text holds (token_bags)

    def errors(self) -> np.ndarray:
        """Per-example 0/1 error of the predicted class against the label."""
        return (self.probabilities.argmax(axis=1) != self.labels).astype(np.float64)


def token_bags(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Binary bags of words of a batch, (batch, BAG_BUCKETS) uint8: the token ids each text holds, hashed by
    their remainder (feature hashing, Weinberger et al., ICML 2009), padding left out."""
    counts = torch.zeros(len(input_ids), BAG_BUCKETS, device=input_ids.device)
    counts.scatter_add_(1, input_ids % BAG_BUCKETS, attention_mask.float())
    return (counts > 0).to(torch.uint8)


def fit_logistic(x: torch.Tensor, y: torch.Tensor, classes: int, l2: float) -> torch.Tensor:
    """The weights (features + 1 for the bias, classes) of a multinomial logistic regression, L2-regularised (the
    bias excepted), fitted full-batch with L-BFGS from zero: no random draw, so scoring never moves the random
    state that training reads (dropout, batch order)."""
    with torch.inference_mode(False), torch.enable_grad():  # also when called while a model is being scored
        x = torch.cat([x.clone(), torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        y = y.clone()
        weights = torch.zeros(x.shape[1], classes, dtype=x.dtype, requires_grad=True)
        optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(x @ weights, y) + l2 * weights[:-1].pow(2).sum() / 2
            loss.backward()
            return loss

        optimizer.step(closure)
    return weights.detach()


def log_probabilities(weights: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Class log-probabilities of the rows of ``x`` under :func:`fit_logistic`'s ``weights``."""
    return (x @ weights[:-1] + weights[-1]).log_softmax(-1)


def standardised(*arrays: np.ndarray) -> list[torch.Tensor]:
    """The arrays as float64 tensors, centred and scaled by the statistics of all of them together."""
    pooled = np.concatenate(arrays)
    mean, std = pooled.mean(axis=0), pooled.std(axis=0) + 1e-6
    return [torch.from_numpy((a - mean) / std).double() for a in arrays]


def target_probabilities(source: np.ndarray, target: np.ndarray, seed: int = 0) -> np.ndarray:
    """P(target | x) of every source example from a cross-fitted source-vs-target logistic regression: each
    fold's examples are scored by a classifier fitted on the other folds, at the L2 strength whose held-out
    log loss over all examples is lowest."""
    x_source, x_target = standardised(source, target)
    x = torch.cat([x_source, x_target])
    y = torch.cat([torch.zeros(len(source), dtype=torch.long), torch.ones(len(target), dtype=torch.long)])
    fold = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed)) % FOLDS
    best_loss, best = float("inf"), None
    for l2 in DOMAIN_L2_GRID:
        held_out = torch.empty(len(x), 2, dtype=x.dtype)
        for k in range(FOLDS):
            weights = fit_logistic(x[fold != k], y[fold != k], 2, l2)
            held_out[fold == k] = log_probabilities(weights, x[fold == k])
        loss = float(F.nll_loss(held_out, y))
        if loss < best_loss:
            best_loss, best = loss, held_out
    return best[: len(source), 1].exp().numpy()


def density_ratios(source: np.ndarray, target: np.ndarray, seed: int = 0) -> np.ndarray:
    """w(x) = p_target(x) / p_source(x) of each source example, from the domain classifier's odds."""
    p = np.clip(target_probabilities(source, target, seed), RATIO_CLIP, 1 - RATIO_CLIP)
    return p / (1 - p) * len(source) / len(target)


def dev_risk(losses: np.ndarray, weights: np.ndarray) -> float:
    """Deep embedded validation: the importance-weighted loss with its control variate (You et al., eq. 5)."""
    weighted = weights * losses
    variance = float(np.var(weights, ddof=1)) if len(weights) > 1 else 0.0
    eta = -float(np.cov(weighted, weights)[0, 1]) / variance if variance > 0 else 0.0
    return float(np.mean(weighted) + eta * np.mean(weights) - eta)


def reverse_accuracy(source: SetOutputs, target: SetOutputs) -> float:
    """Accuracy on source validation of a bag-of-words classifier trained on target text labeled by the model."""
    pseudo = target.probabilities.argmax(axis=1)
    if len(np.unique(pseudo)) == 1:  # nothing to learn: the reverse classifier predicts that one class
        return float(np.mean(source.labels == pseudo[0]))
    # A column only one side holds cannot carry over; of the others, the most frequent ones.
    frequency = target.bags.sum(axis=0, dtype=np.int64) + source.bags.sum(axis=0, dtype=np.int64)
    frequency[~(target.bags.any(axis=0) & source.bags.any(axis=0))] = 0
    used = np.argsort(-frequency, kind="stable")[:min(BAG_COLUMNS, int((frequency > 0).sum()))]
    x_target, x_source = (torch.from_numpy(s.bags[:, used]).double() for s in (target, source))
    weights = fit_logistic(x_target, torch.from_numpy(pseudo).long(), target.probabilities.shape[1], REVERSE_L2)
    predicted = log_probabilities(weights, x_source).argmax(-1).numpy()
    return float(np.mean(predicted == source.labels))


def sample(outputs: SetOutputs, limit: int = MAX_EXAMPLES, seed: int = 0) -> SetOutputs:
    """At most ``limit`` examples of ``outputs``, drawn without replacement by a generator of their own (the
    training's random state is never touched); all of them, in order, when there are no more."""
    if len(outputs.labels) <= limit:
        return outputs
    keep = np.sort(np.random.default_rng(seed).choice(len(outputs.labels), limit, replace=False))
    return SetOutputs(*(getattr(outputs, f.name)[keep] for f in fields(SetOutputs)))


def transfer_scores(source: SetOutputs, target: SetOutputs) -> dict[str, float]:
    """Both label-free scores of one target validation set against the (pooled) source validation sets."""
    source, target = sample(source), sample(target)
    weights = density_ratios(source.features, target.features)
    return {"dev_risk": dev_risk(source.errors(), weights), "reverse_accuracy": reverse_accuracy(source, target)}


def pooled(sets: list[SetOutputs]) -> SetOutputs:
    """Several sets as one (the source validation splits of a multi-source run)."""
    return SetOutputs(*(np.concatenate([getattr(s, f.name) for s in sets]) for f in fields(SetOutputs)))
