"""Adversarial training on the input embeddings with the fast gradient method (Miyato, Dai and
Goodfellow, "Adversarial Training Methods for Semi-Supervised Text Classification", ICLR 2017).

FGM wraps another strategy (``base``, plain fine-tuning by default). Each step it runs the base
strategy, takes the gradient g of the base's source cross-entropy with respect to the source word
embeddings e, and trains on the source batch once more with the embeddings moved by
r = epsilon * ||e|| * g / ||g|| (L2 norms per example, over its real tokens): the small change that
hurts the classifier most. Miyato et al. normalise the embeddings before perturbing them; scaling
by ||e|| does the same job without touching the model, so one ``epsilon`` means the same relative
push for a random-init model (embedding norms near 0.2) and a pretrained one (near 1 per token).
Loss = base loss + ``weight`` * cross-entropy on the perturbed batch.

How it combines: ``strategy=fgm strategy@strategy.base=dann`` trains DANN (its classification and
domain losses, target batches and all) and adds the adversarial term on the source batch; the
perturbation follows the classification loss only, so the domain adversary does not steer it.
Cost per step: two forward and two backward passes on the source batch (plus the base's other terms):
the clean classification loss is differentiated once, for the embeddings and the weights together, and
its weight gradient reaches the loop through a surrogate loss (as in the meta-learning strategies).
"""

from __future__ import annotations

from typing import Callable

import torch

from xdt.strategies._meta import loss_with_gradient, trainable_weights
from xdt.strategies.base import Batch, Strategy, StrategyContext


class FGM(Strategy):
    tasks = ("sequence_classification", "token_classification")

    def __init__(self, model, base: Callable[..., Strategy], context: StrategyContext = StrategyContext(),
                 epsilon: float = 0.05, weight: float = 1.0):
        """``base``: the wrapped strategy's constructor (its config is a partial, built around the same model)."""
        super().__init__(model, context)
        self.base = base(model=model, context=context)
        self.epsilon, self.weight = epsilon, weight
        self.name = "fgm" if self.base.name == "erm" else f"fgm+{self.base.name}"
        self.uses_target_data = self.base.uses_target_data

    def lr_scales(self) -> dict[torch.nn.Module, float]:
        return self.base.lr_scales()

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        captured: list[torch.Tensor] = []
        rows, length = source["input_ids"].shape
        # The source batch's embeddings: alone, or the top rows of the source and target batches stacked
        # (strategies that encode both in one pass, Strategy.features_of_both).
        shapes = {(rows, length)}
        if target is not None:
            shapes.add((rows + target["input_ids"].shape[0], max(length, target["input_ids"].shape[1])))

        def capture(module, args, output: torch.Tensor) -> torch.Tensor | None:
            if tuple(output.shape[:2]) not in shapes or captured:
                return None
            if not output.requires_grad:  # frozen embeddings (PEFT): still differentiate with respect to them
                output = output.detach().requires_grad_()
            captured.append(output)
            return output

        hook = self.model.encoder.get_input_embeddings().register_forward_hook(capture)
        try:
            loss, terms = self.base(source, target, progress)
        finally:
            hook.remove()
        classification = terms["classification"]
        others = None if loss is classification else loss - classification  # the base's other terms (DANN's)
        # One backward pass of the clean classification loss gives both the embedding gradient the
        # perturbation needs and that loss's weight gradients; the loop receives the latter through a
        # surrogate instead of backpropagating the clean graph a second time (0.4x ERM's step, measured).
        weights = trainable_weights(self)
        gradient, *weight_grads = torch.autograd.grad(classification, [captured[0], *weights.values()],
                                                      retain_graph=others is not None, allow_unused=True)
        embeddings, gradient = captured[0].detach()[:rows, :length], gradient[:rows, :length]
        offset = self.perturbation(embeddings, gradient, source["attention_mask"])
        adversarial = self.model.loss(source, embedding_offset=offset)  # the task's loss on the perturbed batch
        clean_gradient = {name: torch.zeros_like(p) if g is None else g
                          for (name, p), g in zip(weights.items(), weight_grads)}
        clean = loss_with_gradient(self, clean_gradient, classification)  # value: the loss; gradient: its gradient
        total = clean + self.weight * adversarial + (others if others is not None else 0.0)
        return total, {**terms, "adversarial": adversarial}

    def perturbation(self, embeddings: torch.Tensor, gradient: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
        """r = epsilon * ||e|| * g / ||g|| per example, zero on padding."""
        mask = attention_mask.unsqueeze(-1).to(gradient.dtype)
        gradient = gradient * mask

        def norm(tensor: torch.Tensor) -> torch.Tensor:
            return tensor.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1)
        return (self.epsilon * norm(embeddings * mask) * gradient / norm(gradient)).detach()
