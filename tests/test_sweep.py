"""Sweeps: a failing job is recorded and the others finish; a re-launch skips finished jobs and resumes
cut-off ones; job folders are named by what varies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import DATA_DIR, run_xdt
from xdt import checkpoint
from xdt.job_names import job_name

SWEEP = ["debug=smoke", "max_steps=6", "eval_interval=3"]


def test_a_failing_job_is_recorded_and_the_others_finish(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", *SWEEP, "optimizer.lr=1e-3,-1", "seed=0,1", f"hydra.sweep.dir={sweep}",
            f"cache_dir={cache_dir}"]
    first = run_xdt(*args, cwd=tmp_path)
    assert first.returncode == 1, first.stderr  # the sweep ran to its end, then reported the failures
    jobs = {p.name: p for p in sweep.iterdir() if p.is_dir()}
    assert set(jobs) == {"0_optimizer.lr=0.001,seed=0", "1_optimizer.lr=0.001,seed=1",
                         "2_optimizer.lr=-1,seed=0", "3_optimizer.lr=-1,seed=1"}
    for name, job in jobs.items():
        failed = "lr=-1" in name
        assert (job / "done").exists() != failed and (job / "failed").exists() == failed
        if failed:
            assert "optimizer.lr=-1 is not valid" in (job / "failed").read_text()
    assert "failed: 2_optimizer.lr=-1,seed=0" in first.stdout + first.stderr

    finished = {name: (job / "done").stat().st_mtime_ns for name, job in jobs.items() if (job / "done").exists()}
    second = run_xdt(*args, cwd=tmp_path)
    assert second.returncode == 1
    assert {name: (jobs[name] / "done").stat().st_mtime_ns for name in finished} == finished
    assert (second.stdout + second.stderr).count("it has finished") == 2


def test_relaunch_resumes_a_cut_off_job(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "debug=smoke", "max_steps=60", "eval_interval=10", "seed=0,1",
            f"hydra.sweep.dir={sweep}", f"cache_dir={cache_dir}"]
    with open(tmp_path / "first.out", "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "xdt.cli", *args], cwd=tmp_path, stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, "XDT_DATA_DIR": str(DATA_DIR)})
    job = sweep / "0_seed=0"
    deadline = time.time() + 120
    while not (job.exists() and checkpoint.checkpoint_steps(job)):
        assert process.poll() is None and time.time() < deadline, (tmp_path / "first.out").read_text()
        time.sleep(0.02)
    process.kill()
    process.wait(timeout=60)
    assert not (job / "done").exists()
    second = run_xdt(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resuming" in second.stdout + second.stderr
    assert (job / "done").exists() and (sweep / "1_seed=1" / "done").exists()


def test_job_names_hold_only_what_varies(tmp_path):
    (tmp_path / "multirun.yaml").write_text(
        "hydra:\n  overrides:\n    task: [debug=smoke, 'seed=0,1', 'strategy=erm,dann', data_dir=/x/y, "
        "'target_domain=[a,b]']\n  sweeper:\n    params:\n      optimizer.lr: interval(1e-5, 1e-3)\n")
    overrides = ["debug=smoke", "seed=1", "strategy=dann", "data_dir=/x/y", "target_domain=[a,b]",
                 "optimizer.lr=0.0003"]
    assert job_name(str(tmp_path), overrides) == "seed=1,strategy=dann,optimizer.lr=0.0003"
    assert job_name(str(tmp_path / "elsewhere"), ["model.name_or_path=/a/b"]) == "model.name_or_path=_a_b"


def test_a_job_folder_of_another_experiment_is_left_alone(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    common = [f"hydra.sweep.dir={sweep}", f"cache_dir={cache_dir}", "seed=0,1"]
    assert run_xdt("train", "-m", *SWEEP, *common, cwd=tmp_path).returncode == 0
    before = (sweep / "0_seed=0" / "metrics.json").read_bytes()
    other = run_xdt("train", "-m", *SWEEP, "batch_size=8", *common, cwd=tmp_path)
    assert other.returncode == 1 and "holds a run of a different configuration" in other.stdout + other.stderr
    assert (sweep / "0_seed=0" / "metrics.json").read_bytes() == before


def test_a_job_made_before_a_setting_existed_is_still_this_sweeps_job(tmp_path, cache_dir):
    # A sweep filled over several launches must survive an xdt that added a setting in between.
    sweep = tmp_path / "sweep"
    args = ["train", "-m", *SWEEP, f"hydra.sweep.dir={sweep}", f"cache_dir={cache_dir}", "seed=0,1"]
    assert run_xdt(*args, cwd=tmp_path).returncode == 0
    config = sweep / "0_seed=0" / "config.yaml"
    older = "\n".join(line for line in config.read_text().splitlines() if "fast_dropout" not in line) + "\n"
    config.write_text(older)
    finished = (sweep / "0_seed=0" / "done").stat().st_mtime_ns
    again = run_xdt(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "0_seed=0 was made by an xdt without the settings hardware.fast_dropout" in again.stdout + again.stderr
    assert (sweep / "0_seed=0" / "done").stat().st_mtime_ns == finished and config.read_text() == older


def test_optuna_preset_runs_trials_scored_on_source_validation(tmp_path, cache_dir):
    sweep = tmp_path / "search"
    result = run_xdt("train", "-m", "hparams_search=lr", *SWEEP, "hydra.sweeper.n_trials=2",
                     "hydra.sweeper.sampler.n_startup_trials=1", f"hydra.sweep.dir={sweep}",
                     f"cache_dir={cache_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    jobs = sorted(p for p in sweep.iterdir() if (p / "done").exists())
    assert len(jobs) == 2
    lrs = {float(yaml_value(job / "config.yaml", "lr")) for job in jobs}
    assert len(lrs) == 2 and all(1e-5 <= lr <= 1e-3 for lr in lrs)
    best = (sweep / "optimization_results.yaml").read_text()
    scores = [json.loads((job / "metrics.json").read_text())["source_validation_best"] for job in jobs]
    assert f"best_value: {max(scores)}" in best  # the objective is the best source validation score


def yaml_value(path: Path, key: str) -> str:
    return next(line.split(":", 1)[1].strip() for line in path.read_text().splitlines()
                if line.strip().startswith(f"{key}:"))


def test_submitit_local_launcher_runs_a_job(tmp_path, cache_dir):
    sweep = tmp_path / "submitit"
    result = run_xdt("train", "-m", "hydra/launcher=submitit_local", *SWEEP, "seed=0",
                     f"hydra.sweep.dir={sweep}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (sweep / "0_job" / "done").exists()  # nothing varies in a one-job sweep, so the name says "job"
    assert list((sweep / ".submitit").glob("*/*_result.pkl"))  # it really went through submitit


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path, cache_dir):
    sweep = tmp_path / "joblib"
    result = run_xdt("train", "-m", "hydra/launcher=local_parallel", "hardware.num_threads=1", *SWEEP,
                     "seed=0,1", f"hydra.sweep.dir={sweep}", f"cache_dir={cache_dir}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (sweep / "0_seed=0" / "done").exists() and (sweep / "1_seed=1" / "done").exists()
