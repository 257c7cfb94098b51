"""The task plug-in contract: what one kind of model learns and how it is scored.

The engine (:mod:`xdt.engine`) owns everything that is the same for every task: the accelerator, the optimizer
and its schedule, the step, gradient accumulation, the hooks, checkpoints and resume, the evaluation cadence,
the logs and the run's files. A strategy (:mod:`xdt.strategies`) owns the training loss. A task owns the rest,
in four methods (after DomainBed's two-method ``Algorithm`` and torchtune's recipe protocol):

``setup(cfg, run_dir, accelerator) -> Setup``
    load the data, build the task's model inside the configured strategy, and hand the engine its training
    loaders, the sets it scores at every evaluation, the step budget and the fields stamped on every record;
``evaluate(strategy, loaders, accelerator) -> {set name: {metric: value}}``
    score every evaluation set (``role/domain/split``, for example ``target/fdu_MR/test``);
``scores(results) -> (selection, monitor)``
    the value that picks the reported checkpoint and the source-validation value early stopping watches,
    both higher-is-better;
``finish(strategy, chosen_step, records, run_dir, accelerator) -> dict``
    the final metrics of the chosen checkpoint, and any file only the task knows (``pretrained/``).

A task's model gives the strategy what it needs: ``loss(batch)`` for every task (all ``erm`` reads), and
``features``/``classify`` for tasks whose strategies align features (DANN, CORAL, ...). A strategy names the
tasks it serves (:attr:`xdt.strategies.base.Strategy.tasks`), and a run that pairs it with another task is
refused when it is composed.

To add a task: ``xdt/tasks/<name>.py`` with a :class:`Task` subclass and ``configs/task/<name>.yaml`` whose
``_target_`` names it (its other keys are the constructor's settings). Nothing else changes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

from accelerate import Accelerator
from datasets import Dataset
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader

from xdt.data.batching import Collator

log = logging.getLogger(__name__)

Scores = dict[str, dict[str, float | None]]  # set name (role/domain/split) -> metric -> value


@dataclass
class Setup:
    """What a task hands the engine once its data and model are built."""

    strategy: nn.Module  # the task's model inside the configured strategy: ``strategy(source, target, progress)``
    source: DataLoader  # training batches (labeled examples, or text for a language model)
    target: DataLoader | None  # unlabeled target batches, for strategies that train on them
    evaluation: dict[str, Dataset]  # the sets scored at every evaluation
    collator: Collator  # pads evaluation batches like training ones
    max_steps: int
    describe: dict  # model, seed, domains, ...: stamped on every metrics record
    source_sampler: object = None  # set by the engine: the batch orders it moves from epoch to epoch
    target_sampler: object = None


class Task:
    """Base class of the tasks; see the module docstring for the contract."""

    #: The task's name, as in ``configs/task/<name>.yaml`` and in ``Strategy.tasks``.
    name: str = "task"
    #: The run's log file (``xdt pretrain`` runs have always written ``pretrain.log``).
    log_file: str = "train.log"
    #: What the engine counts for throughput (``train_<unit>_per_s`` in metrics.json).
    unit: str = "samples"
    #: Score the model once before training (a language model's starting perplexity is the reference).
    evaluate_at_start: bool = False

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        """Refuse settings this task cannot honour, before anything is loaded (none by default)."""

    def setup(self, cfg: DictConfig, run_dir: Path, accelerator: Accelerator) -> Setup:
        raise NotImplementedError

    def evaluate(self, strategy: nn.Module, loaders: dict[str, DataLoader], accelerator: Accelerator) -> Scores:
        raise NotImplementedError

    def scores(self, results: Scores) -> tuple[float, float]:
        raise NotImplementedError

    def finish(self, strategy: nn.Module, chosen_step: int, records: list[dict], run_dir: Path,
               accelerator: Accelerator) -> dict:
        raise NotImplementedError

    def count(self, batch: dict) -> int:
        """How many ``unit`` a training batch holds (this process's share)."""
        return len(batch["input_ids"])

    def selection_record(self, value: float | None) -> dict:
        """How a selection value is reported (in records and metrics.json): the criterion, its metric, the value."""
        raise NotImplementedError

    def evaluation_line(self, results: Scores) -> str:
        """What the log says after an evaluation."""
        selection, monitor = self.scores(results)
        return f"source validation {monitor:.4f}"

    def print_summary(self, result: dict, run_dir: Path) -> None:
        """The table printed when the run ends."""


def training_steps(cfg: DictConfig, num_train_rows: int) -> int:
    """The step budget: ``max_steps``, or ``epochs`` passes over ``num_train_rows`` in batches of ``batch_size``
    (the global batch: with N processes each step splits one batch N ways)."""
    if cfg.max_steps:
        return int(cfg.max_steps)
    batches_per_epoch = math.ceil(num_train_rows / int(cfg.batch_size))
    return max(1, math.ceil(float(cfg.epochs) * batches_per_epoch))


def log_unscored_sets(every: list[str], scored: list[str]) -> None:
    """Say which of a run's evaluation sets training does not score (``track_targets=false``): nothing reads them
    before the run ends, when they are scored once, on the chosen checkpoint."""
    unscored = [name for name in every if name not in scored]
    if unscored:
        log.info("scored at every evaluation: %s; not scored during training (track_targets=false): %s, scored once "
                 "on the chosen checkpoint at the end", ", ".join(scored), ", ".join(unscored))
