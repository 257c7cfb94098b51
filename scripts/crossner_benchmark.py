"""CrossNER with MiniLM: zero-shot on shared types, pre-train then fine-tune, and joint training, per target domain
and seed, optionally after a DAPT stage or with another strategy, then ``xdt report`` over every run.

The runs are the shipped presets (configs/experiment/crossner_*.yaml), with one saving: a zero-shot run trains on
CoNLL-2003 and its encoder is where the fine-tuning runs start (``task.train_on=target model.init_from=<zero-shot
run>``), which is what the one-command ``crossner_<target>_fine_tune`` preset does with a source stage of its own.
With plain ERM and no DAPT the zero-shot run is shared by the three targets (it trains on CoNLL-2003 alone and
scores them together); with ``--dapt-steps`` (a language-modeling stage on the target's text first,
``+pretrain={text_from: target, ...}``) or an alignment strategy (which reads the target's unlabeled text) it is
one run per target. ``track_targets=false``: only the selecting dev split is scored during training, every split
once at the end. Runs that finished are skipped and cut-off ones resumed, so the script can be started again
after an interruption; ``--jobs N`` runs N independent chains at once (on a GPU, where one MiniLM run leaves it
mostly idle).

    python scripts/crossner_benchmark.py --folder runs/crossner --seeds 0 1
    python scripts/crossner_benchmark.py --folder runs/crossner --protocols fine_tune joint --dapt-steps 200
    python scripts/crossner_benchmark.py --folder runs/crossner --protocols joint --strategy dann
    python scripts/crossner_benchmark.py --folder runs/crossner --report-only --out docs/results/crossner

Needs the data under ``XDT_DATA_DIR`` (or ``--data-dir``), a folder holding ``crossner/``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TARGETS = ("politics", "science", "music")
PROTOCOLS = ("zero_shot", "fine_tune", "joint")
Run = tuple[Path, list[str]]  # a run folder and the overrides that start it


def xdt(*arguments: str) -> int:
    print("+ xdt " + " ".join(arguments), flush=True)
    return subprocess.run([sys.executable, "-m", "xdt.cli", *arguments]).returncode


def run(folder: Path, overrides: list[str]) -> int:
    """One xdt train run in ``folder``: skipped when done, resumed when cut off."""
    if (folder / "done").exists():
        print(f"= {folder} has finished", flush=True)
        return 0
    if (folder / "config.yaml").exists():
        return xdt("train", f"resume={folder}")
    return xdt("train", *overrides, f"hydra.run.dir={folder}")


def run_chain(chain: list[Run]) -> int:
    """Runs that build on each other, in order; stops at the first that fails."""
    for folder, overrides in chain:
        if code := run(folder, overrides):
            print(f"! {folder} failed (exit {code}); the runs that build on it are not started", flush=True)
            return code
    return 0


def chains(args: argparse.Namespace, seed: int) -> list[list[Run]]:
    """The runs of one seed, grouped into chains: a zero-shot run and the fine-tuning runs starting from it, and
    each joint run alone."""
    common = [f"data_dir={args.data_dir}", "track_targets=false", f"strategy={args.strategy}", f"seed={seed}",
              *([f"+pretrain={{text_from: target, max_steps: {args.dapt_steps}}}"] if args.dapt_steps else []),
              *args.extra]
    name = args.strategy + (f"_dapt{args.dapt_steps}" if args.dapt_steps else "")
    shared = args.strategy == "erm" and not args.dapt_steps
    groups = [list(args.targets)] if shared else [[target] for target in args.targets]
    result: list[list[Run]] = []
    for group in groups:
        chain: list[Run] = []
        if {"zero_shot", "fine_tune"} & set(args.protocols):
            zero_shot = args.folder / f"zero_shot_{name}{'' if shared else '_' + group[0]}_seed{seed}"
            targets = "target_domain=[" + ",".join(f"crossner_{t}" for t in group) + "]"
            chain.append((zero_shot, [f"experiment=crossner_{group[0]}", targets, "task.export_encoder=true", *common]))
            if "fine_tune" in args.protocols:
                chain += [(args.folder / f"fine_tune_{name}_{target}_seed{seed}",
                           [f"experiment=crossner_{target}", "task.train_on=target",
                            f"model.init_from={zero_shot.resolve()}", "max_steps=200", "eval_interval=50", *common])
                          for target in group]
        result.append(chain)
    if "joint" in args.protocols:
        result += [[(args.folder / f"joint_{name}_{target}_seed{seed}", [f"experiment=crossner_{target}_joint",
                                                                           *common])] for target in args.targets]
    return [chain for chain in result if chain]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True, help="where the runs go")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--targets", nargs="+", default=list(TARGETS), choices=TARGETS)
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    parser.add_argument("--strategy", default="erm")
    parser.add_argument("--dapt-steps", type=int, default=0,
                        help="language-model steps on the target's text before each protocol (0: no DAPT)")
    parser.add_argument("--data-dir", default=os.environ.get("XDT_DATA_DIR", "../shared/data"))
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run, e.g. hardware=gpu")
    parser.add_argument("--jobs", type=int, default=1, help="chains of runs at once")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--out", type=Path, help="where xdt report writes (default: <folder>/report)")
    args = parser.parse_args()
    todo = [] if args.report_only else [chain for seed in args.seeds for chain in chains(args, seed)]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        failed = sum(code != 0 for code in pool.map(run_chain, todo))
    code = xdt("report", str(args.folder), *(["--out", str(args.out)] if args.out else []))
    if failed:
        sys.exit(f"{failed} of {len(todo)} chains of runs failed; the report covers the runs that finished")
    sys.exit(code)


if __name__ == "__main__":
    main()
