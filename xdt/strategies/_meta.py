"""The inner loop shared by the meta-learning strategies (Reptile, first-order MAML).

Domains are the tasks. Each step the loop hands over one source batch that mixes the source domains;
a meta-step picks ``meta_batch_size`` of the domains present in it, and for each one adapts a copy of
the trainable weights with ``inner_steps`` plain SGD steps on that domain's rows (the support set).
The strategy then turns the adapted weights into a meta-gradient for the shared weights, and hands it
to the loop as an ordinary loss whose gradient is that meta-gradient (:func:`loss_with_gradient`): the
loop's optimizer, clipping, mixed precision and data parallelism apply unchanged, so the plug-in
contract needed no extension. A task is thus as large as its domain's share of the batch: raise
``batch_size`` for larger support sets.

Few-shot targets (``target_domain.shots=k``) are the adaptation set of meta-testing: they stay out of
training, and before a target is scored a copy of the meta-learned weights takes the same ``inner_steps``
SGD steps on that target's shots (:meth:`MetaStrategy.adapted`). This is the one place the contract grew,
for every strategy: :attr:`Strategy.adapts_to_shots` and :meth:`Strategy.adapted`, which other
strategies leave at "mix the shots into training" and "score with yourself".
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from xdt.strategies.base import Batch, Strategy, StrategyContext

Weights = dict[str, torch.Tensor]


def trainable_weights(model: nn.Module) -> Weights:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def rows(batch: Batch, index: torch.Tensor) -> Batch:
    """The sub-batch of ``batch`` at row positions ``index``."""
    return {key: value[index] for key, value in batch.items()}


def domain_tasks(source: Batch, count: int) -> list[Batch]:
    """Up to ``count`` domains of the batch, chosen at random, each as the sub-batch of its rows.

    Domains with fewer than two rows are left out (a task needs a support and a query example); if
    none has two, the whole batch is one task.
    """
    domains = source["domain"]
    present = [d for d in torch.unique(domains).tolist() if int((domains == d).sum()) >= 2]
    if not present:
        return [source]
    order = torch.randperm(len(present)).tolist()[:count]
    return [rows(source, (domains == present[i]).nonzero().squeeze(1)) for i in order]


def halves(task: Batch) -> tuple[Batch, Batch]:
    """(support, query): the first and second half of a task's rows (a one-row task is both)."""
    size = len(task["labels"])
    if size < 2:
        return task, task
    split = max(1, size // 2)
    return rows(task, torch.arange(split)), rows(task, torch.arange(split, size))


def task_loss(model: nn.Module, weights: Weights, batch: Batch) -> torch.Tensor:
    """Cross-entropy of the model run with ``weights`` in place of its trainable parameters."""
    logits = functional_call(model, weights, (batch["input_ids"], batch["attention_mask"]), strict=False)
    return F.cross_entropy(logits, batch["labels"])


def adapt(model: nn.Module, support: Batch, steps: int, lr: float) -> tuple[Weights, torch.Tensor]:
    """Weights after ``steps`` SGD steps from the model's own on ``support``, and the support loss
    before the first step. The copy is detached: first-order methods never differentiate through it."""
    weights = {name: p.detach().clone().requires_grad_() for name, p in trainable_weights(model).items()}
    first_loss = None
    for _ in range(steps):
        loss = task_loss(model, weights, support)
        first_loss = loss.detach() if first_loss is None else first_loss
        grads = torch.autograd.grad(loss, list(weights.values()), allow_unused=True)
        weights = {name: (w - lr * g).detach().requires_grad_() if g is not None else w
                   for (name, w), g in zip(weights.items(), grads)}
    return weights, first_loss


def loss_with_gradient(model: nn.Module, gradient: Weights, shown: torch.Tensor) -> torch.Tensor:
    """A scalar equal to ``shown`` whose gradient with respect to each trainable parameter is
    ``gradient[name]``: sum(p * g) has gradient g, and subtracting its own value leaves only ``shown``."""
    surrogate = sum((p * gradient[name].detach()).sum() for name, p in trainable_weights(model).items())
    return surrogate - surrogate.detach() + shown.detach()


class MetaStrategy(Strategy):
    """What Reptile and first-order MAML share: the inner-loop settings and meta-test adaptation."""

    adapts_to_shots = True

    def __init__(self, model, context: StrategyContext = StrategyContext(), inner_steps: int = 3,
                 inner_lr: float = 5e-3, meta_batch_size: int = 2):
        super().__init__(model, context)
        self.inner_steps, self.inner_lr, self.meta_batch_size = int(inner_steps), float(inner_lr), int(meta_batch_size)

    def adapted(self, shots: Batch) -> "MetaStrategy":
        """A copy whose trainable weights took ``inner_steps`` SGD steps on a target's shots (all at once,
        in the mode the strategy is in: evaluation runs in eval mode, so without dropout)."""
        with torch.enable_grad():  # evaluation runs under no_grad; the inner steps need gradients
            weights, _ = adapt(self.model, shots, self.inner_steps, self.inner_lr)
        clone = copy.deepcopy(self)
        with torch.no_grad():
            for name, p in trainable_weights(clone.model).items():
                p.copy_(weights[name])
        return clone
