"""Domain-shift diagnostics for a source/target pair, computed from text alone (no model, no labels).

* Proxy A-distance (Ben-David et al., "A theory of learning from different domains", Machine Learning
  2010; the recipe of Ganin et al., JMLR 2016): train a linear classifier to tell source text from
  target text on half of a balanced sample, measure its error e on the other half, PAD = 2 (1 - 2e).
  0 means the domains cannot be told apart; 2 means they are perfectly separable.
* Vocabulary overlap: Jaccard similarity of the two word-type sets, and the share of target tokens
  whose word never occurs in the source text (the target's out-of-vocabulary rate).

Features are binary bag-of-words over the most frequent word types of the pair; the classifier is
an L2-regularised logistic regression trained full-batch with L-BFGS.
"""

from __future__ import annotations

import re
from collections import Counter

import torch

WORD = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def vocabulary_overlap(source: list[str], target: list[str]) -> dict[str, float]:
    source_counts = Counter(w for text in source for w in words(text))
    target_counts = Counter(w for text in target for w in words(text))
    shared = source_counts.keys() & target_counts.keys()
    union = source_counts.keys() | target_counts.keys()
    unseen = sum(count for word, count in target_counts.items() if word not in source_counts)
    return {"vocab_jaccard": len(shared) / max(len(union), 1),
            "target_oov_rate": unseen / max(sum(target_counts.values()), 1)}


def _features(texts: list[str], index: dict[str, int]) -> torch.Tensor:
    matrix = torch.zeros(len(texts), len(index))
    for row, text in enumerate(texts):
        columns = [index[w] for w in set(words(text)) if w in index]
        matrix[row, columns] = 1.0
    return matrix


def proxy_a_distance(source: list[str], target: list[str], seed: int = 0, max_per_domain: int = 2000,
                     vocabulary_size: int = 5000, l2: float = 1e-3) -> float:
    """PAD of two text samples: 2 (1 - 2 * held-out error of a linear source-vs-target classifier)."""
    generator = torch.Generator().manual_seed(seed)
    n = min(len(source), len(target), max_per_domain)
    if n < 10:
        raise ValueError(f"proxy A-distance needs at least 10 texts per domain (got {n})")
    pick = [[texts[i] for i in torch.randperm(len(texts), generator=generator)[:n].tolist()]
            for texts in (source, target)]
    counts = Counter(w for texts in pick for text in texts for w in set(words(text)))
    index = {w: i for i, (w, _) in enumerate(counts.most_common(vocabulary_size))}
    x = torch.cat([_features(pick[0], index), _features(pick[1], index)])
    y = torch.cat([torch.zeros(n), torch.ones(n)])
    order = torch.randperm(2 * n, generator=generator)
    train, test = order[: n], order[n:]
    weights = torch.zeros(x.shape[1], requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = x[train] @ weights + bias
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y[train]) + l2 * weights.pow(2).sum()
        loss.backward()
        return loss
    optimizer.step(closure)
    with torch.no_grad():
        error = ((x[test] @ weights + bias > 0).float() != y[test]).float().mean().item()
    return 2.0 * (1.0 - 2.0 * error)


def pair_diagnostics(source: list[str], target: list[str], seed: int = 0) -> dict[str, float]:
    return {"proxy_a_distance": proxy_a_distance(source, target, seed), **vocabulary_overlap(source, target)}
