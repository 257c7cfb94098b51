"""Self-training by pseudo-labelling (Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised
Learning Method for Deep Neural Networks", ICML 2013 workshop; with FixMatch's confidence threshold,
Sohn et al., NeurIPS 2020).

After a warm-up of plain ERM (the first ``warmup`` fraction of training), each unlabeled target
example whose predicted class has probability at least ``threshold`` is trained on as if that class
were its label. Loss = source cross-entropy + ``weight`` * mean pseudo-label cross-entropy over the
target batch (examples under the threshold count as zero, as in FixMatch).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xdt.strategies.base import Batch, Strategy, StrategyContext


class SelfTraining(Strategy):
    name = "self_train"
    uses_target_data = True

    def __init__(self, model, context: StrategyContext = StrategyContext(), threshold: float = 0.9,
                 weight: float = 1.0, warmup: float = 0.2):
        super().__init__(model, context)
        self.threshold, self.weight, self.warmup = threshold, weight, warmup

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, classification = self.source_features(source)
        if target is None or progress < self.warmup:
            zero = classification.new_zeros(())
            return classification, {"classification": classification, "pseudo": zero, "pseudo_fraction": zero}
        logits = self.predict(target)
        confidence, pseudo_labels = logits.detach().softmax(-1).max(-1)
        confident = (confidence >= self.threshold).float()
        pseudo = (F.cross_entropy(logits, pseudo_labels, reduction="none") * confident).mean()
        return classification + self.weight * pseudo, {"classification": classification, "pseudo": pseudo,
                                                       "pseudo_fraction": confident.mean()}
