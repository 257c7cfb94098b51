"""Time per training step of this checkout's engine against another checkout's, side by side in one run.

For each task (sequence classification with ERM, and language modeling), every round runs the same command
once with each version of the code (a fresh process each, ``PYTHONPATH`` pointing at that checkout), in
alternating order, and reads ``train_time_s / steps`` from the run's metrics.json (forward, backward and
optimizer step with data loading; start-up and evaluation excluded). It prints each version's median seconds
per step and the median of the per-round ratios (this checkout / the other), so machine noise hits both alike.

    python scripts/bench_engine.py --before /path/to/checkout/of/an/older/commit
    python scripts/bench_engine.py --before ../xdt-old --steps 10 --rounds 5 --model minilm

Make the older checkout with ``git worktree add --detach ../xdt-old <commit>``; both use this venv's packages.
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

ROOT = Path(__file__).resolve().parents[1]


def commands(model: str, steps: int) -> dict[str, list[str]]:
    """The two tasks' runs: MiniLM fine-tuning (ERM) and masked-LM training, on the synthetic domains."""
    budget = [f"max_steps={steps}", f"eval_interval={steps}", f"log_interval={steps}", "max_examples=600",
              f"model={model}"]
    return {"sequence classification (erm)": ["train", *budget],
            "language modeling": ["pretrain", *budget]}


def seconds_per_step(checkout: Path, arguments: list[str], folder: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, "-m", "xdt.cli", *arguments, f"hydra.run.dir={folder}"], cwd=folder.parent,
                   env=env, check=True, capture_output=True, text=True)
    result = json.loads((folder / "metrics.json").read_text())
    return result["train_time_s"] / result["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    versions = {"before": args.before.resolve(), "after": ROOT}
    with tempfile.TemporaryDirectory(prefix="xdt-bench-engine-") as scratch:
        for task, arguments in commands(args.model, args.steps).items():
            times: dict[str, list[float]] = {name: [] for name in versions}
            ratios = []
            for round_ in range(args.rounds):
                order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
                for name in order:
                    folder = Path(scratch) / f"{task[:8].strip()}-{name}-{round_}".replace(" ", "_")
                    times[name].append(seconds_per_step(versions[name], arguments, folder))
                ratios.append(times["after"][-1] / times["before"][-1])
            print(f"{task}: before {statistics.median(times['before']):.3f} s/step, after "
                  f"{statistics.median(times['after']):.3f} s/step, after/before {statistics.median(ratios):.3f} "
                  f"(median of {args.rounds} rounds; per round {', '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
