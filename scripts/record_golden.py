"""Re-record tests/golden/engine.json, the golden values tests/test_golden.py holds the training loops to, from the
xdt that is importable now (PYTHONPATH=/path/to/other/checkout to record another copy of the code).

The runs are the case table of tests/test_golden.py (CASES); this script only runs them and writes what they gave.
Record only what you moved on purpose, and say in the commit which figures moved and why: the script prints every
figure that differs from the file before it writes.

    python scripts/record_golden.py --only smoke_dann smoke_dann_lora    # re-record two runs, keep the others
    python scripts/record_golden.py                                      # every run (~20 min on 2 busy cores)
    python scripts/record_golden.py --check                              # only compare with the file
    python scripts/record_golden.py --fast --repeat 2 --check            # determinism: run each twice, compare
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the case table and its runner live with the test that uses them

import test_golden as golden
import torch

import xdt
from xdt.provenance import cpu_name


def code_version() -> str:
    """Where the importable xdt lives, at which commit, and whether its code or configs hold uncommitted changes."""
    package = Path(xdt.__file__).resolve().parent
    git = ["git", "-C", str(package)]
    try:
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run([*git, "status", "--porcelain", "--", ".", "../configs"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(package)
    return f"{package} @ {commit}" + (" with uncommitted changes" if dirty else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=list(golden.CASES_BY_NAME),
                        help="runs to record (default: all); the file keeps the others")
    parser.add_argument("--fast", action="store_true", help="leave out the slow runs")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each case this many times and refuse to record figures that differ between runs")
    parser.add_argument("--check", action="store_true", help="compare with the file and exit 1 if anything moved; "
                                                             "write nothing")
    args = parser.parse_args()
    cases = [golden.CASES_BY_NAME[name] for name in args.only] if args.only else golden.CASES
    cases = [c for c in cases if not (args.fast and c.slow)]
    stored = golden.load_golden() if golden.GOLDEN.is_file() else {"runs": {}}
    print(f"recording {len(cases)} run(s) from {code_version()}", flush=True)

    recorded, moved_any, unstable = {}, False, []
    with tempfile.TemporaryDirectory(prefix="xdt-golden-") as tmp:
        cache = Path(tmp) / "cache"
        for case in cases:
            results = []
            for attempt in range(args.repeat):
                workdir = Path(tmp) / f"{attempt}"
                workdir.mkdir(exist_ok=True)
                start = time.time()
                results.append(golden.run_case(case, workdir, cache))
                print(f"{case.name}: {time.time() - start:.1f} s", flush=True)
            noise = [line for other in results[1:] for line in golden.differences(results[0], other)]
            if noise:
                unstable.append(case.name)
                print(f"  NOT REPRODUCIBLE over {args.repeat} runs:\n    " + "\n    ".join(noise), flush=True)
                continue
            before = stored["runs"].get(case.name)
            moved = golden.differences(before["figures"], results[0]) if before else ["(new)"]
            moved_any |= bool(moved)
            print("  " + ("\n  ".join(moved) if moved else "unchanged"), flush=True)
            recorded[case.name] = {"command": case.describe(), "recorded_from": code_version(),
                                   "recorded_on": datetime.date.today().isoformat(), "figures": results[0]}

    if unstable:
        sys.exit(f"not reproducible, nothing written: {', '.join(unstable)}")
    if args.check:
        sys.exit(1 if moved_any else 0)
    runs = {**stored["runs"], **recorded}
    order = [c.name for c in golden.CASES if c.name in runs] + [n for n in runs if n not in golden.CASES_BY_NAME]
    document = {"about": "Golden figures of tests/test_golden.py; re-record with scripts/record_golden.py.",
                "environment": {"torch": torch.__version__, "python": platform.python_version(), "cpu": cpu_name(),
                                "threads": f"OMP_NUM_THREADS={golden.THREADS} (1 per process in the two-process run)"},
                "runs": {name: runs[name] for name in order}}
    golden.GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    golden.GOLDEN.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {golden.GOLDEN.relative_to(ROOT)} ({len(recorded)} run(s) recorded)")


if __name__ == "__main__":
    main()
