"""Int8 evaluations kept inside run folders, and the report's table of them.

``xdt eval run_dir=<run> quantize=dynamic_int8 hydra.run.dir=<run>/<name>`` leaves, in a subfolder of the run, a
``metrics.json`` whose ``quantized`` entry holds the int8 copy's scores next to the fp32 ones, the evaluation
speed-up and both sizes (:func:`xdt.quantize.compare`). ``xdt report`` reads those files (as data: JSON only, no
link followed, nothing outside the run folder) and tabulates them per row of its main table, so what int8 costs a
strategy's models is published by the tool like every other figure (``scripts/results.py`` runs the evaluations
for a benchmark that asks for them).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from xdt.run_files import RESULT
from xdt.runs import is_number, is_scores

MAX_BYTES = 5_000_000  # an evaluation's metrics.json is a few kilobytes; a bigger one is not one


@dataclass(frozen=True)
class QuantizedEvaluation:
    """One ``xdt eval quantize=dynamic_int8`` of a run: scores per set, fp32 and int8, and the costs."""

    path: Path
    checkpoint: str
    fp32: dict[str, dict[str, float | None]]  # "role/domain/split" -> metric -> value
    int8: dict[str, dict[str, float | None]]
    speedup: float
    fp32_size_mb: float
    int8_size_mb: float

    def mean(self, precision: str, metric: str, role: str) -> float | None:
        """The mean of ``metric`` over the ``role`` test sets ("source" or "target"), in fp32 or int8."""
        scores = self.fp32 if precision == "fp32" else self.int8
        values = [s.get(metric) for name, s in scores.items()
                  if name.startswith(f"{role}/") and name.endswith("/test")]
        values = [v for v in values if is_number(v)]
        return statistics.mean(values) if values else None


def read(path: Path) -> QuantizedEvaluation | str | None:
    """The quantised evaluation in ``path`` (a metrics.json), None if the file is an evaluation without
    quantisation, or why it cannot be read."""
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return f"{size} bytes, too large for an evaluation's results"
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"cannot be read as JSON ({error})"
    if not isinstance(result, dict) or "quantized" not in result:
        return None
    quantized = result["quantized"]
    if not isinstance(quantized, dict) or not is_scores(result.get("metrics")) \
            or not is_scores(quantized.get("metrics")):
        return "its quantized entry has no scores (set: {metric: number})"
    numbers = [quantized.get(key) for key in ("speedup", "fp32_size_mb", "int8_size_mb")]
    if not all(is_number(value) for value in numbers):
        return "its quantized entry lacks speedup, fp32_size_mb or int8_size_mb"
    return QuantizedEvaluation(path.parent, str(result.get("checkpoint", "?")), result["metrics"],
                               quantized["metrics"], *numbers)


def find(run_path: Path) -> tuple[list[QuantizedEvaluation], list[tuple[Path, str]]]:
    """The quantised evaluations in the direct subfolders of a run folder, and each metrics.json passed over
    (a link, or a file that is not an evaluation's results) with the reason."""
    found, passed_over = [], []
    try:
        folders = sorted(p for p in run_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return [], []
    for folder in folders:
        path = folder / RESULT
        if folder.is_symlink() or path.is_symlink():
            if path.exists():
                passed_over.append((path, "a link, not followed"))
            continue
        if not path.is_file():
            continue
        evaluation = read(path)
        if isinstance(evaluation, QuantizedEvaluation):
            found.append(evaluation)
        elif isinstance(evaluation, str):
            passed_over.append((path, evaluation))
    return found, passed_over


def _cell(values: list[float], sign: bool = False) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values)
    text = f"{mean:+.3f}" if sign else f"{mean:.3f}"
    if len(values) > 1:
        text += f" ({min(values):+.3f} to {max(values):+.3f})" if sign else f" ± {statistics.stdev(values):.3f}"
    return text


def table(rows: dict[str, list[QuantizedEvaluation]], metric: str) -> list[list[str]]:
    """Header and one line per row that has quantised evaluations: how many, the fp32 and int8 target test
    ``metric`` (mean ± std over the evaluations), the change on target and on source test (mean, and its range),
    the median evaluation speed-up and the mean sizes."""
    header = ["row", "evaluations", f"target {metric} fp32", f"target {metric} int8", "target change",
              "source change", "eval speed-up", "size fp32 → int8 (MB)"]
    lines = [header]
    for row, evaluations in rows.items():
        if not evaluations:
            continue

        def values(precision: str, role: str) -> list[float]:
            return [v for e in evaluations if (v := e.mean(precision, metric, role)) is not None]

        def changes(role: str) -> list[float]:
            pairs = [(e.mean("fp32", metric, role), e.mean("int8", metric, role)) for e in evaluations]
            return [b - a for a, b in pairs if a is not None and b is not None]

        speedup = statistics.median(e.speedup for e in evaluations)
        sizes = (statistics.mean(e.fp32_size_mb for e in evaluations),
                 statistics.mean(e.int8_size_mb for e in evaluations))
        lines.append([row, str(len(evaluations)), _cell(values("fp32", "target")), _cell(values("int8", "target")),
                      _cell(changes("target"), sign=True), _cell(changes("source"), sign=True),
                      f"{speedup:.2f}×", f"{sizes[0]:.1f} → {sizes[1]:.1f}"])
    return lines if len(lines) > 1 else []
