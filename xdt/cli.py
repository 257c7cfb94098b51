"""``xdt <command> [hydra overrides]``: picks the command, hands the rest to Hydra."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import xdt.config  # noqa: F401  (registers the ${xdt.*} resolvers the configs use)
from xdt.errors import XdtError

CONFIG_DIR = str(Path(__file__).parent / "configs")

USAGE = """usage: xdt <command> [overrides ...]

commands:
  train   fine-tune on source domain(s), evaluate on target domain(s)   (xdt train --help)
  pretrain  language-model (masked or causal) training on domain text, perplexity per domain (xdt pretrain --help)
  eval    re-evaluate a saved run on any domain: xdt eval run_dir=<run folder> [target_domain=<name>]
  report  tables and plots of every run below a folder: xdt report <folder> [--selection CRITERION]

Overrides are Hydra's: group=option (model=tiny), key=value (max_steps=200), -m for sweeps.
Resume a stopped run with: xdt train resume=<run folder>  (xdt pretrain resume=<run folder>)
"""


def _config_errors_as_messages(task):
    """A config value that is missing or of the wrong type ends as one message, like any bad input."""
    @functools.wraps(task)
    def wrapped(cfg: DictConfig):
        try:
            return task(cfg)
        except OmegaConfBaseException as error:
            raise XdtError(f"config error: {error}") from None
    return wrapped


@_config_errors_as_messages
def _train(cfg: DictConfig) -> float:
    """Returns the best source validation score: the objective of hyperparameter sweeps."""
    from xdt.sweep import objective, run_job
    from xdt.train import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return run_job(cfg, run_dir)
    return objective(train(cfg, run_dir))


@_config_errors_as_messages
def _pretrain(cfg: DictConfig) -> float:
    """Returns minus the best source validation loss: the objective of sweeps (higher is better)."""
    from xdt.pretrain import pretrain

    result = pretrain(cfg, Path(HydraConfig.get().runtime.output_dir))
    return -result["selection"]["value"]


@_config_errors_as_messages
def _eval(cfg: DictConfig) -> None:
    from xdt.evaluate import evaluate_run

    evaluate_run(cfg, Path(HydraConfig.get().runtime.output_dir))


COMMANDS = {"train": _train, "pretrain": _pretrain, "eval": _eval}


PATH_KEYS = ("run_dir", "resume", "model.init_from", "hydra.run.dir")  # one folder each, never swept
HYDRA_SPECIAL = set("=,[]{}()'\" ")


def _quote_paths(overrides: list[str]) -> list[str]:
    """Quote folder values that Hydra's override grammar would split: sweep job folders are named like
    ``3_seed=1,strategy=dann``, and ``xdt eval run_dir=<that folder>`` must just work."""
    quoted = []
    for override in overrides:
        key, sep, value = override.partition("=")
        if sep and key.lstrip("+~") in PATH_KEYS and value[:1] not in ("'", '"') and HYDRA_SPECIAL & set(value):
            value = "'" + value.replace("'", "\\'") + "'"
        quoted.append(f"{key}{sep}{value}")
    return quoted


def _resume_overrides(command: str, overrides: list[str]) -> list[str]:
    """``resume=<run>`` continues in that folder, and Hydra must not write its files over the run's."""
    resume = [o.split("=", 1)[1] for o in overrides if o.startswith("resume=")]
    if not resume:
        return overrides
    others = [o for o in overrides if not o.startswith(("resume=", "hydra.", "-"))]
    if others:
        sys.exit(f"xdt {command} resume={resume[-1]} continues the saved configuration; other overrides "
                 f"({' '.join(others)}) would not be applied, so remove them")
    return [*overrides, f"hydra.run.dir={resume[-1]}", "hydra.output_subdir=null"]


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return
    command, overrides = argv[0], argv[1:]
    if command == "report":  # reads finished folders: plain arguments, no Hydra composition
        from xdt.report import main as report

        try:
            return report(overrides)
        except XdtError as error:
            sys.exit(f"xdt report: {error}")
    if command not in COMMANDS:
        sys.exit(f"xdt: unknown command {command!r}; commands: {', '.join([*COMMANDS, 'report'])} (see xdt --help)")
    if command in ("train", "pretrain"):
        overrides = _resume_overrides(command, overrides)
    overrides = _quote_paths(overrides)
    sys.argv = [f"xdt {command}", *overrides]
    hydra.main(config_path=CONFIG_DIR, config_name=command, version_base="1.3")(COMMANDS[command])()


if __name__ == "__main__":
    main()
