"""Results out of xdt while it trains: TensorBoard, MLflow and Weights & Biases (the ``logger`` config group),
through Accelerate's trackers. The user's guide is docs/tracking.md.

The engine calls :class:`Tracking` at four named points: :meth:`~Tracking.session` once the run's step is known
(after a resume) and around the rest of the run, :meth:`~Tracking.train` every ``log_interval`` steps,
:meth:`~Tracking.evaluation` with every record of metrics.jsonl and :meth:`~Tracking.final` with metrics.json.
A tracker sees metrics.jsonl's names, a value's JSON path joined by ``/`` (``train/loss``, ``train/lr``,
``eval/target/syn_dvd/test/accuracy``, ``selection/value``), and metrics.json's numbers as ``final/<path>``
(``final/selected_step``) at the last step. The resolved config, flattened (``optimizer.lr``), is each
tracker's hyperparameters. With ``logger=none`` (the default) nothing here imports a tracker or changes a run.

Where runs go: a tracker's run is named after the run folder (a stage inside a run: ``<run>/pretrain``); a
sweep's jobs (folders beside a ``multirun.yaml``) share an MLflow experiment and a W&B group named after the
sweep folder. Nothing leaves the machine unless asked: TensorBoard writes ``<run>/tensorboard/``, MLflow a
SQLite store in the sweep (or run) folder, W&B an offline run in ``<run>/wandb/``. ``<run>/tracking.json``
keeps the MLflow and W&B run ids, so a resumed run continues the same tracker run.

Failures: a package that is missing, an unknown tracker, an MLflow server that does not answer or an
experiment name MLflow refuses are refused by :func:`check_logger` before config.yaml is written; a tracker
that cannot start refuses the run before its first step (it can be resumed once the tracker works); a tracker
that fails while the run trains is turned off with one warning, and the run goes on (metrics.jsonl keeps
every record).
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import netrc
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple
from urllib.parse import urlparse

from accelerate.tracking import MLflowTracker, TensorBoardTracker, WandBTracker, on_main_process
from omegaconf import DictConfig, OmegaConf

from xdt.atomic import atomic_write_json
from xdt.errors import XdtError

log = logging.getLogger(__name__)

STATE_FILE = "tracking.json"  # in the run folder: the tracker runs a resume continues
TENSORBOARD_DIR = "tensorboard"  # in the run folder
MLFLOW_DB = "mlflow.db"  # in the sweep folder (a sweep's job) or the run folder (a single run)
SWEEP_MARKER = "multirun.yaml"  # Hydra writes it into a sweep folder: a run folder beside it is a sweep's job
DEFAULT_EXPERIMENT = "xdt"  # the MLflow experiment of a run outside a sweep
NOT_HYPERPARAMETERS = ("resume",)  # how a run was started, not what it is
MLFLOW_EXPERIMENT_NAME_MAX = 500  # MLflow's limit
WANDB_MODES = ("online", "offline", "disabled")
SERVER_TIMEOUT_S = 5.0


class Tracker(NamedTuple):
    label: str  # as people write it
    module: str  # what is imported
    package: str  # what pip installs
    settings: tuple[str, ...]  # its keys in configs/logger/<name>.yaml


TRACKERS = {
    "tensorboard": Tracker("TensorBoard", "tensorboard", "tensorboard", ()),
    "mlflow": Tracker("MLflow", "mlflow", "mlflow-skinny", ("tracking_uri", "experiment")),
    "wandb": Tracker("W&B", "wandb", "wandb", ("project", "entity", "mode")),
}


# ---- checks before config.yaml is written -------------------------------------------------------------

def chosen(cfg: DictConfig) -> list[str]:
    """The trackers a config selects: the keys of its ``logger`` node (``logger=[tensorboard,mlflow]`` merges
    both files into it; ``logger=none`` leaves it empty; a config from before the group has none)."""
    node = cfg.get("logger")
    if node is None:
        return []
    if not isinstance(node, DictConfig):
        raise XdtError(f"logger={node!r} is not valid: choose logger=none, tensorboard, mlflow, wandb or a list "
                       f"such as 'logger=[tensorboard,mlflow]'")
    return [str(name) for name in node]


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (tests replace this to play a missing package)."""
    return importlib.util.find_spec(module) is not None


def check_logger(cfg: DictConfig) -> None:
    """Refuse, in one message naming the key, a tracker xdt does not know or whose package is missing, a
    setting it does not have, an MLflow experiment name MLflow rejects and an MLflow server that does not answer."""
    names = chosen(cfg)
    for name in names:
        if name not in TRACKERS:
            raise XdtError(f"logger.{name} is not a tracker xdt knows: choose from {', '.join(TRACKERS)} "
                           f"(logger={name} as a group option, or a list such as 'logger=[tensorboard,mlflow]')")
        node = cfg.logger[name]
        unknown = [str(key) for key in (node or {}) if key not in TRACKERS[name].settings]
        if unknown:
            known = ", ".join(f"logger.{name}.{key}" for key in TRACKERS[name].settings) or "none"
            raise XdtError(f"logger.{name}.{unknown[0]} is not a setting of the {TRACKERS[name].label} logger "
                           f"(its settings: {known})")
    missing = [name for name in names if not installed(TRACKERS[name].module)]
    if missing:
        packages = " ".join(TRACKERS[name].package for name in missing)
        extras = ",".join(missing)
        chosen_text = missing[0] if len(missing) == 1 else "[" + ",".join(missing) + "]"
        raise XdtError(f"logger={chosen_text} needs {packages}, which is not installed: pip install {packages} "
                       f"(or, in xdt's folder, pip install -e '.[{extras}]'; '.[tracking]' installs all three "
                       f"trackers)")
    if "mlflow" in names:
        node = cfg.logger.mlflow
        if node.get("experiment") is not None:
            check_experiment_name(node.experiment)
        if node.get("tracking_uri"):
            check_tracking_uri(str(node.tracking_uri), "logger.mlflow.tracking_uri")
        elif os.environ.get("MLFLOW_TRACKING_URI"):
            check_tracking_uri(os.environ["MLFLOW_TRACKING_URI"], "$MLFLOW_TRACKING_URI (logger.mlflow.tracking_uri "
                                                                  "is null, so the environment's is used)")
    if "wandb" in names:
        mode = cfg.logger.wandb.get("mode")
        if mode is not None and mode not in WANDB_MODES:
            raise XdtError(f"logger.wandb.mode={mode!r} is not valid: choose {', '.join(WANDB_MODES)}, or null "
                           f"($WANDB_MODE if set, else online when logged in, else offline)")


def check_experiment_name(name: object) -> None:
    """What MLflow refuses as an experiment name (empty, over 500 characters), and control characters (a
    newline or NUL that a database server refuses or a listing cannot show)."""
    key = "logger.mlflow.experiment"
    if not isinstance(name, str) or not name.strip():
        raise XdtError(f"{key}={name!r} is not valid: MLflow needs a name with at least one visible character "
                       f"(or null: the sweep folder's name, else {DEFAULT_EXPERIMENT})")
    if len(name) > MLFLOW_EXPERIMENT_NAME_MAX:
        raise XdtError(f"{key} is {len(name)} characters long; MLflow accepts at most {MLFLOW_EXPERIMENT_NAME_MAX}")
    bad = sorted({character for character in name if ord(character) < 32 or ord(character) == 127})
    if bad:
        raise XdtError(f"{key}={name!r} holds control characters ({', '.join(repr(c) for c in bad)}), which "
                       f"MLflow stores may refuse and listings cannot show: use letters, digits, spaces and "
                       f"punctuation")


def check_tracking_uri(uri: str, key: str) -> None:
    """An MLflow server must answer before the run starts (a dashboard missing hours of a sweep costs more than
    a refusal at start-up); any HTTP answer counts, an error status included (a login page is a server)."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and parsed.path.startswith("/"):
        folder = Path(parsed.path[1:]).parent  # sqlite:///<relative path>, sqlite:////<absolute path>
        if not folder.is_dir():
            raise XdtError(f"{key}={uri}: the folder {folder} does not exist, so MLflow cannot create its database "
                           f"there; create it, or set logger.mlflow.tracking_uri=null to record into {MLFLOW_DB} "
                           f"beside the runs")
        return
    if parsed.scheme not in ("http", "https"):
        return  # another database or store: MLflow opens it when the run starts, and says what fails
    try:
        with urllib.request.urlopen(uri, timeout=SERVER_TIMEOUT_S):
            pass
    except urllib.error.HTTPError:
        return
    except (OSError, ValueError) as error:  # URLError, a timeout, a refused connection, a malformed address
        reason = getattr(error, "reason", error)
        raise XdtError(f"{key}={uri}: no MLflow server answers there ({reason}); start it (mlflow server --host "
                       f"127.0.0.1 --port 5000), or set logger.mlflow.tracking_uri=null to record into "
                       f"{MLFLOW_DB} beside the runs. Nothing was written to the run") from None


# ---- where a run's trackers write ---------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    name: str  # the run's name in every tracker: its folder's name (a stage: "<run>/<stage>")
    root: Path  # where a store shared by runs goes: the sweep folder of a sweep's job, else the run folder
    group: str | None  # the sweep folder's name (MLflow experiment, W&B group); None outside a sweep


def identity(run_dir: Path, stage_of: Path | None = None) -> Identity:
    """A run's name and group, from where its folder lies (a stage lies inside the run ``stage_of``)."""
    top = Path(stage_of or run_dir).resolve()
    sweep = top.parent if (top.parent / SWEEP_MARKER).is_file() else None
    name = top.name if stage_of is None else f"{top.name}/{Path(run_dir).name}"
    return Identity(name, sweep or top, sweep.name if sweep else None)


def tracking_uri(node: DictConfig, root: Path) -> str:
    """``logger.mlflow.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else a SQLite store in ``root`` (MLflow 3
    refuses its old folder store unless told otherwise; SQLite is its own default, in a file)."""
    return str(node.get("tracking_uri") or os.environ.get("MLFLOW_TRACKING_URI") or
               f"sqlite:///{Path(root).resolve() / MLFLOW_DB}")


def wandb_mode(setting: str | None) -> str:
    """``logger.wandb.mode``, else ``$WANDB_MODE``, else online when W&B has a key (``$WANDB_API_KEY``, or the
    entry ``wandb login`` writes into ~/.netrc), else offline. Always passed to ``wandb.init`` explicitly: wandb
    reads ``$WANDB_MODE`` once per process, so a run after another one in the same process (a sweep, the tests)
    would otherwise get the mode of the first."""
    if setting is not None:
        return str(setting)
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if wandb_logged_in() else "offline"


def wandb_logged_in() -> bool:
    """Whether W&B would find a key: only whether one is there is looked at, never the key itself."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock: a sweep's parallel jobs create the SQLite store and its experiment one at a time."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


# ---- what trackers are sent ---------------------------------------------------------------------------

def _plain(value: object) -> object:
    """A hyperparameter value every tracker takes: numbers, strings and booleans as they are, the rest as JSON."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, default=str)


def hyperparameters(cfg: DictConfig) -> dict[str, object]:
    """The resolved config, flattened to ``key.key`` names (as on the command line)."""
    flat: dict[str, object] = {}

    def walk(node: object, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}.{key}" if prefix else str(key))
        else:
            flat[prefix] = _plain(node)

    config = OmegaConf.to_container(cfg, resolve=True)
    walk({key: value for key, value in config.items() if key not in NOT_HYPERPARAMETERS}, "")
    return flat


def numbers(node: object, prefix: str = "") -> dict[str, float]:
    """The numbers in a JSON value, by their path joined with ``/`` (booleans as 0/1; strings, lists and
    nulls are not metrics)."""
    if isinstance(node, bool):
        return {prefix: int(node)}
    if isinstance(node, (int, float)):
        return {prefix: node}
    if isinstance(node, dict):
        found: dict[str, float] = {}
        for key, value in node.items():
            found.update(numbers(value, f"{prefix}/{key}" if prefix else str(key)))
        return found
    return {}


# ---- the trackers: Accelerate's, started where xdt keeps its runs, and never stopping a run that trains ----

def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines() or [type(error).__name__])[0]


class _Guarded:
    """What xdt's trackers share: a failure to start refuses the run (before its first step, with the key to
    look at); a failure while the run trains turns the tracker off with one warning and the run goes on."""

    name: str
    key: str
    label: str
    run_dir: Path  # for messages
    main_process_only = True  # Accelerate's W&B tracker says False; only the main process logs
    started = False
    broken = False
    resumed = False  # continuing a tracker run an earlier segment of this run began
    status = "FINISHED"  # how finish() marks the tracker run: FINISHED, FAILED or KILLED

    def resume(self, saved: dict | None, step: int) -> None:
        """Continue the tracker run ``saved`` describes (from tracking.json), at ``step``."""

    def state(self) -> dict | None:
        """What tracking.json keeps for a resume."""
        return None

    def where(self) -> str:
        """Where this tracker's run is, for the log."""
        return ""

    @on_main_process
    def start(self) -> None:
        try:
            self._start()
        except XdtError:
            raise
        except Exception as error:  # noqa: BLE001  (whatever the tracker raises, the user gets one message)
            raise XdtError(f"{self.key}: {self.label} could not start a run ({_first_line(error)}); the run is kept "
                           f"and has not trained further: once {self.label} works, continue it with "
                           f"resume={self.run_dir}") from None
        self.started = True

    def _start(self) -> None:
        super().start()  # the Accelerate tracker's

    def store_init_configuration(self, values: dict) -> None:
        if self.resumed:  # the tracker run has them from its first segment (MLflow refuses changed values)
            return
        try:
            super().store_init_configuration(values)
        except Exception as error:  # noqa: BLE001
            log.warning("%s did not take the run's config as hyperparameters (%s); its metrics are logged still",
                        self.label, _first_line(error))

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        if self.broken or not self.started:
            return
        try:
            super().log(values, step=step, **kwargs)
        except Exception as error:  # noqa: BLE001
            self.broken = True
            log.warning("%s stopped logging at step %s (%s); training goes on and metrics.jsonl keeps every "
                        "record", self.label, step, _first_line(error))

    def end(self, status: str) -> None:
        if not self.started:
            return
        self.status, self.started = status, False
        try:
            self.finish()
        except Exception as error:  # noqa: BLE001
            log.warning("%s did not close its run cleanly (%s)", self.label, _first_line(error))


class TensorBoard(_Guarded, TensorBoardTracker):
    """Event files in ``<run>/tensorboard/``: ``tensorboard --logdir <sweep folder>`` shows each job as a run."""

    key, label = "logger.tensorboard", "TensorBoard"

    def __init__(self, tracking: Tracking) -> None:
        # run_name="": Accelerate writes to <logging_dir>/<run_name>, and the folder is the run's name already
        super().__init__(run_name="", logging_dir=str(tracking.run_dir / TENSORBOARD_DIR))

    def resume(self, saved: dict | None, step: int) -> None:
        folder = Path(self.logging_dir_param)
        if folder.is_dir() and any(folder.iterdir()):
            # TensorBoard hides what the cut-off segment logged after the checkpoint this one starts from
            self.init_kwargs["purge_step"] = step + 1
            self.resumed = True

    def where(self) -> str:
        return f"event files in {self.logging_dir_param}"

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        """Into the run's own event file (Accelerate's would add a second run per job, in a dated sub-folder)."""
        if self.resumed:
            return
        from torch.utils.tensorboard.summary import hparams

        try:
            for summary in hparams(values, metric_dict={}):
                self.writer.file_writer.add_summary(summary)
            self.writer.flush()
        except Exception as error:  # noqa: BLE001
            log.warning("TensorBoard did not take the run's config as hyperparameters (%s)", _first_line(error))


def _mlflow_name(name: str) -> str:
    """A metric or parameter name MLflow accepts: letters, digits, _ - . space : / (others become _)."""
    cleaned = "".join(c if c.isalnum() or c in "_-. :/" else "_" for c in name)
    return "/".join(part if part not in ("", ".", "..") else "_" for part in cleaned.split("/"))


class MLflow(_Guarded, MLflowTracker):
    """A run in an MLflow store: a SQLite file in the sweep (or run) folder unless a server is named."""

    key, label = "logger.mlflow", "MLflow"

    def __init__(self, tracking: Tracking) -> None:
        node, ident = tracking.cfg.logger.mlflow, tracking.identity
        super().__init__(run_name=ident.name, tags={"xdt.run_dir": str(Path(tracking.run_dir).resolve())})
        # The key, then MLflow's own variable, then the sweep; never $MLFLOW_RUN_ID (it would put every job of a
        # sweep into one run): a run's id comes from its tracking.json.
        self.experiment_name = node.get("experiment") or os.environ.get("MLFLOW_EXPERIMENT_NAME") or \
            ident.group or DEFAULT_EXPERIMENT
        self.uri = tracking_uri(node, ident.root)
        self.store_folder = ident.root.resolve()
        self.run_id, self.nested_run = None, False

    def resume(self, saved: dict | None, step: int) -> None:
        if not saved or not saved.get("run_id"):
            return
        if saved.get("tracking_uri") != self.uri:
            log.warning("MLflow: this run was recorded in %s, and now records into %s: a new MLflow run is started "
                        "there", saved.get("tracking_uri"), self.uri)
            return
        self.run_id, self.resumed = str(saved["run_id"]), True

    def state(self) -> dict | None:
        run = getattr(self, "active_run", None)
        return {"tracking_uri": self.uri, "experiment": self.experiment_name,
                "run_id": run.info.run_id if run is not None else self.run_id}

    def where(self) -> str:
        return f"run {self.state()['run_id']} of experiment {self.experiment_name!r} in {self.uri}"

    def _start(self) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(self.uri)
        default_store = self.uri == f"sqlite:///{self.store_folder / MLFLOW_DB}"
        with folder_lock(self.store_folder) if default_store else contextlib.nullcontext():
            experiment = mlflow.get_experiment_by_name(self.experiment_name)
            experiment_id = experiment.experiment_id if experiment else mlflow.create_experiment(self.experiment_name)
        if self.run_id:
            try:
                mlflow.get_run(self.run_id)
            except MlflowException:
                log.warning("MLflow: run %s of tracking.json is not in %s: a new MLflow run is started",
                            self.run_id, self.uri)
                self.run_id, self.resumed = None, False
        if self.run_id:
            self.active_run = mlflow.start_run(run_id=self.run_id, tags=self.tags)
        else:
            self.active_run = mlflow.start_run(experiment_id=experiment_id, run_name=self.run_name, tags=self.tags)

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        super().store_init_configuration({_mlflow_name(key): value for key, value in values.items()})

    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        super().log({_mlflow_name(key): value for key, value in values.items()}, step=step, **kwargs)

    @on_main_process
    def finish(self) -> None:
        import mlflow

        mlflow.end_run(status=self.status)


class WandB(_Guarded, WandBTracker):
    """A W&B run with its files in ``<run>/wandb/``, offline unless asked or logged in."""

    key, label = "logger.wandb", "W&B"

    def __init__(self, tracking: Tracking) -> None:
        node, ident = tracking.cfg.logger.wandb, tracking.identity
        super().__init__(node.project, name=ident.name, group=ident.group, entity=node.get("entity"),
                         dir=str(Path(tracking.run_dir).resolve()), mode=wandb_mode(node.get("mode")),
                         resume="allow", id=None)
        self.run_dir = Path(tracking.run_dir)

    def resume(self, saved: dict | None, step: int) -> None:
        run_id = saved.get("id") if saved else None
        self.resumed = bool(run_id)
        # W&B ids are chosen here, before the run starts, so a kill during start-up resumes the same run
        self.init_kwargs["id"] = str(run_id) if run_id else secrets.token_hex(6)

    def state(self) -> dict | None:
        return {key: self.init_kwargs.get(key) for key in ("id", "entity", "group")} | {"project": self.run_name}

    def where(self) -> str:
        run = getattr(self, "run", None)
        offline = run is not None and run.offline
        files = run.dir if run is not None else self.run_dir / "wandb"
        upload = f"; upload with: wandb sync {Path(files).parent}" if offline else ""
        return f"{'offline ' if offline else ''}run {self.init_kwargs['id']} of project {self.run_name!r}{upload}"

    def _start(self) -> None:
        import wandb

        # console="off": train.log already keeps the output, and W&B's capture would wrap the progress bar
        self.init_kwargs.setdefault("settings", wandb.Settings(console="off", quiet=True))
        super()._start()

    @on_main_process
    def finish(self) -> None:
        self.run.finish(exit_code=0 if self.status == "FINISHED" else 1)


class Tracking:
    """The trackers of one run (none with ``logger=none``), built before the Accelerator that holds them."""

    BUILDERS = {"tensorboard": TensorBoard, "mlflow": MLflow, "wandb": WandB}

    def __init__(self, cfg: DictConfig, run_dir: Path, stage_of: Path | None = None) -> None:
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.names = chosen(cfg)
        self.identity = identity(self.run_dir, stage_of) if self.names else None
        self.trackers: list[_Guarded] = [self.BUILDERS[name](self) for name in self.names]
        for tracker in self.trackers:
            tracker.run_dir = self.run_dir
        self.accelerator = None

    @property
    def log_with(self) -> list | None:
        """For ``Accelerator(log_with=...)``."""
        return list(self.trackers) or None

    @contextlib.contextmanager
    def session(self, accelerator, step: int) -> Iterator[None]:
        """Start the trackers at ``step`` (0, or the checkpoint a resume starts from) and close them when the
        run ends: FINISHED, FAILED (an error) or KILLED (a stop signal)."""
        if not self.trackers:
            yield
            return
        self.start(accelerator, step)
        status = "FAILED"
        try:
            yield
            status = "FINISHED"
        except (KeyboardInterrupt, SystemExit):
            status = "KILLED"
            raise
        finally:
            self.end(status)

    def start(self, accelerator, step: int) -> None:
        self.accelerator = accelerator
        main = accelerator.is_main_process
        saved = self._saved() if main else {}
        for tracker in self.trackers:
            tracker.resume(saved.get(tracker.name), step)
        if main:
            self._save()  # the W&B id before W&B starts
        try:
            accelerator.init_trackers(self.identity.name, config=hyperparameters(self.cfg))
        except BaseException:
            self.end("FAILED")
            raise
        if main:
            self._save()
            for tracker in self.trackers:
                log.info("%s: %s", tracker.label, tracker.where())

    def train(self, step: int, terms: dict[str, float]) -> None:
        """The training terms of a log line (loss, its named terms, lr)."""
        self._log({f"train/{name}": value for name, value in terms.items()}, step)

    def evaluation(self, record: dict, describe: dict) -> None:
        """An evaluation record of metrics.jsonl, under its names, at its step (its training terms were sent by
        :meth:`train` at the same step)."""
        values = {key: value for key, value in record.items() if key not in describe and key not in ("step", "train")}
        self._log(numbers(values), record["step"])

    def final(self, result: dict, describe: dict, step: int) -> None:
        """metrics.json's numbers (scores of the selected checkpoint, the selected step, gaps, timings)."""
        self._log(numbers({key: value for key, value in result.items() if key not in describe}, "final"), step)

    def _log(self, values: dict, step: int) -> None:
        if self.accelerator is not None and self.trackers:
            self.accelerator.log(values, step=step)

    def end(self, status: str) -> None:
        # Not accelerator.end_training(): it also destroys the process group, which a data-parallel launch keeps
        # for the runs after this one (stages, sweep jobs).
        for tracker in self.trackers:
            tracker.end(status)

    def _saved(self) -> dict:
        path = self.run_dir / STATE_FILE
        if not path.is_file():
            return {}
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            log.warning("%s cannot be read (%s): the trackers start new runs", path, error)
            return {}
        return saved if isinstance(saved, dict) else {}

    def _save(self) -> None:
        state = {tracker.name: tracker.state() for tracker in self.trackers if tracker.state() is not None}
        if state:
            atomic_write_json(self.run_dir / STATE_FILE, state)
