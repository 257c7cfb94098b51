"""Reptile (Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018), with the
source domains as tasks.

Each step, for each of ``meta_batch_size`` domains drawn from the batch, a copy of the weights takes
``inner_steps`` SGD steps (rate ``inner_lr``) on that domain's rows, giving phi. The shared weights
theta move towards the adapted ones: the loop's optimizer receives the meta-gradient
(theta - mean phi) / (inner_lr * inner_steps), the direction Nichol et al. feed to Adam. Dividing by the
inner path length puts it on the scale of an ordinary gradient (with one inner step it is exactly the
support gradient), so ``optimizer.lr`` means what it means for ERM. Helpers live in ``_meta.py``.

With ``target_domain.shots=k`` the labeled target examples are the adaptation set: a copy of the
weights takes ``inner_steps`` SGD steps on a target's shots before that target is scored.
"""

from __future__ import annotations

import torch

from xdt.strategies._meta import MetaStrategy, adapt, domain_tasks, loss_with_gradient, trainable_weights
from xdt.strategies.base import Batch


class Reptile(MetaStrategy):
    name = "reptile"

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        theta = trainable_weights(self.model)
        gradient = {name: torch.zeros_like(p) for name, p in theta.items()}
        tasks = domain_tasks(source, self.meta_batch_size)
        support_losses = []
        for task in tasks:
            adapted, loss = adapt(self.model, task, self.inner_steps, self.inner_lr)
            support_losses.append(loss)
            scale = 1.0 / (self.inner_lr * self.inner_steps * len(tasks))
            for name, p in theta.items():
                gradient[name] += (p.detach() - adapted[name].detach()) * scale
        classification = torch.stack(support_losses).mean()
        return loss_with_gradient(self.model, gradient, classification), {"classification": classification}
