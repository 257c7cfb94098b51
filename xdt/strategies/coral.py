"""Deep CORAL (Sun and Saenko, "Deep CORAL: Correlation Alignment for Deep Domain Adaptation", ECCV 2016
workshops): match the covariance of pooled features across domains.

The penalty ||C_a - C_b||_F^2 / (4 d^2) is averaged over every pair of domains in the step: each source
domain present in the source batch, and the target batch when there is a target stream (as DomainBed's
CORAL does for several sources). Loss = cross-entropy + ``weight`` * penalty.
"""

from __future__ import annotations

import torch

from xdt.strategies._common import coral_loss, domain_groups, pairwise_mean
from xdt.strategies.base import Batch, Strategy, StrategyContext


class CORAL(Strategy):
    # Token classification too: the domains are compared on sentence features (the mean of the token states),
    # not token by token (see xdt/tasks/token_classification.py for why).
    tasks = ("sequence_classification", "token_classification")
    name = "coral"
    uses_target_data = True

    def __init__(self, model, context: StrategyContext = StrategyContext(), weight: float = 1.0):
        super().__init__(model, context)
        self.weight = weight

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, classification, target_features = self.features_of_both(source, target)
        groups = domain_groups(features, source["domain"], target_features)
        penalty = pairwise_mean(coral_loss, groups)
        return classification + self.weight * penalty, {"classification": classification,
                                                        "coral": penalty}
