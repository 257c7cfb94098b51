"""The figures of ``xdt report``: learning curves per domain pair and transfer matrices per strategy, of the
report's metric (entity F1 for token classification, whose figure names carry ``ner_``: see TaskView)."""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xdt.report import Report


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


MAX_SLUG = 120  # file systems allow 255 bytes a name; long row labels (many varying settings) would exceed it


def slug(text: str) -> str:
    """``text`` as part of a file name; a long one is cut and given a hash of the whole, so names stay distinct."""
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", text.replace("→", "-to-")).strip("_")
    if len(name) <= MAX_SLUG:
        return name
    return f"{name[:MAX_SLUG - 9]}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def plain(text: str) -> str:
    """``text`` as matplotlib should draw it: a ``$`` in a setting or a file name is not the start of math."""
    return text.replace("$", r"\$")


def learning_curves_name(pair: str, tag: str = "") -> str:
    return f"learning_curves_{tag}{slug(pair)}.png"


def transfer_matrix_name(row: str, tag: str = "") -> str:
    return f"transfer_matrix_{tag}{slug(row)}.png"


def figure_names(report: Report) -> list[str]:
    """Every file name the figures of ``report`` may take (checked for links before anything is written)."""
    tag = report.view.figure_tag
    return [*(learning_curves_name(p, tag) for p in report.pairs), *(transfer_matrix_name(r, tag) for r in report.rows)]


def _curve(runs: list, key: str, metric: str) -> tuple[list[int], list[float]]:
    """Mean over runs of ``eval[key][metric]`` at each step any of them evaluated."""
    at_step: dict[int, list[float]] = defaultdict(list)
    for run in runs:
        for record in run.records:
            value = record["eval"].get(key, {}).get(metric)
            if value is not None:
                at_step[record["step"]].append(value)
    steps = sorted(at_step)
    return steps, [statistics.mean(at_step[s]) for s in steps]


def _source_curve(runs: list, metric: str) -> tuple[list[int], list[float]]:
    """Mean over the runs' sources of their validation curves, at the steps every source was scored."""
    curves = [dict(zip(*_curve(runs, f"source/{s}/validation", metric))) for s in runs[0].sources]
    steps = sorted(set.intersection(*map(set, curves))) if curves else []
    return steps, [statistics.mean(curve[step] for curve in curves) for step in steps]


def learning_curves(report: Report, out: Path) -> list[Path]:
    """Per pair: source validation and target test metric against step, one line per strategy (mean over seeds)."""
    plt = _pyplot()
    written = []
    for pair in report.pairs:
        source_labels, target_label = report.pair_domains[pair]
        sources = "+".join(source_labels)
        figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
        for row in report.rows:
            runs, target = report.runs_on(row, pair)  # the names in their scores, not the column names
            if not runs:
                continue
            steps, values = _source_curve(runs, report.metric)
            if steps:
                left.plot(steps, values, marker="o", label=plain(row))
            steps, values = _curve(runs, f"target/{target}/test", report.metric)
            if steps:
                right.plot(steps, values, marker="o", label=plain(row))
        left.set_title(plain(f"source validation ({sources})"))
        right.set_title(plain(f"target test ({target_label})"))
        left.set_ylabel(report.metric)
        for axis in (left, right):
            axis.set_xlabel("step")
            axis.grid(alpha=0.3)
            if axis.get_legend_handles_labels()[0]:
                axis.legend(fontsize="small", loc="best")
            else:
                axis.text(0.5, 0.5, "not scored during training\n(runs made with track_targets=false)",
                          ha="center", va="center", transform=axis.transAxes)
        figure.suptitle(plain(f"{pair}: mean over seeds at every evaluation"))
        written.append(_save(plt, figure, out / learning_curves_name(pair, report.view.figure_tag)))
    return written


def transfer_matrix(report: Report, row: str) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """Single-source runs of ``row``: sources x domains, target test metric off the diagonal and the
    source's own test metric (in-domain) on it."""
    values: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (cell_row, pair), cell in report.cells.items():
        sources, target = report.pair_domains[pair]
        if cell_row == row and len(sources) == 1:
            values[(sources[0], target)].extend(cell.target)
            values[(sources[0], sources[0])].extend(cell.source)
    means = {key: statistics.mean(v) for key, v in values.items() if v}
    sources = sorted({s for s, _ in means})
    columns = sources + sorted({t for _, t in means} - set(sources))
    return sources, columns, means


def transfer_matrices(report: Report, out: Path) -> list[Path]:
    plt = _pyplot()
    written = []
    for row in report.rows:
        sources, columns, means = transfer_matrix(report, row)
        if not means:
            continue
        grid = [[means.get((s, t), float("nan")) for t in columns] for s in sources]
        title = f"{row}: transfer matrix (diagonal: in-domain)"
        # wide enough for the title: a row label names its varying settings, the protocol of NER runs among them
        figure, axis = plt.subplots(figsize=(max(1.2 * len(columns) + 3, 0.11 * len(title)), 0.8 * len(sources) + 2))
        image = axis.imshow(grid, cmap="viridis", vmin=min(means.values()), vmax=max(means.values()))
        axis.set_xticks(range(len(columns)), list(map(plain, columns)), rotation=30, ha="right")
        axis.set_yticks(range(len(sources)), list(map(plain, sources)))
        axis.set_xlabel("evaluated on (test split)")
        # a run that also trains on its targets' labels (NER train_on=both, ...) is not trained on its source alone
        targets_too = any(run.trains_on_target_labels for run in report.runs.get(row, []))
        axis.set_ylabel("source domain" if targets_too else "trained on")
        for i, source in enumerate(sources):
            for j, column in enumerate(columns):
                if (source, column) in means:
                    axis.text(j, i, f"{means[(source, column)]:.3f}", ha="center", va="center",
                              color="white" if means[(source, column)] < statistics.mean(means.values()) else "black")
        figure.colorbar(image, ax=axis, label=report.metric)
        figure.suptitle(plain(title))  # centred on the figure, not the axes, so a long one is not cut
        written.append(_save(plt, figure, out / transfer_matrix_name(row, report.view.figure_tag)))
    return written
