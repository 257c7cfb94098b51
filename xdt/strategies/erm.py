"""Empirical risk minimisation: plain fine-tuning on the labeled source data ("source only").

The reference every transfer method is compared with (Vapnik, "Statistical Learning Theory", 1998;
as the baseline of Gulrajani and Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021).
"""

from __future__ import annotations

import torch

from xdt.strategies.base import Batch, Strategy


class ERM(Strategy):
    """Cross-entropy on source batches; target batches, if any, are ignored."""

    name = "erm"

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, loss = self.source_features(source)
        return loss, {"classification": loss}
