"""``xdt report`` of token-classification (NER) runs: entity F1 tables of each run's own selection, rows that name
the protocol (task.train_on), selection criteria that fit NER or one message, learning curves and transfer
matrices of F1, and a folder that mixes classification and NER runs (one table per task).

Most runs are written by hand (config.yaml, metrics.jsonl, metrics.json, done), as xdt train writes them for
``task=token_classification``; one test trains two tiny runs on CoNLL files it writes."""

from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import compose_config, run_xdt
from xdt import plots
from xdt.errors import XdtError
from xdt.report import write_report, write_reports
from xdt.train import train

PAIR = "crossner_conll2003→crossner_politics"
TRAINS_ON_TARGET = ("target", "both", "source_then_target")
# Two evaluations whose best source validation (step 2) and best target validation (step 4) differ, so every
# number says which criterion chose it: {step: {set: entity F1}}.
F1 = {2: {"source/crossner_conll2003/validation": 0.8, "source/crossner_conll2003/test": 0.79,
          "target/crossner_politics/validation": 0.3, "target/crossner_politics/test": 0.31},
      4: {"source/crossner_conll2003/validation": 0.6, "source/crossner_conll2003/test": 0.61,
          "target/crossner_politics/validation": 0.5, "target/crossner_politics/test": 0.52}}


def conll_domain(name: str) -> dict:
    return {"kind": "conll", "data_dir": f"/data/crossner/{name}", "train": "train.txt", "validation": "dev.txt",
            "test": "test.txt", "label_map": None}


def ner_config(train_on: str = "source", strategy: str = "erm", seed: int = 0, **changes) -> dict:
    config = {"task": {"_target_": "xdt.tasks.token_classification.TokenClassification", "train_on": train_on,
                       "export_encoder": False, "source_stage": None},
              "strategy": {"_target_": f"xdt.strategies.{strategy}.X"}, "model": {"name": "tiny", "peft": "none"},
              "seed": seed, "max_steps": 4, "selection": "source_val", "data_dir": "/data",
              "source_domain": {"crossner_conll2003": conll_domain("conll2003")},
              "target_domain": {"shots": 0, "crossner_politics": conll_domain("politics")}}
    return {**config, **changes}


def entity_scores(f1: float) -> dict:
    """A set's scores as token classification writes them: entity-level figures and a breakdown per type."""
    return {"precision": f1 - 0.01, "recall": f1 + 0.01, "f1": f1, "token_accuracy": 0.9,
            "per_type": {"person": {"precision": f1, "recall": f1, "f1": f1, "number": 3},
                         "location": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "number": 1}}}


def write_ner_run(folder: Path, config: dict | None = None, shift: float = 0.0) -> Path:
    """A finished NER run: two evaluations (``F1`` plus ``shift``), and the selection the task records: best F1 on
    the target validation split for protocols that train on target labels (target_val), else on the source's."""
    config = config or ner_config()
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    strategy, train_on = config["strategy"]["_target_"].split(".")[-2], config["task"]["train_on"]
    on_target = train_on in TRAINS_ON_TARGET
    records = [{"task": "token_classification", "train_on": train_on, "strategy": strategy, "seed": config["seed"],
                "step": step, "eval": {name: entity_scores(f1 + shift) for name, f1 in sets.items()}}
               for step, sets in F1.items()]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    chosen = records[1] if on_target else records[0]
    validation = "target/crossner_politics/validation" if on_target else "source/crossner_conll2003/validation"
    selection = {"criterion": "target_val" if on_target else "source_val", "metric": "f1", "sets": [validation],
                 "value": F1[chosen["step"]][validation] + shift}
    result = {"task": "token_classification", "train_on": train_on, "strategy": strategy, "selection": selection,
              "selected_step": chosen["step"], "steps": 4, "wall_time_s": 2.0, "train_time_s": 1.0,
              "metrics": chosen["eval"]}
    (folder / "metrics.json").write_text(json.dumps(result))
    (folder / "done").write_text("finished at step 4\n")
    return folder


def write_classification_run(folder: Path) -> Path:
    """A finished sequence-classification run (no task in its config: one from before tasks were plug-ins)."""
    synthetic = {"kind": "synthetic", "domain": "books", "seed": 0, "label_map": None}
    config = {"strategy": {"_target_": "xdt.strategies.erm.X"}, "model": {"name": "tiny", "peft": "none"},
              "seed": 0, "max_steps": 4, "source_domain": {"syn_books": synthetic},
              "target_domain": {"shots": 0, "syn_kitchen": {**synthetic, "domain": "kitchen"}}}
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    scores = {f"{role}/{name}/{split}": {"accuracy": 0.7, "f1_macro": 0.69} for role, name in
              (("source", "syn_books"), ("target", "syn_kitchen")) for split in ("validation", "test")}
    (folder / "metrics.jsonl").write_text(json.dumps({"strategy": "erm", "step": 4, "eval": scores}) + "\n")
    (folder / "metrics.json").write_text(json.dumps({
        "strategy": "erm", "selection": {"criterion": "source_val", "metric": "accuracy"}, "selected_step": 4,
        "steps": 4, "wall_time_s": 1.0, "train_time_s": 0.5, "metrics": scores}))
    (folder / "done").write_text("finished\n")
    return folder


def read_csv(path: Path) -> dict[tuple[str, str], dict]:
    with open(path, newline="", encoding="utf-8") as file:
        return {(row["task"], row["strategy"]): row for row in csv.DictReader(file)}


@pytest.fixture
def protocols(tmp_path) -> Path:
    """Zero-shot and joint ERM runs, two seeds each."""
    folder = tmp_path / "runs"
    for seed in (0, 1):
        write_ner_run(folder / f"zero-shot-{seed}", ner_config("source", seed=seed), shift=0.01 * seed)
        write_ner_run(folder / f"joint-{seed}", ner_config("both", seed=seed), shift=0.01 * seed)
    return folder


# ---- the metric and the selection follow the task -------------------------------------------------------------

def test_ner_runs_are_tabled_by_entity_f1_at_their_own_selection(protocols):
    report = write_report(protocols)
    assert report.metric == "f1" and not report.left_out
    assert report.rows == ["erm task.train_on=both", "erm task.train_on=source"]
    # each run's metrics.json: zero-shot chose step 2 on source validation, joint step 4 on target validation
    assert report.cells[("erm task.train_on=source", PAIR)].target == pytest.approx([0.31, 0.32])
    assert report.cells[("erm task.train_on=both", PAIR)].target == pytest.approx([0.52, 0.53])
    assert report.cells[("erm task.train_on=source", PAIR)].source == pytest.approx([0.79, 0.80])
    rows = read_csv(protocols / "report" / "report.csv")
    assert rows[("token_classification", "erm task.train_on=source")]["selection"] == "source_val"
    assert rows[("token_classification", "erm task.train_on=both")]["selection"] == "target_val"
    assert rows[("token_classification", "erm task.train_on=both")]["metric"] == "f1"
    caption = report.caption()
    assert caption.startswith("Target test f1 (entity level: exact span and type) of the checkpoint chosen by each "
                              "run's own selection")
    assert "best source validation f1 (rows erm task.train_on=source)" in caption
    assert "best target validation f1 (the protocol trains on target labels" in caption
    assert "ORACLE" not in caption and "accuracy" not in caption
    text = (protocols / "report" / "report.md").read_text()
    assert "| erm task.train_on=both | 0.525 ± 0.007 (2) |" in text and "Source test f1 at the same" in text


def test_another_entity_metric_is_read_at_the_same_checkpoints(protocols, tmp_path):
    report = write_report(protocols, metric="precision", out_dir=tmp_path)
    assert report.cells[("erm task.train_on=both", PAIR)].target == pytest.approx([0.51, 0.52])
    assert "Target test precision (entity level" in report.caption()
    assert "best target validation f1" in report.caption()  # chosen by the runs on F1, as they recorded


def test_a_classification_metric_is_refused_for_ner_runs_with_one_message(protocols, tmp_path):
    result = run_xdt("report", str(protocols), "--metric", "accuracy", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == ("xdt report: --metric accuracy: token-classification (NER) runs are scored with "
                                     "f1, precision, recall, token_accuracy (default f1), not accuracy")
    assert not (protocols / "report").exists()


@pytest.mark.parametrize("criterion", ["entropy", "im", "dev", "reverse_val"])
def test_label_free_selection_is_refused_for_ner_runs_with_one_message(protocols, criterion):
    message = (rf"^--selection {criterion} reads label-free scores \(class distributions, features\) that only "
               rf"sequence-classification runs record; token-classification \(NER\) runs select with own, source_val, target_val, "
               rf"target_oracle, last \(default own\)$")
    with pytest.raises(XdtError, match=message):
        write_report(protocols, criterion=criterion)
    assert not (protocols / "report").exists()


def test_target_validation_is_an_oracle_only_for_runs_that_do_not_train_on_target_labels(protocols, tmp_path):
    report = write_report(protocols, criterion="target_oracle", out_dir=tmp_path)
    assert report.cells[("erm task.train_on=source", PAIR)].target == pytest.approx([0.52, 0.53])  # step 4 now
    rows = read_csv(tmp_path / "report.csv")
    assert rows[("token_classification", "erm task.train_on=source")]["selection"] == "target_oracle"
    assert rows[("token_classification", "erm task.train_on=both")]["selection"] == "target_val"
    assert "best target validation f1 (TARGET LABELS USED: optimistic) (rows erm task.train_on=source)" in \
        report.caption() and "ORACLE SELECTION" in report.caption()
    for run in protocols.glob("zero-shot-*"):
        for name in ("config.yaml", "metrics.json", "metrics.jsonl", "done"):
            (run / name).unlink()
        run.rmdir()
    joint_only = write_report(protocols, criterion="target_val", out_dir=tmp_path)
    assert "ORACLE" not in joint_only.caption() and joint_only.rows == ["erm"]


def test_a_criterion_is_applied_to_the_records_of_ner_runs(protocols, tmp_path):
    report = write_report(protocols, criterion="source_val", out_dir=tmp_path)
    assert report.cells[("erm task.train_on=both", PAIR)].target == pytest.approx([0.31, 0.32])  # step 2
    assert report.cells[("erm task.train_on=both", PAIR)].selected_steps == [2, 2]
    assert write_report(protocols, criterion="last", out_dir=tmp_path).cells[
        ("erm task.train_on=source", PAIR)].selected_steps == [4, 4]


# ---- rows name the protocol ------------------------------------------------------------------------------------

def test_the_protocol_labels_every_row_and_picks_the_erm_reference(tmp_path):
    """train_on varies between strategies only (ERM zero-shot, DANN joint): both rows still say it, and DANN has no
    ERM row of its protocol to be compared with; task.source_stage, read by source_then_target alone, is not shown."""
    folder = tmp_path / "runs"
    write_ner_run(folder / "erm", ner_config("source"))
    write_ner_run(folder / "dann", ner_config("both", strategy="dann"))
    write_ner_run(folder / "fine-tune", ner_config(
        "source_then_target", task={"_target_": "xdt.tasks.token_classification.TokenClassification",
                                    "train_on": "source_then_target", "export_encoder": False,
                                    "source_stage": {"max_steps": 2}}))
    report = write_report(folder)
    assert report.rows == ["erm task.train_on=source", "erm task.train_on=source_then_target",
                           "dann task.train_on=both"]
    assert report.gain("dann task.train_on=both") is None
    dann_line = next(line for line in (folder / "report" / "report.md").read_text().splitlines()
                     if line.startswith("| dann"))
    assert dann_line.endswith("| - |")  # no gain over ERM: no ERM row of its protocol


def test_a_setting_that_varies_only_with_the_protocol_is_not_in_the_labels(tmp_path):
    """The fine-tuning preset's own budget (max_steps=200 against 600) is part of the protocol, not a row setting;
    a setting that varies within a protocol (a longer fine-tuning) still shows."""
    folder = tmp_path / "runs"
    write_ner_run(folder / "zero-shot", ner_config("source", max_steps=600))
    write_ner_run(folder / "joint", ner_config("both", max_steps=600))
    write_ner_run(folder / "fine-tune", ner_config("target", max_steps=200))
    write_ner_run(folder / "fine-tune-longer", ner_config("target", max_steps=400, seed=1))
    report = write_report(folder)
    assert sorted(report.rows) == ["erm max_steps=200 task.train_on=target", "erm max_steps=400 task.train_on=target",
                                   "erm max_steps=600 task.train_on=both", "erm max_steps=600 task.train_on=source"]
    fewer = tmp_path / "fewer"
    for name in ("zero-shot", "joint", "fine-tune"):
        write_ner_run(fewer / name, ner_config({"zero-shot": "source", "joint": "both", "fine-tune": "target"}[name],
                                                    max_steps=200 if name == "fine-tune" else 600))
    assert sorted(write_report(fewer).rows) == ["erm task.train_on=both", "erm task.train_on=source",
                                                     "erm task.train_on=target"]


def test_the_source_stage_of_a_fine_tuning_run_is_not_a_row(tmp_path):
    """source_then_target trains its source stage in <run>/source, a run folder of its own: the run counts its time,
    and it is not a zero-shot row (found by model.init_from's name, though the folder has moved since)."""
    folder = tmp_path / "runs"
    run = write_ner_run(folder / "fine-tune", ner_config(
        "source_then_target", model={"name": "tiny", "peft": "none", "init_from": "/elsewhere/fine-tune/source"}))
    stage = ner_config("source", task={"_target_": "xdt.tasks.token_classification.TokenClassification",
                                       "train_on": "source", "export_encoder": True, "source_stage": {}})
    write_ner_run(run / "source", stage)
    report = write_report(folder)
    assert report.rows == ["erm"] and not report.left_out
    assert [r.path.name for r in report.runs["erm"]] == ["fine-tune"]


def test_a_breakdown_is_read_only_where_a_breakdown_belongs(protocols):
    bad = write_ner_run(protocols / "bad", ner_config(seed=5))
    result = json.loads((bad / "metrics.json").read_text())
    result["metrics"]["target/crossner_politics/test"]["f1"] = {"person": 0.5}
    (bad / "metrics.json").write_text(json.dumps(result))
    report = write_report(protocols)
    assert {run.path.name: why for run, why in report.left_out} == {
        "bad": "metrics.json is not a run's results (it needs metrics: {set: {metric: number}})"}


# ---- figures -----------------------------------------------------------------------------------------------------

def test_learning_curves_and_transfer_matrices_show_entity_f1(protocols):
    report = write_report(protocols)
    names = sorted(path.name for path in (protocols / "report").glob("*.png"))
    assert names == ["learning_curves_ner_crossner_conll2003-to-crossner_politics.png",
                     "transfer_matrix_ner_erm_task.train_on_both.png",
                     "transfer_matrix_ner_erm_task.train_on_source.png"]
    for name in names:
        assert (protocols / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    runs, target = report.runs_on("erm task.train_on=both", PAIR)
    assert plots._curve(runs, f"target/{target}/test", "f1") == ([2, 4], pytest.approx([0.315, 0.525]))
    sources, columns, means = plots.transfer_matrix(report, "erm task.train_on=source")
    assert sources == ["crossner_conll2003"] and columns == ["crossner_conll2003", "crossner_politics"]
    assert means == pytest.approx({("crossner_conll2003", "crossner_politics"): 0.315,
                                   ("crossner_conll2003", "crossner_conll2003"): 0.795})


# ---- a folder of two tasks ---------------------------------------------------------------------------------------

def test_a_folder_of_two_tasks_gets_a_table_per_task(protocols, tmp_path):
    write_classification_run(protocols / "classification")
    classification, ner = write_reports(protocols)
    assert (classification.task, classification.metric, classification.rows) == ("sequence_classification",
                                                                                 "accuracy", ["erm"])
    assert (ner.task, ner.metric) == ("token_classification", "f1") and len(ner.rows) == 2
    assert classification.cells[("erm", "syn_books→syn_kitchen")].target == [0.7]
    assert "best source validation accuracy" in classification.caption()
    text = (protocols / "report" / "report.md").read_text()
    assert text.index("## Sequence classification") < text.index("## Token classification (NER)")
    rows = read_csv(protocols / "report" / "report.csv")
    assert rows[("sequence_classification", "erm")]["metric"] == "accuracy"
    assert rows[("token_classification", "erm task.train_on=both")]["metric"] == "f1"
    assert {"transfer_matrix_erm.png", "transfer_matrix_ner_erm_task.train_on_both.png"} <= \
        {path.name for path in (protocols / "report").glob("*.png")}
    with pytest.raises(XdtError, match=r"^--metric f1_macro: token-classification \(NER\) runs are scored with .* "
                                       r"not f1_macro \(the folder holds runs of several tasks: "):
        write_reports(protocols, metric="f1_macro", out_dir=tmp_path / "other")
    assert not (tmp_path / "other").exists()


# ---- real runs -----------------------------------------------------------------------------------------------------

NEWS = [("Angela Merkel visited Paris on Monday .", "B-person I-person O B-location O O O"),
        ("Siemens opened a plant in Munich .", "B-organisation O O O O B-location O"),
        ("The World Cup ended in Berlin .", "O B-misc I-misc O O B-location O")]  # every type politics maps onto
POLITICS = [("Merkel led the CDU in Germany .", "B-politician O O B-politicalparty O B-country O"),
            ("Obama spoke in Chicago .", "B-politician O O B-location O")]


def write_conll(folder: Path, sentences: list[tuple[str, str]]) -> None:
    folder.mkdir(parents=True)
    text = "".join("".join(f"{w}\t{t}\n" for w, t in zip(words.split(), tags.split())) + "\n"
                   for words, tags in sentences * 4)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.txt").write_text(text)


def test_report_of_real_ner_runs_equals_their_metrics_files(tmp_path, cache_dir):
    data = tmp_path / "data"
    write_conll(data / "crossner" / "conll2003", NEWS)
    write_conll(data / "crossner" / "politics", POLITICS)
    base = ["debug=smoke", "task=token_classification", f"cache_dir={cache_dir}", f"data_dir={data}", "max_steps=4",
            "eval_interval=2", "batch_size=4", "source_domain=crossner_conll2003", "target_domain=crossner_politics"]
    folder = tmp_path / "runs"
    for train_on in ("source", "both"):
        train(compose_config([*base, f"task.train_on={train_on}"]), folder / train_on)
    report = write_report(folder, diagnose=True)
    assert report.rows == ["erm task.train_on=both", "erm task.train_on=source"] and not report.left_out
    for train_on in ("source", "both"):
        result = json.loads((folder / train_on / "metrics.json").read_text())
        cell = report.cells[(f"erm task.train_on={train_on}", PAIR)]
        assert cell.target == [result["metrics"]["target/crossner_politics/test"]["f1"]]
        assert cell.selected_steps == [result["selected_step"]]
        assert cell.chosen_by == [(result["selection"]["criterion"], "f1")]
    assert statistics.mean(report.cells[("erm task.train_on=both", PAIR)].target) == report.average(
        "erm task.train_on=both")
    assert (folder / "report" / "learning_curves_ner_crossner_conll2003-to-crossner_politics.png").is_file()
    # the domain-shift table reads the CoNLL sentences, next to the zero-shot ERM row's gap
    zero_shot = report.cells[("erm task.train_on=source", PAIR)]
    shift = next(line for line in (folder / "report" / "report.md").read_text().splitlines()
                 if line.startswith(f"| {PAIR} |") and "±" not in line)
    assert shift.endswith(f"| {zero_shot.source[0] - zero_shot.target[0]:.3f} |")
