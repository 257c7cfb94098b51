"""The plug-in contract every transfer strategy follows (after DomainBed's ``Algorithm``).

A strategy is a small ``nn.Module`` that holds the classifier (``self.model``) and any extra heads
(a domain discriminator, say). Its ``forward`` turns one labeled source batch, and optionally one
unlabeled target batch, into a loss and a dict of named loss terms for the logs. It never steps an
optimizer: the training loop does, so mixed precision, clipping and data parallelism live in one place.
The loop calls the strategy itself (``strategy(source, target, progress)``), not a method, so that
DistributedDataParallel sees the forward pass and synchronises gradients.

To add a strategy, write ``xdt/strategies/<name>.py`` with a subclass and
``configs/strategy/<name>.yaml`` whose ``_target_`` names it; nothing else changes.
"""

from __future__ import annotations

import torch
from torch import nn

from xdt.models import SequenceClassifier

Batch = dict[str, torch.Tensor]
"""A collated batch: ``input_ids``, ``attention_mask``, and for labeled data ``labels``; ``domain``
is the index of the example's domain among the run's sources (or targets, for target batches)."""


class Strategy(nn.Module):
    """Base class: holds the classifier; subclasses define the training loss."""

    #: Short name used in records and tables (the config file's name by convention).
    name: str = "strategy"

    #: Whether ``forward`` consumes unlabeled target batches; the loop loads them only if so.
    uses_target_data: bool = False

    def __init__(self, model: SequenceClassifier):
        super().__init__()
        self.model = model

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for one step, and its named terms (detached) for logging.

        ``progress`` is the fraction of training done, in [0, 1), for schedules such as DANN's.
        """
        raise NotImplementedError

    def predict(self, batch: Batch) -> torch.Tensor:
        """Class logits for evaluation."""
        return self.model(batch["input_ids"], batch["attention_mask"])
