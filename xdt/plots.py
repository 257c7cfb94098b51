"""The figures of ``xdt report``: learning curves per domain pair and transfer matrices per strategy, of the
report's metric (entity F1 for token classification, whose figure names carry ``ner_``: see TaskView)."""

from __future__ import annotations

import hashlib
import re
import statistics
import textwrap
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from xdt.report import Report


# Readable when GitHub shows a figure at the width of its page (about 900 pixels for an 11-inch figure).
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
         "legend.fontsize": 9, "figure.titlesize": 12}
# One colour, marker and line style per row of a report, the same in every figure of it (tab10, each colour with a
# marker of its own, so lines stay apart in grey print and for the common colour-vision deficiencies); beyond ten
# rows the colours come round again, dashed and with other markers.
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
LINE_STYLES = ("-", "--", ":", "-.")
STEP_LABEL = "training step (optimizer updates)"
LABEL_WIDTH = 45  # characters a legend entry or title line takes before it wraps: row labels name their settings


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _save(plt, figure, path: Path) -> Path:
    figure.savefig(path, dpi=120, bbox_inches="tight")  # tight: keeps a legend placed outside the axes
    plt.close(figure)
    return path


def row_colours(rows: list[str]) -> dict[str, tuple[str, str, str]]:
    """(colour, marker, line style) of each row, by its first place in ``rows``: the same in every figure of a
    report, and no two rows alike."""
    styles: dict[str, tuple[str, str, str]] = {}
    for row in rows:
        if row not in styles:
            i, turn = len(styles), len(styles) // len(COLOURS)
            styles[row] = (COLOURS[i % len(COLOURS)], MARKERS[(i + turn) % len(MARKERS)],
                           LINE_STYLES[turn % len(LINE_STYLES)])
    return styles


def wrap(text: str, width: int = LABEL_WIDTH) -> str:
    """``text`` broken into lines of at most ``width`` characters (at spaces), for a legend or a title."""
    return "\n".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)) or text


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


# The file names of every figure a report draws (the names below): what an earlier report may have left.
FIGURE_PATTERNS = ("learning_curves_*.png", "transfer_matrix_*.png")


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


def metric_name(report: Report) -> str:
    """The metric as a figure names it: ``accuracy``, ``entity F1`` (token classification scores entities)."""
    return "entity F1" if report.metric == "f1" and report.view.figure_tag else report.metric


def metric_label(report: Report) -> str:
    """The metric as an axis shows it, with the range of its values."""
    return f"{metric_name(report)} (0 to 1)"


def learning_curves(report: Report, out: Path, colours: dict[str, tuple[str, str, str]] | None = None) -> list[Path]:
    """Per pair: source validation and target test metric against step, one line per row (mean over its seeds),
    in the row's colour and marker (``colours``, from :func:`row_colours`); one legend for both panels, right of
    them, so it never covers a line."""
    plt = _pyplot()
    with plt.rc_context(STYLE):  # the report's fonts, not the caller's global matplotlib settings
        return [_learning_curve(plt, report, out, pair, colours or row_colours(report.rows)) for pair in report.pairs]


def _learning_curve(plt, report: Report, out: Path, pair: str, colours: dict[str, tuple[str, str, str]]) -> Path:
    """The learning-curves figure of one pair (see :func:`learning_curves`)."""
    from matplotlib.ticker import MaxNLocator

    source_labels, target_label = report.pair_domains[pair]
    sources = "+".join(source_labels)
    labels = {row: wrap(plain(f"{row} ({len(runs)} run{'s' if len(runs) > 1 else ''})"))
              for row in report.rows if (runs := report.runs_on(row, pair)[0])}
    legend_lines = sum(label.count("\n") + 1 for label in labels.values())
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, max(4.2, 0.2 * legend_lines + 1)), sharey=True)
    handles = {}
    for row, label in labels.items():
        runs, target = report.runs_on(row, pair)  # the names in their scores, not the column names
        colour, marker, style = colours[row]
        for axis, (steps, values) in ((left, _source_curve(runs, report.metric)),
                                      (right, _curve(runs, f"target/{target}/test", report.metric))):
            if steps:
                line, = axis.plot(steps, values, color=colour, marker=marker, linestyle=style, markersize=4,
                                  linewidth=1.6, label=label)
                handles.setdefault(label, line)
    left.set_title(plain(f"source validation: {sources}"))
    right.set_title(plain(f"target test: {target_label}"))
    left.set_ylabel(metric_label(report))
    for axis in (left, right):
        axis.set_xlabel(STEP_LABEL)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
        axis.grid(alpha=0.3)
        if not axis.lines:
            axis.text(0.5, 0.5, "not scored during training\n(runs made with track_targets=false)",
                      ha="center", va="center", transform=axis.transAxes)
    right.tick_params(labelleft=True)  # shared y: numbers on both panels, so each reads on its own
    if handles:
        figure.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5),
                      frameon=False)
    figure.suptitle(wrap(plain(f"Learning curves, {pair}: {metric_name(report)} at every evaluation, mean over "
                               f"seeds"), 120))
    figure.tight_layout()
    return _save(plt, figure, out / learning_curves_name(pair, report.view.figure_tag))


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
    """Per row with single-source runs: its transfer matrix as a heat map, numbers in the cells. Every matrix of a
    report shares one colour scale, so a colour means the same score in each."""
    plt = _pyplot()
    with plt.rc_context(STYLE):  # the report's fonts, not the caller's global matplotlib settings
        return _transfer_matrices(plt, report, out)


def _transfer_matrices(plt, report: Report, out: Path) -> list[Path]:
    from matplotlib.colors import Normalize

    matrices = {row: matrix for row in report.rows if (matrix := transfer_matrix(report, row))[2]}
    scores = [value for _, _, means in matrices.values() for value in means.values()]
    if not scores:
        return []
    low, high = min(scores), max(scores)
    norm = Normalize(vmin=low, vmax=high if high > low else low + 1e-6)
    written = []
    for row, (sources, columns, means) in matrices.items():
        grid = [[means.get((s, t), float("nan")) for t in columns] for s in sources]
        # a row label names its varying settings (the protocol of NER runs among them): wrapped, not cut
        width = max(1.3 * len(columns) + 3.5, 6.5)
        title = wrap(plain(f"Transfer matrix, {row}"), int(width * 9)) + \
            f"\ntest {metric_name(report)}, mean over seeds (diagonal: in-domain)"
        figure, axis = plt.subplots(figsize=(width, 0.8 * len(sources) + 2.4 + 0.2 * title.count("\n")))
        image = axis.imshow(grid, cmap="viridis", norm=norm)
        axis.set_xticks(range(len(columns)), list(map(plain, columns)), rotation=30, ha="right")
        axis.set_yticks(range(len(sources)), list(map(plain, sources)))
        axis.set_xlabel("evaluated on (test split of the domain)")
        # a run that also trains on its targets' labels (NER train_on=both, ...) is not trained on its source alone
        targets_too = any(run.trains_on_target_labels for run in report.runs.get(row, []))
        axis.set_ylabel("source domain" if targets_too else "trained on (source domain)")
        for i, source in enumerate(sources):
            for j, column in enumerate(columns):
                if (source, column) in means:
                    value = means[(source, column)]
                    axis.text(j, i, f"{value:.3f}", ha="center", va="center", fontsize=10,
                              color="white" if norm(value) < 0.5 else "black")  # dark end of viridis: white
                else:
                    axis.text(j, i, "not run", ha="center", va="center", fontsize=8, color="0.4")
        figure.colorbar(image, ax=axis, label=metric_label(report))
        figure.suptitle(title)  # centred on the figure, not the axes, so a long one is not cut
        figure.tight_layout()
        written.append(_save(plt, figure, out / transfer_matrix_name(row, report.view.figure_tag)))
    return written
