"""Time per training step of every strategy relative to ERM, measured side by side in one process.

Each round trains every strategy for ``--steps`` steps on the same data (MiniLM, FDU-MTL apparel -> MR
by default) and reads its train_time_s / steps (forward, backward and optimizer step, data loading
included; start-up and evaluation excluded). Rounds alternate the strategies so machine noise hits
them alike; the script prints each strategy's median seconds per step and its median ratio to ERM's
step time in the same round.

    python scripts/bench_strategies.py                          # needs XDT_DATA_DIR or ../shared/data
    python scripts/bench_strategies.py --steps 10 --rounds 3 --strategies erm dann mmd
    python scripts/bench_strategies.py --strategies erm dann/stacked dann/2pass   # one pass against two
    python scripts/bench_strategies.py --strategies erm dann/stacked dann/2pass --overrides hardware=gpu
    python scripts/bench_strategies.py --source '[fdu_apparel,fdu_baby,fdu_toys_games]' --strategies erm reptile maml
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
from unittest import mock
from pathlib import Path

from hydra import compose, initialize_config_dir

import xdt.config  # noqa: F401  (resolvers)
from xdt.console import console
from xdt.strategies.base import Strategy
from xdt.train import train

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"erm": ["strategy=erm"], "dann": ["strategy=dann"],
            "dann+confusion": ["strategy=dann", "strategy.adversary=confusion"],
            "coral": ["strategy=coral"], "mmd": ["strategy=mmd"],
            "mtl": ["strategy=mtl"], "self_train": ["strategy=self_train", "strategy.warmup=0"],
            "fgm": ["strategy=fgm"], "augment": ["strategy=augment"], "lp_ft": ["strategy=lp_ft"],
            "erm+lora": ["strategy=erm", "model.peft=lora"], "dann+lora": ["strategy=dann", "model.peft=lora"],
            "reptile": ["strategy=reptile"], "maml": ["strategy=maml"],
            "erm+averaging": ["strategy=erm", "average_from=0"]}  # weight averaging on every step
# The strategies that read a source and a target batch can encode them in one pass, stacked, or in a pass each
# (Strategy.features_of_both; by default stacked on accelerators, a pass each on CPU): "<name>/stacked" and
# "<name>/2pass" force one or the other, for a side-by-side comparison on any device.
TWO_STREAM = ("dann", "dann+confusion", "coral", "mmd", "self_train")
FORCED = {"stacked": True, "2pass": False}
VARIANTS.update({f"{name}/{how}": VARIANTS[name] for name in TWO_STREAM for how in FORCED})


def seconds_per_step(overrides: list[str], run_dir: Path, stack_streams: bool | None = None) -> float:
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with mock.patch.object(Strategy, "stack_streams", stack_streams):
        result = train(cfg, run_dir)
    return result["train_time_s"] / result["steps"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="fdu_apparel", help="a domain, or several as '[a,b,c]'")
    parser.add_argument("--target", default="fdu_MR")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--strategies", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--overrides", nargs="+", default=[], help="added to every run (hardware=gpu, say)")
    args = parser.parse_args()
    logging.disable(logging.INFO)
    console.quiet = True  # each run's summary table would bury the figures this script prints
    data_dir = os.environ.get("XDT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    common = ["model=minilm", f"source_domain={args.source}", f"target_domain=[{args.target}]", f"data_dir={data_dir}",
              f"max_steps={args.steps}", f"eval_interval={args.steps}", f"log_interval={args.steps}", "max_examples=600"]
    common += args.overrides
    names = ["erm", *[s for s in args.strategies if s != "erm"]]
    times: dict[str, list[float]] = {name: [] for name in names}
    ratios: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        common.append(f"cache_dir={tmp}/cache")
        for round_ in range(args.rounds):
            for name in names:
                run_dir = Path(tmp) / f"{name.replace('/', '-')}-{round_}"
                times[name].append(seconds_per_step([*common, *VARIANTS[name]], run_dir,
                                                    FORCED.get(name.rpartition("/")[2])))
                ratios[name].append(times[name][-1] / times["erm"][-1])
            print(f"round {round_ + 1}: " + ", ".join(f"{n} {times[n][-1]:.2f} s" for n in names), flush=True)
    print(f"\n{args.source} -> {args.target}, {args.steps} steps per run, {args.rounds} rounds, batch 32, max_length 128")
    for name in names:
        print(f"{name:<16} {statistics.median(times[name]):6.2f} s/step   {statistics.median(ratios[name]):5.2f}x erm")


if __name__ == "__main__":
    main()
