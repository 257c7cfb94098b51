"""Regenerate a published result: run its grid with ``xdt train -m`` as a user would, then ``xdt report`` it
into ``docs/results/<benchmark>/`` (report.md, report.csv and the figures, headed by the commands, the commit,
the machine and the date).

Each benchmark is one row of ``BENCHMARKS``: the overrides of one sweep, or of several where one sweep cannot
hold the grid (a Cartesian product cannot leave out a domain paired with itself, or give one strategy a setting
another lacks). The runs go to ``--runs/<benchmark>`` (``--runs/<benchmark>/<k>`` for the k-th of several
sweeps; outside the repository by default, they are large); ``--tag gpu`` makes both folders ``<benchmark>_gpu``,
so a run on other hardware or at another precision gets a report of its own beside the CPU one. Launching again
skips finished jobs and resumes cut-off ones, so an interrupted benchmark continues where it stopped. Only the
report files are committed.

    python scripts/results.py --list
    python scripts/results.py synthetic_shift                        # no data needed, tiny model
    XDT_DATA_DIR=../shared/data python scripts/results.py fdu_150    # MiniLM on FDU-MTL pairs
    python scripts/results.py fdu_150 --runs /scratch/xdt-runs --tag gpu -- hardware=gpu hardware.mixed_precision=no
    python scripts/results.py da_grid -- hardware=gpu hydra/launcher=local_parallel hydra.launcher.n_jobs=8

A benchmark listed in ``EVALUATIONS`` also evaluates each finished run with ``xdt eval`` (int8, say) into a
subfolder of the run, which the report reads. Arguments after ``--`` are added to every training job (a GPU, a
data folder, a launcher); they appear in the report's header.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from xdt.errors import XdtError
from xdt.runs import find_runs

ROOT = Path(__file__).resolve().parents[1]

# The domain-adaptation benchmark (configs/experiment/da_grid.yaml): four FDU-MTL product domains chosen by
# vocabulary overlap (scripts/choose_domains.py), so 12 ordered pairs.
DA_DOMAINS = ("apparel", "camera_photo", "music", "video")
# Source-only ERM, and the candidates with published gains for pretrained text encoders, each over the settings a
# search would try: DANN's adversarial weight, CORAL's and MMD's penalty weights, self-training's confidence
# threshold (with SHOT's diversity term) with pseudo-labels from the trained pass or, FixMatch/UDA-style, from the
# text as it is with the loss on an EDA-rewritten copy (views), and UDALM-style masked-LM on target text (mtl, one
# source: no domain heads).
DA_STRATEGIES = (["strategy=erm"],
                 ["strategy=dann", "strategy.weight=0.03,0.1,0.3,1.0"],
                 ["strategy=coral", "strategy.weight=0.1,0.3,1.0,3.0"],
                 ["strategy=mmd", "strategy.weight=0.1,0.3,1.0,3.0"],
                 ["strategy=self_train", "strategy.threshold=0.8,0.9,0.95", "strategy.views=same,eda"],
                 ["strategy=mtl", "strategy.domain_heads=false", "strategy.mlm_weight=0.1,0.3,1.0"])


def da_grid_sweeps(domains: tuple[str, ...] = DA_DOMAINS, seeds: str = "0,1,2") -> list[list[str]]:
    """One sweep per strategy and source domain: its targets are the other domains."""
    return [["experiment=da_grid", f"source_domain=fdu_{source}",
             "target_domain=" + ",".join(f"fdu_{target}" for target in domains if target != source),
             *strategy, f"seed={seeds}"]
            for strategy in DA_STRATEGIES for source in domains]


# The six strategies of the 300-step FDU-MTL comparison, swept with the seeds outermost, so an interrupted launch
# has every pair and strategy at its first seeds.
FDU_300_STRATEGIES = "strategy=erm,dann,coral,fgm,self_train,augment"


def fdu_300_sweep(pairs: str) -> list[str]:
    return ["seed=0,1,2", f"experiment={pairs}", FDU_300_STRATEGIES, "max_steps=300"]


def weight_sweep(strategy: str, weights: str) -> list[str]:
    return ["experiment=synthetic_shift", f"strategy={strategy}", f"strategy.weight={weights}", "seed=0,1,2"]


# name -> (what it compares, the overrides of each of its sweeps)
BENCHMARKS: dict[str, tuple[str, list[list[str]]]] = {
    "synthetic_shift": (
        "alignment strategies against ERM on the designed synthetic shift (tiny model, books -> kitchen, 300 steps)",
        [["experiment=synthetic_shift", "strategy=erm,dann,coral,mmd", "seed=0,1,2"]]),
    "synthetic_selection": (
        "the selection gap on the synthetic shift: DANN, CORAL and MMD over four weights each, against ERM",
        [["experiment=synthetic_shift", "strategy=erm", "seed=0,1,2"], weight_sweep("dann", "0.03,0.1,0.3,1.0"),
         weight_sweep("coral", "0.3,1.0,3.0,10.0"), weight_sweep("mmd", "0.3,1.0,3.0,10.0")]),
    "da_grid": (
        "the domain-adaptation benchmark: MiniLM, 12 pairs of four FDU-MTL domains, 3 epochs, 3 seeds, ERM and "
        "five adaptation strategies over their settings",
        da_grid_sweeps()),
    "fdu_apparel_to_MR_150": (
        "ERM, DANN and CORAL with MiniLM on FDU-MTL apparel -> MR at the 150-step comparison budget",
        [["experiment=fdu_apparel_to_MR", "strategy=erm,dann,coral", "seed=0,1"]]),
    "fdu_apparel_to_MR_300": (
        "the six strategies of fdu_300 with MiniLM on its first pair, FDU-MTL apparel -> MR, at 300 steps, 3 seeds "
        "(seeds outermost, so an interrupted run has every strategy at its first seeds)",
        [fdu_300_sweep("fdu_apparel_to_MR")]),
    "fdu_imdb_to_baby_300": (
        "the same six strategies on fdu_300's second pair, FDU-MTL imdb -> baby (long reviews, truncated at 128 "
        "tokens), at 300 steps, 3 seeds",
        [fdu_300_sweep("fdu_imdb_to_baby")]),
    "cpu_bf16_apparel_to_MR_300": (
        "ERM in fp32 against bf16 autocast on a CPU with bf16 matrix units (Intel AMX), FDU-MTL apparel -> MR, "
        "300 steps, 3 seeds: the step time and whether the accuracies move",
        [["experiment=fdu_apparel_to_MR", "seed=0,1,2", "strategy=erm", "max_steps=300",
          "hardware.mixed_precision=no,bf16"]]),
    "fdu_150": (
        "strategies on three FDU-MTL pairs with MiniLM at the 150-step comparison budget (seeds outermost, so an "
        "interrupted run has every pair and strategy at its first seed)",
        [["seed=0,1", "experiment=fdu_apparel_to_MR,fdu_imdb_to_baby,fdu_video_to_apparel",
          "strategy=erm,dann,coral,mmd,fgm,self_train,lp_ft,augment"]]),
    "fdu_300": (
        "six strategies on two of those pairs at twice the budget (300 steps), 3 seeds (seeds outermost, so an "
        "interrupted run has both pairs and every strategy at its first seeds)",
        [fdu_300_sweep("fdu_apparel_to_MR,fdu_imdb_to_baby")]),
    "self_train_views": (
        "self-training with pseudo-labels from the trained pass (views=same) against FixMatch/UDA-style EDA views "
        "(views=eda), and ERM, with MiniLM on FDU-MTL apparel -> MR at the 150-step budget, 3 seeds (seeds outermost)",
        [["seed=0,1,2", "experiment=fdu_apparel_to_MR", "strategy=erm"],
         ["seed=0,1,2", "experiment=fdu_apparel_to_MR", "strategy=self_train", "strategy.views=same,eda"]]),
    "few_shot": (
        "k labeled target examples per class (k = 0, 8, 32, 128) on FDU-MTL apparel -> MR",
        [["experiment=few_shot_apparel_to_MR"]]),
    "tapt": (
        "task-adaptive pretraining (100 masked-LM steps on target text) before fine-tuning, against ERM",
        [["experiment=tapt_apparel_to_MR,tapt_imdb_to_baby,fdu_apparel_to_MR,fdu_imdb_to_baby", "seed=0,1"]]),
    "meta_learning": (
        "Reptile and first-order MAML against multi-source ERM, three FDU-MTL sources -> MR",
        [["experiment=meta_sources_to_MR"]]),
}

# Benchmarks whose finished runs are also evaluated with `xdt eval <overrides>` into <run>/<folder>; the report reads
# those evaluations (its "Int8 evaluation" table).
EVALUATIONS: dict[str, tuple[str, list[str]]] = {
    "fdu_apparel_to_MR_150": ("int8", ["quantize=dynamic_int8", "quantize_repeats=3"]),
}


def run(command: list[str]) -> int:
    print("+", " ".join(command), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def evaluate_runs(xdt: str, sweep: Path, folder: str, overrides: list[str]) -> list[str]:
    """``xdt eval`` of every finished run below ``sweep`` that has no ``<run>/<folder>/metrics.json`` yet, into
    that folder; returns the runs whose evaluation failed."""
    failed = []
    try:
        runs = find_runs(sweep)
    except XdtError as error:  # no run folder at all: every sweep failed before its first job began
        sys.exit(f"nothing to evaluate: {error}")
    for found in runs:
        if found.status != "finished" or (found.path / folder / "metrics.json").is_file():
            continue
        run_dir = os.path.relpath(found.path, ROOT)
        if run([xdt, "eval", f"run_dir={run_dir}", *overrides, f"hydra.run.dir={os.path.join(run_dir, folder)}"]):
            failed.append(run_dir)
    return failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", nargs="?", choices=sorted(BENCHMARKS))
    parser.add_argument("extra", nargs="*", help="overrides for every job, after --")
    parser.add_argument("--runs", type=Path, default=ROOT.parent / "xdt-results-runs",
                        help="where the run folders go (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results",
                        help="the report goes to <out>/<benchmark> (default: %(default)s)")
    parser.add_argument("--tag", help="suffix for the runs' and the report's folder (<benchmark>_<tag>) when the "
                        "extra overrides change the hardware or the precision, so that its report stands apart")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their sweeps")
    args = parser.parse_intermixed_args()  # options may come before the overrides after --
    if args.list or not args.benchmark:
        width = max(map(len, BENCHMARKS)) + 1
        for name, (what, sweeps) in BENCHMARKS.items():
            print(f"{name:<{width}} {what}")
            for overrides in sweeps:
                print(f"{'':<{width}} xdt train -m {' '.join(overrides)}")
        return
    _, sweeps = BENCHMARKS[args.benchmark]
    name = f"{args.benchmark}_{args.tag}" if args.tag else args.benchmark
    # Paths relative to the repository (the commands run there): the report's header shows them, and a
    # published report should not carry this machine's home folder.
    sweep = os.path.relpath((args.runs / name).resolve(), ROOT)
    out = os.path.relpath((args.out / name).resolve(), ROOT)
    xdt = str(Path(sys.executable).with_name("xdt"))
    # A sweep with a failed job goes on to the next sweep: the report lists the failures, and launching the same
    # command again retries them (and skips what finished).
    failed = []
    for k, overrides in enumerate(sweeps):
        folder = sweep if len(sweeps) == 1 else os.path.join(sweep, str(k))
        if run([xdt, "train", "-m", *overrides, *args.extra, f"hydra.sweep.dir={folder}"]) != 0:
            failed.append(f"a job of the sweep in {folder}")
    if args.benchmark in EVALUATIONS:
        failed += [f"the evaluation of {run_dir}" for run_dir in evaluate_runs(xdt, ROOT / sweep,
                                                                              *EVALUATIONS[args.benchmark])]
    if run([xdt, "report", sweep, "--out", out]) != 0:
        sys.exit("xdt report failed; the runs are kept")
    if failed:
        sys.exit("failed: " + "; ".join(failed) + " (the report lists failed runs). The runs so far are kept: "
                 "launch the same command again to retry them")

if __name__ == "__main__":
    main()
