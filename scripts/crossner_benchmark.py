"""CrossNER with MiniLM: zero-shot on shared types, pre-train then fine-tune, and joint training, per target domain
and seed, then ``xdt report`` over every run (docs/results/crossner/ holds what it wrote).

The runs are the shipped presets (configs/experiment/crossner_*.yaml), with one saving: the zero-shot run trains
on CoNLL-2003 once per seed and scores the three targets together, and the fine-tuning runs start from its
encoder (``task.train_on=target model.init_from=<zero-shot run>``), which is what the one-command
``crossner_<target>_fine_tune`` preset does with a source stage of its own. ``track_targets=false``: only the
selecting dev split is scored during training, every split once at the end. Runs that finished are skipped and
cut-off ones resumed, so the script can be started again after an interruption.

    python scripts/crossner_benchmark.py --folder runs/crossner --seeds 0 1
    python scripts/crossner_benchmark.py --folder runs/crossner --seeds 0 --targets politics --protocols zero_shot
    python scripts/crossner_benchmark.py --folder runs/crossner --report-only --out docs/results/crossner

Needs the data under ``XDT_DATA_DIR`` (or ``--data-dir``), a folder holding ``crossner/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

TARGETS = ("politics", "science", "music")
PROTOCOLS = ("zero_shot", "fine_tune", "joint")


def xdt(*arguments: str) -> None:
    print("+ xdt " + " ".join(arguments), flush=True)
    subprocess.run([sys.executable, "-m", "xdt.cli", *arguments], check=True)


def run(folder: Path, *overrides: str) -> None:
    """One xdt train run in ``folder``: skipped when done, resumed when cut off."""
    if (folder / "done").exists():
        print(f"= {folder} has finished", flush=True)
    elif (folder / "config.yaml").exists():
        xdt("train", f"resume={folder}")
    else:
        xdt("train", *overrides, f"hydra.run.dir={folder}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="where the runs go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--strategy", default="erm")
    parser.add_argument("--data-dir", default=os.environ.get("XDT_DATA_DIR", "../shared/data"))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run, e.g. max_steps=300")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, help="where xdt report writes (default: <folder>/report)")
    args = parser.parse_args()
    common = [f"data_dir={args.data_dir}", "track_targets=false", f"strategy={args.strategy}", *args.extra]
    every_target = "target_domain=[" + ",".join(f"crossner_{t}" for t in args.targets) + "]"
    for seed in [] if args.report_only else args.seeds:
        zero_shot = args.folder / f"zero_shot_{args.strategy}_seed{seed}"
        if {"zero_shot", "fine_tune"} & set(args.protocols):
            run(zero_shot, f"experiment=crossner_{args.targets[0]}", every_target, "task.export_encoder=true",
                f"seed={seed}", *common)
        for target in args.targets:
            if "fine_tune" in args.protocols:
                run(args.folder / f"fine_tune_{args.strategy}_{target}_seed{seed}", f"experiment=crossner_{target}",
                    "task.train_on=target", f"model.init_from={zero_shot.resolve()}", "max_steps=200",
                    "eval_interval=50", f"seed={seed}", *common)
            if "joint" in args.protocols:
                run(args.folder / f"joint_{args.strategy}_{target}_seed{seed}", f"experiment=crossner_{target}_joint",
                    f"seed={seed}", *common)
    xdt("report", str(args.folder), *(["--out", str(args.out)] if args.out else []))


if __name__ == "__main__":
    main()
