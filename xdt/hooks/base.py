"""The hook contract: cross-cutting features are small objects the engine calls at named points.

The loop does not name them; it calls every hook of the run at five points:

``loss_terms()``                 inside autocast, after the strategy's loss: named terms added to it (L2-SP)
``after_optimizer_step(step)``   after each optimizer step, before the gradients are cleared (AdaLoRA's rank
                                 allocation reads them; weight averaging folds in the new weights)
``evaluation_weights()``         a block in which the weights are those that evaluations and checkpoints use
                                 (weight averaging swaps in the mean)
``state()`` / ``load_state()``   what a checkpoint keeps for the hook, to resume exactly
``should_stop(loop)``            after each evaluation: end training now (early stopping)

:func:`xdt.hooks.build_hooks` lists the hooks a config asks for, in the order they run. To add one: a module
here with a :class:`Hook` subclass, and a line in ``build_hooks`` that reads its setting.
"""

from __future__ import annotations

import contextlib
from typing import Any, ContextManager, Iterator

import torch


class Hook:
    """A hook that does nothing at every point; subclasses override the points they need."""

    #: Its key in a checkpoint's training state (hooks with a state only).
    name = "hook"

    def loss_terms(self) -> dict[str, torch.Tensor]:
        return {}

    def after_optimizer_step(self, step: int) -> None:
        """``step``: optimizer steps taken so far, this one included (1-based)."""

    def evaluation_weights(self) -> ContextManager:
        return contextlib.nullcontext()

    def state(self) -> dict | None:
        return None

    def load_state(self, state: dict | None) -> None:
        """Called after a checkpoint's weights are loaded, with what :meth:`state` saved (or None)."""

    def should_stop(self, loop: Any) -> bool:
        return False


class Hooks(list):
    """The run's hooks; each point calls them in order."""

    def add_loss_terms(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        for hook in self:
            for name, term in hook.loss_terms().items():
                terms[name] = term
                loss = loss + term
        return loss

    def after_optimizer_step(self, step: int) -> None:
        for hook in self:
            hook.after_optimizer_step(step)

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            for hook in self:
                stack.enter_context(hook.evaluation_weights())
            yield

    def states(self) -> dict[str, dict]:
        return {hook.name: state for hook in self if (state := hook.state()) is not None}

    def load_states(self, saved: dict) -> None:
        for hook in self:
            hook.load_state(saved.get(hook.name))

    def should_stop(self, loop: Any) -> bool:
        return any(hook.should_stop(loop) for hook in self)
