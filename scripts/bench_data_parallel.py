"""Training throughput of N data-parallel processes (torchrun + Accelerate) against one process.

Both runs train the same model on the same global batch for the same steps; one process uses all
``--threads`` CPU threads, the N processes split them (OMP_NUM_THREADS = threads / N each). Reads
train_samples_per_s from each run's metrics.json (forward, backward and optimizer step, data loading
included; start-up and evaluation excluded). Rounds alternate the two set-ups; prints medians and the
median of the per-round speed-ups.

    python scripts/bench_data_parallel.py                        # MiniLM, synthetic data, 2 processes
    python scripts/bench_data_parallel.py --model tiny --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def samples_per_second(run_dir: Path, processes: int, threads: int, args, cache: Path) -> float:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "xdt.cli", "train", f"model={args.model}", f"max_steps={args.steps}",
               f"eval_interval={args.steps}", f"batch_size={args.batch_size}", "hardware=cpu",
               f"hydra.run.dir={run_dir}", f"cache_dir={cache}", "track_targets=false"]
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes))}
    subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    return json.loads((run_dir / "metrics.json").read_text())["train_samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    one, many, speedups = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        for round_ in range(args.rounds):
            one.append(samples_per_second(Path(tmp) / f"one-{round_}", 1, args.threads, args, cache))
            many.append(samples_per_second(Path(tmp) / f"many-{round_}", args.processes, args.threads, args, cache))
            speedups.append(many[-1] / one[-1])
            print(f"round {round_}: 1 process {one[-1]:.1f} samples/s, {args.processes} processes "
                  f"{many[-1]:.1f} samples/s, speed-up {speedups[-1]:.2f}x")
    print(f"median over {args.rounds} rounds ({args.model}, global batch {args.batch_size}, {args.threads} threads): "
          f"1 process {statistics.median(one):.1f} samples/s, {args.processes} processes "
          f"{statistics.median(many):.1f} samples/s, speed-up {statistics.median(speedups):.2f}x")


if __name__ == "__main__":
    main()
