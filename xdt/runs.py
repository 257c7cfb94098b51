"""Finding and reading the training runs below a folder: single runs and sweep jobs, finished or not.

A run folder is one with a ``config.yaml`` written by ``xdt train``. Its state comes from its markers:
``done`` (finished: ``metrics.json`` is final), ``failed`` (the error that ended it, written by the
sweep machinery), or neither (still running, or cut off: ``xdt train resume=<folder>`` continues it).

Run folders are data that anyone may have shared, so reading one never runs anything: ``config.yaml`` is
parsed as plain values (nothing named by a ``_target_`` is imported, no ``${...}`` interpolation is
resolved), and only files inside the folder are read: a run file that is a link to somewhere outside its
run folder, or a link to a run folder outside the folder searched, is not followed. A folder that cannot be
read becomes a run with ``damage`` set (one line naming the file and the fault), so one bad folder is
listed, never a crash of the whole report.

A run's task is the module its config's ``task._target_`` names (``token_classification``; runs from before
tasks were plug-ins are ``sequence_classification``). The stages a run trains before itself, in folders of their
own inside it, are not runs of their own: a language-model stage (``pretrain/``, and ``xdt pretrain`` runs) and
the source stage of ``task.train_on=source_then_target`` (``source/``, found as the folder the run's
``model.init_from`` names); the run's metrics.json counts their time.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path, PurePath

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xdt.data.shots import SHOTS_KEY, domain_entries
from xdt.errors import XdtError
from xdt.metrics.log import MetricsLog
from xdt.run_files import CONFIG, DONE, FAILED, RECORDS, RESULT, RUN_FILES

# Config keys that never make two runs different experiments (where files live, how a run is resumed,
# what is logged), and the keys that rows and columns already name.
NOT_SETTINGS = ("data_dir", "cache_dir", "resume", "seed", "source_domain", "target_domain", "hardware", "logger",
                "eval_batch_size", "log_interval", "track_targets", "debug", "experiment", "model.name",
                "model.peft", "model.name_or_path", "model.init_from")
# The hardware key that changes the arithmetic, not only where or how fast it runs: runs that differ in it are
# different experiments (a report gives bf16 and fp32 runs rows of their own). tf32 is left out: it rounds only
# the multiplies' inputs, and runs from before the key existed would split from identical ones.
PRECISION_SETTINGS = ("hardware.mixed_precision",)
# Keys of a domain's config that say where files live on one machine, not which data it is.
NOT_DOMAIN_SETTINGS = ("cache_dir",)
ROLES = ("source_domain", "target_domain")
# What a run of a config without a task is (runs from before tasks were plug-ins).
DEFAULT_TASK = "sequence_classification"
# Token-classification protocols (``task.train_on``) that train on the targets' labels: their target validation
# split is the run's legitimate validation split (xdt/tasks/token_classification.py selects on it: target_val).
TARGET_LABEL_PROTOCOLS = ("target", "both", "source_then_target")


@dataclass
class Run:
    """One training run folder and what it wrote."""

    path: Path
    config: dict
    records: list[dict]  # metrics.jsonl, one per evaluation
    result: dict | None  # metrics.json of a finished run
    error: str | None  # the failed marker's text
    damage: str | None = None  # why the folder could not be read (its files are then not used)

    @property
    def status(self) -> str:
        if self.damage is not None:
            return "damaged"
        return "failed" if self.error is not None else "finished" if self.result is not None else "unfinished"

    @property
    def strategy(self) -> str:
        """The row a run belongs to: strategy name, with its PEFT method when there is one."""
        described = self.result or (self.records[-1] if self.records else {})
        name = described.get("strategy")
        name = name if isinstance(name, str) and name else _strategy_name(self.config)
        peft = (self.config.get("model") or {}).get("peft") or "none"
        return name if peft == "none" else f"{name}+{peft}"

    @property
    def model(self) -> str:
        return (self.config.get("model") or {}).get("name", "?")

    @property
    def task(self) -> str:
        """The task the run trained: the module its ``task._target_`` names, as in ``configs/task/<name>.yaml``."""
        target = self._task_node().get("_target_")
        return target.rsplit(".", 2)[-2] if isinstance(target, str) and "." in target else DEFAULT_TASK

    @property
    def train_on(self) -> str | None:
        """The protocol of a token-classification run (``task.train_on``); None for other tasks."""
        value = self._task_node().get("train_on")
        return value if isinstance(value, str) else None

    @property
    def trains_on_target_labels(self) -> bool:
        """Whether the run trains on its targets' labels, which makes their validation split its own (not an
        oracle). Only token-classification protocols say so; a few-shot classification run's target validation
        split stays an oracle (its few labeled examples are all it is meant to have)."""
        return self.train_on in TARGET_LABEL_PROTOCOLS

    def _task_node(self) -> dict:
        task = self.config.get("task")
        return task if isinstance(task, dict) else {}

    @property
    def seed(self) -> int:
        return int(self.config.get("seed", 0))

    @property
    def sources(self) -> list[str]:
        return _domain_names(self.config.get("source_domain"))

    @property
    def targets(self) -> list[str]:
        return [name for name, _ in domain_entries(self.config.get("target_domain"))]

    def settings(self) -> dict[str, object]:
        """The run's config flattened to dotted keys, less the keys that never make two experiments differ."""
        flat: dict[str, object] = {}

        def walk(node: object, prefix: str) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(value, f"{prefix}{key}.")
            elif prefix[:-1] in PRECISION_SETTINGS or not any(prefix == f"{key}." or prefix.startswith(f"{key}.")
                                                              for key in NOT_SETTINGS):
                flat[prefix[:-1]] = tuple(map(str, node)) if isinstance(node, list) else node
        walk(self.config, "")
        # target_domain is left out above, but few-shot runs (target_domain.shots) are different experiments.
        flat[f"target_domain.{SHOTS_KEY}"] = int((self.config.get("target_domain") or {}).get(SHOTS_KEY) or 0)
        return flat

    def domain_settings(self, role: str, name: str) -> dict[str, object]:
        """What makes the domain ``name`` of ``role`` the data it is, comparable across machines.

        Flattened to dotted keys, without interpolation helpers (keys beginning with ``_``) and the cache;
        an absolute path counts by its place below the run's ``data_dir`` or else by its file name, so the
        same files found under another folder (another machine, moved data) are the same domain."""
        node = dict(domain_entries(self.config.get(role), role)).get(name) or {}
        data_dir = self.config.get("data_dir")
        flat: dict[str, object] = {}

        def walk(value: object, key: str) -> None:
            if isinstance(value, dict):
                for child, inner in value.items():
                    if not (str(child).startswith("_") or (not key and child in NOT_DOMAIN_SETTINGS)):
                        walk(inner, f"{key}.{child}" if key else str(child))
            else:
                flat[key] = _portable(value, data_dir)
        walk(node, "")
        return flat


def varying_keys(settings: list[dict[str, object]]) -> list[str]:
    """The keys whose values differ between some of these runs' settings (:meth:`Run.settings`), sorted."""
    keys = sorted({k for one in settings for k in one})
    return [k for k in keys if len({repr(one.get(k)) for one in settings}) > 1]


def _portable(value: object, data_dir: object) -> object:
    """``value`` with an absolute path replaced by its place below ``data_dir``, or else by its file name."""
    if isinstance(value, list):
        return tuple(_portable(v, data_dir) for v in value)
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    path = PurePath(value)
    if isinstance(data_dir, str) and os.path.isabs(data_dir) and path.is_relative_to(data_dir):
        return str(path.relative_to(data_dir))
    return path.name


def _strategy_name(config: dict) -> str:
    target = (config.get("strategy") or {}).get("_target_", "?")
    return target.rsplit(".", 2)[-2] if "." in target else target


def _domain_names(node: object) -> list[str]:
    """Domain names of a composed ``source_domain``/``target_domain`` node: {name: settings} per domain."""
    return [str(name) for name in node] if node else []


# ---- reading one folder: every fault becomes an XdtError naming the file, caught by read_run ---------------

def _refuse_outside_links(folder: Path) -> None:
    """A run file may be a link only to another file in its own run folder: xdt reads nothing elsewhere."""
    inside = folder.resolve()
    for name in RUN_FILES:
        path = folder / name
        if not path.is_symlink():
            continue
        try:
            target = path.resolve(strict=False)
        except (OSError, RuntimeError):  # a loop of links
            raise XdtError(f"{name} is a link that cannot be followed ({os.readlink(path)}): not read") from None
        if not target.is_relative_to(inside):
            raise XdtError(f"{name} is a link to {target}, outside the run folder: not read "
                           f"(xdt report reads only files inside the folder it is given)")


def _yaml_problem(error: Exception) -> str:
    """One line from a YAML or OmegaConf parse error (theirs span several lines)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        return f"{error.problem or error.context} (line {error.problem_mark.line + 1})"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _read_config(path: Path) -> dict:
    """config.yaml as plain values: OmegaConf parses it (as training wrote it), nothing is resolved."""
    try:
        loaded = OmegaConf.load(path)
    except (OSError, UnicodeDecodeError) as error:
        raise XdtError(f"{CONFIG} cannot be read: {error}") from None
    except (yaml.YAMLError, OmegaConfBaseException) as error:
        raise XdtError(f"{CONFIG} is not valid YAML: {_yaml_problem(error)}") from None
    if not isinstance(loaded, DictConfig):
        raise XdtError(f"{CONFIG} is not a mapping of settings (it holds a {type(loaded).__name__})")
    config = OmegaConf.to_container(loaded, resolve=False)
    _check_config(config)
    return config


def _check_config(config: dict) -> None:
    """The values a report reads have the types it reads them as (a hand-edited or foreign file may not)."""
    if "strategy" not in config:
        if "objective" in config:
            return  # an xdt pretrain run (a pipeline's first stage): find_runs leaves it out
        raise XdtError(f"{CONFIG} has no strategy: it is not the config of an xdt training run")
    strategy, model, seed = config["strategy"], config.get("model"), config.get("seed", 0)
    if not isinstance(strategy, dict) or not isinstance(strategy.get("_target_", ""), str):
        raise XdtError(f"{CONFIG}: strategy is not a mapping with a _target_ name (got {strategy!r:.80})")
    if model is not None and not (isinstance(model, dict) and all(
            isinstance(model.get(k, ""), (str, type(None))) for k in ("name", "peft"))):
        raise XdtError(f"{CONFIG}: model is not a mapping with a name (got {model!r:.80})")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise XdtError(f"{CONFIG}: seed={seed!r:.40} is not a whole number")
    task = config.get("task")
    if task is not None and not (isinstance(task, dict) and isinstance(task.get("_target_", ""), str)
                                 and isinstance(task.get("train_on", ""), (str, type(None)))):
        raise XdtError(f"{CONFIG}: task is not a mapping with a _target_ name (got {task!r:.80})")
    for role in ROLES:
        _check_domains(config.get(role), role)


def _check_domains(node: object, role: str) -> None:
    if node is None:
        return
    if not isinstance(node, dict):
        raise XdtError(f"{CONFIG}: {role} is not a mapping of domain names to settings (got {node!r:.80})")
    for name, settings in domain_entries(node, role):
        if not isinstance(settings, dict):
            raise XdtError(f"{CONFIG}: {role}.{name} is not a mapping of domain settings (got {settings!r:.80})")
    shots = node.get(SHOTS_KEY) if role == "target_domain" else None
    if shots is not None and (isinstance(shots, bool) or not isinstance(shots, int)):
        raise XdtError(f"{CONFIG}: {role}.{SHOTS_KEY}={shots!r:.40} is not a whole number")


# Keys of a set's scores that hold a breakdown, {category: {metric: number}}, instead of a number: token
# classification scores every entity type on its own (``per_type``).
BREAKDOWNS = ("per_type",)


def _is_metric(value: object) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _is_metrics(scores: object) -> bool:
    """{metric: number or null}."""
    return isinstance(scores, dict) and all(map(_is_metric, scores.values()))


def is_scores(value: object) -> bool:
    """{evaluation set: {metric: number or null}}, as metrics.jsonl and metrics.json hold them; a breakdown
    (``BREAKDOWNS``) holds {category: {metric: number or null}}."""
    return isinstance(value, dict) and all(
        isinstance(scores, dict) and all(
            _is_metric(v) or (key in BREAKDOWNS and isinstance(v, dict) and all(map(_is_metrics, v.values())))
            for key, v in scores.items())
        for scores in value.values())


def _read_records(path: Path) -> list[dict]:
    """metrics.jsonl (a torn last line is dropped by MetricsLog); every record has a step and scores."""
    records = MetricsLog(path, write=False).records
    for number, record in enumerate(records, 1):
        if isinstance(record.get("step"), bool) or not isinstance(record.get("step"), int) \
                or not is_scores(record.get("eval")):
            raise XdtError(f"{RECORDS}: record {number} is not an evaluation (it needs a whole-number step and "
                           f"eval: {{set: {{metric: number}}}})")
    return records


RESULT_NUMBERS = ("selected_step", "steps", "wall_time_s", "train_time_s")


def _read_result(folder: Path) -> dict | None:
    """metrics.json of a finished run (one with ``done``); None while the run is unfinished."""
    if not (folder / DONE).exists():
        return None
    path = folder / RESULT
    if not path.is_file():
        raise XdtError(f"{DONE} is there but {RESULT} is missing: the finished run's results are lost")
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise XdtError(f"{RESULT} cannot be read: {error}") from None
    except json.JSONDecodeError as error:
        raise XdtError(f"{RESULT} is not valid JSON: {error}") from None
    if not isinstance(result, dict) or not is_scores(result.get("metrics")):
        raise XdtError(f"{RESULT} is not a run's results (it needs metrics: {{set: {{metric: number}}}})")
    for key in RESULT_NUMBERS:
        if not is_number(result.get(key)):
            raise XdtError(f"{RESULT}: {key}={result.get(key)!r:.40} is not a number")
    if not (result.get("pretrain_wall_time_s") is None or is_number(result["pretrain_wall_time_s"])):
        raise XdtError(f"{RESULT}: pretrain_wall_time_s={result['pretrain_wall_time_s']!r:.40} is not a number")
    if not isinstance(result.get("selection", {}), dict):
        raise XdtError(f"{RESULT}: selection is not a mapping (got {result['selection']!r:.40})")
    return result


def is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_failed(path: Path) -> str | None:
    if not path.exists():
        return None
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError as error:
        raise XdtError(f"{FAILED} cannot be read: {error}") from None


def read_run(folder: Path) -> Run:
    """The run in ``folder``; a folder that cannot be read comes back with ``damage`` saying why."""
    config: dict = {}
    try:
        _refuse_outside_links(folder)
        config = _read_config(folder / CONFIG)
        return Run(folder, config, _read_records(folder / RECORDS), _read_result(folder),
                   _read_failed(folder / FAILED))
    except XdtError as error:
        return Run(folder, config, [], None, None, str(error))


# ---- finding the run folders below a folder -----------------------------------------------------------------

def _is_run_folder(path: Path) -> bool:
    """A folder training wrote into (xdt eval writes metrics.json but no config.yaml of its own)."""
    return any(os.path.lexists(path / name) for name in (RECORDS, "model", FAILED))


def _linked_run(link: Path, folder: Path) -> Run | None:
    """A link below ``folder`` to a run folder: not followed. One that points outside is listed as left out;
    one that points inside is skipped (the run is found where it really is)."""
    if not (link / CONFIG).exists():
        return None
    target = link.resolve()
    if target.is_relative_to(folder.resolve()):
        return None
    return Run(link, {}, [], None, None, f"the run folder is a link to {target}, outside {folder}: not followed")


def _walk(folder: Path) -> tuple[list[Path], list[Run]]:
    """Folders at or below ``folder`` holding a config.yaml (never through a link), and links to run folders."""
    found, linked = [], []
    for root, folders, files in os.walk(folder):  # does not descend into links to folders
        here = Path(root)
        if CONFIG in files and not here.name.startswith(".") and _is_run_folder(here):
            found.append(here)  # Hydra's .hydra/config.yaml is skipped
        for name in folders:
            if (here / name).is_symlink() and (run := _linked_run(here / name, folder)):
                linked.append(run)
    return found, linked


def _is_pretraining(run: Run) -> bool:
    """Language-modeling runs (xdt pretrain, a pipeline's first stage) are not rows of a classification report:
    their task says so (runs from before tasks were plug-ins: an ``objective`` and no strategy)."""
    task = run.config.get("task")
    target = task.get("_target_", "") if isinstance(task, dict) else ""
    return target.endswith(".LanguageModeling") or ("strategy" not in run.config and "objective" in run.config)


def _stages(runs: list[Run]) -> set[Path]:
    """The folders of runs trained as a stage of another run: inside it, and named by its ``model.init_from``
    (compared by name, since the run folder may have moved since: init_from is the absolute path of then)."""
    stages = set()
    for run in runs:
        init_from = (run.config.get("model") or {}).get("init_from")
        if isinstance(init_from, str) and init_from:
            stages.add(run.path / PurePath(init_from).name)
    return stages


def launch_overrides(folder: str | Path, runs: list[Run],
                     limit: int = 8) -> tuple[list[tuple[Path, str, list[str]]], int]:
    """The command-line overrides that made ``runs``, as Hydra saved them: a sweep's ``multirun.yaml``
    (``hydra.overrides.task``, the overrides as typed, comma lists included) for runs that are jobs of a sweep,
    a single run's ``.hydra/overrides.yaml`` for the others. Returns up to ``limit`` (folder, the file read,
    overrides), and how many more there were.

    Read as plain YAML (nothing resolved), and only regular files inside ``folder``; a file that is missing, too
    large, a link, or not of that shape is passed over: these lines describe the runs, they are not needed."""
    inside = Path(folder).resolve()
    found: dict[Path, tuple[str, list[str]]] = {}
    for run in runs:
        sweep = run.path.parent
        if sweep in found:
            continue
        overrides = _saved_overrides(sweep / "multirun.yaml", inside, ("hydra", "overrides", "task"))
        if overrides is not None:
            found[sweep] = ("multirun.yaml", overrides)
        elif (overrides := _saved_overrides(run.path / ".hydra" / "overrides.yaml", inside, ())) is not None:
            found[run.path] = (".hydra/overrides.yaml", overrides)
    listed = [(path, file, overrides) for path, (file, overrides) in sorted(found.items())]
    return listed[:limit], max(len(listed) - limit, 0)


def _saved_overrides(path: Path, inside: Path, keys: tuple[str, ...]) -> list[str] | None:
    """The list of strings at ``keys`` in the YAML file ``path``, or None (see :func:`launch_overrides`)."""
    try:
        if path.is_symlink() or not path.is_file() or not path.resolve().is_relative_to(inside):
            return None
        if path.stat().st_size > 1_000_000:
            return None
        node = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, list) or not all(isinstance(item, str) for item in node):
        return None
    return node


def find_runs(folder: str | Path) -> list[Run]:
    """Every training run folder at or below ``folder``, in path order (damaged ones included)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise XdtError(f"{folder} is not a folder")
    found, linked = _walk(folder)
    runs = [run for run in map(read_run, found) if not _is_pretraining(run)]
    stages = _stages(runs)
    runs = [run for run in runs if run.path not in stages] + linked
    if not runs:
        raise XdtError(f"no xdt training runs below {folder} (a run folder holds config.yaml and metrics.jsonl)")
    return sorted(runs, key=lambda run: run.path)
