"""Mean target accuracy of strategies on the synthetic benchmark, where the domain shift is designed.

``experiment=synthetic_shift`` (the tiny model built from a config, synthetic books -> kitchen, 300 steps,
lr 1e-3) over seeds 0, 1, 2: the setting of ``test_an_alignment_strategy_beats_erm_on_the_synthetic_benchmark``
in ``tests/test_strategies.py``, with the per-seed figures the test only asserts on. Needs no data folder.

    python scripts/synthetic_benchmark.py                      # erm dann coral mmd
    python scripts/synthetic_benchmark.py dann strategy.weight=1.0 strategy.discriminator_lr_scale=1  # DANN's old defaults
    python scripts/synthetic_benchmark.py dann strategy.adversary=confusion   # the bounded adversary
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

import xdt.config  # noqa: F401  (resolvers)
from xdt.console import console
from xdt.train import train

ROOT = Path(__file__).resolve().parents[1]


def target_accuracy(overrides: list[str], run_dir: Path) -> float:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return train(cfg, run_dir)["metrics"]["target/syn_kitchen/test"]["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("args", nargs="*", help="strategy names, then key=value overrides for every run")
    args = parser.parse_args()
    strategies = [a for a in args.args if "=" not in a] or ["erm", "dann", "coral", "mmd"]
    overrides = [a for a in args.args if "=" in a]
    logging.disable(logging.INFO)
    console.quiet = True  # each run's summary table would bury the figures this script prints
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for strategy in strategies:
            accuracies = [target_accuracy(["experiment=synthetic_shift", f"cache_dir={tmp}/cache",
                                           f"strategy={strategy}", f"seed={seed}", *overrides],
                                          Path(tmp) / f"{strategy}-{seed}") for seed in (0, 1, 2)]
            rows.append((strategy, accuracies))
    print(f"\nsynthetic books -> kitchen, tiny model, 300 steps, seeds 0 1 2 {' '.join(overrides)}")
    for strategy, accuracies in rows:
        seeds = " ".join(f"{a:.3f}" for a in accuracies)
        print(f"{strategy:<8} mean {statistics.mean(accuracies):.3f}   seeds {seeds}")


if __name__ == "__main__":
    main()
