"""Sweep job folders are named by what the sweep varies (``3_seed=1,strategy=dann``), not by every override on
the command line. Hydra calls :func:`job_name` through the ``${xdt.job_name:...}`` resolver of
``configs/hydra/default.yaml``, once per job; this module imports nothing heavy."""

from __future__ import annotations

import re
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

# Overrides that never name a job, nor make a re-launched sweep's job another experiment: paths (which would also
# nest folders), how a run is resumed, and where its results are also sent (the trackers of the logger group).
NOT_IN_NAMES = ("data_dir", "cache_dir", "resume", "logger")


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
