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
  predict label a file of texts with a saved run: xdt predict run_dir=<run folder> input=<csv|tsv|jsonl|txt>
  export  a saved run as a folder plain transformers loads: xdt export run_dir=<run folder> out=<folder>
  features  maps of a run's features, source vs target (t-SNE/PCA, A-distance): xdt features run_dir=<run folder>
  report  tables and plots of every run below a folder: xdt report <folder> [--selection CRITERION]

Overrides are Hydra's: group=option (model=tiny), key=value (max_steps=200), -m for sweeps.
Resume a stopped run with: xdt train resume=<run folder>  (xdt pretrain resume=<run folder>)
"""


def _errors_as_one_message(task):
    """A bad input ends as one line on stderr and exit status 1: xdt's own errors (XdtError), and a config
    value that is missing or of the wrong type. The run's log file keeps the message too (xdt.run_folder)."""
    @functools.wraps(task)
    def wrapped(cfg: DictConfig):
        try:
            return task(cfg)
        except XdtError as error:
            message = str(error)
        except OmegaConfBaseException as error:
            message = f"config error: {error}"
        print(f"xdt {HydraConfig.get().job.config_name}: {message}", file=sys.stderr)
        sys.exit(1)
    return wrapped


@_errors_as_one_message
def _train(cfg: DictConfig) -> float:
    """``xdt train`` and ``xdt pretrain`` (the language-modeling task). Returns the best source validation
    score, the objective of hyperparameter sweeps (for a language model: minus its loss; higher is better)."""
    from xdt.sweep import objective, run_job
    from xdt.train import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return run_job(cfg, run_dir)
    return objective(train(cfg, run_dir))


@_errors_as_one_message
def _eval(cfg: DictConfig) -> None:
    from xdt.eval_run import evaluate_run

    evaluate_run(cfg, Path(HydraConfig.get().runtime.output_dir))


@_errors_as_one_message
def _predict(cfg: DictConfig) -> None:
    from xdt.predict import predict_command

    predict_command(cfg, Path(HydraConfig.get().runtime.output_dir))


@_errors_as_one_message
def _export(cfg: DictConfig) -> None:
    from xdt.export import export_command

    export_command(cfg, Path(HydraConfig.get().runtime.output_dir))


@_errors_as_one_message
def _features(cfg: DictConfig) -> None:
    from xdt.features import features_command

    features_command(cfg, Path(HydraConfig.get().runtime.output_dir))


COMMANDS = {"train": _train, "pretrain": _train, "eval": _eval, "predict": _predict, "export": _export,
            "features": _features}


PATH_KEYS = ("run_dir", "resume", "model.init_from", "hydra.run.dir", "input", "output", "out")  # paths, never swept
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


# Hydra's own flags that take a value (``--config-dir my-configs``); the rest of the arguments are overrides.
VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn", "--experimental-rerun")


def _split_flags(arguments: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra flags with their values, overrides)."""
    flags, overrides, values_left = [], [], 0
    for argument in arguments:
        if values_left:
            flags.append(argument)
            values_left -= 1
        elif argument.startswith("-"):
            flags.append(argument)
            values_left = int(argument in VALUE_FLAGS)
        else:
            overrides.append(argument)
    return flags, overrides


def _config_dirs(flags: list[str]) -> list[Path]:
    """xdt's config folder and those given with ``--config-dir``/``-cd``."""
    dirs = [Path(CONFIG_DIR)]
    for flag, value in zip(flags, flags[1:]):
        if flag in ("--config-dir", "-cd"):
            dirs.append(Path(value).expanduser())
    dirs += [Path(f.split("=", 1)[1]).expanduser() for f in flags if f.startswith(("--config-dir=", "-cd="))]
    return dirs


def _value(overrides: list[str], key: str) -> str | None:
    """The last value given to ``key`` (``key=value``) on the command line, unquoted."""
    values = [o.split("=", 1)[1] for o in overrides if o.lstrip("+~").split("=", 1)[0] == key and "=" in o]
    return values[-1].strip("'\"") if values else None


def _check_resume(overrides: list[str]) -> list[str]:
    """``resume=<run>`` continues in that folder, and Hydra must not write its files over the run's. Checked here,
    before Hydra creates any folder: a wrong path must not leave an empty one behind."""
    folder = _value(overrides, "resume")
    if folder is None:
        return overrides
    others = [o for o in overrides if not o.startswith(("resume=", "hydra.", "model.trust_remote_code="))]
    if others:
        raise XdtError(f"resume={folder} continues the saved configuration; other overrides ({' '.join(others)}) "
                       f"would not be applied, so remove them (model.trust_remote_code=true is the one allowed)")
    from xdt.saved_run import _why_no_config

    path = Path(folder).expanduser()
    if not path.is_dir():
        raise XdtError(f"resume={folder}: no such folder")
    if not (path / "config.yaml").is_file():
        raise XdtError(f"resume={folder}: no config.yaml there, so it is not an xdt run folder{_why_no_config(path)}")
    return [*overrides, f"hydra.run.dir={folder}", "hydra.output_subdir=null"]


# Settings of the language-modeling task that were top-level keys of xdt pretrain before tasks were plug-ins.
TASK_KEYS = ("objective", "mlm_probability", "text_splits")


def _check_overrides(flags: list[str], overrides: list[str]) -> None:
    """Mistakes Hydra would turn into a traceback, or into files written over a finished run."""
    for key in TASK_KEYS:
        if _value(overrides, key) is not None:
            raise XdtError(f"{key} is a setting of the language-modeling task: pass task.{key}={_value(overrides, key)}")
    run_dir = _value(overrides, "hydra.run.dir")
    if run_dir and _value(overrides, "resume") is None and (Path(run_dir).expanduser() / "config.yaml").exists():
        raise XdtError(f"hydra.run.dir={run_dir} already holds a run (config.yaml exists); continue it with "
                       f"resume={run_dir} or pick another folder")
    for role, other in (("source_domain", "target_domain"), ("target_domain", "source_domain")):
        choice = _value(overrides, role)
        if choice in ("null", "None", "~"):
            raise XdtError(f"{role}={choice} is not a choice: for no {role.split('_')[0]} domains pass {role}=[]")
        for name in (choice or "").strip("[]").split(","):
            name = name.strip()
            if not name or "=" in name:
                continue
            dirs = _config_dirs(flags)
            if any((d / role / f"{name}.yaml").is_file() for d in dirs):
                continue
            elsewhere = next((d for d in dirs if (d / other / f"{name}.yaml").is_file()), None)
            if elsewhere is not None:
                raise XdtError(f"{role}={name}: {elsewhere / other / name}.yaml is a {other}, and Hydra looks for "
                               f"{role} configs in {elsewhere / role}/. One folder can serve both roles, as in xdt's "
                               f"own configs: ln -s {other} {elsewhere / role}")


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
    flags, overrides = _split_flags(overrides)
    try:
        if command in ("train", "pretrain"):
            overrides = _check_resume(overrides)
        _check_overrides(flags, overrides)
    except XdtError as error:
        sys.exit(f"xdt {command}: {error}")
    sys.argv = [f"xdt {command}", *flags, *_quote_paths(overrides)]
    hydra.main(config_path=CONFIG_DIR, config_name=command, version_base="1.3")(COMMANDS[command])()


if __name__ == "__main__":
    main()
