"""The selection gap: how much of a strategy's best target score each model-selection criterion finds.

Unsupervised domain adaptation is often lost in selection, not in training: the settings and checkpoint that
score best on target may exist and still not be the ones a criterion without target labels picks (Musgrave et
al., "Benchmarking Validation Methods for Unsupervised Domain Adaptation", 2021). This table measures that.

A **family** is the runs of one strategy that differ only in what a hyperparameter search varies: the strategy's
and the optimizer's settings (``SEARCHED``), as the trials of ``hparams_search`` do. For each family, pair
(source -> one target) and seed, every evaluation of every run of the family is a candidate; each criterion picks
the candidate it scores highest, on that pair's target alone (:func:`xdt.selection.score`), and the cell holds
the target test score of its pick, averaged over the seeds and then over the grid's pairs. So a criterion chooses
the settings and the checkpoint together, as a user without target labels would.

The ERM family is the reference of its column: each other family's gain is its per-seed grid average minus
ERM's under the same criterion, with the 95% interval over seeds (Student's t). ``target_oracle`` picks by target
validation labels: the ceiling of selection, never an estimate of transfer, and labelled so wherever it appears.

How to read it: if the oracle beats ERM but no label-free criterion does, selection is the bottleneck; if even
the oracle does not, the method does not help at this budget.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from xdt import selection
from xdt.runs import Run, varying_keys

# Criteria that can choose among the runs of a family ("last" cannot: every run has a last evaluation).
GAP_CRITERIA = ("source_val", "entropy", "im", "dev", "reverse_val", "target_oracle")
ORACLE = "target_oracle"
# What a hyperparameter search varies within a family; every other setting makes a different family.
SEARCHED = ("strategy.", "optimizer.")
# Settings that do not change what a run records (which of its evaluations it reports, and the search's score).
NOT_FAMILY = ("selection", "selection_metric", "hparams_search")


@dataclass
class Family:
    """The runs of one strategy over its searched settings."""

    label: str
    strategy: str
    key: tuple  # its settings outside SEARCHED (the same for every member)
    runs: list[Run] = field(default_factory=list)

    @property
    def model(self) -> str:
        return self.key[0]

    @property
    def fixed(self) -> tuple:
        """Its settings outside the search, as (key, repr(value)) pairs."""
        return self.key[2]

    @property
    def settings_searched(self) -> int:
        """How many distinct settings of SEARCHED its runs hold."""
        return len({searched_settings(run) for run in self.runs})


def searched_settings(run: Run) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in run.settings().items() if k.startswith(SEARCHED)))


def family_key(run: Run) -> tuple:
    """The run's model and settings outside what a search varies (the strategy's name kept)."""
    settings = {k: repr(v) for k, v in run.settings().items()
                if not k.startswith(SEARCHED) and k.split(".")[0] not in NOT_FAMILY}
    return (run.model, run.strategy, tuple(sorted(settings.items())))


def families(runs: list[Run]) -> list[Family]:
    """The finished runs with target domains, grouped into families, ERM first."""
    grouped: dict[tuple, Family] = {}
    for run in runs:
        if run.status == "finished" and run.targets and run.records:
            key = family_key(run)
            grouped.setdefault(key, Family("", run.strategy, key)).runs.append(run)
    found = sorted(grouped.values(), key=lambda f: (f.strategy != "erm", f.strategy, str(f.key)))
    several_models = len({f.model for f in found}) > 1
    varying = varying_keys([dict(f.fixed) for f in found])
    for family in found:
        values = family.runs[0].settings()  # the same outside the search for every member
        suffix = " ".join(f"{k}={'null' if values.get(k) is None else values[k]}" for k in varying)
        name = f"{family.model}/{family.strategy}" if several_models else family.strategy
        family.label = f"{name} {suffix}".strip()
    return found


def on_target(scores: dict[str, dict], target: str) -> dict[str, dict]:
    """An evaluation's scores with the target sets of ``target`` only (sources kept): what a criterion reads
    when it chooses for that pair."""
    return {name: value for name, value in scores.items()
            if not name.startswith("target/") or name.split("/")[1] == target}


def pick(candidates: list[tuple[Run, dict]], target: str, criterion: str, metric: str) -> float | None:
    """The target test ``metric`` of the candidate evaluation ``criterion`` scores highest (ties: the first run,
    its earliest evaluation); None when no candidate has what the criterion and the cell read."""
    best_value, best_score = None, None
    for _, record in candidates:
        scores = on_target(record["eval"], target)
        test = scores.get(f"target/{target}/test", {}).get(metric)
        value = selection.score(scores, criterion, metric)
        if test is None or value is None or value != value:  # NaN: nothing to compare
            continue
        if best_value is None or value > best_value:
            best_value, best_score = value, test
    return best_score


@dataclass
class GapCell:
    """One family under one criterion: its grid average, and its per-seed grid averages (for the paired gain)."""

    average: float | None
    by_seed: dict[int, float]


def gap_cell(family: Family, pairs: list[str], criterion: str, metric: str, pair_of) -> GapCell:
    """The family's grid average under ``criterion``: per pair the mean over seeds of the picked target test
    score, then the mean over ``pairs`` (None unless every pair has a pick); and per seed the mean over pairs.
    ``pair_of(run, target)`` names the pair a run's target belongs to (the report's columns)."""
    candidates: dict[tuple[str, str, int], list[tuple[Run, dict]]] = defaultdict(list)
    for run in sorted(family.runs, key=lambda r: str(r.path)):
        for target in run.targets:
            for record in sorted(run.records, key=lambda r: r["step"]):
                candidates[(pair_of(run, target), target, run.seed)].append((run, record))
    picked: dict[tuple[str, int], float] = {}  # (pair, seed) -> target test score of the pick
    for (pair, target, seed), members in candidates.items():
        value = pick(members, target, criterion, metric)
        if value is not None:
            picked[(pair, seed)] = value
    per_pair = [[value for (p, _), value in picked.items() if p == pair] for pair in pairs]
    average = statistics.mean(statistics.mean(v) for v in per_pair) if per_pair and all(per_pair) else None
    seeds = sorted({seed for _, seed in picked})
    by_seed = {seed: statistics.mean(picked[(pair, seed)] for pair in pairs)
               for seed in seeds if all((pair, seed) in picked for pair in pairs)}
    return GapCell(average, by_seed)


def reference_of(family: Family, found: list[Family]) -> Family | None:
    """The ERM family with the same model and the same settings outside the search, if there is one."""
    return next((f for f in found if f.strategy == "erm" and f.model == family.model and f.fixed == family.fixed),
                None)


def gap_table(runs: list[Run], pairs: list[str], metric: str, pair_of, interval) -> list[list[str]]:
    """The selection-gap table (see the module docstring) of ``runs`` over ``pairs``: a header and a line per
    family, or nothing when no family has every pair. ``interval(values)`` is the 95% interval of a mean."""
    found = families(runs)
    cells = {(f.label, c): gap_cell(f, pairs, c, metric, pair_of) for f in found for c in GAP_CRITERIA}
    if not any(cell.average is not None for cell in cells.values()):
        return []
    lines = [["strategy", "settings searched", *(f"{c} (ORACLE)" if c == ORACLE else c for c in GAP_CRITERIA),
              "oracle minus best label-free"]]
    for family in found:
        reference = reference_of(family, found)
        texts = [_cell_text(cells[(family.label, c)],
                            cells[(reference.label, c)] if reference and reference is not family else None, interval)
                 for c in GAP_CRITERIA]
        label_free = [cells[(family.label, c)].average for c in GAP_CRITERIA if c != ORACLE]
        label_free = [v for v in label_free if v is not None]
        oracle = cells[(family.label, ORACLE)].average
        gap = f"{oracle - max(label_free):+.3f}" if oracle is not None and label_free else "-"
        lines.append([family.label, str(family.settings_searched), *texts, gap])
    return lines


def _cell_text(cell: GapCell, reference: GapCell | None, interval) -> str:
    """``average``, and against ERM under the same criterion: ``(gain, 95% CI lo to hi)`` over shared seeds."""
    if cell.average is None:
        return "-"
    text = f"{cell.average:.3f}"
    if reference is None or reference.average is None:
        return text
    seeds = sorted(cell.by_seed.keys() & reference.by_seed.keys())
    differences = [cell.by_seed[s] - reference.by_seed[s] for s in seeds]
    bounds = interval(differences) if differences else None
    spread = f", 95% CI {bounds[0]:+.3f} to {bounds[1]:+.3f}" if bounds else ""
    return f"{text} ({cell.average - reference.average:+.3f}{spread})"
