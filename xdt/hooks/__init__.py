"""Cross-cutting features of every run, chosen from the config: the hooks the engine calls (contract:
:mod:`xdt.hooks.base`)."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from xdt.hooks.adalora import AdapterRankAllocation
from xdt.hooks.averaging import WeightAverage
from xdt.hooks.base import Hook, Hooks
from xdt.hooks.early_stopping import EarlyStopping
from xdt.hooks.l2sp import L2SP

__all__ = ["AdapterRankAllocation", "EarlyStopping", "Hook", "Hooks", "L2SP", "WeightAverage", "build_hooks"]


def build_hooks(cfg: DictConfig, strategy: nn.Module, max_steps: int) -> Hooks:
    """The hooks ``cfg`` asks for, around the (unwrapped) ``strategy``: L2-SP (``l2sp.alpha``/``beta``),
    AdaLoRA's rank allocation (``model.peft=adalora``), weight averaging (``average_from``) and early stopping
    (``patience``). Averaging comes after AdaLoRA, so it folds in the weights AdaLoRA has masked."""
    hooks = Hooks()
    l2sp = cfg.get("l2sp") or {}
    if l2sp.get("alpha") or l2sp.get("beta"):
        hooks.append(L2SP(strategy, float(l2sp.get("alpha") or 0.0), float(l2sp.get("beta") or 0.0)))
    adapters = getattr(getattr(strategy.model, "encoder", None), "base_model", None)
    if hasattr(adapters, "update_and_allocate"):
        hooks.append(AdapterRankAllocation(adapters))
    if cfg.get("average_from") is not None:
        hooks.append(WeightAverage(strategy, int(float(cfg.average_from) * max_steps) + 1))
    if cfg.get("patience") is not None:
        hooks.append(EarlyStopping(int(cfg.patience)))
    return hooks
