"""The published benchmarks (scripts/results.py) are sweeps that compose, and the domain-adaptation grid is the
one its preset describes: 12 ordered pairs of four domains, none paired with itself, 3 epochs, 3 seeds."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import pytest

from conftest import DATA_DIR, ROOT, compose_config
from xdt.tasks.base import training_steps

spec = importlib.util.spec_from_file_location("results", ROOT / "scripts" / "results.py")
results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(results)

SWEEPS = [(name, k, overrides) for name, (_, sweeps) in results.BENCHMARKS.items()
          for k, overrides in enumerate(sweeps)]


def jobs(overrides: list[str]) -> list[list[str]]:
    """Every job of a sweep: the Cartesian product of its comma-separated values."""
    choices = [[f"{key}={value}" for value in values.split(",")]
               for key, values in (override.split("=", 1) for override in overrides)]
    return [list(job) for job in itertools.product(*choices)]


def every_value(overrides: list[str]) -> list[list[str]]:
    """Jobs of a sweep that hold every value of every key at least once (not the whole product)."""
    choices = [[f"{key}={value}" for value in values.split(",")]
               for key, values in (override.split("=", 1) for override in overrides)]
    return [[values[i % len(values)] for values in choices] for i in range(max(map(len, choices)))]


@pytest.mark.parametrize("name, k, overrides", SWEEPS, ids=[f"{name}-{k}" for name, k, _ in SWEEPS])
def test_every_value_of_every_benchmark_composes(name, k, overrides):
    for job in every_value(overrides):
        compose_config([*job, f"data_dir={DATA_DIR}"])


def test_the_domain_adaptation_grid_is_every_ordered_pair_of_its_domains_for_every_strategy():
    sweeps = results.BENCHMARKS["da_grid"][1]
    by_strategy: dict[str, set[tuple[str, str]]] = {}
    for overrides in sweeps:
        for job in jobs(overrides):
            values = dict(item.split("=", 1) for item in job)
            source, target = values["source_domain"], values["target_domain"]
            assert source != target
            by_strategy.setdefault(values["strategy"], set()).add((source, target))
            assert values["seed"] in ("0", "1", "2")
    domains = [f"fdu_{name}" for name in results.DA_DOMAINS]
    expected = set(itertools.permutations(domains, 2))
    assert len(expected) == 12 and all(pairs == expected for pairs in by_strategy.values())
    assert set(by_strategy) == {"erm", "dann", "coral", "mmd", "self_train", "mtl"}


@pytest.mark.parametrize("name", ["fdu_150", "fdu_300", "fdu_apparel_to_MR_300", "fdu_imdb_to_baby_300"])
def test_the_long_cpu_benchmarks_run_every_configuration_at_its_first_seed_before_any_second_seed(name):
    """An interrupted launch of a benchmark of hours still reports every pair and strategy (the basic sweeper
    launches the product of the overrides in their order, the first outermost)."""
    (overrides,) = results.BENCHMARKS[name][1]
    seeds = [dict(item.split("=", 1) for item in job)["seed"] for job in jobs(overrides)]
    configurations = len(seeds) // len(set(seeds))
    assert seeds[:configurations] == ["0"] * configurations and len(set(seeds)) > 1


def test_the_grids_budget_is_three_epochs_evaluated_every_half_epoch():
    cfg = compose_config(["experiment=da_grid", f"data_dir={DATA_DIR}"])
    train_rows = 1400  # an FDU-MTL domain's train split less its 200 validation rows
    assert training_steps(cfg, train_rows) == 132 and cfg.eval_interval == 22 and cfg.model.name == "minilm"


@pytest.mark.parametrize("name", results.EVALUATIONS)
def test_a_benchmarks_evaluations_compose_as_xdt_eval_configs(name):
    assert name in results.BENCHMARKS
    folder, overrides = results.EVALUATIONS[name]
    assert folder and "/" not in folder
    cfg = compose_config(["run_dir=outputs/some-run", *overrides, f"hydra.run.dir=outputs/some-run/{folder}"],
                         name="eval")
    assert cfg.run_dir == "outputs/some-run"


def test_a_tag_gives_the_runs_and_the_report_folders_of_their_own(monkeypatch, tmp_path):
    commands = []
    monkeypatch.setattr(results, "run", lambda command: commands.append(command) or 0)
    monkeypatch.setattr(sys, "argv", ["results.py", "synthetic_shift", "--tag", "gpu", "--runs", str(tmp_path / "runs"),
                                      "--out", str(tmp_path / "docs"), "--", "hardware=gpu"])
    results.main()
    train, report = commands
    assert train[1:3] == ["train", "-m"] and "hardware=gpu" in train
    assert Path(train[-1].removeprefix("hydra.sweep.dir=")).name == "synthetic_shift_gpu"
    assert report[1] == "report" and Path(report[2]).name == "synthetic_shift_gpu"
    assert Path(report[-1]).resolve() == (tmp_path / "docs" / "synthetic_shift_gpu").resolve()


def test_a_failed_sweep_is_named_and_still_reported(monkeypatch, tmp_path):
    commands = []
    monkeypatch.setattr(results, "run", lambda command: commands.append(command) or int(command[1] == "train"))
    monkeypatch.setattr(sys, "argv", ["results.py", "synthetic_selection", "--runs", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"failed: a job of the sweep in .*synthetic_selection/0; .*/1; .*/2; .*/3 "):
        results.main()
    assert [c[1] for c in commands] == ["train"] * 4 + ["report"]
