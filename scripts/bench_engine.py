"""Time per training step of this checkout's engine against another checkout's, or against itself with a setting
changed, side by side in one run.

For each task (sequence classification with ERM, and language modeling), every round runs the same command
once with each version (a fresh process each, ``PYTHONPATH`` pointing at that checkout), in alternating order,
and reads ``train_time_s / steps`` and the MFU from the run's metrics.json (forward, backward and optimizer step
with data loading; start-up and evaluation excluded). It prints each version's median seconds per step and
MFU, and the median of the per-round ratios (after / before), so machine noise hits both alike.

    python scripts/bench_engine.py --before /path/to/checkout/of/an/older/commit
    python scripts/bench_engine.py --before ../xdt-old --steps 10 --rounds 5 --model minilm
    python scripts/bench_engine.py --setting hardware.fast_dropout=true --without hardware.fast_dropout=false
    XDT_DATA_DIR=../shared/data python scripts/bench_engine.py --setting hardware.fast_dropout=true \
        --without hardware.fast_dropout=false --tasks train --steps 40 -- experiment=fdu_apparel_to_MR track_targets=false

Make the older checkout with ``git worktree add --detach ../xdt-old <commit>``; both use this venv's packages.
Arguments after ``--`` are added to every run (another model, real data).
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


def commands(model: str, steps: int, tasks: list[str], extra: list[str]) -> dict[str, list[str]]:
    """The runs per task: MiniLM fine-tuning (ERM) and masked-LM training, on the synthetic domains by default."""
    budget = [f"max_steps={steps}", f"eval_interval={steps}", f"log_interval={steps}", "max_examples=600",
              f"model={model}", *extra]
    every = {"train": ("sequence classification (erm)", ["train", *budget]),
             "pretrain": ("language modeling", ["pretrain", *budget])}
    return dict(every[task] for task in tasks)


def run_figures(checkout: Path, arguments: list[str], folder: Path) -> tuple[float, float | None]:
    """Seconds per training step and MFU of one run of ``arguments`` with the code of ``checkout``."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, "-m", "xdt.cli", *arguments, f"hydra.run.dir={folder}"], cwd=folder.parent,
                   env=env, check=True, capture_output=True, text=True)
    result = json.loads((folder / "metrics.json").read_text())
    return result["train_time_s"] / result["steps"], result.get("efficiency", {}).get("mfu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--before", type=Path, help="a checkout of the code to compare with")
    which.add_argument("--setting", nargs="+", metavar="OVERRIDE",
                       help="compare this checkout with these overrides (after) against --without (before)")
    parser.add_argument("--without", nargs="*", default=[], metavar="OVERRIDE",
                        help="the overrides of the 'before' runs with --setting (default: none)")
    parser.add_argument("--tasks", nargs="+", choices=["train", "pretrain"], default=["train", "pretrain"])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("extra", nargs="*", help="overrides for every run, after --")
    args = parser.parse_args()
    if args.before:
        versions = {"before": (args.before.resolve(), []), "after": (ROOT, [])}
    else:
        versions = {"before": (ROOT, args.without), "after": (ROOT, args.setting)}
    with tempfile.TemporaryDirectory(prefix="xdt-bench-engine-") as scratch:
        for task, arguments in commands(args.model, args.steps, args.tasks, args.extra).items():
            figures: dict[str, list[tuple[float, float | None]]] = {name: [] for name in versions}
            ratios = []
            for round_ in range(args.rounds):
                order = list(versions) if round_ % 2 == 0 else list(reversed(versions))
                for name in order:
                    checkout, overrides = versions[name]
                    folder = Path(scratch) / f"{task[:8].strip()}-{name}-{round_}".replace(" ", "_")
                    figures[name].append(run_figures(checkout, [*arguments, *overrides], folder))
                ratios.append(figures["after"][-1][0] / figures["before"][-1][0])
            print(f"{task}: " + ", ".join(f"{name} {describe(values)}" for name, values in figures.items()) +
                  f"; after/before {statistics.median(ratios):.3f} (median of {args.rounds} rounds; per round "
                  f"{', '.join(f'{r:.3f}' for r in ratios)})")


def describe(values: list[tuple[float, float | None]]) -> str:
    """Median seconds per step and, where the runs report it, median MFU."""
    mfus = [mfu for _, mfu in values if mfu is not None]
    return f"{statistics.median(s for s, _ in values):.3f} s/step" + \
        (f" (MFU {statistics.median(mfus):.2f})" if mfus else "")


if __name__ == "__main__":
    main()
