"""What each tracker of the logger group costs against ``logger=none`` (issue 22), two ways.

1. **Whole runs, side by side**: ``xdt train`` as a user runs it (a fresh process each, so imports and the
   tracker's start-up count), ``--steps`` steps, a log line every step (``log_interval=1``, the most a run
   logs; the default of 10 logs a tenth as often) and one evaluation at the end, for each model, on
   ``--threads`` torch threads. Each round runs every logger once, the order rotated round by round, so machine
   noise falls on all alike. From each run: seconds per step (metrics.json's train_time_s / steps: forward,
   backward, optimizer step and the log line, trackers included), the process's wall time, and the CPU time of
   the process and its children (W&B's service process included): on a shared machine the CPU time is the
   steadier figure, the wall times move with the load. Medians over rounds, and the difference to logger=none.
2. **The tracker calls alone**, in one process, on the smoke run's records: starting the trackers (with the
   config as hyperparameters), one training log line (loss, its terms, lr), one evaluation record (every score
   of every set, ~50 numbers), the final metrics, closing. Medians in milliseconds.

Offline, as by default: TensorBoard files, MLflow's SQLite store in the run folder (created by each run: a
sweep's jobs share one, so they pay its creation once), W&B offline.

    .venv/bin/python scripts/bench_loggers.py                                  # smoke and MiniLM, 3 rounds
    .venv/bin/python scripts/bench_loggers.py --models smoke --rounds 5 --steps 20
    .venv/bin/python scripts/bench_loggers.py --calls-only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOGGERS = ("none", "tensorboard", "mlflow", "wandb")
# The models measured, as overrides: the smoke model, and MiniLM (the default run) on a capped evaluation.
MODELS = {"smoke": ["debug=smoke"], "minilm": ["model=minilm", "max_examples=256"]}
ENV = {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(model: str, logger: str, steps: int, folder: Path, cache: Path, threads: int) -> dict:
    run_dir = folder / f"{model}-{logger}-{time.monotonic_ns()}"
    command = [sys.executable, "-m", "xdt.cli", "train", *MODELS[model], f"logger={logger}", f"max_steps={steps}",
               f"eval_interval={steps}", "log_interval=1", f"hardware.num_threads={threads}", f"cache_dir={cache}",
               f"hydra.run.dir={run_dir}"]
    env = {key: value for key, value in os.environ.items() if not key.startswith(("MLFLOW_", "WANDB_"))} | ENV
    cpu, started = children_cpu_s(), time.perf_counter()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - started, children_cpu_s() - cpu
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    return {"step_s": metrics["train_time_s"] / metrics["steps"], "wall_s": wall, "cpu_s": cpu}


def whole_runs(models: list[str], rounds: int, steps: int, folder: Path, threads: int) -> None:
    cache = folder / "cache"
    for model in models:
        run_once(model, "none", 2, folder, cache, threads)  # warm-up: data tokenised, files in the page cache
        results: dict[str, list[dict]] = {logger: [] for logger in LOGGERS}
        for round_number in range(rounds):
            order = LOGGERS[round_number % len(LOGGERS):] + LOGGERS[:round_number % len(LOGGERS)]
            for logger in order:
                results[logger].append(run_once(model, logger, steps, folder, cache, threads))
            print(f"  {model} round {round_number + 1}/{rounds}: " + "  ".join(
                f"{logger} {results[logger][-1]['step_s']:.3f} s/step {results[logger][-1]['cpu_s']:.1f} cpu s"
                for logger in LOGGERS), flush=True)
        base = {key: statistics.median(r[key] for r in results["none"]) for key in ("step_s", "wall_s", "cpu_s")}
        print(f"\n{model}: {steps} steps, a log line every step, {threads} torch thread(s), {rounds} rounds (medians)")
        print(f"{'logger':<12} {'s/step':>7} {'vs none':>9} {'':>7} {'run wall s':>10} {'vs none':>8} "
              f"{'run CPU s':>9} {'vs none':>8}")
        for logger in LOGGERS:
            median = {key: statistics.median(r[key] for r in results[logger]) for key in base}
            print(f"{logger:<12} {median['step_s']:>7.3f} {median['step_s'] - base['step_s']:>+8.3f}s "
                  f"{100 * (median['step_s'] / base['step_s'] - 1):>+6.1f}% {median['wall_s']:>10.1f} "
                  f"{median['wall_s'] - base['wall_s']:>+7.1f}s {median['cpu_s']:>9.1f} "
                  f"{median['cpu_s'] - base['cpu_s']:>+7.1f}s")
        print(flush=True)


def tracker_calls(repeats: int, folder: Path) -> None:
    """Milliseconds per call of each tracker, on the records of a smoke run made here."""
    from hydra import compose, initialize_config_dir

    import xdt.config  # noqa: F401  (resolvers)
    from xdt.hardware import make_accelerator
    from xdt.tracking import Tracking

    source = folder / "records"
    subprocess.run([sys.executable, "-m", "xdt.cli", "train", "debug=smoke", "max_steps=3", "eval_interval=3",
                    f"cache_dir={folder / 'cache'}", f"hydra.run.dir={source}"], cwd=folder, check=True,
                   capture_output=True)
    record = json.loads((source / "metrics.jsonl").read_text().splitlines()[-1])
    result = json.loads((source / "metrics.json").read_text())
    describe = {key: record[key] for key in ("strategy", "model", "peft", "seed", "shots", "sources", "targets")}
    os.environ.update(ENV)
    print(f"tracker calls (ms, median of {repeats} runs of each; an evaluation record holds "
          f"{sum(len(v) for v in record['eval'].values())} scores)", flush=True)
    print(f"{'logger':<18} {'start':>8} {'train line':>11} {'eval record':>12} {'final':>8} {'close':>8}")
    # mlflow: a single run creates its SQLite store; a sweep's job finds the store its sweep created
    for logger, in_sweep in (("tensorboard", False), ("mlflow", False), ("mlflow", True), ("wandb", False)):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=["debug=smoke", f"logger={logger}"])
        times: dict[str, list[float]] = {name: [] for name in ("start", "train", "eval", "final", "close")}
        sweep = folder / f"sweep-{logger}"
        if in_sweep:
            sweep.mkdir()
            (sweep / "multirun.yaml").write_text("hydra: {}\n")
        for repeat in range(-1 if in_sweep else 0, repeats):  # a sweep's first job creates the store: not counted
            run_dir = (sweep if in_sweep else folder) / f"calls-{logger}-{repeat}"
            run_dir.mkdir()
            tracking = Tracking(cfg, run_dir)
            accelerator = make_accelerator(cfg.hardware, log_with=tracking.log_with)
            started = time.perf_counter()
            tracking.start(accelerator, 0)
            if repeat < 0:
                tracking.end("FINISHED")
                continue
            times["start"].append(time.perf_counter() - started)
            for step in range(1, 21):
                started = time.perf_counter()
                tracking.train(step, record["train"])
                times["train"].append(time.perf_counter() - started)
            for step in range(21, 26):
                started = time.perf_counter()
                tracking.evaluation({**record, "step": step}, describe)
                times["eval"].append(time.perf_counter() - started)
            started = time.perf_counter()
            tracking.final(result, describe, 25)
            times["final"].append(time.perf_counter() - started)
            started = time.perf_counter()
            tracking.end("FINISHED")
            times["close"].append(time.perf_counter() - started)
        print(f"{logger + (', sweep job' if in_sweep else ''):<18} " + " ".join(f"{1000 * statistics.median(times[name]):>{width}.1f}" for name, width in
                                           (("start", 8), ("train", 11), ("eval", 12), ("final", 8), ("close", 8))),
              flush=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--calls-only", action="store_true", help="only time the tracker calls")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the tracker-call timing per logger")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the whole runs (hardware.num_threads)")
    args = parser.parse_args()
    measure = ROOT / ".measure"
    measure.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="bench_loggers-", dir=measure))
    try:
        tracker_calls(args.repeats, folder)
        if not args.calls_only:
            whole_runs(args.models, args.rounds, args.steps, folder, args.threads)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
