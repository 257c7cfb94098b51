"""Strategy x domain-pair table from finished runs: target accuracy mean ± std over seeds, source accuracy,
wall time and time per training step relative to ERM on the same pair.

Reads every ``metrics.json`` below the given folders (single runs or sweep folders). Rows are strategies
(with their PEFT method), columns are source -> target pairs plus their average.

    python scripts/strategy_table.py outputs/2026-11-23/14-02-11 outputs/2026-11-23/16-40-09
    python scripts/strategy_table.py --markdown runs/ > table.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path


def runs(folders: list[Path]) -> list[dict]:
    return [json.loads(p.read_text()) for folder in folders for p in sorted(Path(folder).rglob("metrics.json"))
            if (p.parent / "done").exists()]


def row_name(run: dict) -> str:
    return run["strategy"] + ("" if run.get("peft", "none") == "none" else f"+{run['peft']}")


def summarise(results: list[dict]) -> tuple[dict, list[str], list[str]]:
    """{(row, pair): figures}, row names, pair names."""
    groups: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in results:
        for target in run["targets"]:
            pair = f"{'+'.join(run['sources'])}->{target}"
            groups[(row_name(run), pair)].append(run)
    figures = {}
    for (row, pair), group in groups.items():
        target = pair.split("->")[1]
        accuracy = [r["metrics"][f"target/{target}/test"]["accuracy"] for r in group]
        source = [statistics.mean(r["metrics"][f"source/{s}/test"]["accuracy"] for s in r["sources"]) for r in group]
        figures[(row, pair)] = {
            "target": statistics.mean(accuracy), "std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
            "seeds": len(group), "source": statistics.mean(source),
            "wall": statistics.mean(r["wall_time_s"] for r in group),
            "step": statistics.mean(r["train_time_s"] / r["steps"] for r in group)}
    rows = sorted({row for row, _ in figures}, key=lambda r: (r != "erm", r))
    pairs = sorted({pair for _, pair in figures})
    return figures, rows, pairs


def table(figures: dict, rows: list[str], pairs: list[str]) -> list[list[str]]:
    header = ["strategy", *(f"{p} target acc (n)" for p in pairs), "average target acc", "gain over erm",
              *(f"{p} source acc" for p in pairs), "wall s", "time/step vs erm"]
    lines = [header]
    erm_average = None
    for row in rows:
        cells = [figures.get((row, p)) for p in pairs]
        present = [c for c in cells if c]
        average = statistics.mean(c["target"] for c in present) if len(present) == len(pairs) else None
        if row == "erm":
            erm_average = average
        ratios = [c["step"] / figures[("erm", p)]["step"] for p, c in zip(pairs, cells) if c and ("erm", p) in figures]
        lines.append([
            row,
            *(f"{c['target']:.3f} ± {c['std']:.3f} ({c['seeds']})" if c else "-" for c in cells),
            f"{average:.3f}" if average is not None else "-",
            f"{average - erm_average:+.3f}" if average is not None and erm_average is not None else "-",
            *(f"{c['source']:.3f}" if c else "-" for c in cells),
            f"{statistics.mean(c['wall'] for c in present):.0f}",
            f"{statistics.mean(ratios):.2f}x" if ratios else "-"])
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    lines = table(*summarise(runs(args.folders)))
    if args.markdown:
        print("| " + " | ".join(lines[0]) + " |")
        print("|" + "---|" * len(lines[0]))
        for line in lines[1:]:
            print("| " + " | ".join(line) + " |")
    else:
        widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
        for line in lines:
            print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
    print("\nTarget and source accuracy: test split of the checkpoint chosen on source validation; ± is the "
          "standard deviation over seeds, (n) the number of seeds. Time per step comes from each run's own "
          "train_time_s / steps, so it is only comparable between runs made under the same load.")


if __name__ == "__main__":
    main()
