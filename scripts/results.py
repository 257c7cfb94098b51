"""Regenerate a published result: run its grid with ``xdt train -m`` as a user would, then ``xdt report`` it
into ``docs/results/<benchmark>/`` (report.md, report.csv and the figures, headed by the commands, the commit,
the machine and the date).

Each benchmark is one row of ``BENCHMARKS``: the overrides of one sweep. The runs go to ``--runs/<benchmark>``
(outside the repository by default, they are large); launching again skips finished jobs and resumes cut-off
ones, so an interrupted benchmark continues where it stopped. Only the report files are committed.

    python scripts/results.py --list
    python scripts/results.py synthetic_shift                        # no data needed, tiny model
    XDT_DATA_DIR=../shared/data python scripts/results.py fdu_150    # MiniLM on FDU-MTL pairs
    python scripts/results.py fdu_150 --runs /scratch/xdt-runs -- hardware=gpu hardware.mixed_precision=no

Arguments after ``--`` are added to every job (a GPU, a data folder); they appear in the report's header.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name -> (what it compares, the sweep's overrides)
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "synthetic_shift": (
        "alignment strategies against ERM on the designed synthetic shift (tiny model, books -> kitchen, 300 steps)",
        ["experiment=synthetic_shift", "strategy=erm,dann,coral,mmd", "seed=0,1,2"]),
    "fdu_apparel_to_MR_150": (
        "ERM, DANN and CORAL with MiniLM on FDU-MTL apparel -> MR at the 150-step comparison budget",
        ["experiment=fdu_apparel_to_MR", "strategy=erm,dann,coral", "seed=0,1"]),
    "fdu_150": (
        "strategies on three FDU-MTL pairs with MiniLM at the 150-step comparison budget",
        ["experiment=fdu_apparel_to_MR,fdu_imdb_to_baby,fdu_video_to_apparel",
         "strategy=erm,dann,coral,mmd,fgm,self_train,lp_ft,augment", "seed=0,1"]),
    "fdu_300": (
        "the same pairs at twice the budget (300 steps)",
        ["experiment=fdu_apparel_to_MR,fdu_imdb_to_baby", "strategy=erm,dann,coral,fgm,self_train,augment",
         "max_steps=300", "seed=0,1,2"]),
    "few_shot": (
        "k labeled target examples per class (k = 0, 8, 32, 128) on FDU-MTL apparel -> MR",
        ["experiment=few_shot_apparel_to_MR"]),
    "tapt": (
        "task-adaptive pretraining (100 masked-LM steps on target text) before fine-tuning, against ERM",
        ["experiment=tapt_apparel_to_MR,tapt_imdb_to_baby,fdu_apparel_to_MR,fdu_imdb_to_baby", "seed=0,1"]),
    "meta_learning": (
        "Reptile and first-order MAML against multi-source ERM, three FDU-MTL sources -> MR",
        ["experiment=meta_sources_to_MR"]),
}


def run(command: list[str]) -> None:
    print("+", " ".join(command), flush=True)
    status = subprocess.run(command, cwd=ROOT).returncode
    if status != 0:
        sys.exit(f"{command[0]} {command[1]} ended with status {status}; the runs so far are kept, "
                 f"launch the same command again to continue")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", nargs="?", choices=sorted(BENCHMARKS))
    parser.add_argument("extra", nargs="*", help="overrides for every job, after --")
    parser.add_argument("--runs", type=Path, default=ROOT.parent / "xdt-results-runs",
                        help="where the run folders go (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results",
                        help="the report goes to <out>/<benchmark> (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and their sweeps")
    args = parser.parse_args()
    if args.list or not args.benchmark:
        for name, (what, overrides) in BENCHMARKS.items():
            print(f"{name:<16} {what}\n{'':<16} xdt train -m {' '.join(overrides)}")
        return
    _, overrides = BENCHMARKS[args.benchmark]
    # Paths relative to the repository (the commands run there): the report's header shows them, and a
    # published report should not carry this machine's home folder.
    sweep = os.path.relpath((args.runs / args.benchmark).resolve(), ROOT)
    out = os.path.relpath((args.out / args.benchmark).resolve(), ROOT)
    xdt = str(Path(sys.executable).with_name("xdt"))
    run([xdt, "train", "-m", *overrides, *args.extra, f"hydra.sweep.dir={sweep}"])
    run([xdt, "report", sweep, "--out", out])


if __name__ == "__main__":
    main()
