"""AdaLoRA's rank allocation after every optimizer step, as a hook (:mod:`xdt.hooks.base`)."""

from __future__ import annotations

from torch import nn

from xdt.hooks.base import Hook


class AdapterRankAllocation(Hook):
    """AdaLoRA (Zhang et al., ICLR 2023) moves rank between its adapters after every optimizer step, from the
    gradients of that step; ``update_and_allocate`` takes the 0-based index of the step, as in PEFT's examples."""

    def __init__(self, adapters: nn.Module):
        self.adapters = adapters

    def after_optimizer_step(self, step: int) -> None:
        self.adapters.update_and_allocate(step - 1)
