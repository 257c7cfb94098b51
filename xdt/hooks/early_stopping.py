"""Early stopping on source validation, as a hook (:mod:`xdt.hooks.base`)."""

from __future__ import annotations

from typing import Any

from xdt.hooks.base import Hook


class EarlyStopping(Hook):
    """Stop once source validation has not improved for ``patience`` evaluations (it never reads targets)."""

    def __init__(self, patience: int):
        self.patience = patience

    def should_stop(self, loop: Any) -> bool:
        return loop.evals_since_improvement >= self.patience
