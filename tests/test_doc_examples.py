"""Every shell example of README.md and docs/**/*.md keeps working (issue 21), so the docs cannot rot.

The examples are read from the fenced ``bash``/``sh``/``shell``/``console`` blocks of the docs as they are on
disk (continued lines joined, comments dropped, ``a && b`` split), one test per command named by its doc file
and line, and checked as follows:

* ``xdt <command>`` for every Hydra command of ``xdt.cli.COMMANDS`` (train, pretrain, eval, ...; also through
  ``python -m xdt.cli``, ``accelerate launch``, ``torchrun``): the CLI's own checks of the command line, Hydra's
  composition exactly as ``xdt`` does it (its config folder, ``--config-dir`` folders, every job of a ``-m``
  sweep as Hydra's basic sweeper expands it, sweeps set in a preset included), then, for training, what runs
  before any data is loaded: ``xdt.train.train`` up to the engine's loop (the settings checks, a pretraining or
  source stage's config, ``config.yaml`` written); the other commands' configs are resolved. An unknown group
  option, key or value fails here.
* The same commands *run in smoke form* when they need no network and their data is present: training with
  ``debug=smoke`` and its budget appended (tiny model, a few steps) in a temporary folder; ``xdt eval``,
  ``predict``, ``export``, ``features``, ``resume=`` and ``xdt report`` against a smoke run made here (their folder
  replaced), through the command's own function in this process. The first example of each kind runs by default (see
  ``DEFAULT_RUN_FAMILIES``); the others are marked ``slow``.
* Commands that need the network (hub datasets or models, back-translation), a GPU, a launcher (``torchrun``,
  ``accelerate``, SLURM) or the user's own files are composed and checked only.
* ``python scripts/<x>.py``: the script exists, ``--help`` exits 0 and the example's own arguments parse
  (nothing is run).
* Other commands (pip, venv, git, tensorboard, ...) are listed as not checked.

The counts (found, composed, run, not checked) are printed at the end of the module and by ``test_summary``
(shown with ``-rA``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import itertools
import os
import re
import runpy
import shlex
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

from conftest import DATA_DIR, ROOT
from xdt import cli

# ---------------------------------------------------------------------------------------------------------------
# Reading the examples out of the docs
# ---------------------------------------------------------------------------------------------------------------

SHELL_LANGUAGES = {"bash", "sh", "shell", "console", "zsh", "shell-session"}
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
PLACEHOLDER = "XDT_DOC_PLACEHOLDER"  # stands for <...> in an example (``data_dir=<folder holding fdu-mtl/>``)
ELLIPSIS_VALUES = ("...", "…")
TRAINING_COMMANDS = ("train", "pretrain")
LAUNCHERS = ("accelerate", "torchrun")


def doc_files(root: Path = ROOT) -> list[Path]:
    return [p for p in [root / "README.md", *sorted((root / "docs").rglob("*.md"))] if p.is_file()]


def fenced_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, line number of the block's first line, lines) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, language = match.group(1), match.group(2).lower()
        body, start = [], i + 2
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        yield language, start, body


def _strip_comment(line: str) -> str:
    """``line`` without its shell comment: a ``#`` that begins a word outside quotes."""
    quote, escaped = None, False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


def logical_lines(language: str, start: int, body: list[str]) -> Iterator[tuple[int, str]]:
    """(line number, command line) of a shell block: continued lines joined, comments dropped; in a console
    block only the lines after a ``$`` prompt."""
    pending, first = "", None
    for offset, raw in enumerate(body):
        line = raw.rstrip()
        if language in ("console", "shell-session") and not pending:
            if not line.lstrip().startswith("$ "):
                continue
            line = line.lstrip()[2:]
        line = _strip_comment(line).rstrip()
        if first is None:
            first = start + offset
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        if pending.strip():
            yield first, pending.strip()
        pending, first = "", None
    if pending.strip():
        yield first, pending.strip()


def split_commands(line: str) -> list[list[str]]:
    """The commands of one shell line as argument lists: ``a && b; c | d`` is four commands."""
    text = re.sub(r"<[^<>\n]+>", PLACEHOLDER, line)  # <folder>, <run>: not shell redirections in the docs
    lexer = shlex.shlex(text, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split = True
    lexer.commenters = ""
    commands, current = [], []
    for token in lexer:
        if token and set(token) <= set("&|;"):
            commands.append(current)
            current = []
        else:
            current.append(token)
    commands.append(current)
    return [c for c in commands if c]


@dataclasses.dataclass(frozen=True)
class Example:
    doc: str                 # path relative to the repository root
    line: int
    text: str                # the whole shell line, as written (joined)
    argv: tuple[str, ...]    # this command's words (environment assignments removed)
    part: int = 0            # index of the command within its line (a && b)

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}" + (f"-{self.part + 1}" if self.part else "")

    # What the command is ------------------------------------------------------------------------------------

    @property
    def launcher(self) -> str | None:
        program = Path(self.argv[0]).name
        return program if program in LAUNCHERS else None

    @property
    def xdt_args(self) -> list[str] | None:
        """The arguments after ``xdt`` (``xdt train a=1`` -> ``[train, a=1]``), None for another program."""
        program = Path(self.argv[0]).name
        if program == "xdt":
            return list(self.argv[1:])
        if _is_python(program) or program in LAUNCHERS:
            words = list(self.argv)
            for index in range(len(words) - 1):
                if words[index] == "-m" and words[index + 1] in ("xdt.cli", "xdt"):
                    return words[index + 2:]
        return None

    @property
    def script(self) -> str | None:
        """``scripts/x.py`` of ``python scripts/x.py ...``."""
        if _is_python(Path(self.argv[0]).name) and len(self.argv) > 1 and self.argv[1].endswith(".py"):
            return self.argv[1]
        return None

    @property
    def kind(self) -> str:
        """hydra (a Hydra command: train, pretrain, eval, ...), report, help, script, or other (not checked)."""
        args = self.xdt_args
        if args is not None:
            if not args or args[0] in ("-h", "--help", "help") or "--help" in args or "-h" in args:
                return "help"
            if args[0] == "report":
                return "report"
            return "hydra"  # an unknown command fails in the check, as it would for the user
        if self.script is not None:
            return "script"
        return "other"

    @property
    def command(self) -> str | None:
        args = self.xdt_args
        return args[0] if args else None

    @property
    def multirun(self) -> bool:
        args = self.xdt_args or []
        return "-m" in args or "--multirun" in args

    @property
    def resumes(self) -> bool:
        return self.kind == "hydra" and cli._value(self.xdt_args[1:], "resume") is not None


def _is_python(program: str) -> bool:
    return re.fullmatch(r"python(3(\.\d+)?)?", program) is not None


ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def extract_examples(path: Path, root: Path = ROOT) -> list[Example]:
    examples = []
    relative = path.relative_to(root).as_posix()
    for language, start, body in fenced_blocks(path.read_text(encoding="utf-8")):
        if language not in SHELL_LANGUAGES:
            continue
        for line, text in logical_lines(language, start, body):
            try:
                commands = split_commands(text)
            except ValueError:  # unbalanced quotes: the command is broken as written
                commands = [[text]]
            for part, argv in enumerate(commands):
                while len(argv) > 1 and ENV_ASSIGNMENT.match(argv[0]):
                    argv = argv[1:]
                examples.append(Example(relative, line, text, tuple(argv), part))
    return examples


def all_examples() -> list[Example]:
    return [example for path in doc_files() for example in extract_examples(path)]


# Config folders the docs show (``--config-dir my-configs``): files listed as a YAML block headed by a comment
# naming the file, or side by side in a plain block (``my-configs/source_domain/books.yaml   my-configs/...``).
CONFIG_FILE = re.compile(r"(?P<path>(?P<root>[\w.~/-]+?)/(?P<group>[\w-]+)/(?P<name>[\w.-]+)\.yaml)")


def _is_group(group: str) -> bool:
    return (ROOT / "configs" / group).is_dir()


def shown_config_files(root: Path = ROOT) -> dict[str, dict[str, str]]:
    """{folder as written: {group/name.yaml: text}} of the config files shown in the docs."""
    folders: dict[str, dict[str, str]] = {}
    for path in doc_files(root):
        for language, _, body in fenced_blocks(path.read_text(encoding="utf-8")):
            if language in SHELL_LANGUAGES or not body:
                continue
            current: list[tuple[int, int, re.Match]] = []  # (start column, end column, match)
            contents: list[list[str]] = []
            for line in body:
                header = line.lstrip("# ").rstrip()
                found = [m for m in CONFIG_FILE.finditer(line) if _is_group(m.group("group"))]
                if found and (language in ("yaml", "yml") and line.lstrip().startswith("#") or
                              language not in ("yaml", "yml") and header.split()[0] == found[0].group("path")):
                    _store(folders, current, contents)
                    columns = [m.start() for m in found] if language not in ("yaml", "yml") else [0]
                    found = found if language not in ("yaml", "yml") else found[:1]
                    current = [(col, columns[i + 1] if i + 1 < len(columns) else None, m)
                               for i, (col, m) in enumerate(zip(columns, found))]
                    contents = [[] for _ in current]
                    continue
                for index, (col, end, _) in enumerate(current):
                    if language in ("yaml", "yml"):
                        contents[index].append(line)
                    else:
                        contents[index].append(line[col:end] if end is not None else line[col:])
            _store(folders, current, contents)
    return folders


def _store(folders, current, contents) -> None:
    for (_, _, match), lines in zip(current, contents):
        text = textwrap.dedent("\n".join(l.rstrip() for l in lines)).strip("\n") + "\n"
        folders.setdefault(match.group("root"), {})[f"{match.group('group')}/{match.group('name')}.yaml"] = text


# ---------------------------------------------------------------------------------------------------------------
# Composing a command exactly as ``xdt`` does, and the checks that run before training
# ---------------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def cli_hydra(config_dirs: list[Path]):
    """Hydra set up as ``hydra.main`` in ``xdt.cli`` sets it up: xdt's config folder first, each ``--config-dir``
    folder after it (before the schema source), as Hydra's own argument handling adds it."""
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_automatic_config_search_path
    from hydra.core.config_search_path import SearchPathQuery

    backup = copy.deepcopy(GlobalHydra.instance().hydra) if GlobalHydra.instance().is_initialized() else None
    search_path = create_automatic_config_search_path(None, None, cli.CONFIG_DIR)
    for folder in config_dirs:
        search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(folder)}",
                            anchor=SearchPathQuery(provider="schema"))
    GlobalHydra.instance().clear()
    try:
        yield Hydra.create_main_hydra2(task_name="cli", config_search_path=search_path)
    finally:
        GlobalHydra.instance().clear()
        if backup is not None:
            GlobalHydra.instance().initialize(backup)


@contextlib.contextmanager
def hydra_config(job: DictConfig):
    """``HydraConfig`` of ``job`` while the checks run (as in the job Hydra launches), restored afterwards."""
    instance = HydraConfig.instance()
    saved = instance.cfg
    instance.set_config(job)
    try:
        yield
    finally:
        instance.cfg = saved


def task_config(job: DictConfig) -> DictConfig:
    """The config a task function receives: the job without its ``hydra`` node."""
    cfg = copy.deepcopy(job)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


MAX_JOBS = 64  # a sweep larger than this is composed in its first MAX_JOBS jobs


@dataclasses.dataclass
class Composition:
    command: str
    flags: list[str]
    overrides: list[str]
    jobs: list[DictConfig]          # with the hydra node
    swept: int                      # jobs in the sweep (1 for a single run)
    search_params: list[str]        # keys a non-basic sweeper (optuna) searches over


def compose(args: list[str]) -> Composition:
    """Compose ``xdt <args>`` as the CLI would: its checks of the command line, then Hydra's composition of the
    run or of every job of the sweep. Raises what the user would see as an error."""
    command, rest = args[0], args[1:]
    if command not in cli.COMMANDS:
        raise ValueError(f"xdt: unknown command {command!r}; commands: {', '.join([*cli.COMMANDS, 'report'])}")
    flags, overrides = cli._split_flags(rest)
    if command in ("train", "pretrain"):
        overrides = cli._check_resume(overrides)
    cli._check_overrides(flags, overrides)
    overrides = cli._quote_paths(overrides)
    multirun = any(f in ("-m", "--multirun") for f in flags)
    unknown_flags = [f for f in flags if f.startswith("-") and f not in
                     ("-m", "--multirun", *cli.VALUE_FLAGS) and not f.startswith(("--config-dir=", "-cd="))]
    if unknown_flags:
        raise ValueError(f"Hydra flag {unknown_flags[0]} is not one xdt examples should need")
    for flag, value in itertools.pairwise(flags):
        if flag in ("--config-name", "-cn", "--config-path", "-cp"):
            raise ValueError(f"{flag} {value}: xdt picks the primary config from the command")
    with cli_hydra(cli._config_dirs(flags)[1:]) as hydra:
        mode = RunMode.MULTIRUN if multirun else RunMode.RUN
        master = hydra.compose_config(command, overrides, run_mode=mode, from_shell=True,
                                      with_log_configuration=False)
        if not multirun:
            return Composition(command, flags, overrides, [master], 1, [])
        parser = OverridesParser.create(config_loader=hydra.config_loader)
        task_overrides = list(master.hydra.overrides.task)
        sweeper = master.hydra.sweeper
        search_params: list[str] = []
        if str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
            from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

            params = [f"{key}={value}" for key, value in (sweeper.get("params") or {}).items()]
            batches = BasicSweeper.split_arguments(parser.parse_overrides([*params, *task_overrides]), None)[0]
        else:  # a search (optuna): the jobs it draws are not known here; compose the first value of each list
            job = []
            for override in parser.parse_overrides(task_overrides):
                key = override.get_key_element()
                if override.is_sweep_override():
                    if override.is_discrete_sweep():
                        job.append(f"{key}={next(iter(override.sweep_string_iterator()))}")
                else:
                    job.append(f"{key}={override.get_value_element_as_str()}")
            batches = [job]
            search_params = [str(k) for k in (sweeper.get("params") or {})]
        jobs = [hydra.config_loader.load_sweep_config(master, list(batch)) for batch in batches[:MAX_JOBS]]
        return Composition(command, flags, overrides, jobs, len(batches), search_params)


@contextlib.contextmanager
def engine_stops_before_data():
    """``xdt.engine.run`` replaced: everything up to it (the checks, the stages' configs, ``config.yaml``) runs."""
    from xdt import engine

    seen = []

    def stop(cfg, run_dir, *args, **kwargs):
        seen.append((cfg, Path(run_dir)))
        return {"source_validation_best": 0.5}

    with mock.patch.object(engine, "run", stop):
        yield seen


def check_before_training(composition: Composition, workdir: Path) -> int:
    """Run, for every job, what the command runs before it loads any data or model. Returns the jobs checked."""
    from xdt.run_folder import resolved_config

    for index, job in enumerate(composition.jobs):
        cfg = task_config(job)
        with hydra_config(job):
            if composition.command not in TRAINING_COMMANDS:  # eval, predict, export: they read a saved run
                cfg = resolved_config(cfg)
                if composition.command == "eval":
                    from xdt import quantize

                    quantize.requested_method(cfg)
            else:
                from xdt.sweep import objective
                from xdt.train import train

                with engine_stops_before_data() as seen:
                    objective(train(cfg, workdir / f"job-{index}"))
                assert seen, "the engine was never reached"
        for key in composition.search_params:
            if OmegaConf.select(job, key.lstrip("+"), default=KeyError) is KeyError and not key.startswith("+"):
                raise AssertionError(f"the search's parameter {key} is not a key of the composed config")
    return len(composition.jobs)


# ---------------------------------------------------------------------------------------------------------------
# From an example as written to a command that can run here
# ---------------------------------------------------------------------------------------------------------------

FOLDER_KEYS = ("run_dir", "resume", "model.init_from")


def _is_placeholder(value: str) -> bool:
    return PLACEHOLDER in value or value.strip("'\"") in ELLIPSIS_VALUES


def concrete_args(args: list[str], workdir: Path, run_folder: Path | None, config_folders: dict,
                  for_run: bool = False) -> list[str]:
    """``args`` with the docs' stand-ins replaced: ``data_dir=<folder>`` or ``...`` by the data folder here,
    a saved run's folder (``resume=``, ``run_dir=``, ``model.init_from=``) by ``run_folder``, a ``--config-dir``
    folder by the files the docs show for it (written under ``workdir``), other placeholders dropped (the
    default applies), relative data paths taken from the repository root (where the docs' commands run). To run,
    ``data_dir`` is the data folder here unless the example sets it (as ``XDT_DATA_DIR`` would)."""
    out, config_dir_next = [], False
    for arg in args:
        if config_dir_next:
            out.append(str(write_config_folder(arg, workdir, config_folders)))
            config_dir_next = False
            continue
        if arg in ("--config-dir", "-cd"):
            config_dir_next = True
            out.append(arg)
            continue
        if arg.startswith(("--config-dir=", "-cd=")):
            flag, value = arg.split("=", 1)
            out.append(f"{flag}={write_config_folder(value, workdir, config_folders)}")
            continue
        key, sep, value = arg.partition("=")
        bare = key.lstrip("+~")
        if sep and bare in FOLDER_KEYS and run_folder is not None:
            out.append(f"{key}={run_folder}")
        elif sep and bare == "data_dir":
            path = Path(value.strip("'\"")).expanduser()
            if _is_placeholder(value) or not (path if path.is_absolute() else ROOT / path).is_dir():
                path = DATA_DIR
            out.append(f"{key}={path if path.is_absolute() else (ROOT / path).resolve()}")
        elif _is_placeholder(arg):
            continue
        else:
            out.append(arg)
    if for_run and args and args[0] in ("train", "pretrain", "eval") and cli._value(out, "data_dir") is None \
            and cli._value(out, "resume") is None:
        out.append(f"data_dir={DATA_DIR}")
    return out


def write_config_folder(folder: str, workdir: Path, config_folders: dict) -> Path:
    """The docs' files for ``--config-dir <folder>`` written under ``workdir`` (an empty folder if none shown)."""
    target = workdir / "config-dirs" / re.sub(r"[^\w.-]", "_", folder.strip("/"))
    for name, text in config_folders.get(folder.rstrip("/"), {}).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_text(text, encoding="utf-8")
    target.mkdir(parents=True, exist_ok=True)
    return target


def domains(cfg: DictConfig) -> list[tuple[str, str, dict]]:
    """(role, name, settings) of every source and target domain of a composed task config."""
    from xdt.data.shots import domain_entries

    found = []
    for role in ("source_domain", "target_domain"):
        node = cfg.get(role)
        if node:
            for name, settings in domain_entries(node, role):
                found.append((role, name, OmegaConf.to_container(settings, resolve=True)))
    return found


PATH_FIELDS = ("path", "train", "validation", "test", "unlabeled")


def missing_data(settings: dict) -> list[str]:
    """Files a domain reads that are not here (none for synthetic domains)."""
    if settings.get("kind") == "synthetic":
        return []
    base = Path(str(settings.get("data_dir") or ".")).expanduser()
    missing = []
    for field in PATH_FIELDS:
        value = settings.get(field)
        if isinstance(value, str):
            path = Path(value).expanduser()
            path = path if path.is_absolute() else base / path
            if not (path if path.is_absolute() else ROOT / path).exists():
                missing.append(str(path))
    return missing


def offline_problem(example: Example, cfg: DictConfig) -> str | None:
    """Why the composed example could not run here and now (None: it can)."""
    import torch

    if example.launcher:
        return f"launched with {example.launcher}: composed only"
    if cfg.hardware.get("device") == "cuda" and not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if "hydra/launcher" in " ".join(example.xdt_args or []):
        return "a launcher plugin (SLURM, joblib): composed only"
    strategy = cfg.get("strategy") or {}
    if strategy.get("back_translation") or OmegaConf.select(cfg, "strategy.base.back_translation"):
        return "back-translation downloads translation models from the hub"
    for role, name, settings in domains(cfg):
        if settings.get("kind") == "hub":
            return f"{role} {name} is a hub dataset (network)"
    model = cfg.get("model")
    if model is not None and model.get("random_init") is None:
        path = Path(str(model.name_or_path)).expanduser()
        if not path.is_dir():
            return f"model {model.name_or_path} comes from the hub (network)"
    for arg in example.xdt_args or []:
        key, sep, value = arg.partition("=")
        value = value.strip("'\"")
        if sep and value.startswith(("/", "~/", "./")) and not key.lstrip("+~").startswith(("hydra.",)) \
                and key.lstrip("+~") not in ("data_dir", "cache_dir", *FOLDER_KEYS) \
                and not Path(value).expanduser().exists():
            return f"{key}={value} is the user's own file"
    if any(f in ("--config-dir", "-cd") or f.startswith(("--config-dir=", "-cd=")) for f in example.xdt_args or []):
        return "uses the user's own config folder: composed only"
    return None


def data_problem(cfg: DictConfig) -> str | None:
    for role, name, settings in domains(cfg):
        missing = missing_data(settings)
        if missing:
            return f"{role} {name}: data not found at {missing[0]} (set XDT_DATA_DIR)"
    return None


SMOKE_FILE = ROOT / "configs" / "debug" / "smoke.yaml"


def smoke_overrides() -> tuple[list[str], str | None]:
    """(the budget of ``debug=smoke`` as overrides, its model): appended after an example's own settings so an
    example that sets ``max_steps=300`` or picks a pretrained model still runs in seconds."""
    settings = OmegaConf.to_container(OmegaConf.load(SMOKE_FILE), resolve=False)
    model = None
    for entry in settings.pop("defaults", []) or []:
        if isinstance(entry, dict):
            for key, value in entry.items():
                if key.replace("override", "").strip().strip("/") == "model":
                    model = value
    flat = []

    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif key in ("max_steps", "eval_interval", "log_interval", "batch_size", "max_examples"):
                flat.append(f"{prefix}{key}={value}")

    walk(settings, "")
    return flat, model


def smoke_form(args: list[str], composed: DictConfig, run_dir: Path, cache: Path) -> list[str]:
    """``args`` in smoke form: ``debug=smoke``, its budget and its model (unless the example's model is built from
    scratch, like ``tiny_gpt``), stages shortened, the run in ``run_dir``."""
    budget, model = smoke_overrides()
    smoke = [*args]
    if not any(a.lstrip("+").startswith("debug=") for a in smoke):
        smoke.append("debug=smoke")
    smoke += budget
    if model and composed.model.get("random_init") is None:
        smoke.append(f"model={model}")
    steps = {b.split("=")[0]: b.split("=")[1] for b in budget}
    for stage in ("pretrain", "task.source_stage"):
        node = OmegaConf.select(composed, stage)
        if isinstance(node, DictConfig):
            smoke += [f"{stage}.{key}={steps[key]}" for key in ("max_steps", "eval_interval")
                      if key in node and key in steps]
    return [*smoke, f"hydra.run.dir={run_dir}", f"cache_dir={cache}"]


# ---------------------------------------------------------------------------------------------------------------
# The examples of the docs as they are now
# ---------------------------------------------------------------------------------------------------------------

EXAMPLES = all_examples()
CHECKED = [e for e in EXAMPLES if e.kind != "other"]
NOT_CHECKED = [e for e in EXAMPLES if e.kind == "other"]
RESULTS: dict[str, str] = {}  # example id -> what was done to it last (the listing of test_summary)
DONE: dict[str, set] = {"composed": set(), "jobs": set(), "run": set(), "script": set(), "failed": set()}


def _record(example: Example, outcome: str, what: str) -> None:
    DONE[outcome].add(example.id)
    RESULTS[example.id] = what


def _run_kind(example: Example) -> str | None:
    """What running the example in smoke form means, or None when it is only composed."""
    if example.kind == "report":
        return "report"
    if example.kind != "hydra" or example.multirun or example.launcher or example.command not in cli.COMMANDS:
        return None
    return "resume" if example.resumes else example.command


# Smoke runs that run by default (the others with -m slow): the first example of training on synthetic data and
# on files (FDU-MTL) and of xdt eval; every example of the commands that only read the smoke run (a second or
# two each), and every one that is the smoke run itself.
DEFAULT_RUN_FAMILIES = {("train", "synthetic"), ("train", "files"), ("eval", "")}
EVERY_EXAMPLE_RUNS = ("report", "predict", "export", "features", "resume")


def _run_cases() -> list:
    cases, seen = [], set()
    for example in CHECKED:
        kind = _run_kind(example)
        if kind is None:
            continue
        family = (kind, _data_family(example) if kind in ("train", "pretrain") else "")
        default = (family in DEFAULT_RUN_FAMILIES and family not in seen) or kind in EVERY_EXAMPLE_RUNS \
            or _is_the_smoke_run(example)
        seen.add(family)
        cases.append(pytest.param(example, id=example.id, marks=() if default else pytest.mark.slow))
    return cases


def _is_the_smoke_run(example: Example) -> bool:
    """``xdt train`` or ``xdt train debug=smoke`` (in any folder): its smoke form is the fixture's run."""
    return _run_kind(example) == "train" and not [
        a for a in example.xdt_args[1:]
        if a != "debug=smoke" and not a.lstrip("+").startswith(("hydra.run.dir=", "data_dir=", "cache_dir="))]


def _data_family(example: Example) -> str:
    """What an example trains on, from its words alone (cheap, at collection; it only picks which examples run
    by default): synthetic (no domain chosen, or syn_*), files (fdu_* domains and presets), or other."""
    words = example.xdt_args or []
    chosen = " ".join(w for w in words if w.lstrip("+").startswith(("source_domain=", "target_domain=",
                                                                      "experiment=")))
    if any(w in ("--config-dir", "-cd") for w in words) or "crossner" in chosen:
        return "other"
    if not chosen or re.fullmatch(r"((source|target)_domain=\[?syn_\w+(,syn_\w+)*\]?\s*)*", chosen):
        return "synthetic"
    if re.search(r"(domain=\[?|experiment=)fdu_", chosen):
        return "files"
    return "other"


RUN_CASES = _run_cases()


# ---------------------------------------------------------------------------------------------------------------
# Fixtures: a smoke run made here (for xdt eval, resume= and xdt report examples), folders the docs show
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def config_folders() -> dict:
    return shown_config_files()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, cache_dir) -> Path:
    """``xdt train debug=smoke`` through the real command line, in a folder of its own."""
    from conftest import run_xdt

    workdir = tmp_path_factory.mktemp("doc-smoke")
    run_dir = workdir / "run"
    result = run_xdt("train", "debug=smoke", f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}", cwd=workdir)
    assert result.returncode == 0, f"xdt train debug=smoke failed:\n{result.stderr[-3000:]}"
    assert (run_dir / "done").is_file()
    return run_dir


@pytest.fixture(scope="session")
def saved_config_folder(tmp_path_factory) -> Path:
    """A folder holding only a resolved ``config.yaml`` of a smoke run: enough for ``resume=`` to compose."""
    from xdt.run_folder import resolved_config

    folder = tmp_path_factory.mktemp("doc-saved-run")
    with cli_hydra([]) as hydra:
        job = hydra.compose_config("train", ["debug=smoke", f"data_dir={DATA_DIR}"], run_mode=RunMode.RUN,
                                   from_shell=True, with_log_configuration=False)
    (folder / "config.yaml").write_text(OmegaConf.to_yaml(resolved_config(task_config(job))), encoding="utf-8")
    return folder


@pytest.fixture(autouse=True, scope="module")
def summary(request):
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line("")
            reporter.write_line(summary_line())


def summary_line() -> str:
    count = {key: len(ids) for key, ids in DONE.items()}
    return (f"doc examples: {len(EXAMPLES)} found in {len(doc_files())} files; of the {len(CHECKED)} xdt and script "
            f"commands {count['composed']} composed and checked ({count['jobs']} jobs), {count['run']} run in smoke "
            f"form, {count['script']} scripts checked, {count['failed']} failed; {len(NOT_CHECKED)} not checked "
            f"(other programs)")


# ---------------------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------------------

def _fail(example: Example, error: BaseException) -> None:
    _record(example, "failed", f"failed: {type(error).__name__}")
    message = f"{example.id}: {example.text}\n  {type(error).__name__}: {error}".replace(PLACEHOLDER, "<...>")
    raise pytest.fail.Exception(message, pytrace=False) from None


def check_example(example: Example, workdir: Path, run_folder: Path | None, config_folders: dict) -> int:
    """Compose ``example`` and run what runs before training; returns the number of jobs checked. Raises as the
    command would fail for a user. The checker the doc examples and the unit tests below share."""
    args = concrete_args(example.xdt_args, workdir, run_folder, config_folders)
    return check_before_training(compose(args), workdir)


@pytest.mark.parametrize("example", CHECKED, ids=[e.id for e in CHECKED])
def test_example(example: Example, tmp_path, config_folders, saved_config_folder, monkeypatch):
    """The example composes and passes every check that runs before training (an xdt command), or its script
    takes the example's arguments (``python scripts/...``)."""
    monkeypatch.chdir(tmp_path)  # relative folders in the examples (runs/grid, outputs/...) land here
    try:
        if example.kind == "script":
            check_script(example)
            _record(example, "script", "script: --help and the example's arguments parse")
        elif example.kind == "help":
            from conftest import run_xdt

            result = run_xdt(*example.xdt_args, cwd=tmp_path)
            assert result.returncode == 0, result.stderr[-2000:]
            _record(example, "run", "run (help)")
        elif example.kind == "report":
            report_arguments(example.xdt_args[1:], tmp_path)
            _record(example, "composed", "composed (its arguments parse)")
        else:
            jobs = check_example(example, tmp_path, saved_config_folder, config_folders)
            DONE["jobs"].update(f"{example.id}#{n}" for n in range(jobs))
            _record(example, "composed", f"composed ({jobs} job{'s' * (jobs != 1)})")
    except (Exception, SystemExit) as error:  # the CLI's sys.exit, Hydra's and xdt's errors
        _fail(example, error)


@pytest.mark.parametrize("example", RUN_CASES)
def test_example_runs(example: Example, tmp_path_factory, smoke_run, cache_dir, config_folders, monkeypatch):
    """The example runs in smoke form (``debug=smoke``, a few steps) when it needs no network and its data is
    here; ``xdt eval``, ``predict``, ``export``, ``resume=`` and ``xdt report`` run against a smoke run made here."""
    workdir = tmp_path_factory.mktemp("doc-run")
    monkeypatch.chdir(workdir)
    kind = _run_kind(example)
    if _is_the_smoke_run(example):
        assert (smoke_run / "done").is_file()  # the smoke run the fixture made through the real command line
        _record(example, "run", "run (the smoke run of xdt train debug=smoke)")
        return
    try:
        if kind == "report":
            run_report(example.xdt_args[1:], smoke_run, workdir)
            _record(example, "run", "run (report of a smoke run)")
            return
        reads_run = kind not in TRAINING_COMMANDS
        placeholder = next((a for a in example.xdt_args if a.partition("=")[0].lstrip("+~") in FOLDER_KEYS
                            and _is_placeholder(a.partition("=")[2])), None)
        args = concrete_args(example.xdt_args, workdir, smoke_run if reads_run else None, config_folders,
                             for_run=True)
        cfg = task_config(compose(args).jobs[0])
    except (Exception, SystemExit) as error:
        _fail(example, error)
    problem = None
    if placeholder is not None:
        problem = f"{placeholder.replace(PLACEHOLDER, '<...>')} names a run of its own kind, not made here"
    elif not reads_run:
        problem = offline_problem(example, cfg)
        if problem is None and OmegaConf.select(cfg, "model.init_from"):
            problem = "starts from a saved run (model.init_from): composed only"
    if problem is None:
        problem = data_problem(cfg)
    if problem is not None:
        RESULTS[example.id] = RESULTS.get(example.id, "composed") + f"; not run: {problem}"
        pytest.skip(f"composed, not run: {problem}")
    try:
        prepare_inputs(example, workdir)
        if kind in TRAINING_COMMANDS:
            run_dir = workdir / "run"
            invoke(smoke_form(args, cfg, run_dir, cache_dir), workdir)
            assert (run_dir / "done").is_file(), f"no done marker in {run_dir}"
        elif kind == "resume":
            before = sorted(p.name for p in smoke_run.iterdir())
            invoke(args, workdir)  # the smoke run is finished: it is read, nothing trained or written
            assert sorted(p.name for p in smoke_run.iterdir()) == before
        else:
            invoke([*args, f"hydra.run.dir={workdir / 'out'}", *known_keys(args, cache_dir=cache_dir)], workdir)
    except (Exception, SystemExit) as error:
        _fail(example, error)
    _record(example, "run", f"run ({kind} in smoke form)")


# --- running ---------------------------------------------------------------------------------------------------

def known_keys(args: list[str], **values) -> list[str]:
    """``key=value`` for the keys the command's config has (xdt eval takes cache_dir; predict may not)."""
    cfg = task_config(compose(args).jobs[0])
    return [f"{key}={value}" for key, value in values.items() if key in cfg]


def invoke(args: list[str], workdir: Path):
    """``xdt <args>`` (one run) in this process, as the CLI runs it once Hydra has composed it: the command's
    function with Hydra's runtime settings in place (its output folder made, as Hydra makes it). An error the
    user would see (one line on stderr, exit status 1) fails with that line."""
    composition = compose(args)
    assert len(composition.jobs) == 1
    job = composition.jobs[0]
    output = Path(str(job.hydra.run.dir)).expanduser()
    output = (output if output.is_absolute() else workdir / output).resolve()
    with open_dict(job):
        job.hydra.runtime.output_dir = str(output)
        job.hydra.mode = RunMode.RUN
    output.mkdir(parents=True, exist_ok=True)
    cfg = task_config(job)
    stderr = io.StringIO()
    with hydra_config(job), contextlib.redirect_stderr(stderr):
        try:
            return cli.COMMANDS[composition.command](cfg)
        except SystemExit as exit_:
            raise AssertionError(f"exit status {exit_.code}: {stderr.getvalue()[-3000:]}") from None


def prepare_inputs(example: Example, workdir: Path) -> None:
    """Files the example reads that an earlier line of its page writes (``printf '...' > reviews.csv``): that line
    is run here, in ``workdir``. Only ``printf``/``echo`` into a relative file; nothing else the docs say is run."""
    import subprocess

    for earlier in EXAMPLES:
        if earlier.doc != example.doc or earlier.line >= example.line or earlier.argv[0] not in ("printf", "echo"):
            continue
        target = re.search(r">\s*([\w./-]+)\s*$", earlier.text)
        if target is None or len(split_commands(earlier.text)) != 1 or target.group(1).startswith("/") \
                or ".." in Path(target.group(1)).parts or "$(" in earlier.text or "`" in earlier.text:
            continue  # only a plain printf/echo into a file below the working folder
        if any(target.group(1) in a for a in example.argv):
            (workdir / target.group(1)).parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["bash", "-c", earlier.text], cwd=workdir, check=True, timeout=30)


def report_arguments(args: list[str], workdir: Path) -> argparse.Namespace:
    """The arguments of an ``xdt report`` example, parsed by its own parser (nothing read or written)."""
    from xdt import report

    parsed = {}

    def stop(self, *a, **k):
        parsed["args"] = original(self, *a, **k)
        raise _Parsed()

    original = argparse.ArgumentParser.parse_args
    with mock.patch.object(argparse.ArgumentParser, "parse_args", stop), contextlib.suppress(_Parsed):
        report.main([a if not _is_placeholder(a) else str(workdir) for a in args])
    assert "args" in parsed, "xdt report did not parse its arguments"
    return parsed["args"]


def run_report(args: list[str], run_dir: Path, workdir: Path) -> None:
    """``xdt report`` of the example with its folder replaced by the smoke run (its ``--out`` by a folder here)."""
    namespace = report_arguments(args, workdir)
    concrete, replace_next = [], False
    for arg in args:
        if replace_next:
            concrete.append(str(workdir / "report-out"))
            replace_next = False
        elif arg == "--out":
            concrete.append(arg)
            replace_next = True
        elif arg.startswith("--out="):
            concrete.append(f"--out={workdir / 'report-out'}")
        elif not arg.startswith("-") and (_is_placeholder(arg) or Path(arg) == namespace.folder):
            concrete.append(str(run_dir))
        else:
            concrete.append(arg)
    with contextlib.redirect_stdout(io.StringIO()):
        cli.main(["report", *concrete])
    out = workdir / "report-out" if namespace.out is not None else run_dir / "report"
    assert out.is_dir() and any(out.iterdir()), f"xdt report wrote nothing into {out}"


class _Parsed(Exception):
    """Stops a script right after its arguments are parsed."""


def check_script(example: Example) -> None:
    """The script exists, ``--help`` exits 0, and the example's own arguments parse (the script is not run)."""
    path = ROOT / example.script
    assert path.is_file(), f"{example.script} does not exist"
    source = path.read_text(encoding="utf-8")
    compile(source, str(path), "exec")
    assert re.search(r"\.parse_(intermixed_)?args\(", source), \
        f"{example.script} has no argparse command line to check"
    arguments = [a for a in example.argv[2:] if not _is_placeholder(a)]
    # Both entry points are stopped right after they parse: parse_intermixed_args does not go through parse_args.
    originals = {name: getattr(argparse.ArgumentParser, name) for name in ("parse_args", "parse_intermixed_args")}

    def stopping(name: str):
        def parse_then_stop(self, args=None, namespace=None):
            originals[name](self, args, namespace)
            raise _Parsed()
        return parse_then_stop

    saved_argv, saved_path, saved_env = sys.argv[:], sys.path[:], dict(os.environ)
    try:
        for argv, expect_help in (([str(path), "--help"], True), ([str(path), *arguments], False)):
            sys.argv = argv
            with mock.patch.object(argparse.ArgumentParser, "parse_args", stopping("parse_args")), \
                    mock.patch.object(argparse.ArgumentParser, "parse_intermixed_args",
                                      stopping("parse_intermixed_args")), \
                    contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                try:
                    runpy.run_path(str(path), run_name="__main__")
                except _Parsed:
                    if expect_help:
                        raise AssertionError(f"{example.script} --help did not exit") from None
                except SystemExit as exit_:
                    if exit_.code not in (0, None):
                        raise AssertionError(f"{' '.join(argv)}: exit status {exit_.code}\n{err.getvalue()}") \
                            from None
                    if not expect_help:
                        raise AssertionError(f"{' '.join(argv)} exited before parsing its arguments") from None
                else:
                    raise AssertionError(f"{example.script} ran to the end without parsing arguments")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        os.environ.clear()
        os.environ.update(saved_env)


# --- the checker itself ----------------------------------------------------------------------------------------

def test_docs_have_examples():
    """The extraction finds the docs' examples (an empty list would pass every other test vacuously)."""
    assert doc_files() and EXAMPLES
    assert any(e.kind == "hydra" for e in EXAMPLES)


def _examples_of(markdown: str, tmp_path: Path) -> list[Example]:
    (tmp_path / "docs").mkdir(exist_ok=True)
    path = tmp_path / "docs" / "page.md"
    path.write_text(textwrap.dedent(markdown), encoding="utf-8")
    return extract_examples(path, tmp_path)


def test_extraction(tmp_path):
    examples = _examples_of("""\
        Text.

        ```bash
        # a comment line
        python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/xdt train
        xdt train model=tiny 'target_domain=[syn_dvd,syn_kitchen]' \\
            data_dir=<folder holding fdu-mtl/>   # or: export XDT_DATA_DIR=...
        XDT_DATA_DIR=/data torchrun --nproc-per-node 2 -m xdt.cli train hardware=cpu
        python scripts/bench_engine.py --steps 3
        xdt report runs/grid --selection im
        ```

        ```yaml
        xdt train not=a-command
        ```

        ```console
        $ xdt train -m seed=0,1
        output line
        ```
        """, tmp_path)
    assert [(e.id, e.kind) for e in examples] == [
        ("docs/page.md:5", "other"), ("docs/page.md:5-2", "other"), ("docs/page.md:5-3", "hydra"),
        ("docs/page.md:6", "hydra"), ("docs/page.md:8", "hydra"), ("docs/page.md:9", "script"),
        ("docs/page.md:10", "report"), ("docs/page.md:18", "hydra")]
    assert examples[3].xdt_args == ["train", "model=tiny", "target_domain=[syn_dvd,syn_kitchen]",
                                    f"data_dir={PLACEHOLDER}"]
    assert examples[4].launcher == "torchrun" and examples[4].xdt_args == ["train", "hardware=cpu"]
    assert examples[7].multirun
    concrete = concrete_args(examples[3].xdt_args, tmp_path, None, {})
    assert concrete[-1] == f"data_dir={DATA_DIR}"


def test_config_folders_shown_in_the_docs_are_read(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text(textwrap.dedent("""\
        ```
        my-configs/source_domain/books.yaml          my-configs/model/deberta.yaml
          books:                                       defaults:
            kind: file                                   - /base/encoder@_here_
            path: /data/books.jsonl                      - _self_
                                                       name: deberta
        ```

        ```yaml
        # my-configs/target_domain/clinical.yaml      (xdt train --config-dir my-configs ...)
        clinical:
          kind: conll
        ```
        """), encoding="utf-8")
    folders = shown_config_files(tmp_path)
    assert folders == {"my-configs": {
        "source_domain/books.yaml": "books:\n  kind: file\n  path: /data/books.jsonl\n",
        "model/deberta.yaml": "defaults:\n  - /base/encoder@_here_\n  - _self_\nname: deberta\n",
        "target_domain/clinical.yaml": "clinical:\n  kind: conll\n"}}


BAD_LINES = {  # a doc line -> what the user would be told
    "xdt train strategy=no_such_strategy": "Could not find 'strategy/no_such_strategy'",  # unknown group option
    "xdt train no_such_key=1": "Could not override 'no_such_key'",                          # unknown key
    "xdt train optimizer.lrr=1e-3": "Could not override 'optimizer.lrr'",                   # a typo in a key
    "xdt train +optimizer.lrr=1e-3": "optimizer.lrr is not a setting",                      # xdt's constructor check
    "xdt train -m seed=0,1 strategy=erm,no_such_strategy": "Could not find 'strategy/no_such_strategy'",  # one job
    "xdt train seed=-1": "seed=-1 is not valid",                                           # a value xdt refuses
    "xdt train source_domain=fdu_apparel": "with the default target domains",              # xdt's default-target check
    "xdt pretrain objective=mlm": "pass task.objective=mlm",                               # the CLI's own check
    "xdt eval run_dir=x checkpoint_typo=best": "Could not override 'checkpoint_typo'",     # a key xdt eval lacks
    "xdt fit debug=smoke": "unknown command 'fit'",
}


@pytest.mark.parametrize("line", BAD_LINES)
def test_checker_rejects_a_bad_example(line, tmp_path, monkeypatch):
    """A doc line with an unknown option, key or value fails the checker the doc examples go through."""
    monkeypatch.chdir(tmp_path)
    (example,) = _examples_of(f"```bash\n{line}\n```\n", tmp_path)
    with pytest.raises(Exception, match=re.escape(BAD_LINES[line])):
        check_example(example, tmp_path, None, {})


def test_checker_rejects_a_bad_report_line(tmp_path):
    with pytest.raises(SystemExit) as exit_, contextlib.redirect_stderr(io.StringIO()):
        report_arguments(["runs/grid", "--selecton", "im"], tmp_path)
    assert exit_.value.code == 2


def test_checker_composes_every_job_of_a_sweep(tmp_path, monkeypatch, config_folders):
    monkeypatch.chdir(tmp_path)
    (example,) = _examples_of("```bash\nxdt train -m seed=0,1 strategy=erm,dann,coral debug=smoke\n```\n", tmp_path)
    assert check_example(example, tmp_path, None, config_folders) == 6
    (preset,) = _examples_of("```bash\nxdt train -m experiment=meta_sources_to_MR\n```\n", tmp_path)
    composition = compose(concrete_args(preset.xdt_args, tmp_path, None, {}))
    strategies = sorted({job.strategy._target_.rsplit(".", 1)[-1] for job in composition.jobs})
    assert composition.swept == 6 and len(strategies) == 3  # the preset's own sweep (erm, reptile, maml x 2 seeds)


def test_checker_rejects_a_missing_script(tmp_path):
    (example,) = _examples_of("```bash\npython scripts/no_such_script.py --steps 3\n```\n", tmp_path)
    with pytest.raises(AssertionError):
        check_script(example)


def test_summary():
    """Found, composed, run and not-checked counts (shown with -rA)."""
    print(summary_line())
    for example in EXAMPLES:
        print(f"  {example.id:<36} {RESULTS.get(example.id, 'not checked' if example.kind == 'other' else '-'):<44}"
              f" {' '.join(example.argv).replace(PLACEHOLDER, '<...>')[:100]}")
    assert EXAMPLES
