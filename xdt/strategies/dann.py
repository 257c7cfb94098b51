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

``adversary`` picks what the encoder is trained against. ``reversal`` (the default, the paper's) hands
the encoder the discriminator's loss with its sign flipped: unbounded, so once the discriminator is
fooled the encoder keeps pushing the features on past its boundary. ``confusion`` trains the encoder
to make the discriminator's prediction uniform over the domains (the domain-confusion loss of Tzeng et
al., ICCV 2015), which is zero at confusion and pushes no further; the discriminator then learns from
the features with their gradient stopped, and its weights are held fixed in the encoder's term. The
encoder's term (``confusion`` in the log) is scaled by the same weight times schedule.

Domains: each source domain is one class of the discriminator and the unlabeled target text (all target
domains together) one more. With one source and a target stream this is the classic source-vs-target
DANN; with several sources and no target stream it aligns the sources with each other (domain
generalisation); with one source and no target it has nothing to align and trains like ERM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xdt.errors import XdtError
from xdt.strategies._common import confusion_loss, dann_lambda, mlp, reverse_gradient
from xdt.strategies.base import Batch, Strategy, StrategyContext


ADVERSARIES = ("reversal", "confusion")


class DANN(Strategy):
    # Token classification too: the domains are compared on sentence features (the mean of the token states),
    # not token by token (see xdt/tasks/token_classification.py for why).
    tasks = ("sequence_classification", "token_classification")
    name = "dann"
    uses_target_data = True

    def __init__(self, model, context: StrategyContext = StrategyContext(), weight: float = 0.1,
                 gamma: float = 10.0, hidden_size: int = 256, layers: int = 2, dropout: float = 0.1,
                 discriminator_lr_scale: float = 10.0, adversary: str = "reversal"):
        super().__init__(model, context)
        if not discriminator_lr_scale > 0:
            raise XdtError(f"strategy.discriminator_lr_scale={discriminator_lr_scale} is not valid: it must be positive")
        if adversary not in ADVERSARIES:
            raise XdtError(f"strategy.adversary={adversary!r} is not valid: choose one of {', '.join(ADVERSARIES)}")
        self.weight, self.gamma, self.discriminator_lr_scale = weight, gamma, discriminator_lr_scale
        self.adversary = adversary
        self.num_domains = context.num_sources + (1 if self.target_stream else 0)
        self.discriminator = (mlp(model.encoder.config.hidden_size, hidden_size, self.num_domains, layers, dropout)
                              if self.num_domains > 1 else None)

    def lr_scales(self) -> dict[torch.nn.Module, float]:
        return {self.discriminator: self.discriminator_lr_scale} if self.discriminator is not None else {}

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.discriminator is None:
            _, classification = self.source_features(source)
            return classification, {"classification": classification}
        features, classification, target_features = self.features_of_both(source, target)
        terms = {"classification": classification}
        domains = source["domain"]
        if target_features is not None:
            features = torch.cat([features, target_features])
            domains = torch.cat([domains, domains.new_full((len(target_features),), self.context.num_sources)])
        scale = self.weight * dann_lambda(progress, self.gamma)
        if self.adversary == "reversal":
            domain_loss = F.cross_entropy(self.discriminator(reverse_gradient(features, scale)), domains)
            terms.update(domain=domain_loss, reversal_scale=classification.new_full((), scale))
            return classification + domain_loss, terms
        domain_loss = F.cross_entropy(self.discriminator(features.detach()), domains)
        confusion = confusion_loss(self.fixed_discriminator(features))
        terms.update(domain=domain_loss, confusion=confusion, confusion_scale=classification.new_full((), scale))
        return classification + domain_loss + scale * confusion, terms

    def fixed_discriminator(self, features: torch.Tensor) -> torch.Tensor:
        """The discriminator's logits with its weights detached: the gradient reaches only the features."""
        weights = {name: value.detach() for name, value in self.discriminator.named_parameters()}
        return torch.func.functional_call(self.discriminator, weights, (features,))
