"""The selection-gap table (xdt.selection_gap): each criterion chooses a strategy's settings and checkpoint."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from xdt.report import mean_interval
from xdt.selection_gap import families, gap_cell, gap_table
from xdt.runs import Run

PAIR = "a→b"


def evaluation(step: int, source_val: float, target_val: float, dev_risk: float, reverse: float, test: float) -> dict:
    """One metrics.jsonl record: what each criterion reads, and the target test score a pick reports."""
    return {"step": step, "eval": {
        "source/a/validation": {"accuracy": source_val},
        "source/a/test": {"accuracy": source_val},
        "target/b/validation": {"accuracy": target_val, "dev_risk": dev_risk, "reverse_accuracy": reverse,
                                "entropy": 0.3, "im": 0.4},
        "target/b/test": {"accuracy": test}}}


def run(tmp_path: Path, strategy: str, seed: int, records: list[dict], **settings) -> Run:
    config = {"model": {"name": "tiny"}, "strategy": {"_target_": f"xdt.strategies.{strategy}.X", **settings},
              "seed": seed, "source_domain": {"a": {}}, "target_domain": {"b": {}}, "selection": "source_val"}
    name = "-".join([strategy, *(f"{k}{v}" for k, v in settings.items()), str(seed)])
    return Run(tmp_path / name, config, records, {"strategy": strategy}, None)


def pair_of(run: Run, target: str) -> str:
    return f"{run.sources[0]}→{target}"


@pytest.fixture
def grid(tmp_path) -> list[Run]:
    """ERM (one setting) and DANN at two weights, 3 seeds. Per seed s (offset 0.01 s):
    ERM: source_val picks step 2 (test 0.70), dev and the oracle pick step 1 (test 0.72);
    DANN weight 0.1: source_val's choice of the family (test 0.71); weight 1.0 holds what dev (test 0.74) and the
    oracle (test 0.78, a checkpoint dev does not pick) choose; reverse_val picks weight 0.1's first step (0.69)."""
    runs = []
    for seed in (0, 1, 2):
        o = 0.01 * seed
        runs.append(run(tmp_path, "erm", seed, [evaluation(1, 0.90, 0.75, 0.30, 0.70, 0.72 + o),
                                                evaluation(2, 0.92, 0.70, 0.35, 0.70, 0.70 + o)]))
        runs.append(run(tmp_path, "dann", seed, [evaluation(1, 0.89, 0.60, 0.40, 0.90, 0.69 + o),
                                                 evaluation(2, 0.95, 0.70, 0.33, 0.70, 0.71 + o)], weight=0.1))
        runs.append(run(tmp_path, "dann", seed, [evaluation(1, 0.90, 0.80, 0.20, 0.60, 0.74 + o),
                                                 evaluation(2, 0.91, 0.85, 0.25, 0.60, 0.78 + o)], weight=1.0))
    return runs


def test_a_family_is_a_strategy_over_its_searched_settings(grid):
    found = families(grid)
    assert [f.label for f in found] == ["erm", "dann"]
    assert [f.settings_searched for f in found] == [1, 2] and [len(f.runs) for f in found] == [3, 6]


@pytest.mark.parametrize("criterion, erm, dann", [("source_val", 0.70, 0.71), ("dev", 0.72, 0.74),
                                                  ("reverse_val", 0.72, 0.69), ("target_oracle", 0.72, 0.78)])
def test_each_criterion_picks_across_settings_and_checkpoints(grid, criterion, erm, dann):
    found = {f.label: f for f in families(grid)}
    for label, expected in (("erm", erm), ("dann", dann)):
        cell = gap_cell(found[label], [PAIR], criterion, "accuracy", pair_of)
        assert cell.average == pytest.approx(expected + 0.01)  # mean over the seeds' offsets 0, 0.01, 0.02
        assert cell.by_seed == pytest.approx({s: expected + 0.01 * s for s in (0, 1, 2)})


def test_the_table_shows_the_gain_over_erm_under_the_same_criterion_and_the_selection_gap(grid):
    lines = gap_table(grid, [PAIR], "accuracy", pair_of, mean_interval)
    header, erm, dann = lines
    assert header[0] == "strategy" and "target_oracle (ORACLE)" in header
    column = {name: i for i, name in enumerate(header)}
    assert erm[column["dev"]] == "0.730" and erm[column["settings searched"]] == "1"
    # The differences are equal for every seed: an interval of no width, at the difference.
    assert dann[column["dev"]] == "0.750 (+0.020, 95% CI +0.020 to +0.020)"
    assert dann[column["source_val"]].startswith("0.720 (+0.010")
    assert dann[column["target_oracle (ORACLE)"]].startswith("0.790 (+0.060")
    assert dann[column["oracle minus best label-free"]] == "+0.040"  # 0.79 - dev's 0.75
    assert erm[column["oracle minus best label-free"]] == "+0.000"


def test_a_family_missing_a_pair_has_no_grid_average(grid, tmp_path):
    other = run(tmp_path, "erm", 0, [evaluation(1, 0.9, 0.7, 0.3, 0.7, 0.6)])
    other.config["target_domain"] = {"c": {}}
    other.records = [{"step": 1, "eval": {name.replace("/b/", "/c/"): v for name, v in r["eval"].items()}}
                     for r in other.records]
    found = {f.label: f for f in families(grid)}
    pairs = [PAIR, "a→c"]
    assert gap_cell(found["dann"], pairs, "dev", "accuracy", pair_of).average is None
    both = gap_cell(families([*grid, other])[0], pairs, "dev", "accuracy", pair_of)
    assert both.average == pytest.approx(statistics.mean([0.73, 0.6]))
    assert set(both.by_seed) == {0}  # only seed 0 ran both pairs
