"""Domain-adversarial training, DANN (Ganin et al., "Domain-Adversarial Training of Neural Networks",
JMLR 2016).

A discriminator learns to tell domains apart from the pooled features; a gradient-reversal layer
between them makes the encoder learn features the discriminator cannot tell apart, while the head
learns the source labels. The reversal scale follows lambda_p = 2 / (1 + exp(-gamma p)) - 1 over the
training progress p, times ``weight``, so the adversary starts weak while features are still random.

Defaults for a pretrained encoder trained with AdamW: ``weight`` 0.1, and the discriminator, which
starts from scratch, at ``discriminator_lr_scale`` = 10 times the optimizer's learning rate (the usual
multiplier for layers added to a pretrained network, as in Long et al., DAN, 2015; a faster
discriminator is also the two time-scale rule of Heusel et al., 2017). Adam scales each weight's step to
its own gradient, so wherever the reversed gradient dominates the task gradient (more and more as the
source task is learned) the encoder moves at the full learning rate however small the reversal is. At
weight 1.0 it outruns the discriminator: the features are pushed past its boundary again and again (the
discriminator's loss, logged as ``domain``, climbs far above ln 2) and the target features, which no
label anchors, drift across the class boundary. At 0.1 the same happens later and for fewer steps;
watch the ``domain`` term.

Domains: each source domain is one class of the discriminator and the unlabeled target text (all target
domains together) one more. With one source and a target stream this is the classic source-vs-target
DANN; with several sources and no target stream it aligns the sources with each other (domain
generalisation); with one source and no target it has nothing to align and trains like ERM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xdt.errors import XdtError
from xdt.strategies._common import dann_lambda, mlp, reverse_gradient
from xdt.strategies.base import Batch, Strategy, StrategyContext


class DANN(Strategy):
    name = "dann"
    uses_target_data = True

    def __init__(self, model, context: StrategyContext = StrategyContext(), weight: float = 0.1,
                 gamma: float = 10.0, hidden_size: int = 256, layers: int = 2, dropout: float = 0.1,
                 discriminator_lr_scale: float = 10.0):
        super().__init__(model, context)
        if not discriminator_lr_scale > 0:
            raise XdtError(f"strategy.discriminator_lr_scale={discriminator_lr_scale} is not valid: it must be positive")
        self.weight, self.gamma, self.discriminator_lr_scale = weight, gamma, discriminator_lr_scale
        self.num_domains = context.num_sources + (1 if self.target_stream else 0)
        self.discriminator = (mlp(model.encoder.config.hidden_size, hidden_size, self.num_domains, layers, dropout)
                              if self.num_domains > 1 else None)

    def lr_scales(self) -> dict[torch.nn.Module, float]:
        return {self.discriminator: self.discriminator_lr_scale} if self.discriminator is not None else {}

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, classification = self.source_features(source)
        terms = {"classification": classification}
        if self.discriminator is None:
            return classification, terms
        domains = source["domain"]
        target_features = self.target_features(target)
        if target_features is not None:
            features = torch.cat([features, target_features])
            domains = torch.cat([domains, domains.new_full((len(target_features),), self.context.num_sources)])
        scale = self.weight * dann_lambda(progress, self.gamma)
        domain_loss = F.cross_entropy(self.discriminator(reverse_gradient(features, scale)), domains)
        terms.update(domain=domain_loss, reversal_scale=torch.tensor(scale))
        return classification + domain_loss, terms
