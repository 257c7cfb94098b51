"""Sweeps (``xdt train -m``): every job finishes or fails on its own, and a re-launch picks up where it stopped.

* A job that raises (bad value, NaN loss, crash) writes a ``failed`` marker with its error into its
  folder and returns NaN to the sweeper; the other jobs go on. :class:`SweepSummary` lists the failed
  jobs when the sweep ends and exits non-zero.
* Re-launching the same sweep (same ``hydra.sweep.dir``) skips jobs whose folder has ``done``, resumes
  jobs that were cut off or failed from their last checkpoint, and refuses to touch a folder that
  holds a run of a different configuration. Settings a run's saved config lacks (added to xdt after the run
  was made) do not make it another configuration: it keeps the behaviour it was made with (a resume reads
  its own config.yaml), and the log names them. So a sweep filled over several launches survives an upgrade.
* Job folders are named by the overrides that vary across the sweep (:func:`xdt.job_names.job_name`), not by every
  override on the command line.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xdt.errors import XdtError
from xdt.job_names import NOT_IN_NAMES
from xdt.run_files import DONE, FAILED
from xdt.selection import SEARCH_OBJECTIVES

log = logging.getLogger(__name__)



def objective(result: dict) -> float:
    """What a job returns to the sweeper (which maximises it): the best value of the run's own ``selection``
    criterion where that reads no target label (source_val, entropy, im, dev, reverse_val:
    ``selection.SEARCH_OBJECTIVES``), else the best source validation score. So a hyperparameter search chooses
    settings as the run chooses its checkpoint, and can never tune on target labels, even when a run reports
    oracle selection."""
    chosen = result.get("selection") or {}
    value = chosen.get("value") if chosen.get("criterion") in SEARCH_OBJECTIVES else None
    value = result.get("source_validation_best") if value is None else value
    return math.nan if value is None else float(value)


def _same_value(saved: object, wanted: object) -> bool:
    """Equality of two config values in which NaN equals NaN (a sweep over ``x=nan`` must find its own job)."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        return saved.keys() == wanted.keys() and all(_same_value(saved[k], wanted[k]) for k in saved)
    if isinstance(saved, list) and isinstance(wanted, list):
        return len(saved) == len(wanted) and all(map(_same_value, saved, wanted))
    if isinstance(saved, float) and isinstance(wanted, float) and math.isnan(saved) and math.isnan(wanted):
        return True
    return saved == wanted


def _same_config(cfg: DictConfig, config_file: Path) -> bool:
    """Whether the saved run is this job's experiment (where the data and cache live may have moved)."""
    saved = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    wanted = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IN_NAMES:
        saved.pop(key, None), wanted.pop(key, None)
    added = _drop_added_settings(saved, wanted)
    if added:
        log.warning("%s was made by an xdt without the settings %s; it keeps the behaviour it was made with",
                    config_file.parent.name, ", ".join(added))
    started_from = (saved.get("model") or {}).get("init_from")
    if not wanted["model"].get("init_from") and started_from and Path(started_from).is_relative_to(
            config_file.parent.resolve()):
        saved["model"]["init_from"] = None  # set by a stage of the job itself (xdt.train.stages)
    return _same_value(saved, wanted)


def _drop_added_settings(saved: dict, wanted: dict, prefix: str = "") -> list[str]:
    """Remove from ``wanted`` the keys ``saved`` lacks, at any depth; returns their dotted names."""
    added = []
    for key in list(wanted):
        if key not in saved:
            added.append(prefix + str(key))
            del wanted[key]
        elif isinstance(saved[key], dict) and isinstance(wanted[key], dict):
            added += _drop_added_settings(saved[key], wanted[key], f"{prefix}{key}.")
    return added


def run_job(cfg: DictConfig, run_dir: Path) -> float:
    """One sweep job in ``run_dir``: skip it if another launcher is training it (two sweeps launched into one
    folder share its jobs this way), else run it under the folder's lock."""
    from xdt.engine import finished_metrics
    from xdt.run_folder import RunBusy, run_lock

    if (run_dir / DONE).exists() and (run_dir / "config.yaml").exists() and _same_config(cfg, run_dir / "config.yaml"):
        log.info("skipping %s: it has finished", run_dir)  # read only: a finished job's folder is never written
        return objective(finished_metrics(run_dir))
    try:
        with run_lock(run_dir):
            return _run_locked_job(cfg, run_dir)
    except RunBusy as busy:
        log.warning("skipping %s: %s", run_dir.name, busy)
        return math.nan


def _run_locked_job(cfg: DictConfig, run_dir: Path) -> float:
    """Skip the job if done, resume it if begun; a job that fails is marked ``failed`` (by the run itself) and
    the sweep goes on. A folder holding another experiment stops the sweep: it is aimed at the wrong folder."""
    from xdt.train import train  # imports torch: only jobs need it

    if (run_dir / "config.yaml").exists():
        if not _same_config(cfg, run_dir / "config.yaml"):
            raise XdtError(f"{run_dir} holds a run of a different configuration; it is left as it is. Launch "
                           f"this sweep with another hydra.sweep.dir")
        if (run_dir / DONE).exists():
            log.info("skipping %s: it has finished", run_dir)
        cfg = OmegaConf.merge(cfg, {"resume": str(run_dir)})
    try:
        return objective(train(cfg, run_dir))
    except Exception as error:  # noqa: BLE001  (any failure of one job must not stop the sweep)
        message = str(error) if isinstance(error, XdtError) else f"{type(error).__name__}: {error}"
        log.error("job %s failed: %s", run_dir, message)
        return math.nan


class SweepSummary(Callback):
    """At the end of a sweep: how many jobs finished, and which failed (exit status 1 if any did).

    Reads the jobs' markers directly: a job whose settings were refused has a ``failed`` marker but no
    ``config.yaml``, so it is not a run that reports list, and it still counts as a failed job here."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()) \
            if sweep_dir.is_dir() else []
        if not jobs:
            return
        failed = [job for job in jobs if (job / FAILED).is_file()]
        finished = sum((job / DONE).is_file() for job in jobs)
        log.info("sweep %s: %d of %d jobs finished; report with: xdt report %s", sweep_dir, finished, len(jobs),
                 sweep_dir)
        for job in failed:
            reason = (job / FAILED).read_text(encoding="utf-8").strip().splitlines()[:1]
            log.error("failed: %s: %s", job.name, reason[0] if reason else "")
        if failed:
            sys.exit(1)
