"""Finding and reading the training runs below a folder: single runs and sweep jobs, finished or not.

A run folder is one with a ``config.yaml`` written by ``xdt train``. Its state comes from its markers:
``done`` (finished: ``metrics.json`` is final), ``failed`` (the error that ended it, written by the
sweep machinery), or neither (still running, or cut off: ``xdt train resume=<folder>`` continues it).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from xdt.data.shots import SHOTS_KEY, domain_entries
from xdt.errors import XdtError
from xdt.metrics.log import MetricsLog

DONE, FAILED = "done", "failed"
# Config keys that never make two runs different experiments (where files live, how a run is resumed,
# what is logged), and the keys that rows and columns already name.
NOT_SETTINGS = ("data_dir", "cache_dir", "resume", "seed", "source_domain", "target_domain", "hardware",
                "eval_batch_size", "log_interval", "track_targets", "debug", "experiment", "model.name",
                "model.peft", "model.name_or_path", "model.init_from")


@dataclass
class Run:
    """One training run folder and what it wrote."""

    path: Path
    config: dict
    records: list[dict]  # metrics.jsonl, one per evaluation
    result: dict | None  # metrics.json of a finished run
    error: str | None  # the failed marker's text

    @property
    def status(self) -> str:
        return "failed" if self.error is not None else "finished" if self.result is not None else "unfinished"

    @property
    def strategy(self) -> str:
        """The row a run belongs to: strategy name, with its PEFT method when there is one."""
        described = self.result or (self.records[-1] if self.records else {})
        name = described.get("strategy") or _strategy_name(self.config)
        peft = (self.config.get("model") or {}).get("peft") or "none"
        return name if peft == "none" else f"{name}+{peft}"

    @property
    def model(self) -> str:
        return (self.config.get("model") or {}).get("name", "?")

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
            elif not any(prefix == f"{key}." or prefix.startswith(f"{key}.") for key in NOT_SETTINGS):
                flat[prefix[:-1]] = tuple(map(str, node)) if isinstance(node, list) else node
        walk(self.config, "")
        # target_domain is left out above, but few-shot runs (target_domain.shots) are different experiments.
        flat[f"target_domain.{SHOTS_KEY}"] = int((self.config.get("target_domain") or {}).get(SHOTS_KEY) or 0)
        return flat


def _strategy_name(config: dict) -> str:
    target = (config.get("strategy") or {}).get("_target_", "?")
    return target.rsplit(".", 2)[-2] if "." in target else target


def _domain_names(node: object) -> list[str]:
    """Domain names of a composed ``source_domain``/``target_domain`` node: {name: settings} per domain."""
    return [str(name) for name in node] if node else []


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def read_run(folder: Path) -> Run:
    config = OmegaConf.to_container(OmegaConf.load(folder / "config.yaml"), resolve=False)
    records = MetricsLog(folder / "metrics.jsonl", write=False).records
    result = _read_json(folder / "metrics.json") if (folder / DONE).exists() else None
    error = (folder / FAILED).read_text(encoding="utf-8").strip() if (folder / FAILED).exists() else None
    return Run(folder, config, records, result, error)


def find_runs(folder: str | Path) -> list[Run]:
    """Every training run folder at or below ``folder``, in path order."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise XdtError(f"{folder} is not a folder")
    found = sorted(p.parent for p in folder.rglob("config.yaml") if not p.parent.name.startswith("."))
    # xdt eval writes metrics.json but no config.yaml of its own, and Hydra's .hydra/config.yaml is skipped above.
    runs = [read_run(p) for p in found if (p / "metrics.jsonl").exists() or (p / "model").exists()
            or (p / FAILED).exists()]
    runs = [r for r in runs if "strategy" in r.config]  # xdt pretrain runs (a pipeline's first stage) are not rows
    if not runs:
        raise XdtError(f"no xdt training runs below {folder} (a run folder holds config.yaml and metrics.jsonl)")
    return runs
