"""First-order MAML (Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of
Deep Networks", ICML 2017; the first-order variant of their section 5.2), with the source domains as
tasks.

Each step, for each of ``meta_batch_size`` domains drawn from the batch, that domain's rows are split
in halves: a copy of the weights takes ``inner_steps`` SGD steps (rate ``inner_lr``) on the support
half, and the query half's cross-entropy is differentiated at the adapted weights. The mean of those
query gradients is the meta-gradient the loop's optimizer applies to the shared weights (first order:
the adaptation is not differentiated through). Helpers live in ``_meta.py``.

With ``target_domain.shots=k`` the labeled target examples are the adaptation set: a copy of the
weights takes ``inner_steps`` SGD steps on a target's shots before that target is scored.
"""

from __future__ import annotations

import torch

from xdt.strategies._meta import (MetaStrategy, adapt, domain_tasks, halves, loss_with_gradient, task_loss,
                                  trainable_weights)
from xdt.strategies.base import Batch


class FOMAML(MetaStrategy):
    name = "maml"

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        theta = trainable_weights(self.model)
        gradient = {name: torch.zeros_like(p) for name, p in theta.items()}
        tasks = domain_tasks(source, self.meta_batch_size)
        support_losses, query_losses = [], []
        for task in tasks:
            support, query = halves(task)
            adapted, loss = adapt(self.model, support, self.inner_steps, self.inner_lr)
            support_losses.append(loss)
            query_loss = task_loss(self.model, adapted, query)
            names = list(adapted)
            grads = torch.autograd.grad(query_loss, [adapted[n] for n in names], allow_unused=True)
            for name, g in zip(names, grads):
                if g is not None:
                    gradient[name] += g / len(tasks)
            query_losses.append(query_loss.detach())
        classification = torch.stack(support_losses).mean()
        query = torch.stack(query_losses).mean()
        return loss_with_gradient(self.model, gradient, query), {"classification": classification, "query": query}
