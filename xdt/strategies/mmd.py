"""Multi-kernel maximum mean discrepancy between domains' pooled features (Long et al., "Learning
Transferable Features with Deep Adaptation Networks", ICML 2015).

MMD^2 with a family of Gaussian kernels (bandwidths spaced by ``kernel_mul`` around the mean pairwise
distance) is averaged over every pair of domains in the step, like CORAL. Loss = cross-entropy +
``weight`` * MMD^2.
"""

from __future__ import annotations

import functools

import torch

from xdt.strategies._common import domain_groups, mmd_loss, pairwise_mean
from xdt.strategies.base import Batch, Strategy, StrategyContext


class MMD(Strategy):
    # Token classification too: the domains are compared on sentence features (the mean of the token states),
    # not token by token (see xdt/tasks/token_classification.py for why).
    tasks = ("sequence_classification", "token_classification")
    name = "mmd"
    uses_target_data = True

    def __init__(self, model, context: StrategyContext = StrategyContext(), weight: float = 1.0,
                 kernel_mul: float = 2.0, kernel_num: int = 5):
        super().__init__(model, context)
        self.weight = weight
        self.distance = functools.partial(mmd_loss, kernel_mul=kernel_mul, kernel_num=kernel_num)

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, classification, target_features = self.features_of_both(source, target)
        groups = domain_groups(features, source["domain"], target_features)
        penalty = pairwise_mean(self.distance, groups)
        return classification + self.weight * penalty, {"classification": classification,
                                                        "mmd": penalty}
