"""L2-SP, a regulariser the engine adds to any strategy's loss, as a hook (:mod:`xdt.hooks.base`)."""

from __future__ import annotations

import torch
from torch import nn

from xdt.hooks.base import Hook


class L2SP(Hook):
    """L2-SP (Li, Grandvalet and Davoine, "Explicit Inductive Bias for Transfer Learning with Convolutional
    Networks", ICML 2018): alpha/2 ||w - w0||^2 pulls the trainable encoder weights w towards their
    starting point w0 (the pretrained weights), beta/2 ||v||^2 decays the weights v of the new layers
    (heads, discriminators). The reference w0 is copied when the run builds its model, before any
    checkpoint loads, so a resumed run has the same reference.
    """

    name = "l2sp"

    def __init__(self, strategy: nn.Module, alpha: float, beta: float):
        self.alpha, self.beta = alpha, beta
        encoder = strategy.model.encoder
        encoder_ids = {id(p) for p in encoder.parameters()}
        self.pretrained = [(p, p.detach().clone()) for p in encoder.parameters() if p.requires_grad]
        self.new = [p for p in strategy.parameters() if p.requires_grad and id(p) not in encoder_ids]

    def __call__(self) -> torch.Tensor:
        start = sum((p - p0.to(p.device)).pow(2).sum() for p, p0 in self.pretrained)
        new = sum(p.pow(2).sum() for p in self.new)
        return self.alpha / 2 * start + self.beta / 2 * new

    def loss_terms(self) -> dict[str, torch.Tensor]:
        return {"l2sp": self()}
