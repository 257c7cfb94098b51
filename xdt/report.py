"""``xdt report <folder>``: the tables and plots of every run below a folder.

Rows are strategies (with their PEFT method, and with the settings that differ between runs of the
same strategy, such as ``optimizer.lr=0.0005``), columns are source -> target pairs and their average,
cells are the target test metric's mean ± standard deviation over seeds. Every number comes from the
evaluation that one model-selection criterion picks (``xdt.selection``), named in the caption. Only
finished runs are averaged; failed, unfinished and damaged ones are listed on their own.

**The metric and the selection follow the task** (``TASKS``). Sequence-classification runs: accuracy (or
``--metric`` f1_macro, precision_macro, recall_macro, roc_auc) at the checkpoint of best source validation
accuracy. Token-classification (NER) runs: entity-level F1 (or ``--metric`` precision, recall, token_accuracy) at
the checkpoint each run selected itself (``--selection own``): best F1 on the validation split of the domains its
protocol trains on, source_val for ``task.train_on=source`` and target_val for the protocols that train on target
labels (target, both, source_then_target), for which the target validation split is their own, not an oracle.
``--selection target_oracle`` (or ``target_val``) is reported as target_val for those runs and flagged as an
oracle for the others; ``entropy``, ``im``, ``dev`` and ``reverse_val`` read class distributions and features
that NER runs do not record, and are refused for them, as is a metric the task does not score. The protocol is
a different experiment: where ``task.train_on`` varies among a table's runs, every row's label says it
(``erm task.train_on=both``), and a row's ERM reference has the same protocol.

**The selection gap** (sequence classification): a table of the target score each criterion reaches when it
chooses a strategy's settings and checkpoint together, next to the oracle's (:mod:`xdt.selection_gap`).

**Int8 evaluations** saved inside run folders (``xdt eval quantize=dynamic_int8 hydra.run.dir=<run>/int8``) get a
table of their own: fp32 and int8 scores, the change, the speed-up and the sizes (:mod:`xdt.quantized_evaluations`).

**A folder that mixes tasks gets one table per task**, each with its task's metric and selection, under a
heading per task in report.md and one after the other on the terminal; report.csv has a ``task`` column. A
``--metric`` or ``--selection`` must fit every task in the folder (otherwise one message says which runs it does
not fit: report them from a folder of their own). Token-classification figures carry ``ner_`` in their names,
so no two tables' figures share a name. A run whose config could not be read is listed with the first table.

A column is a domain's name, or ``name[what differs]`` where runs below the folder use one domain name for
different data (``source_domain=file`` on a.jsonl and on b.jsonl), so different data is never averaged together.

Run folders are data: nothing named in a config.yaml is imported or built, no interpolation is resolved (see
``xdt.runs``), and nothing outside the folder is read or written: a linked ``report/`` folder, or a link where a
report file goes, stops the report before it writes anything.

Writes into ``<folder>/report/``: ``report.md``, ``report.csv`` (one line per strategy and pair),
``learning_curves_<pair>.png`` and ``transfer_matrix_<strategy>.png``; prints the table with rich.

**Its files are published as they are** (docs/results/<benchmark>/), so: a cell of one run shows its score alone
(``0.712 (1)``: one run has no spread, and ``± 0.000`` would claim one), and report.csv leaves its ``target_std``
empty; report.md is GitHub-flavoured Markdown (every table with its alignment row, every value from a run folder
escaped, the figures embedded by relative links under a caption each) and opens with its provenance: the command
that made it, the date (UTC), the machine, xdt's version and the commit of the checkout it runs from (``git
rev-parse HEAD``, or "unknown"), the runs' hardware and the overrides Hydra saved for them (``multirun.yaml``,
``.hydra/overrides.yaml``, read as plain YAML). Run folders record no xdt version or commit, and the header says so
rather than guess one.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import re
import shlex
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from rich.table import Table as RichTable
from rich.text import Text

import xdt
from xdt import plots, quantized_evaluations, selection, selection_gap
from xdt.atomic import atomic_write_text
from xdt.console import console
from xdt.errors import XdtError
from xdt.metrics import ENTITY_METRIC_NAMES, METRIC_NAMES
from xdt.provenance import git_commit, machine
from xdt.runs import CONFIG, DEFAULT_TASK, ROLES, Run, find_runs, launch_overrides, varying_keys

ARROW = "→"
OWN = "own"  # --selection own: the checkpoint each run selected itself (its metrics.json)
REPORT_CRITERIA = (OWN, *selection.CRITERIA, *selection.RECORDED)
# Settings that make two runs different experiments whatever their strategies: where one varies among a table's
# runs, every row's label shows it, and a row is compared only with an ERM row that has the same value.
PROTOCOL_KEYS = ("task.train_on",)


@dataclass(frozen=True)
class TaskView:
    """How the runs of one task are reported: the metrics its evaluations hold (the first is the default), the
    criteria that can choose among its evaluations (the first is the default), what its metric counts, and a
    tag in its figures' names (so a folder of two tasks never writes two figures to one name)."""

    title: str
    noun: str  # as in "<noun> runs"
    metrics: tuple[str, ...]
    criteria: tuple[str, ...]
    note: str = ""
    figure_tag: str = ""


TASKS = {
    "sequence_classification": TaskView("Sequence classification", "sequence-classification", METRIC_NAMES,
                                        ("source_val", *(c for c in REPORT_CRITERIA if c != "source_val"))),
    # The run's own selection by default: it depends on the protocol (source or target validation split), so one
    # criterion applied to every run would either ignore a legitimate target dev split or make zero-shot an oracle.
    "token_classification": TaskView("Token classification (NER)", "token-classification (NER)", ENTITY_METRIC_NAMES,
                                     (OWN, "source_val", "target_val", "target_oracle", "last"),
                                     note=" (entity level: exact span and type)", figure_tag="ner_"),
}


@dataclass
class Cell:
    """The runs of one (row, pair): their scores at the selected evaluation."""

    target: list[float] = field(default_factory=list)
    source: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    selected_steps: list[int] = field(default_factory=list)
    chosen_by: list[tuple[str, str]] = field(default_factory=list)  # per run: (criterion as applied, its metric)

    @property
    def mean(self) -> float:
        return statistics.mean(self.target)

    @property
    def std(self) -> float | None:
        """Standard deviation over the runs; None for one run, which has no spread (not a spread of 0)."""
        return statistics.stdev(self.target) if len(self.target) > 1 else None

    def text(self) -> str:
        """``mean ± std (n)``, or ``mean (1)`` for a single run."""
        spread = f" ± {self.std:.3f}" if self.std is not None else ""
        return f"{self.mean:.3f}{spread} ({len(self.target)})"


@dataclass
class Report:
    criterion: str
    metric: str
    rows: list[str]
    pairs: list[str]
    cells: dict[tuple[str, str], Cell]
    erm_rows: dict[str, str]  # row -> the ERM row it is compared with (same model)
    left_out: list[tuple[Run, str]]  # runs not averaged in, and why
    runs: dict[str, list[Run]]  # row -> finished runs
    domain_labels: dict[tuple[Path, str, str], str] = field(default_factory=dict)  # (run, role, name) -> column
    pair_domains: dict[str, tuple[list[str], str]] = field(default_factory=dict)  # pair -> (source labels, target)
    members: dict[tuple[str, str], list[tuple[Run, str]]] = field(default_factory=dict)  # (row, pair) -> runs, target
    task: str = DEFAULT_TASK

    @property
    def view(self) -> TaskView:
        return TASKS[self.task]

    def label(self, run: Run, role: str, name: str) -> str:
        """The column name of one of a run's domains (see :func:`domain_labels`)."""
        return self.domain_labels.get((run.path, role, name), name)

    def pair_of(self, run: Run, target: str) -> str:
        """The pair a run's scores on ``target`` belong to; remembers its parts, so nothing parses pair names."""
        sources = [self.label(run, "source_domain", s) for s in run.sources]
        target_label = self.label(run, "target_domain", target)
        pair = f"{'+'.join(sources)}{ARROW}{target_label}"
        self.pair_domains.setdefault(pair, (sources, target_label))
        return pair

    def runs_on(self, row: str, pair: str) -> tuple[list[Run], str | None]:
        """The row's runs averaged into ``pair``, and the target's domain name in their scores."""
        members = self.members.get((row, pair), [])
        return [run for run, _ in members], members[0][1] if members else None

    def average(self, row: str) -> float | None:
        """Mean over pairs of the row's cell means; None unless the row has every pair."""
        cells = [self.cells.get((row, pair)) for pair in self.pairs]
        return statistics.mean(c.mean for c in cells) if cells and all(cells) else None

    def gain(self, row: str) -> float | None:
        erm = self.erm_rows.get(row)
        mine, reference = self.average(row), self.average(erm) if erm else None
        return None if mine is None or reference is None else mine - reference

    def pair_step_ratio(self, row: str, pair: str) -> float | None:
        """The row's median seconds per step on ``pair`` relative to the ERM row's there.

        Medians over seeds, because a run that shared the machine with another job is slow by a large factor,
        and one such run should not move a row's cost."""
        mine, theirs = self.cells.get((row, pair)), self.cells.get((self.erm_rows.get(row), pair))
        if mine and theirs and mine.step_seconds and statistics.median(theirs.step_seconds) > 0:  # 0: hand-made
            return statistics.median(mine.step_seconds) / statistics.median(theirs.step_seconds)
        return None

    def step_ratio(self, row: str) -> float | None:
        """Mean over pairs of :meth:`pair_step_ratio`."""
        ratios = [r for pair in self.pairs if (r := self.pair_step_ratio(row, pair)) is not None]
        return statistics.mean(ratios) if ratios else None

    def paired_differences(self, row: str, pair: str) -> list[float]:
        """The row's target score minus its ERM row's on ``pair``, one per seed that both ran exactly once.

        Runs that share a seed share what the seed decides (initial weights, batch order), so these
        differences carry less noise than the difference of the two means."""
        erm = self.erm_rows.get(row)
        mine, reference = self.cells.get((row, pair)), self.cells.get((erm, pair)) if erm else None
        if not mine or not reference or erm == row:
            return []

        def by_seed(cell: Cell) -> dict[int, float]:
            return {seed: value for seed, value in zip(cell.seeds, cell.target) if cell.seeds.count(seed) == 1}

        ours, theirs = by_seed(mine), by_seed(reference)
        return [ours[seed] - theirs[seed] for seed in sorted(ours.keys() & theirs.keys())]

    def selections(self) -> dict[tuple[str, str], list[str]]:
        """Each (criterion as applied, metric) that chose checkpoints in the table, and the rows it chose in."""
        chosen: dict[tuple[str, str], list[str]] = {}
        for row in self.rows:
            for pair in self.pairs:
                cell = self.cells.get((row, pair))
                for how in cell.chosen_by if cell else []:
                    rows = chosen.setdefault(how, [])
                    rows += [] if row in rows else [row]
        return chosen

    def chosen_by(self) -> str:
        """What chose the checkpoints: one criterion, or (when runs chose differently) each with its rows."""
        chosen = self.selections()
        if not chosen and self.criterion == OWN:
            return "each run's own selection (its metrics.json)"
        if not chosen:
            return selection.describe(self.criterion, self.metric)
        if len(chosen) == 1:
            text = selection.describe(*next(iter(chosen)))
        else:
            text = "; ".join(f"{selection.describe(*how)} (rows {', '.join(rows)})" for how, rows in chosen.items())
        return f"each run's own selection (its metrics.json): {text}" if self.criterion == OWN else text

    def caption(self) -> str:
        text = (f"Target test {self.metric}{self.view.note} of the checkpoint chosen by {self.chosen_by()}; "
                f"mean ± standard deviation over seeds, (n) = number of runs (a single run shows its score alone: "
                f"it has no spread). Average = mean over the pairs; "
                f"gain = average minus the average of the ERM row it is compared with (the row marked reference: same "
                f"model, and the row's own value of any setting that ERM's rows differ in).")
        if "target_oracle" in ({criterion for criterion, _ in self.selections()} or {self.criterion}):
            text += (" ORACLE SELECTION: target labels chose these checkpoints, so the numbers are optimistic upper "
                     "bounds, not estimates of transfer.")
        return text


@dataclass
class Selected:
    """A run's scores of every evaluation set at the evaluation a criterion picked, and how it was picked."""

    scores: dict[str, dict]
    step: int
    criterion: str  # as applied to this run (see applied_criterion)
    metric: str  # the metric that chose


def applied_criterion(run: Run, criterion: str) -> str:
    """``criterion`` as it applies to ``run``: the best target validation score is the run's own validation
    (target_val) where its protocol trains on target labels, and an oracle (target_oracle) where it does not."""
    if criterion in ("target_oracle", "target_val"):
        return "target_val" if run.trains_on_target_labels else "target_oracle"
    return criterion


def own_selection(run: Run, metric: str) -> Selected:
    """The checkpoint a finished run selected itself, as its metrics.json records it."""
    own = run.result.get("selection", {})
    criterion, chosen_on = own.get("criterion"), own.get("metric")
    if not isinstance(criterion, str) or criterion not in (*selection.CRITERIA, *selection.RECORDED):
        raise XdtError(f"metrics.json records no selection criterion xdt knows (got {criterion!r:.40}): report it "
                       f"with --selection source_val or last")
    return Selected(run.result["metrics"], run.result["selected_step"], criterion,
                    chosen_on if isinstance(chosen_on, str) else metric)


def selected_scores(run: Run, criterion: str, metric: str) -> Selected:
    """Scores of every evaluation set at the evaluation ``criterion`` picks, its step and how it was picked.

    ``own`` reads what the run selected itself; a finished run that used the criterion itself (on ``metric``)
    reports its final metrics.json; otherwise the criterion is applied to its metrics.jsonl records.
    """
    if criterion == OWN:
        return own_selection(run, metric)
    applied = applied_criterion(run, criterion)
    own = run.result.get("selection", {}) if run.result else {}
    if own.get("criterion") == applied and own.get("metric", metric) == metric:
        return Selected(run.result["metrics"], run.result["selected_step"], applied, metric)
    record = selection.select(run.records, applied, metric)
    return Selected(record["eval"], record["step"], applied, metric)


def hydra_value(value) -> str:
    """A setting as one would type it on the command line (null, not Python's None)."""
    return "null" if value is None else str(value)


def row_labels(runs: list[Run]) -> dict[Path, str]:
    """The row of each run: [model/]strategy[+peft][ key=value ...] for the settings that vary in its group, and
    the protocol (``PROTOCOL_KEYS``) wherever it varies among all these runs."""
    several_models = len({r.model for r in runs}) > 1
    protocols = [key for key in varying_keys([run.settings() for run in runs]) if key in PROTOCOL_KEYS]
    groups: dict[tuple[str, str], list[Run]] = defaultdict(list)
    for run in runs:
        groups[(run.model, run.strategy)].append(run)
    labels = {}
    for (model, strategy), members in groups.items():
        settings = [m.settings() for m in members]
        varying = label_keys(settings, protocols)
        for run, values in zip(members, settings):
            label = f"{model}/{strategy}" if several_models else strategy
            suffix = " ".join(f"{k}={hydra_value(values.get(k))}" for k in varying)
            labels[run.path] = f"{label} {suffix}" if suffix else label
    return labels


def label_keys(settings: list[dict[str, object]], protocols: list[str]) -> list[str]:
    """The keys a group's row labels show: the protocol keys that vary in the table, and the settings that vary
    in the group, less those that vary only alongside the protocol: they are the protocol's own (its preset's
    ``max_steps``, ``task.source_stage`` read by source_then_target alone) and say nothing the protocol does not;
    the report's header lists every run's overrides."""
    varying = varying_keys(settings)
    if not protocols:
        return varying
    by_protocol: dict[tuple[str, ...], list[dict[str, object]]] = defaultdict(list)
    for one in settings:
        by_protocol[tuple(repr(one.get(key)) for key in protocols)].append(one)
    within = {key for members in by_protocol.values() for key in varying_keys(members)}
    return sorted({*protocols, *(key for key in varying if key in within)})


def not_averaged(run: Run) -> str | None:
    """Why a run that has not finished is left out of the averages; None for a finished run."""
    if run.status == "damaged":
        return run.damage
    if run.status == "failed":
        return run.error or "failed"
    if run.status == "unfinished":
        return (f"unfinished: {len(run.records)} evaluations, last at step "
                f"{run.records[-1]['step'] if run.records else 0} of {run.config.get('max_steps')}")
    return None


def no_target_reason(run: Run, criterion: str, metric: str) -> str:
    """A finished run with no target domain has no pair to be averaged into: say so, with its source score."""
    why = f"no target domain (trained with target_domain=[]): not part of any source{ARROW}target pair"
    try:
        chosen = selected_scores(run, criterion, metric)
    except XdtError:
        return why
    values = [chosen.scores.get(f"source/{s}/test", {}).get(metric) for s in run.sources]
    if values and None not in values:
        why += f"; source test {metric} {statistics.mean(values):.3f} at step {chosen.step}"
    return why


def add_run(report: Report, run: Run, row: str) -> None:
    """Put a finished run's scores into its row's cells; what cannot be used goes to ``report.left_out``."""
    if not run.targets:
        report.left_out.append((run, no_target_reason(run, report.criterion, report.metric)))
        return
    try:
        chosen = selected_scores(run, report.criterion, report.metric)
    except XdtError as error:
        report.left_out.append((run, str(error)))
        return
    scores, step = chosen.scores, chosen.step
    sources = [scores.get(f"source/{s}/test", {}).get(report.metric) for s in run.sources]
    for target in run.targets:
        value = scores.get(f"target/{target}/test", {}).get(report.metric)
        if value is None:
            report.left_out.append((run, f"no target/{target}/test scores at step {step} (run it with "
                                         f"track_targets=true)"))
            continue
        pair = report.pair_of(run, target)
        cell = report.cells.setdefault((row, pair), Cell())
        cell.target.append(value)
        cell.seeds.append(run.seed)
        cell.selected_steps.append(step)
        cell.chosen_by.append((chosen.criterion, chosen.metric))
        if None not in sources:
            cell.source.append(statistics.mean(sources))
        # A run fine-tuned after its own pretraining stage (DAPT/TAPT) costs both.
        cell.wall.append(run.result["wall_time_s"] + (run.result.get("pretrain_wall_time_s") or 0.0))
        cell.step_seconds.append(run.result["train_time_s"] / max(run.result["steps"], 1))
        report.members.setdefault((row, pair), []).append((run, target))
        if not any(r is run for r in report.runs.setdefault(row, [])):
            report.runs[row].append(run)


def build_report(runs: list[Run], criterion: str = "source_val", metric: str = "accuracy",
                 task: str = DEFAULT_TASK) -> Report:
    """The table of runs of one task (see :func:`build_reports` for a folder of several)."""
    if criterion not in REPORT_CRITERIA:
        raise XdtError(f"selection={criterion!r} is not a model-selection criterion; choose one of "
                       f"{', '.join(REPORT_CRITERIA)}")
    left_out = [(run, why) for run in runs if (why := not_averaged(run)) is not None]
    finished = [r for r in runs if r.status == "finished"]
    report = Report(criterion, metric, [], [], {}, {}, left_out, {}, domain_labels(finished), task=task)
    labels = row_labels([run for run in finished if run.targets])  # a run with no target is not in a row
    for run in finished:
        add_run(report, run, labels.get(run.path, ""))
    report.rows = sorted(report.runs, key=lambda r: (r.split(" ")[0].split("/")[-1] != "erm", natural_order(r)))
    report.pairs = sorted(report.pair_domains)
    report.erm_rows = erm_references(report.runs)
    return report


def by_task(runs: list[Run]) -> tuple[dict[str, list[Run]], list[tuple[Run, str]]]:
    """The runs of each task present (in ``TASKS`` order), and the runs of tasks xdt report has no table for.

    A run whose config could not be read has no known task: it joins the first table's runs (to be listed there
    as not averaged in), or the default task's when no run has a readable config."""
    groups: dict[str, list[Run]] = {task: [] for task in TASKS}
    unknown_task, unreadable = [], []
    for run in runs:
        if not run.config:
            unreadable.append(run)
        elif run.task in groups:
            groups[run.task].append(run)
        else:
            unknown_task.append((run, f"task {run.task}: xdt report makes tables of {' and '.join(TASKS)} runs"))
    groups = {task: members for task, members in groups.items() if members} or {DEFAULT_TASK: []}
    first = next(iter(groups))
    groups[first] = sorted(groups[first] + unreadable, key=lambda run: run.path)
    return groups, unknown_task


def check_choices(tasks: list[str], criterion: str | None, metric: str | None) -> None:
    """Refuse a --metric or --selection that does not fit the runs of one of ``tasks``, with one message."""
    mixed = (" (the folder holds runs of several tasks: without --metric and --selection each table takes its "
             "task's own; or report these runs from a folder of their own)") if len(tasks) > 1 else ""
    for task in tasks:
        view = TASKS[task]
        if metric is not None and metric not in view.metrics:
            raise XdtError(f"--metric {metric}: {view.noun} runs are scored with {', '.join(view.metrics)} "
                           f"(default {view.metrics[0]}), not {metric}{mixed}")
        if criterion is not None and criterion not in view.criteria:
            why = (" reads label-free scores (class distributions, features) that only sequence-classification "
                   "runs record;"
                   if criterion in selection.LABEL_FREE else " does not apply to them;")
            raise XdtError(f"--selection {criterion}{why} {view.noun} runs select with "
                           f"{', '.join(view.criteria)} (default {view.criteria[0]}){mixed}")


def build_reports(runs: list[Run], criterion: str | None = None, metric: str | None = None) -> list[Report]:
    """One report per task among ``runs`` (see the module docstring), each with its task's default metric and
    criterion unless ``metric``/``criterion`` is given; a choice that does not fit a task present is refused."""
    groups, unknown_task = by_task(runs)
    check_choices(list(groups), criterion, metric)
    reports = [build_report(members, criterion or TASKS[task].criteria[0], metric or TASKS[task].metrics[0], task)
               for task, members in groups.items()]
    reports[0].left_out += unknown_task
    return reports


def domain_labels(runs: list[Run]) -> dict[tuple[Path, str, str], str]:
    """The column name of each (run, role, domain name): the name, or ``name[what differs]`` where these runs
    use one name for different data (another file, filter or split), so it is never averaged together.

    Data is compared by :meth:`Run.domain_settings` (where the data folder is does not count), and it is the
    same domain whether it is a run's source or its target."""
    uses = [(run, role, name, run.domain_settings(role, name)) for run in runs for role in ROLES
            for name in (run.sources if role == "source_domain" else run.targets)]
    variants: dict[str, dict[tuple, dict]] = defaultdict(dict)  # name -> {identity: settings}
    for _, _, name, settings in uses:
        variants[name].setdefault(_identity(settings), settings)
    labels = {}
    for run, role, name, settings in uses:
        kinds = list(variants[name].values())
        labels[(run.path, role, name)] = name if len(kinds) == 1 else f"{name}[{_difference(settings, kinds)}]"
    return labels


def _identity(settings: dict[str, object]) -> tuple:
    """Settings as a comparable value; a key set to null is the same as a key left out (older configs)."""
    return tuple(sorted((key, repr(value)) for key, value in settings.items() if value is not None))


def _difference(settings: dict[str, object], kinds: list[dict[str, object]]) -> str:
    """What sets these settings apart from the other kinds: a file name as it is, other values as key=value."""
    shown = []
    for key in varying_keys(kinds):
        value = settings.get(key)
        is_file = isinstance(value, str) and bool(PurePosixPath(value).suffix)
        shown.append(value if is_file else f"{key}={hydra_value(value)}")
    return ",".join(shown).replace(ARROW, "->")


def erm_references(by_row: dict[str, list[Run]]) -> dict[str, str]:
    """The ERM row each row is compared with: the ERM row of the same model (full fine-tuning).

    Where that model has several ERM rows (they differ in a setting such as ``average_from``), a row is
    compared with the one that shares its value of every such setting; a row that fits none or several
    gets no reference, since the reference would be a guess. A language-model stage (``pretrain.*``, DAPT or
    TAPT) and labeled target examples (``target_domain.shots``) are remedies like a strategy (``REMEDIES``):
    where ERM rows without them exist, every row is compared with those, so a DAPT or k-shot row shows what
    it gained over plain fine-tuning.
    """
    settings = {row: [run.settings() for run in runs] for row, runs in by_row.items()}
    erm_rows: dict[str, list[str]] = defaultdict(list)  # model -> its ERM rows
    for row, runs in by_row.items():
        if runs[0].strategy == "erm":
            erm_rows[runs[0].model].append(row)
    for model, rows in erm_rows.items():
        plain = [r for r in rows if not any(_is_remedy(k) and not _remedy_off(k, v)
                                            for one in settings[r] for k, v in one.items())]
        erm_rows[model] = plain or rows
    protocols = [key for key in varying_keys([one for ones in settings.values() for one in ones])
                 if key in PROTOCOL_KEYS]  # compared only within one protocol, even where ERM ran in one only
    varying = {model: sorted({*(k for k in varying_keys([one for r in rows for one in settings[r]])
                                if not _is_remedy(k)), *protocols})
               for model, rows in erm_rows.items()}
    references = {}
    for row, runs in by_row.items():
        candidates, keys = erm_rows.get(runs[0].model, []), varying.get(runs[0].model, [])
        mine = values_of(settings[row], keys)
        fitting = [r for r in candidates if len(mine) == 1 and values_of(settings[r], keys) == mine]
        if len(fitting) == 1:
            references[row] = fitting[0]
    return references


# Settings that are a remedy compared with plain fine-tuning, as a strategy is, and their value when off: a
# pretraining stage (DAPT/TAPT), and labeled target examples (few-shot).
REMEDIES = {"pretrain.": None, "target_domain.shots": 0}


def _is_remedy(key: str) -> bool:
    return any(key.startswith(prefix) for prefix in REMEDIES)


def _remedy_off(key: str, value: object) -> bool:
    return any(key.startswith(prefix) and value == off for prefix, off in REMEDIES.items())


NUMBER = re.compile(r"(\d+(?:\.\d+)?(?:e[-+]?\d+)?)")


def natural_order(text: str) -> tuple:
    """Sort key that puts numbers in numeric order: shots=8 before shots=32 before shots=128, weight=0.03 before
    weight=0.1, lr=5e-05 before lr=0.0001. Parts alternate text, number, text, ..., so keys always compare."""
    return tuple(float(part) if i % 2 else part for i, part in enumerate(NUMBER.split(text)))


def values_of(settings: list[dict[str, object]], keys: list[str]) -> set[tuple[str, ...]]:
    """The distinct combinations of ``keys``' values among runs' settings (one element when they agree)."""
    return {tuple(repr(one.get(k)) for k in keys) for one in settings}


def _median_of(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, sign: bool = False, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def main_table(report: Report) -> list[list[str]]:
    lines = [["strategy", *report.pairs, "average", "gain over ERM"]]
    for row in report.rows:
        cells = [report.cells.get((row, p)) for p in report.pairs]
        lines.append([row, *(c.text() if c else "-" for c in cells),
                      _fmt(report.average(row)),
                      "reference" if report.erm_rows.get(row) == row else _fmt(report.gain(row), sign=True)])
    return lines


def cost_table(report: Report) -> list[list[str]]:
    """Source scores and costs per row. With several pairs, seconds per step are given per pair, each with its
    ratio to ERM's on that pair: a strategy's cost follows the pair's lengths, and one median over pairs of
    different lengths would say little."""
    # Costs are medians over the row's runs: on a shared machine one contended run is slow by a large factor.
    per_pair = len(report.pairs) > 1
    steps = [f"{p} s/step" for p in report.pairs] if per_pair else ["median s/step"]
    lines = [["strategy", *(f"{p} source" for p in report.pairs), "median wall s", *steps, "s/step vs ERM"]]
    for row in report.rows:
        cells = [report.cells.get((row, p)) for p in report.pairs]
        present = [c for c in cells if c]
        if per_pair:
            seconds = [_step_cell(report, row, pair, cell) for pair, cell in zip(report.pairs, cells)]
        else:
            seconds = [_fmt(_median_of([s for c in present for s in c.step_seconds]), digits=2)]
        lines.append([row, *(_fmt(statistics.mean(c.source)) if c and c.source else "-" for c in cells),
                      _fmt(_median_of([w for c in present for w in c.wall]), digits=0), *seconds,
                      f"{report.step_ratio(row):.2f}x" if report.step_ratio(row) is not None else "-"])
    return lines


def _step_cell(report: Report, row: str, pair: str, cell: Cell | None) -> str:
    """The row's median seconds per step on ``pair``, with its ratio to ERM's there: ``0.89 (1.60x)``."""
    if not cell or not cell.step_seconds:
        return "-"
    seconds = _fmt(statistics.median(cell.step_seconds), digits=2)
    ratio = report.pair_step_ratio(row, pair)
    return seconds if ratio is None or report.erm_rows.get(row) == row else f"{seconds} ({ratio:.2f}x)"


# Two-sided 95% quantiles of Student's t for 1 to 30 degrees of freedom; beyond 30, 1.96 + 2.4/df is within 0.003.
T_975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


MIN_SEEDS_FOR_INTERVAL = 3


def mean_interval(values: list[float]) -> tuple[float, float] | None:
    """95% confidence interval of the mean of ``values`` (Student's t); None for fewer than three values.

    With two values the interval rests on one degree of freedom: ±9 of their standard deviations wide, or
    of no width at all when the two happen to be equal (common for accuracies on a few hundred examples)."""
    if len(values) < MIN_SEEDS_FOR_INTERVAL:
        return None
    df = len(values) - 1
    half = (T_975[df - 1] if df <= len(T_975) else 1.96 + 2.4 / df) * statistics.stdev(values) / math.sqrt(len(values))
    mean = statistics.mean(values)
    return mean - half, mean + half


def paired_cell(differences: list[float]) -> str:
    """Mean difference, its 95% interval, and how many seeds came out above 0."""
    if not differences:
        return "-"
    interval = mean_interval(differences)
    spread = f"95% CI {interval[0]:+.3f} to {interval[1]:+.3f}; " if interval else "too few seeds for an interval; "
    return f"{statistics.mean(differences):+.3f} ({spread}{sum(x > 0 for x in differences)}/{len(differences)} above)"


def paired_table(report: Report) -> list[list[str]]:
    """Per strategy and pair: the mean seed-by-seed difference from ERM, its 95% interval, how many are above 0."""
    lines = [["strategy", *report.pairs, "average"]]
    for row in report.rows:
        if report.erm_rows.get(row, row) == row:  # ERM itself, or no single ERM row to compare with
            continue
        differences = [report.paired_differences(row, pair) for pair in report.pairs]
        cells = [paired_cell(d) for d in differences]
        average = statistics.mean(statistics.mean(d) for d in differences) if all(differences) else None
        lines.append([row, *cells, _fmt(average, sign=True)])
    return lines


# Characters that GitHub-flavoured Markdown reads as markup wherever they stand (a ``|`` ends a table cell, ``$``
# starts math on GitHub, ``<`` HTML, ``&`` an entity), and ``_`` where it is not between two letters or digits.
MARKUP = re.compile(r"[\\`*\[\]<|$~&]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def md(text: str) -> str:
    """``text`` (a setting's value, a file name, an error) as literal Markdown text on one line: its markup
    characters escaped, its line breaks made spaces."""
    return MARKUP.sub(lambda match: "\\" + match.group(), " ".join(str(text).splitlines()))


def md_code(text: str) -> str:
    """``text`` as an inline code span, fenced by more backticks than it holds in a row."""
    text = " ".join(text.splitlines())
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown(lines: list[list[str]], left: int = 1) -> str:
    """A GitHub-flavoured Markdown table: header row, alignment row (the first ``left`` columns, text, aligned
    left; the numbers right), every cell escaped by :func:`md`, so a ``|`` or a line break in a setting's value
    cannot break its row."""
    def row(cells: list[str]) -> str:
        return "| " + " | ".join(md(cell) for cell in cells) + " |"
    width = len(lines[0])
    align = "| " + " | ".join([":---"] * min(left, width) + ["---:"] * max(width - left, 0)) + " |"
    return "\n".join([row(lines[0]), align, *map(row, lines[1:])]) + "\n"


def csv_text(reports: list[Report]) -> str:
    """One line per (task, row, pair); ``selection`` names the criteria as applied to the cell's runs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["strategy", "pair", "selection", "metric", "n", "seeds", "target_mean", "target_std",
                     "source_mean", "selected_steps", "wall_s_median", "s_per_step_median", "task"])
    for report in reports:
        for (row, pair), cell in sorted(report.cells.items()):
            writer.writerow([row, pair, " ".join(sorted({criterion for criterion, _ in cell.chosen_by})),
                             report.metric, len(cell.target), " ".join(map(str, cell.seeds)), f"{cell.mean:.6f}",
                             "" if cell.std is None else f"{cell.std:.6f}",  # one run: no spread, not 0
                             f"{statistics.mean(cell.source):.6f}" if cell.source else "",
                             " ".join(map(str, cell.selected_steps)), f"{statistics.median(cell.wall):.2f}",
                             f"{statistics.median(cell.step_seconds):.4f}", report.task])
    return buffer.getvalue()


def left_out_table(report: Report, folder: Path) -> list[list[str]]:
    lines = [["run", "strategy", "seed", "why it is not averaged in"]]
    for run, why in report.left_out:
        lines.append([str(run.path.relative_to(folder)) if run.path.is_relative_to(folder) else str(run.path),
                      run.strategy, str(run.config.get("seed", "?")), why.splitlines()[0] if why else "failed"])
    return lines


def refuse_interpolations(node: object, key: str, config_file: Path) -> None:
    """Training saves its config resolved, so a ``${...}`` in a saved domain was written by hand; loading the
    domain would resolve it, and a resolver can read the environment or import a package: refuse instead."""
    if isinstance(node, dict):
        for child, value in node.items():
            refuse_interpolations(value, f"{key}.{child}", config_file)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            refuse_interpolations(value, f"{key}[{i}]", config_file)
    elif isinstance(node, str) and "${" in node:
        raise XdtError(f"{config_file}: {key}={node!r} is an interpolation; xdt report reads saved configs as plain "
                       f"values and resolves nothing in them, so it cannot load this domain for --diagnose")


def add_domain_texts(texts: dict[str, list[str]], run: Run, report: Report) -> None:
    """Train and unlabeled text of each of a run's domains not yet in ``texts`` (keyed by column name), from its
    saved config."""
    from omegaconf import OmegaConf

    from xdt.data.domains import load_domain
    from xdt.data.shots import domain_entries

    for role in ROLES:
        for name, node in domain_entries(run.config.get(role), role):
            label = report.label(run, role, name)
            if label not in texts:
                refuse_interpolations(node, f"{role}.{name}", run.path / CONFIG)
                domain = load_domain(name, OmegaConf.create(node), f"{role}.{name}")
                texts[label] = list(domain.train["text"]) + list(domain.unlabeled["text"])


def gap_row(report: Report) -> str | None:
    """The ERM row whose transfer gap sits next to the shift figures: the one ERM reference row trained on the
    source alone (for NER, the zero-shot row ``erm task.train_on=source``); None unless there is exactly one."""
    rows = [row for row in report.rows if report.erm_rows.get(row) == row
            and not any(run.trains_on_target_labels for run in report.runs[row])]
    return rows[0] if len(rows) == 1 else None


def shift_table(report: Report) -> list[list[str]]:
    """Per pair: proxy A-distance and vocabulary overlap (xdt.diagnose) next to ERM's measured gap."""
    from xdt.diagnose import pair_diagnostics

    texts: dict[str, list[str]] = {}
    lines = [["pair", "proxy A-distance", "vocabulary Jaccard", "target OOV rate", "ERM gap (source - target)"]]
    for pair in report.pairs:
        sources, target = report.pair_domains[pair]
        run = next(members[0][0] for (_, p), members in report.members.items() if p == pair)
        add_domain_texts(texts, run, report)
        figures = pair_diagnostics([t for s in sources for t in texts[s]], texts[target])
        erm = report.cells.get((gap_row(report), pair))
        gap = statistics.mean(erm.source) - erm.mean if erm and erm.source else None
        lines.append([pair, f"{figures['proxy_a_distance']:.3f}", f"{figures['vocab_jaccard']:.3f}",
                      f"{figures['target_oov_rate']:.3f}", _fmt(gap)])
    return lines


REPORT_FILES = ("report.md", "report.csv")


def check_out(out: Path, names: list[str], given: bool) -> None:
    """Refuse, before anything is written, to write through a link: the default ``<folder>/report`` comes with
    the (possibly shared) run folder, and a link there, or where one of the files goes, could send a report
    file anywhere. A folder named with ``--out`` is the user's own choice, and may itself be a link."""
    if out.is_symlink() and not given:
        raise XdtError(f"{out} is a link (to {os.readlink(out)}): xdt report writes only inside the folder it is "
                       f"given; remove the link, or choose --out")
    if out.exists() and not out.is_dir():
        raise XdtError(f"{out} is there but is not a folder: move it away, or choose --out")
    for name in names:
        if (out / name).is_symlink():
            raise XdtError(f"{out / name} is a link (to {os.readlink(out / name)}): xdt report writes only inside "
                           f"its report folder and does not write through links; remove the link")


# ---- provenance: what made this report, where and when ----------------------------------------------------------

def report_command(folder: str | Path, criterion: str | None, metric: str | None, out_dir: str | Path | None,
                   diagnose: bool) -> str:
    """The ``xdt report`` command line that makes the same report (for reports made from Python)."""
    args = [str(folder), *(["--selection", criterion] if criterion else []), *(["--metric", metric] if metric else []),
            *(["--out", str(out_dir)] if out_dir else []), *(["--diagnose"] if diagnose else [])]
    return shlex.join(["xdt", "report", *args])


def run_hardware(runs: list[Run]) -> str:
    """The devices the runs' config.yaml name (``hardware.device`` and ``mixed_precision``), with counts."""
    counts: dict[str, int] = {}
    for run in runs:
        hardware = run.config.get("hardware")
        if isinstance(hardware, dict) and hardware.get("device") is not None:
            key = f"device={hardware.get('device')}, mixed_precision={hardware.get('mixed_precision')}"
            counts[key] = counts.get(key, 0) + 1
    return "; ".join(f"{key} ({n} runs)" if n > 1 else f"{key} (1 run)" for key, n in counts.items())


def runs_code(runs: list[Run]) -> str:
    """The xdt commits the runs recorded in their metrics.json (``xdt.commit``), with counts; runs from before
    xdt recorded it are counted apart, so the report's own commit is never passed off as theirs."""
    counts: dict[str, int] = {}
    for run in runs:
        code = (run.result or {}).get("xdt")
        commit = code.get("commit") if isinstance(code, dict) else None
        key = str(commit) if commit else "not recorded"
        counts[key] = counts.get(key, 0) + 1
    if set(counts) == {"not recorded"}:
        return ("- **The runs' code:** their folders record no xdt commit, so the commit above is the report's, not "
                "necessarily the one that trained them")
    return "- **The runs' code** (their metrics.json): " + md("; ".join(f"{key} ({n} runs)" if n > 1 else
                                                                       f"{key} (1 run)" for key, n in counts.items()))


def provenance(command: str, folder: Path, reports: list[Report]) -> list[str]:
    """The lines under report.md's title: how to make it again, when, where, with which code, and which runs."""
    runs = {run.path: run for report in reports for rows in report.runs.values() for run in rows}
    left_out = {run.path for report in reports for run, _ in report.left_out}
    everything = [*runs.values(), *(run for report in reports for run, _ in report.left_out)]
    lines = [f"- **Command:** {md_code(command)}",
             f"- **Date:** {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- **Machine** (that made this report): {md(machine())}",
             f"- **xdt:** version {md(xdt.__version__)}, commit {md(git_commit())}",
             f"- **Runs:** {len(runs)} averaged in, {len(left_out)} not averaged in"
             + (" (listed below)" if left_out else "")]
    hardware = run_hardware(list(runs.values()))
    if hardware:
        lines.append(f"- **Runs' hardware** (their config.yaml): {md(hardware)}")
    launches, more = launch_overrides(folder, everything)
    for where, file, overrides in launches:
        name = str(where.relative_to(folder)) if where.is_relative_to(folder) and where != folder else where.name
        shown = md_code(shlex.join(overrides)) if overrides else "none"
        lines.append(f"- **Overrides of {md(name)}** (its {md(file)}: the command line's, less hydra.\\*): {shown}")
    if more:
        lines.append(f"- ... and the overrides of {more} more sweeps or runs")
    lines.append(runs_code(everything))
    return ["\n".join(lines) + "\n"]


# ---- report.md ----------------------------------------------------------------------------------------------------

def folder_text(reports: list[Report], folder: Path, diagnose: bool, title: str, command: str) -> list[str]:
    """report.md less its figures: the provenance, then the one table, or a section per task where the folder
    mixes tasks."""
    text = [f"# xdt report: {md(title)}\n", *provenance(command, folder, reports)]
    if len(reports) == 1:
        return text + report_text(reports[0], folder, diagnose)
    text.append(f"The runs below this folder are of {len(reports)} tasks, scored differently: one table per task, "
                f"each with its own metric and model selection.\n")
    for report in reports:
        text += [f"\n## {report.view.title}\n", *report_text(report, folder, diagnose, level="###")]
    return text


def selection_gap_table(report: Report) -> list[list[str]]:
    """The selection-gap table (:mod:`xdt.selection_gap`) of a sequence-classification report; nothing for other
    tasks, whose runs record no label-free scores."""
    if report.task != "sequence_classification":
        return []
    runs = [run for row in report.rows for run in report.runs[row]]
    return selection_gap.gap_table(runs, report.pairs, report.metric, report.pair_of, mean_interval)


def quantized_table(report: Report, folder: Path) -> tuple[list[list[str]], list[str]]:
    """The int8 table of the report's runs (:mod:`xdt.quantized_evaluations`; empty when none was evaluated in
    int8), and a line for each evaluation file passed over (its path relative to ``folder``)."""
    evaluations: dict[str, list] = {}
    passed_over: list[str] = []
    for row in report.rows:
        for run in report.runs[row]:
            found, skipped = quantized_evaluations.find(run.path)
            evaluations.setdefault(row, []).extend(found)
            passed_over += [f"Passed over: {os.path.relpath(path, folder)}: {why}" for path, why in skipped]
    return quantized_evaluations.table(evaluations, report.metric), passed_over


def report_text(report: Report, folder: Path, diagnose: bool, level: str = "##") -> list[str]:
    """The tables of one report, their sections headed at ``level``."""
    text = [md(report.caption()) + "\n", markdown(main_table(report)),
            f"\nSource test {report.metric} at the same checkpoints, wall time per run (with its pretraining stage, "
            "if any), and fine-tuning seconds per step (per pair, with its ratio to ERM's on that pair, when there are "
            "several; the last column averages the pairs' ratios), each the median over the row's runs "
            "(from each run's own clock: compare only runs made under the same load).\n",
            markdown(cost_table(report))]
    paired = paired_table(report)
    if len(paired) > 1:
        text += [f"\n{level} Seed by seed against ERM\n", "Target score minus ERM's with the same seed on the same "
                 f"pair (seeds that both ran once): the mean, its 95% confidence interval (Student's t over the seeds; "
                 f"from {MIN_SEEDS_FOR_INTERVAL} seeds up), and "
                 "how many seeds came out above ERM. Runs that share a seed share their initial weights and batch "
                 "order, so these differences are less noisy than the gain in the first table. An interval that "
                 "contains 0 means these seeds cannot tell the strategy from ERM.\n", markdown(paired)]
    gap = selection_gap_table(report)
    if gap:
        text += [f"\n{level} Selection gap\n", md(
                 f"Target test {report.metric} when each criterion chooses a strategy's settings and checkpoint "
                 "together: per pair and seed, among every evaluation of every run of the strategy that differs "
                 "only in strategy.* and optimizer.* settings (the trials of a hyperparameter search); mean over "
                 "seeds, then over the pairs. In brackets: the difference from ERM chosen by the same criterion, "
                 "and its 95% interval over seeds. target_oracle reads target validation LABELS: it is the ceiling "
                 "of selection, not an estimate of transfer. If the oracle beats ERM and no label-free criterion "
                 "does, selection is the bottleneck; if the oracle does not, the method does not help at this "
                 "budget.") + "\n", markdown(gap)]
    quantized, passed_over = quantized_table(report, folder)
    if quantized:
        text += [f"\n{level} Int8 evaluation\n", md(
                 f"Runs evaluated again with every nn.Linear dynamically quantised to int8 (xdt eval "
                 f"quantize=dynamic_int8, CPU, at the checkpoint it names, by default the run's own best), "
                 f"from the evaluations saved in the run folders: test {report.metric} in fp32 and int8 (mean ± "
                 "std over the evaluations), int8 minus fp32 (mean, and its range over the evaluations), the "
                 "median evaluation speed-up and the serialised size.") + "\n", markdown(quantized)]
        text += [f"\n{md(line)}\n" for line in passed_over]
    if diagnose:
        text += [f"\n{level} Domain shift\n", "Proxy A-distance (0: indistinguishable, 2: separable; Ben-David et al. "
                 "2010) of a bag-of-words source-vs-target classifier, vocabulary overlap, and ERM's transfer gap "
                 "at the same checkpoints as above.\n", markdown(shift_table(report))]
    if report.left_out:
        text += [f"\n{level} Not averaged in\n", markdown(left_out_table(report, folder), left=4)]
    return text


def figures_text(report: Report, written: dict[str, Path], level: str) -> list[str]:
    """The figures of ``report`` that were written: a section per kind with its caption, then each figure as a
    line naming it and the image, linked by its file name (report.md sits next to its figures, so the links work
    wherever the folder goes, GitHub included)."""
    what, tag = f"{report.metric}{report.view.note}", report.view.figure_tag
    curves = [(pair, written[name]) for pair in report.pairs
              if (name := plots.learning_curves_name(pair, tag)) in written]
    matrices = [(row, written[name]) for row in report.rows
                if (name := plots.transfer_matrix_name(row, tag)) in written]
    text = []
    if curves:
        text += [f"\n{level} Learning curves\n", (f"Source validation {md(what)} (left) and target test {md(what)} "
                 "(right) at every evaluation during training, one line per row of the table (its number of runs in "
                 "the legend), mean over its seeds; a step is one optimizer update.\n")]
        text += [f"**{md(pair)}**\n\n![Learning curves, {md(pair)}]({path.name})\n" for pair, path in curves]
    if matrices:
        text += [f"\n{level} Transfer matrices\n", (f"Test {md(what)} of each row's single-source runs, mean over "
                 "seeds: a row per source domain, a column per domain scored; the diagonal is the source's own test "
                 "split (in-domain). One colour scale for every matrix below.\n")]
        text += [f"**{md(row)}**\n\n![Transfer matrix, {md(row)}]({path.name})\n" for row, path in matrices]
    return text


def write_reports(folder: str | Path, criterion: str | None = None, metric: str | None = None,
                  out_dir: str | Path | None = None, diagnose: bool = False,
                  command: str | None = None) -> list[Report]:
    """Build the report of every run below ``folder``, one per task, and write their files; returns them.

    ``criterion`` and ``metric`` default to each task's own (``TASKS``). ``command`` is the command line that
    made the report, for its provenance header (default: the ``xdt report`` command of these arguments).
    Everything that can fail (reading, the checks of --metric and --selection, diagnostics, the checks on the
    report folder) comes before the first write, so a refused report leaves nothing behind."""
    title = str(folder)
    command = command or report_command(folder, criterion, metric, out_dir, diagnose)
    folder = Path(folder).expanduser().resolve()
    reports = build_reports(find_runs(folder), criterion, metric)
    out = Path(out_dir) if out_dir else folder / "report"
    text = folder_text(reports, folder, diagnose, title, command)
    check_out(out, [*REPORT_FILES, *(name for r in reports for name in plots.figure_names(r))],
              given=out_dir is not None)
    out.mkdir(parents=True, exist_ok=True)
    colours = plots.row_colours([row for report in reports for row in report.rows])
    figures = []
    text.append("\n## Figures\n")
    for report in reports:
        written = [*plots.learning_curves(report, out, colours), *plots.transfer_matrices(report, out)]
        figures += written
        level = "###" if len(reports) == 1 else "####"
        if len(reports) > 1 and written:
            text.append(f"\n### {report.view.title}\n")
        text += figures_text(report, {path.name: path for path in written}, level)
    if not figures:
        text.append("No figures: no run has scores to draw.\n")
    atomic_write_text(out / "report.md", re.sub(r"\n{3,}", "\n\n", "\n".join(text)))  # one blank line between blocks
    atomic_write_text(out / "report.csv", csv_text(reports))
    stale = remove_stale_figures(out, {path.name for path in figures})
    for report in reports:
        show(report, folder, titled=len(reports) > 1)
    console.print(Text(f"wrote {out / 'report.md'}, {out / 'report.csv'} and {len(figures)} figures"
                       + (f"; removed {len(stale)} figure(s) of an earlier report there: {', '.join(stale)}"
                          if stale else "")))
    return reports


def remove_stale_figures(out: Path, written: set[str]) -> list[str]:
    """Remove the figures an earlier report left in ``out`` that this one did not draw (a row or pair that is
    gone, or renamed): a published report folder holds only what its report.md links. Only files named as xdt
    names its figures are touched, never links."""
    stale = sorted(path.name for pattern in plots.FIGURE_PATTERNS for path in out.glob(pattern)
                   if path.name not in written and path.is_file() and not path.is_symlink())
    for name in stale:
        (out / name).unlink()
    return stale


def write_report(folder: str | Path, criterion: str | None = None, metric: str | None = None,
                 out_dir: str | Path | None = None, diagnose: bool = False, command: str | None = None) -> Report:
    """:func:`write_reports` for a folder of one task: its report. (A folder of several tasks is written whole;
    this returns its first table's report, sequence classification before token classification.)"""
    return write_reports(folder, criterion, metric, out_dir, diagnose, command)[0]


def show(report: Report, folder: Path, titled: bool = False) -> None:
    """The main table on the terminal (headed by its task where the folder has several). Every string goes in as
    plain Text: a label such as ``file[a.jsonl]`` or a setting holding ``[/]`` is not rich markup."""
    lines = main_table(report)
    title = f"xdt report {folder}" + (f": {report.view.title}" if titled else "")
    table = RichTable(title=Text(title), title_justify="left", caption=Text(report.caption()),
                      caption_justify="left")
    for i, header in enumerate(lines[0]):
        table.add_column(Text(header), justify="left" if i == 0 else "right")
    for line in lines[1:]:
        table.add_row(*map(Text, line))
    console.print(table)
    if report.left_out:
        console.print(f"[yellow]{len(report.left_out)} run(s) not averaged in (failed, unfinished, damaged "
                      f"or missing scores): see report.md")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="xdt report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a run, a sweep, or any folder of them")
    parser.add_argument("--selection", default=None, choices=list(REPORT_CRITERIA),
                        help="model-selection criterion applied to every run (default: the task's: source_val for "
                             "sequence classification, own (each run's own selection) for token classification)")
    parser.add_argument("--metric", default=None, choices=list(dict.fromkeys([*METRIC_NAMES, *ENTITY_METRIC_NAMES])),
                        help="metric to report and select on (default: the task's: accuracy for sequence "
                             "classification, f1 (entity level) for token classification)")
    parser.add_argument("--out", type=Path, default=None, help="where to write (default: <folder>/report)")
    parser.add_argument("--diagnose", action="store_true",
                        help="add proxy A-distance and vocabulary overlap per pair (loads every domain's text)")
    args = parser.parse_args(argv)
    write_reports(args.folder, args.selection, args.metric, args.out, args.diagnose,
                  command=shlex.join(["xdt", "report", *argv]))
