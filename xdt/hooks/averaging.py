"""Weight averaging: evaluate and keep the running mean of the weights instead of the last weights.

Stochastic weight averaging (Izmailov et al., "Averaging Weights Leads to Wider Optima and Better
Generalization", UAI 2018), taken densely, after every optimizer step, as SWAD does for domain
generalization (Cha et al., "SWAD: Domain Generalization by Seeking Flat Minima", NeurIPS 2021): from
``average_from`` × the budget on, the mean of the trainable weights over the steps so far is what every
evaluation scores and every checkpoint's ``model.safetensors`` holds, so selection, the final metrics and
``xdt eval`` all see the averaged model. Training itself goes on from the weights the optimizer left; they
travel in the checkpoint's training state, so a resumed run continues both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from xdt.hooks.base import Hook


class WeightAverage(Hook):
    """Running mean of ``module``'s trainable parameters over the optimizer steps from ``start_step`` on; a hook
    of the engine (:mod:`xdt.hooks`): it folds in the weights after every optimizer step, swaps the mean in for
    evaluations and checkpoints, and keeps the training weights in the checkpoint's training state."""

    name = "averaging"

    def __init__(self, module: nn.Module, start_step: int):
        self.parameters = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self.start_step = start_step
        self.count = 0
        self.mean: dict[str, torch.Tensor] = {}
        self._training: dict[str, torch.Tensor] | None = None  # set while the average is applied

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the weights after optimizer step ``step`` (1-based) if averaging has begun."""
        if step < self.start_step:
            return
        self.count += 1
        for name, p in self.parameters.items():
            if name in self.mean:
                self.mean[name].add_(p.detach().float() - self.mean[name], alpha=1.0 / self.count)
            else:
                self.mean[name] = p.detach().float().clone()

    @contextmanager
    @torch.no_grad()
    def applied(self) -> Iterator[dict[str, torch.Tensor]]:
        """Inside, the parameters hold the average; yields the training weights they replace (empty before
        averaging begins). Nested blocks share the outer block's swap."""
        if not self.count or self._training is not None:
            yield self._training or {}
            return
        self._training = {name: p.detach().clone() for name, p in self.parameters.items()}
        for name, p in self.parameters.items():
            p.copy_(self.mean[name])
        try:
            yield self._training
        finally:
            for name, p in self.parameters.items():
                p.copy_(self._training[name])
            self._training = None

    def state(self) -> dict:
        """What a checkpoint saved inside :meth:`applied` needs besides the averaged weights it holds."""
        return {"count": self.count, "training_weights": self._training or {}}

    @torch.no_grad()
    def restore(self, state: dict | None) -> None:
        """After a checkpoint's (averaged) weights were loaded into the module: take them as the mean and
        put the training weights back into the parameters."""
        self.count = int(state["count"]) if state else 0
        self.mean = {name: p.detach().float().clone() for name, p in self.parameters.items()} if self.count else {}
        for name, weights in (state or {}).get("training_weights", {}).items():
            self.parameters[name].copy_(weights)

    # The engine's hook points (xdt.hooks).
    def after_optimizer_step(self, step: int) -> None:
        self.update(step)

    def evaluation_weights(self):
        return self.applied()

    def load_state(self, state: dict | None) -> None:
        self.restore(state)
