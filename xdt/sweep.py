"""Sweeps (``xdt train -m``): every job finishes or fails on its own, and a re-launch picks up where it stopped.

* A job that raises (bad value, NaN loss, crash) writes a ``failed`` marker with its error into its
  folder and returns NaN to the sweeper; the other jobs go on. :class:`SweepSummary` lists the failed
  jobs when the sweep ends and exits non-zero.
* Re-launching the same sweep (same ``hydra.sweep.dir``) skips jobs whose folder has ``done``, resumes
  jobs that were cut off or failed from their last checkpoint, and refuses to touch a folder that
  holds a run of a different configuration.
* Job folders are named by the overrides that vary across the sweep (:func:`job_name`), not by every
  override on the command line.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import traceback
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from xdt.checkpoint import atomic_write_text
from xdt.errors import XdtError
from xdt.runs import DONE, FAILED, find_runs

log = logging.getLogger(__name__)

# Overrides that never name a job: paths (which would also nest folders) and how a run is resumed.
NOT_IN_NAMES = ("data_dir", "cache_dir", "resume")


def objective(result: dict) -> float:
    """What a job returns to the sweeper: the best source validation score (never a target score), so a
    hyperparameter search cannot tune on target labels even when a run reports oracle selection."""
    value = result.get("source_validation_best")
    return math.nan if value is None else float(value)


def _same_config(cfg: DictConfig, config_file: Path) -> bool:
    """Whether the saved run is this job's experiment (where the data and cache live may have moved)."""
    saved = OmegaConf.to_container(OmegaConf.load(config_file), resolve=False)
    wanted = OmegaConf.to_container(cfg, resolve=True)
    for key in NOT_IN_NAMES:
        saved.pop(key, None), wanted.pop(key, None)
    if wanted.get("pretrain") and not wanted["model"].get("init_from"):
        saved["model"]["init_from"] = None  # the pipeline set it to the job's own pretraining stage
    return saved == wanted


def run_job(cfg: DictConfig, run_dir: Path) -> float:
    """One sweep job in ``run_dir``: skip it if done, resume it if begun, record it if it fails."""
    from xdt.train import train  # imports torch: only jobs need it

    if (run_dir / "config.yaml").exists():
        if not _same_config(cfg, run_dir / "config.yaml"):
            raise XdtError(f"{run_dir} holds a run of a different configuration; it is left as it is. Launch "
                           f"this sweep with another hydra.sweep.dir")
        if (run_dir / DONE).exists():
            log.info("skipping %s: it has finished", run_dir)
        cfg = OmegaConf.merge(cfg, {"resume": str(run_dir)})
    (run_dir / FAILED).unlink(missing_ok=True)
    try:
        return objective(train(cfg, run_dir))
    except Exception as error:  # noqa: BLE001  (any failure of one job must not stop the sweep)
        message = str(error) if isinstance(error, XdtError) else f"{type(error).__name__}: {error}"
        detail = "" if isinstance(error, XdtError) else "\n\n" + traceback.format_exc()
        atomic_write_text(run_dir / FAILED, message + detail + "\n")
        log.error("job %s failed: %s", run_dir, message)
        return math.nan


def job_name(sweep_dir: str, overrides: list[str]) -> str:
    """The part of a job folder's name after its number: ``key=value`` for each override that the sweep
    varies (a comma list, range or search space in ``multirun.yaml`` or in ``hydra.sweeper.params``)."""
    varied = _varied_keys(Path(sweep_dir) / "multirun.yaml")
    chosen = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in NOT_IN_NAMES
              and (varied is None or o.split("=", 1)[0].lstrip("+~") in varied)]
    name = ",".join(chosen) if chosen else "job"
    return re.sub(r"[/\\:]", "_", name)[:200]  # a value may be a path; keep it one folder


def _varied_keys(multirun_file: Path) -> set[str] | None:
    if not multirun_file.exists():
        return None
    saved = OmegaConf.load(multirun_file)
    task = list(OmegaConf.select(saved, "hydra.overrides.task", default=[]) or [])
    parsed = OverridesParser.create().parse_overrides(task)
    varied = {o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()}
    params = OmegaConf.select(saved, "hydra.sweeper.params", default=None) or {}
    return varied | set(params)


class SweepSummary(Callback):
    """At the end of a sweep: how many jobs finished, and which failed (exit status 1 if any did)."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            runs = find_runs(sweep_dir)
        except XdtError:
            return
        failed = [r for r in runs if r.status == "failed"]
        finished = sum(r.status == "finished" for r in runs)
        log.info("sweep %s: %d of %d jobs finished; report with: xdt report %s", sweep_dir, finished, len(runs),
                 sweep_dir)
        for run in failed:
            log.error("failed: %s: %s", run.path.name, (run.error or "").splitlines()[0])
        if failed:
            sys.exit(1)
