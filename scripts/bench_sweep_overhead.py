"""Time a sweep spends per job beyond the jobs' own training runs.

Launches ``xdt train -m`` over ``--jobs`` seeds of a short tiny-model run, as a user would, and compares
the sweep's wall time with the sum of the runs' own ``wall_time_s`` (from their start-up to their final
metrics). The difference, divided by the number of jobs, is what the sweep machinery costs per job:
Python and Hydra start-up (shared by all jobs), composing each job's config, creating its folder,
writing Hydra's records, and the end-of-sweep summary. Repeats ``--rounds`` times; prints medians.

    python scripts/bench_sweep_overhead.py                       # 6 jobs x 3 rounds
    python scripts/bench_sweep_overhead.py --launcher local_parallel --jobs 4
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_sweep(folder: Path, jobs: int, launcher: str, cache: Path) -> tuple[float, float]:
    """(sweep wall seconds, sum of the jobs' own wall seconds)."""
    command = [sys.executable, "-m", "xdt.cli", "train", "-m", "debug=smoke", "max_steps=20", "eval_interval=10",
               f"seed={','.join(map(str, range(jobs)))}", f"hydra.sweep.dir={folder}", f"cache_dir={cache}",
               f"hydra/launcher={launcher}"]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    total = time.perf_counter() - started
    runs = [json.loads(p.read_text()) for p in folder.glob("*/metrics.json")]
    if len(runs) != jobs:
        raise SystemExit(f"{len(runs)} of {jobs} jobs finished in {folder}")
    return total, sum(r["wall_time_s"] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--launcher", default="basic")
    args = parser.parse_args()
    per_job, totals = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        one_sweep(Path(tmp) / "warm-up", 1, "basic", cache)  # fills the tokenisation cache
        for round_ in range(args.rounds):
            total, runs = one_sweep(Path(tmp) / f"round-{round_}", args.jobs, args.launcher, cache)
            totals.append(total)
            per_job.append((total - runs) / args.jobs)
            print(f"round {round_}: sweep {total:.1f} s, jobs' own wall time {runs:.1f} s, "
                  f"overhead {per_job[-1]:.2f} s per job")
    print(f"median over {args.rounds} rounds of {args.jobs} jobs ({args.launcher} launcher): sweep "
          f"{statistics.median(totals):.1f} s, overhead {statistics.median(per_job):.2f} s per job "
          f"(Python and Hydra start-up included, spread over the jobs)")


if __name__ == "__main__":
    main()
