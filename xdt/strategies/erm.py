"""Empirical risk minimisation: plain fine-tuning on the labeled source data ("source only").

The reference every transfer method is compared with (Vapnik, "Statistical Learning Theory", 1998;
as the baseline of Gulrajani and Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021).
"""

from __future__ import annotations

import torch

from xdt.strategies.base import Batch, Strategy


class ERM(Strategy):
    """The task's own loss on source batches (cross-entropy for a classifier, the language-model loss for a
    language model); target batches, if any, are ignored. Serves every task."""

    name = "erm"
    tasks = None

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss = self.model.loss(source)
        return loss, {self.model.loss_name: loss}
