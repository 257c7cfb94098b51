"""``xdt report`` against damaged or hostile run folders: nothing a folder names is run or resolved, nothing is
read or written outside the folder it is given, and every bad run is listed with one line saying why instead of
crashing the report. Runs are written by hand (config.yaml, metrics.jsonl, metrics.json, done): no training."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate

from conftest import run_xdt
from xdt.errors import XdtError
from xdt.metrics.log import MetricsLog
from xdt.report import write_report

PAIR = "syn_books→syn_kitchen"


def synthetic(domain: str) -> dict:
    return {"kind": "synthetic", "domain": domain, "train_size": 2000, "validation_size": 200, "test_size": 500,
            "unlabeled_size": 2000, "seed": 0, "label_map": None}


def make_config(strategy: str = "erm", seed: int = 0, **changes) -> dict:
    config = {"strategy": {"_target_": f"xdt.strategies.{strategy}.X"}, "model": {"name": "tiny", "peft": "none"},
              "seed": seed, "max_steps": 4, "data_dir": "/data", "cache_dir": "/cache",
              "source_domain": {"syn_books": synthetic("books")},
              "target_domain": {"shots": 0, "syn_kitchen": synthetic("kitchen")}}
    return {**config, **changes}


def evaluation(config: dict, accuracy: float) -> dict:
    """Scores of every set of the config's domains (every one ``accuracy``)."""
    sets = [f"source/{name}/{split}" for name in config["source_domain"] for split in ("validation", "test")]
    sets += [f"target/{name}/{split}" for name in config["target_domain"] if name != "shots"
             for split in ("validation", "test")]
    return {name: {"accuracy": accuracy} for name in sets}


def write_run(folder: Path, config: dict | None = None, accuracy: float = 0.6, finished: bool = True) -> Path:
    """A run folder as ``xdt train`` leaves it: config.yaml, one evaluation at step 4, and if finished
    metrics.json and done."""
    config = config or make_config()
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    scores = evaluation(config, accuracy)
    strategy = config["strategy"]["_target_"].split(".")[-2]
    record = {"strategy": strategy, "step": 4, "eval": scores}
    (folder / "metrics.jsonl").write_text(json.dumps({**record, "step": 2}) + "\n" + json.dumps(record) + "\n")
    if finished:
        result = {"strategy": strategy, "selection": {"criterion": "source_val", "metric": "accuracy"},
                  "selected_step": 4, "steps": 4, "wall_time_s": 1.0, "train_time_s": 0.5, "metrics": scores}
        (folder / "metrics.json").write_text(json.dumps(result))
        (folder / "done").write_text("finished at step 4\n")
    return folder


def left_out(report) -> dict[str, str]:
    return {run.path.name: why for run, why in report.left_out}


@pytest.fixture
def runs(tmp_path) -> Path:
    """A folder with one good run (more are added by each test)."""
    folder = tmp_path / "runs"
    write_run(folder / "good")
    return folder


# ---- 1. run folders are data, never code ---------------------------------------------------------------------

def touch_payload(marker: Path) -> dict:
    """A config node that touches ``marker`` if anything instantiates it."""
    return {"_target_": "pathlib.Path.touch", "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}]}


def evil_package(tmp_path: Path) -> tuple[dict, Path]:
    """The environment of a subprocess that can import a package which touches a file when imported, and the file."""
    marker = tmp_path / "imported"
    package = tmp_path / "lib" / "evil_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\n")
    path = [str(tmp_path / "lib"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"PYTHONPATH": os.pathsep.join(path)}, marker


def test_report_never_builds_or_resolves_what_a_config_names(runs, tmp_path):
    marker, control = tmp_path / "touched", tmp_path / "control"
    instantiate(touch_payload(control))
    assert control.exists()  # the payload works: instantiating the crafted config would create the file
    env, imported = evil_package(tmp_path)
    config = make_config(optimizer={**touch_payload(marker), "lr": "${oc.env:HOME}"},
                         note="${xdt.package_dir:evil_pkg.sub}", nested={"deep": touch_payload(marker)})
    config["strategy"] = {"_target_": "xdt.strategies.erm.ERM", "_args_": [touch_payload(marker)]}
    write_run(runs / "crafted", config)
    result = run_xdt("report", str(runs), "--diagnose", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert not marker.exists() and not imported.exists()
    assert "${oc.env:HOME}" in (runs / "report" / "report.md").read_text()  # shown as written, never resolved


def test_diagnose_refuses_an_interpolation_in_a_domain(runs, tmp_path):
    env, imported = evil_package(tmp_path)
    config = make_config()
    config["target_domain"]["syn_kitchen"]["seed"] = "${xdt.package_dir:evil_pkg.sub}"
    write_run(runs / "crafted", config)
    result = run_xdt("report", str(runs), "--diagnose", cwd=tmp_path, env=env)
    assert not imported.exists()
    assert result.returncode == 1 and "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("xdt report: ")
    assert str(runs / "crafted" / "config.yaml") in message and "target_domain.syn_kitchen.seed" in message


# ---- 2. xdt stays inside the folder it was given -------------------------------------------------------------

@pytest.mark.parametrize("name", ["config.yaml", "metrics.json", "metrics.jsonl", "done", "failed"])
def test_a_run_file_linked_from_outside_is_not_read(runs, tmp_path, name):
    elsewhere = write_run(tmp_path / "elsewhere", accuracy=0.9)
    (elsewhere / "failed").write_text("boom\n")
    linked = write_run(runs / "linked", accuracy=0.9)
    (linked / name).unlink(missing_ok=True)
    (linked / name).symlink_to(elsewhere / name)
    report = write_report(runs)
    assert left_out(report)["linked"] == (f"{name} is a link to {elsewhere / name}, outside the run folder: not "
                                          f"read (xdt report reads only files inside the folder it is given)")
    assert report.cells[("erm", PAIR)].target == [0.6]  # the good run only


def test_a_link_inside_the_run_folder_is_read(runs):
    run = write_run(runs / "renamed", accuracy=0.8)
    (run / "metrics.json").rename(run / "final.json")
    (run / "metrics.json").symlink_to("final.json")
    report = write_report(runs)
    assert not report.left_out and sorted(report.cells[("erm", PAIR)].target) == [0.6, 0.8]


def test_a_linked_run_folder_outside_is_not_followed(runs, tmp_path):
    outside = write_run(tmp_path / "outside" / "run", accuracy=0.9)
    (runs / "sweep").mkdir()
    (runs / "sweep" / "linked").symlink_to(outside)
    report = write_report(runs)
    assert left_out(report)["linked"] == (f"the run folder is a link to {outside}, outside {runs}: not followed")
    assert report.cells[("erm", PAIR)].target == [0.6]


def test_a_linked_report_folder_is_refused(runs, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (runs / "report").symlink_to(elsewhere)
    result = run_xdt("report", str(runs), cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"xdt report: {runs / 'report'} is a link (to {elsewhere}): xdt report writes "
                                     f"only inside the folder it is given; remove the link, or choose --out")
    assert not list(elsewhere.iterdir())


def test_a_linked_file_in_the_report_folder_is_refused(runs, tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n")
    (runs / "report").mkdir()
    figure = runs / "report" / "learning_curves_syn_books-to-syn_kitchen.png"
    figure.symlink_to(victim)
    with pytest.raises(XdtError, match=f"^{figure} is a link \\(to {victim}\\)"):
        write_report(runs)
    assert victim.read_text() == "keep me\n" and sorted(p.name for p in (runs / "report").iterdir()) == [figure.name]


# ---- 3-6. damaged files are listed with what is wrong, the other runs are reported ----------------------------

def test_a_truncated_metrics_json_is_damaged_not_unfinished(runs):
    run = write_run(runs / "cut")
    text = (run / "metrics.json").read_text()
    (run / "metrics.json").write_text(text[: len(text) // 2])
    report = write_report(runs)
    assert left_out(report)["cut"].startswith("metrics.json is not valid JSON: ")
    assert report.cells[("erm", PAIR)].target == [0.6]


def jsonl(records: list[dict], tail: str = "") -> str:
    return "".join(json.dumps(r) + "\n" for r in records) + tail


def test_metrics_log_drops_a_torn_last_line_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl([{"step": 1}, {"step": 2}], tail='{"step": 3, "eval": {"sou'))
    with caplog.at_level(logging.WARNING):
        assert MetricsLog(path, write=False).records == [{"step": 1}, {"step": 2}]
    assert f"{path}: line 3 is not valid JSON" in caplog.text and "2 complete records" in caplog.text


def test_metrics_log_refuses_a_damaged_line_in_the_middle(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(jsonl([{"step": 1}]) + '{"step": 2, "ev\n' + jsonl([{"step": 3}]))
    with pytest.raises(XdtError) as error:
        MetricsLog(path, write=False)
    assert str(error.value).startswith(f"{path}: line 2 is not valid JSON") and "\n" not in str(error.value)


def test_report_reads_a_torn_metrics_log_and_lists_a_damaged_one(runs):
    torn = write_run(runs / "torn", finished=False)
    with open(torn / "metrics.jsonl", "a") as file:
        file.write('{"step": 6, "eval": {"sou')
    damaged = write_run(runs / "damaged")
    lines = (damaged / "metrics.jsonl").read_text().splitlines()
    (damaged / "metrics.jsonl").write_text(f"{lines[0][:30]}\n{lines[1]}\n")
    report = write_report(runs)
    assert left_out(report)["damaged"].startswith(f"{damaged / 'metrics.jsonl'}: line 1 is not valid JSON (")
    assert left_out(report)["torn"] == "unfinished: 2 evaluations, last at step 4 of 4"
    assert report.cells[("erm", PAIR)].target == [0.6]


@pytest.mark.parametrize("text, why", [
    ("strategy: [erm\n", "config.yaml is not valid YAML: "),
    ("- erm\n- coral\n", "config.yaml is not a mapping of settings (it holds a ListConfig)"),
    ("just words\n", "config.yaml has no strategy: it is not the config of an xdt training run"),
    ("\xff\xfe", "config.yaml cannot be read: "),
    ("strategy: erm\n", "config.yaml: strategy is not a mapping with a _target_ name (got 'erm')"),
    ("strategy: {_target_: x.erm.X}\nseed: first\n", "config.yaml: seed='first' is not a whole number"),
    ("strategy: {_target_: x.erm.X}\nsource_domain: [books]\n",
     "config.yaml: source_domain is not a mapping of domain names to settings (got ['books'])"),
])
def test_an_invalid_config_leaves_out_that_run_only(runs, text, why):
    run = write_run(runs / "bad")
    (run / "config.yaml").write_bytes(text.encode("latin-1"))
    report = write_report(runs)
    assert left_out(report)["bad"].startswith(why)
    assert report.cells[("erm", PAIR)].target == [0.6]


def test_a_run_without_target_domain_is_listed_not_averaged(runs):
    write_run(runs / "no-target", make_config(strategy="mmd", target_domain={"shots": 0}), accuracy=0.7)
    report = write_report(runs)
    assert left_out(report)["no-target"] == ("no target domain (trained with target_domain=[]): not part of any "
                                             "source→target pair; source test accuracy 0.700 at step 4")
    assert report.rows == ["erm"] and report.pairs == [PAIR]


# ---- 7. one domain name, different data ------------------------------------------------------------------------

def file_domain(path: str) -> dict:
    return {"file": {"kind": "file", "path": path, "format": None, "text_field": "text", "label_field": "label",
                     "fractions": {"train": 0.8, "validation": 0.1, "test": 0.1}, "split_seed": 0}}


def test_one_domain_name_on_different_files_is_kept_apart(tmp_path):
    folder = tmp_path / "runs"
    # a.jsonl on two machines (under each one's data_dir): one domain; b.jsonl is another.
    write_run(folder / "a0", make_config(source_domain=file_domain("/data/a.jsonl")), accuracy=0.6)
    write_run(folder / "a1", make_config(seed=1, data_dir="/home/me/data",
                                         source_domain=file_domain("/home/me/data/a.jsonl")), accuracy=0.8)
    write_run(folder / "b", make_config(source_domain=file_domain("/data/b.jsonl")), accuracy=0.3)
    report = write_report(folder)
    assert report.pairs == ["file[a.jsonl]→syn_kitchen", "file[b.jsonl]→syn_kitchen"]
    assert sorted(report.cells[("erm", "file[a.jsonl]→syn_kitchen")].target) == [0.6, 0.8]
    assert report.cells[("erm", "file[b.jsonl]→syn_kitchen")].target == [0.3]
    assert (folder / "report" / "learning_curves_file_a.jsonl_-to-syn_kitchen.png").is_file()


def test_one_domain_name_on_the_same_file_keeps_its_name(tmp_path):
    folder = tmp_path / "runs"
    write_run(folder / "a0", make_config(source_domain=file_domain("/data/a.jsonl")))
    write_run(folder / "a1", make_config(seed=1, data_dir="/mnt", source_domain=file_domain("/mnt/a.jsonl")))
    assert write_report(folder).pairs == ["file→syn_kitchen"]


def test_a_folder_of_bad_runs_reports_without_a_traceback(runs, tmp_path):
    write_run(runs / "no-target", make_config(strategy="mmd", target_domain={"shots": 0}))
    (write_run(runs / "bad-config") / "config.yaml").write_text("- a list\n")
    (write_run(runs / "bad-json") / "metrics.json").write_text("{")
    (write_run(runs / "torn", finished=False) / "metrics.jsonl").write_text('{"step": 1, "eval": {"source/x')
    result = run_xdt("report", str(runs), cwd=tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "4 run(s) not averaged in" in result.stdout
    assert os.path.isfile(runs / "report" / "report.md")


def test_labels_are_shown_as_written_not_as_markup(runs, capsys):
    """Settings and file names are data: ``[/bold]`` is not a rich closing tag, ``$x$`` not matplotlib math, and
    a cell's line break or ``|`` does not break report.md's table."""
    write_run(runs / "odd", make_config(note="[/bold] $x$ a|b\nc"), accuracy=0.7)
    report = write_report(runs)
    assert "erm note=[/bold] $x$ a|b\nc" in report.rows
    assert "note=[/bold] $x$" in capsys.readouterr().out
    # escaped as GitHub-flavoured Markdown text (``$`` would start math there); one run has no spread: no "± 0.000"
    assert "| erm note=\\[/bold\\] \\$x\\$ a\\|b c | 0.700 (1) |" in (runs / "report" / "report.md").read_text()


def test_an_erm_run_that_took_no_time_gives_no_cost_ratio(runs):
    erm = runs / "good" / "metrics.json"
    erm.write_text(json.dumps({**json.loads(erm.read_text()), "train_time_s": 0.0}))
    write_run(runs / "coral", make_config(strategy="coral"))
    report = write_report(runs)
    assert report.rows == ["erm", "coral"] and report.step_ratio("coral") is None


def test_runs_in_another_precision_get_rows_of_their_own_but_another_device_does_not(runs):
    """bf16 changes the arithmetic, so its runs are another experiment; the same fp32 runs on another device or
    with other thread settings are the same experiment."""
    for seed in (1, 2):
        write_run(runs / f"fp32_{seed}", make_config(seed=seed, hardware={"device": "cuda", "mixed_precision": "no"}))
        write_run(runs / f"bf16_{seed}", make_config(seed=seed, hardware={"device": "cpu", "mixed_precision": "bf16"}),
                  accuracy=0.5)
    report = write_report(runs)
    # the hand-written run "good" has no hardware at all: a row of its own too
    assert report.rows == ["erm hardware.mixed_precision=bf16", "erm hardware.mixed_precision=no",
                           "erm hardware.mixed_precision=null"]
    (runs / "good" / "config.yaml").write_text(yaml.safe_dump(make_config(hardware={"mixed_precision": "no"})))
    assert write_report(runs).rows == ["erm hardware.mixed_precision=bf16", "erm hardware.mixed_precision=no"]
