"""What xdt shows in the terminal: a training progress bar and the summary table of a run."""

from __future__ import annotations

import os

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn
from rich.table import Table

from xdt.metrics import METRIC_NAMES
from xdt.selection import describe

console = get_console()  # the console rich.logging.RichHandler uses too, so logs and the bar do not collide
if not console.is_terminal and "COLUMNS" not in os.environ:
    console.width = 120  # logs and CI output are not terminals; rich would wrap them at 80 columns


def training_progress(enabled: bool) -> Progress:
    """A progress bar of steps; shown only on an interactive terminal (logs carry the same figures)."""
    return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console,
                    disable=not (enabled and console.is_terminal), transient=False)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_summary(result: dict, title: str) -> None:
    """One row per (role, domain, split) with every metric, and the transfer gap of target test rows."""
    table = Table(title=title, title_justify="left")
    table.add_column("set", no_wrap=True)
    for header in ("acc", "F1", "prec", "rec", "AUC", "gap"):
        table.add_column(header, justify="right")
    gaps = result.get("transfer_gap", {})
    for name, metrics in result["metrics"].items():
        role, domain, split = name.split("/")
        gap = gaps.get(domain) if role == "target" and split == "test" else None
        table.add_row(name, *(_cell(metrics.get(m)) for m in METRIC_NAMES), _cell(gap))
    lines = ["F1, precision and recall are macro averages; gap = source test accuracy - target test accuracy."]
    if "selection" in result:
        selection = result["selection"]
        lines.insert(0, f"checkpoint of step {result['selected_step']} of {result['steps']}, chosen by "
                        f"{describe(selection['criterion'], selection['metric'])}; wall time {result['wall_time_s']} s, "
                        f"{result['train_samples_per_s']} train samples/s.")
    if result.get("warning"):
        lines.append(f"[bold red]{result['warning']}")
    console.print(table)
    for line in lines:
        console.print(line)


def print_lm_summary(result: dict, title: str) -> None:
    """One row per (role, domain, split): perplexity and token accuracy, at the start and at the chosen step."""
    table = Table(title=title, title_justify="left")
    for header in ("set", "perplexity", "token acc", "start perplexity", "start token acc", "tokens"):
        table.add_column(header, justify="left" if header == "set" else "right", no_wrap=header == "set")
    start = result.get("start_metrics") or {}
    for name, metrics in result["metrics"].items():
        before = start.get(name, {})
        table.add_row(name, f"{metrics['perplexity']:.2f}", _cell(metrics["token_accuracy"]),
                      "-" if "perplexity" not in before else f"{before['perplexity']:.2f}",
                      _cell(before.get("token_accuracy")), str(metrics["tokens"]))
    console.print(table)
    console.print(f"{result['objective']} objective; checkpoint of step {result['selected_step']} of {result['steps']}, "
                  f"chosen by the lowest source validation loss; start = before training; wall time "
                  f"{result['wall_time_s']} s, {result['train_tokens_per_s']} train tokens/s.")
