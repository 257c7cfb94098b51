"""A saved run folder is data, never code: reading one for ``xdt eval`` or ``xdt train resume=``.

People share run folders, so a folder must not be able to run code on the machine that reads it:

* its ``config.yaml`` may only name ``_target_`` classes that xdt knows: the ones in the ``strategy`` and
  ``optimizer`` configs shipped with xdt, or in a config folder the user passes on the current command line
  (``--config-dir``). Any other target, nested ones included, is refused before anything is built;
* interpolations (``${...}``) are refused: xdt writes configs resolved, so one in a saved run was added later,
  and resolving it could call a resolver;
* ``model.trust_remote_code`` is taken from the current command line, never from the folder (a folder could
  ship a ``.py`` file and an ``auto_map`` pointing at it);
* every file read from the folder must lie inside it: a link that leads out of the folder (``checkpoints/best``
  pointing at someone else's file, say) is refused with a message naming the link.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import yaml
from omegaconf import DictConfig, OmegaConf

from xdt.errors import XdtError

SHIPPED_CONFIGS = Path(__file__).parent / "configs"
#: The config groups whose ``_target_`` classes a saved run may name.
BUILDABLE_GROUPS = ("task", "strategy", "optimizer")


def _targets_in(node: Any) -> Iterator[str]:
    """Every ``_target_`` value in a nested YAML value."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "_target_" and isinstance(value, str):
                yield value
            else:
                yield from _targets_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets_in(value)


def user_config_dirs() -> list[Path]:
    """Config folders given on the current command line (``--config-dir``), as Hydra recorded them."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return [Path(source.path) for source in HydraConfig.get().runtime.config_sources
            if source.schema == "file" and source.provider == "command-line"]


def known_targets(config_dirs: list[Path] | None = None) -> set[str]:
    """The ``_target_`` classes named in the buildable groups of xdt's configs and of ``config_dirs``."""
    known: set[str] = set()
    for root in [SHIPPED_CONFIGS, *(user_config_dirs() if config_dirs is None else config_dirs)]:
        for group in BUILDABLE_GROUPS:
            for file in sorted((root / group).rglob("*.yaml")):
                known.update(_targets_in(yaml.safe_load(file.read_text(encoding="utf-8"))))
    return known


def _walk(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf and mapping key below ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}[{index}]")
    else:
        yield path, node


def check_config(config: dict, config_file: Path, known: set[str]) -> None:
    """Refuse a saved config that names an unknown class or holds an interpolation (see the module docstring)."""
    for key, value in _walk(config, ""):
        if key.endswith("_target_") and value not in known:
            raise XdtError(f"{config_file}: {key}={value!r} is not a class xdt knows, so the run is not rebuilt "
                           f"(a run folder never runs code; known classes are those of xdt's task, strategy and optimizer "
                           f"configs, or of a config folder you pass with --config-dir)")
        if isinstance(value, str) and "${" in value:
            raise XdtError(f"{config_file}: {key}={value!r} is an interpolation; xdt writes resolved configs, so "
                           f"the file was edited, and it is not resolved (a run folder never runs code)")


def inside(run_dir: Path, path: Path) -> Path:
    """``path`` resolved, if it lies inside ``run_dir``; a link leading out of the run is refused."""
    root, resolved = Path(run_dir).resolve(), Path(path).resolve()
    if resolved != root and root not in resolved.parents:
        raise XdtError(f"{path} leads outside the run folder {run_dir} (to {resolved}); xdt reads a run only from "
                       f"inside its folder, so replace the link with the file itself")
    return resolved


def check_tree(run_dir: Path, folder: Path) -> Path:
    """``folder`` and every file below it, checked with :func:`inside`; returns ``folder`` resolved."""
    resolved = inside(run_dir, folder)
    for path in Path(folder).rglob("*"):
        inside(run_dir, path)
    return resolved


def load_config(run_dir: Path, option: str, trust_remote_code: bool = False) -> DictConfig:
    """The checked ``config.yaml`` of the run in ``run_dir`` (``option`` is the command-line key that named the
    folder, for messages), with ``model.trust_remote_code`` set from the current command, not from the file."""
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise XdtError(f"{option}={run_dir}: no config.yaml there, so it is not an xdt run folder"
                       + _why_no_config(Path(run_dir)))
    inside(run_dir, config_file)
    try:
        saved = OmegaConf.load(config_file)
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise XdtError(f"{config_file}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(saved, DictConfig):
        raise XdtError(f"{config_file}: not a run config (a mapping of settings)")
    check_config(OmegaConf.to_container(saved, resolve=False), config_file, known_targets())
    upgrade(saved)
    if isinstance(saved.get("model"), DictConfig):
        saved.model.trust_remote_code = bool(trust_remote_code)
    return saved


SEQUENCE_CLASSIFICATION = {"_target_": "xdt.tasks.sequence_classification.SequenceClassification"}
LANGUAGE_MODELING = "xdt.tasks.language_modeling.LanguageModeling"
LM_SETTINGS = ("objective", "mlm_probability", "text_splits")


def upgrade(saved: DictConfig) -> None:
    """A config written by an earlier version of xdt, in today's form (in place), so its runs still evaluate
    and resume: runs from before tasks were plug-ins name no task (a language model's settings were top-level
    keys of ``xdt pretrain``); FGM built its base strategy from its config (``_recursive_: false``) where it
    is now handed a partial; accumulation did not exist."""
    if "task" not in saved:
        if "strategy" in saved:
            saved.task = dict(SEQUENCE_CLASSIFICATION)
        else:
            saved.task = {"_target_": LANGUAGE_MODELING, **{k: saved.pop(k) for k in LM_SETTINGS if k in saved}}
            saved.strategy = {"_target_": "xdt.strategies.erm.ERM"}
    strategy = saved.strategy
    if strategy.get("_recursive_") is False and isinstance(strategy.get("base"), DictConfig):
        del strategy["_recursive_"]
        strategy.base._partial_ = True
    if "accumulate_grad_batches" not in saved:
        saved.accumulate_grad_batches = 1


def _why_no_config(run_dir: Path) -> str:
    """A hint for a folder that is not a run: one stopped during start-up, or one whose config checks failed."""
    if (run_dir / "failed").is_file():
        reason = (run_dir / "failed").read_text(encoding="utf-8").strip().splitlines()[:1]
        return f"; it failed before training began ({reason[0] if reason else 'see its log'}): start a new run"
    if any((run_dir / log).is_file() for log in ("train.log", "pretrain.log")):
        return "; it was stopped during start-up, before it wrote config.yaml, so there is nothing to resume: start it again"
    return ""
