"""``xdt report``: its numbers equal the per-run files, failed and unfinished runs stay out of the averages,
oracle selection is flagged, and the figures are written."""

from __future__ import annotations

import csv
import json
import math
import shutil
import statistics
from pathlib import Path

import pytest

from conftest import run_xdt
from xdt import selection
from xdt.report import erm_references, mean_interval, natural_order, row_labels, write_report
from xdt.runs import Run
from xdt.sweep import run_job
from xdt.train import train

PAIR = "syn_books→syn_kitchen"


@pytest.fixture(scope="module")
def runs_folder(tmp_path_factory, cache_dir) -> Path:
    """erm and coral x 2 seeds (finished), one failed job and one cut-off copy."""
    from conftest import DATA_DIR, compose_config

    folder = tmp_path_factory.mktemp("runs")
    base = ["debug=smoke", f"cache_dir={cache_dir}", f"data_dir={DATA_DIR}", "target_domain=[syn_kitchen]",
            "max_steps=12", "eval_interval=4"]
    for strategy in ("erm", "coral"):
        for seed in (0, 1):
            train(compose_config([*base, f"strategy={strategy}", f"seed={seed}"]), folder / f"{strategy}-{seed}")
    run_job(compose_config([*base, "optimizer.lr=-1"]), folder / "broken")
    shutil.copytree(folder / "erm-0", folder / "cut-off")
    for name in ("done", "metrics.json"):
        (folder / "cut-off" / name).unlink()
    return folder


def read_csv(path: Path) -> dict[str, dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return {row["strategy"]: row for row in csv.DictReader(file) if row["pair"] == PAIR}


def test_report_equals_the_metrics_files(runs_folder, tmp_path):
    report = write_report(runs_folder, out_dir=tmp_path)
    rows = read_csv(tmp_path / "report.csv")
    for strategy in ("erm", "coral"):
        values = [json.loads((runs_folder / f"{strategy}-{seed}" / "metrics.json").read_text())
                  ["metrics"]["target/syn_kitchen/test"]["accuracy"] for seed in (0, 1)]
        assert float(rows[strategy]["target_mean"]) == pytest.approx(statistics.mean(values), abs=1e-6)
        assert float(rows[strategy]["target_std"]) == pytest.approx(statistics.stdev(values), abs=1e-6)
        assert rows[strategy]["n"] == "2" and rows[strategy]["seeds"] == "0 1"
    assert report.rows == ["erm", "coral"]
    assert report.gain("coral") == pytest.approx(
        float(rows["coral"]["target_mean"]) - float(rows["erm"]["target_mean"]), abs=1e-5)
    left_out = {run.path.name: why for run, why in report.left_out}
    # A job whose settings are refused before its config.yaml is written is not a run (the sweep lists it).
    refused_early = not (runs_folder / "broken" / "config.yaml").exists()
    assert set(left_out) == {"cut-off"} | (set() if refused_early else {"broken"})
    assert refused_early or "optimizer.lr=-1 is not valid" in left_out["broken"]
    assert left_out["cut-off"].startswith("unfinished")
    text = (tmp_path / "report.md").read_text()
    assert "best source validation accuracy" in text and "## Not averaged in" in text
    erm_line = next(line for line in text.splitlines() if line.startswith("| erm |"))
    assert erm_line.endswith("| reference |")  # not "+0.000": a reference row is not compared with itself
    coral_line = next(line for line in text.splitlines() if line.startswith("| coral |"))
    assert f"| {report.gain('coral'):+.3f} |" in coral_line


def test_seed_by_seed_differences_match_the_runs(runs_folder, tmp_path):
    report = write_report(runs_folder, out_dir=tmp_path)
    score = lambda strategy, seed: json.loads((runs_folder / f"{strategy}-{seed}" / "metrics.json").read_text())[  # noqa: E731
        "metrics"]["target/syn_kitchen/test"]["accuracy"]
    expected = [score("coral", seed) - score("erm", seed) for seed in (0, 1)]
    assert report.paired_differences("coral", PAIR) == pytest.approx(expected)
    assert report.paired_differences("erm", PAIR) == []  # ERM is the reference, not compared with itself
    text = (tmp_path / "report.md").read_text()
    above = sum(x > 0 for x in expected)
    assert f"| coral | {statistics.mean(expected):+.3f} (too few seeds for an interval; {above}/2 above) |" in text


def test_mean_interval_is_students_t():
    # Three values: t(0.975, 2 df) = 4.303; the interval is mean ± 4.303 * s / sqrt(3).
    values = [0.01, 0.03, 0.08]
    half = 4.303 * statistics.stdev(values) / math.sqrt(3)
    assert mean_interval(values) == pytest.approx((0.04 - half, 0.04 + half))
    # Ten values 1..10: mean 5.5, s = 3.0277, t(0.975, 9 df) = 2.262 -> 5.5 ± 2.166.
    assert mean_interval([float(x) for x in range(1, 11)]) == pytest.approx((3.334, 7.666), abs=1e-3)
    # Two values: one degree of freedom, none or all of the range (equal accuracies are common) -> no interval.
    assert mean_interval([0.015, 0.015]) is None


def test_a_criterion_is_applied_to_the_records_after_the_fact(runs_folder, tmp_path):
    write_report(runs_folder, criterion="entropy", out_dir=tmp_path)
    rows = read_csv(tmp_path / "report.csv")
    expected = []
    for seed in (0, 1):
        lines = (runs_folder / f"erm-{seed}" / "metrics.jsonl").read_text().splitlines()
        chosen = selection.select([json.loads(line) for line in lines], "entropy")
        expected.append(chosen["eval"]["target/syn_kitchen/test"]["accuracy"])
    assert float(rows["erm"]["target_mean"]) == pytest.approx(statistics.mean(expected), abs=1e-6)
    assert rows["erm"]["selection"] == "entropy"


def test_oracle_selection_is_flagged(runs_folder, tmp_path):
    write_report(runs_folder, criterion="target_oracle", out_dir=tmp_path)
    assert "ORACLE SELECTION: target labels chose these checkpoints" in (tmp_path / "report.md").read_text()


def test_figures_are_png_images(runs_folder, tmp_path):
    write_report(runs_folder, out_dir=tmp_path)
    figures = sorted(p.name for p in tmp_path.glob("*.png"))
    assert figures == ["learning_curves_syn_books-to-syn_kitchen.png", "transfer_matrix_coral.png",
                       "transfer_matrix_erm.png"]
    for name in figures:
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_report_command_names_a_missing_folder(tmp_path):
    result = run_xdt("report", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert result.returncode != 0 and "nowhere is not a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_diagnostics_sit_next_to_the_measured_gap(runs_folder, tmp_path):
    write_report(runs_folder, out_dir=tmp_path, diagnose=True)
    text = (tmp_path / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith(f"| {PAIR} |") and "±" not in line)
    pad, jaccard, oov, gap = (float(cell) for cell in row.strip("|").split("|")[1:5])
    assert 0.5 < pad <= 2.0 and 0 < jaccard < 1 and 0 < oov < 1  # books and kitchen share some words, not all
    assert gap == pytest.approx(json_mean_source_minus_target(runs_folder), abs=1e-3)


def json_mean_source_minus_target(folder: Path) -> float:
    results = [json.loads((folder / f"erm-{seed}" / "metrics.json").read_text())["metrics"] for seed in (0, 1)]
    return statistics.mean(m["source/syn_books/test"]["accuracy"] for m in results) - \
        statistics.mean(m["target/syn_kitchen/test"]["accuracy"] for m in results)


def test_a_varying_setting_labels_its_rows_as_typed_on_the_command_line(tmp_path):
    def run(name: str, average_from) -> Run:
        config = {"model": {"name": "tiny"}, "strategy": {"_target_": "xdt.strategies.erm.ERM"}, "seed": 0,
                  "average_from": average_from}
        return Run(tmp_path / name, config, [], {"strategy": "erm"}, None)
    labels = row_labels([run("plain", None), run("averaged", 0.5)])
    assert labels == {tmp_path / "plain": "erm average_from=null", tmp_path / "averaged": "erm average_from=0.5"}


def test_the_tracker_a_run_logged_to_is_not_a_setting_of_its_experiment(tmp_path):
    def run(name: str, logger: dict) -> Run:
        config = {"model": {"name": "tiny"}, "strategy": {"_target_": "xdt.strategies.erm.ERM"}, "seed": 0,
                  "logger": logger}
        return Run(tmp_path / name, config, [], {"strategy": "erm"}, None)
    labels = row_labels([run("quiet", {}), run("watched", {"tensorboard": {"flush_secs": 5}})])
    assert set(labels.values()) == {"erm"}


def test_each_row_is_compared_with_the_erm_row_that_shares_its_settings(tmp_path):
    """Two ERM rows (with and without weight averaging): each row's reference is the ERM row with its own
    average_from; a LoRA row, whose model differs only in PEFT, is compared with full fine-tuning."""
    def runs(name: str, strategy: str, average_from, peft: str = "none") -> list[Run]:
        config = {"model": {"name": "tiny", "peft": peft}, "strategy": {"_target_": f"xdt.strategies.{strategy}.X"},
                  "average_from": average_from}
        return [Run(tmp_path / f"{name}-{seed}", {**config, "seed": seed}, [], {"strategy": strategy}, None)
                for seed in (0, 1)]
    by_row = {"erm average_from=null": runs("erm", "erm", None),
              "erm average_from=0.5": runs("erm_avg", "erm", 0.5),
              "dann average_from=null": runs("dann", "dann", None),
              "dann average_from=0.5": runs("dann_avg", "dann", 0.5),
              "coral": runs("coral", "coral", None), "erm+lora": runs("lora", "erm", None, peft="lora")}
    assert erm_references(by_row) == {
        "erm average_from=null": "erm average_from=null", "erm average_from=0.5": "erm average_from=0.5",
        "dann average_from=null": "erm average_from=null", "dann average_from=0.5": "erm average_from=0.5",
        "coral": "erm average_from=null", "erm+lora": "erm average_from=null"}
    mixed = {**by_row, "coral": runs("coral", "coral", None) + runs("coral_avg", "coral", 0.5)}
    assert "coral" not in erm_references(mixed)  # its runs disagree on the setting: no single reference


def test_a_pretraining_stage_is_compared_with_plain_fine_tuning(tmp_path):
    """DAPT/TAPT is a remedy like a strategy: an ERM row with a language-model stage is compared with the ERM row
    without one (not with itself), and so is a strategy's row, with or without the stage."""
    def runs(name: str, strategy: str, pretrain: dict | None) -> list[Run]:
        config = {"model": {"name": "tiny", "peft": "none"},
                  "strategy": {"_target_": f"xdt.strategies.{strategy}.X"}, "pretrain": pretrain}
        return [Run(tmp_path / f"{name}-{seed}", {**config, "seed": seed}, [], {"strategy": strategy}, None)
                for seed in (0, 1)]
    dapt = {"text_from": "target", "max_steps": 200}
    by_row = {"erm plain": runs("erm", "erm", None), "erm dapt": runs("erm_dapt", "erm", dapt),
              "dann plain": runs("dann", "dann", None), "dann dapt": runs("dann_dapt", "dann", dapt)}
    assert erm_references(by_row) == {row: "erm plain" for row in by_row}
    only_dapt = {"erm dapt": by_row["erm dapt"], "dann dapt": by_row["dann dapt"]}
    assert erm_references(only_dapt) == {row: "erm dapt" for row in only_dapt}  # no plain ERM: as before


def test_k_shot_rows_are_compared_with_zero_shots_and_listed_in_numeric_order(tmp_path):
    """Labeled target examples are a remedy too: every k is compared with k = 0, and k sorts as a number."""
    def runs(shots: int) -> list[Run]:
        config = {"model": {"name": "tiny", "peft": "none"}, "strategy": {"_target_": "xdt.strategies.erm.X"},
                  "target_domain": {"shots": shots}}
        return [Run(tmp_path / f"k{shots}-{seed}", {**config, "seed": seed}, [], {"strategy": "erm"}, None)
                for seed in (0, 1)]
    by_row = {f"erm target_domain.shots={k}": runs(k) for k in (0, 8, 32, 128)}
    assert set(erm_references(by_row).values()) == {"erm target_domain.shots=0"}
    rows = sorted(by_row, key=natural_order)
    assert rows == [f"erm target_domain.shots={k}" for k in (0, 8, 32, 128)]
    weights = ["dann strategy.weight=1.0", "dann strategy.weight=0.1", "dann strategy.weight=0.03"]
    assert sorted(weights, key=natural_order) == weights[::-1]
    assert sorted(["erm optimizer.lr=0.0001", "erm optimizer.lr=5e-05"], key=natural_order)[0].endswith("5e-05")
