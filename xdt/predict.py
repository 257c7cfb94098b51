"""``xdt predict``: label a file of texts with a saved run's model, streaming.

The input (csv, tsv, jsonl, or txt with one text per line) is read ``chunk_size`` rows at a time; each chunk is
tokenised, sorted by length and predicted in batches (:mod:`xdt.inference`), and its rows are written in input
order before the next chunk is read. Memory is bounded by the chunk, not by the file: a file of a million lines
is never held whole. The output holds every input column and the prediction columns
(:func:`xdt.inference.prediction_columns`); it is written beside its final name and renamed into place at the end,
so an interrupted command leaves no half file under that name. A run folder is never written into.
"""

from __future__ import annotations

import codecs
import csv
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, \
    TimeRemainingColumn

from xdt.atomic import atomic_write_json, atomic_write_text, follow_umask
from xdt.console import console
from xdt.errors import XdtError
from xdt.inference import PREDICTION, TOKEN_CLASSIFICATION, load_run
from xdt.run_files import FAILED

log = logging.getLogger(__name__)

INPUT_FORMATS = ("csv", "tsv", "jsonl", "txt")
OUTPUT_FORMATS = ("jsonl", "csv", "tsv")
SUFFIXES = {"csv": "csv", "tsv": "tsv", "jsonl": "jsonl", "ndjson": "jsonl", "txt": "txt"}
TXT_COLUMN = "text"  # the column a txt line becomes in the output
SUMMARY = "predict.json"  # written into the command's own folder


@dataclass
class Chunk:
    """Rows read from the input: their columns, their texts, and the input's bytes read so far."""

    rows: list[dict]
    texts: list
    first_line: int  # the input line the chunk's first row began on (for messages)
    bytes_read: int


def input_format(path: Path, fmt: str | None) -> str:
    """The input's format: ``format`` if given, else from the suffix; the file must exist and hold something."""
    if not path.exists():
        raise XdtError(f"input={path}: no such file")
    if not path.is_file():
        raise XdtError(f"input={path} is not a file")
    chosen = fmt or SUFFIXES.get(path.suffix.lstrip(".").lower())
    if chosen not in INPUT_FORMATS:
        given = f"format={fmt!r} is not one" if fmt else f"cannot tell the format from the suffix '{path.suffix}'"
        raise XdtError(f"input={path}: {given}; set format to one of {', '.join(INPUT_FORMATS)}")
    return chosen


def _lines(path: Path, encoding: str, counter: list[int]) -> Iterator[str]:
    """The file's lines, decoded (a UTF-8 byte-order mark dropped), line endings kept; ``counter[0]`` holds the
    bytes read so far (the progress bar's position) and ``counter[1]`` the number of the line last read."""
    try:
        codec = "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
        decoder = codecs.getincrementaldecoder(codec)()
    except LookupError:
        raise XdtError(f"encoding={encoding!r} is not an encoding Python knows") from None
    with open(path, "rb") as handle:
        for raw in handle:
            counter[0] += len(raw)
            counter[1] += 1
            try:
                yield decoder.decode(raw)
            except UnicodeDecodeError as error:
                raise XdtError(f"{path}: line {counter[1]} is not valid {encoding} text (byte "
                               f"{error.object[error.start]:#04x}); set encoding to the file's encoding, for "
                               f"example encoding=latin-1") from None


def _columns_error(path: Path, text_field: str, columns: list) -> XdtError:
    return XdtError(f"input={path}: no text column '{text_field}' (columns: {', '.join(map(str, columns))}); "
                    f"set text_field to the column that holds the text")


def read_rows(path: Path, fmt: str, text_field: str, encoding: str = "utf-8",
              counter: list[int] | None = None) -> Iterator[tuple[dict, object, int]]:
    """(row, its text, its line number) of every input row, one at a time; ``counter`` as in :func:`_lines`."""
    counter = counter if counter is not None else [0, 0]
    lines = _lines(path, encoding, counter)
    if fmt == "txt":  # every line is a text, blank ones included: line N of the input is row N of the output
        for line in lines:
            text = line.rstrip("\r\n")
            yield {TXT_COLUMN: text}, text, counter[1]
        return
    if fmt == "jsonl":
        columns = None
        for line in lines:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise XdtError(f"{path}: line {counter[1]} is not valid JSON ({error.msg})") from None
            if not isinstance(row, dict):
                raise XdtError(f"{path}: line {counter[1]} is not a JSON object ({{\"{text_field}\": ...}})")
            if columns is None:
                columns = list(row)
                if text_field not in row:
                    raise _columns_error(path, text_field, columns)
            if text_field not in row or row[text_field] is None:
                raise XdtError(f"{path}: line {counter[1]} has no '{text_field}' value (text_field)")
            yield row, row[text_field], counter[1]
        return
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a long review is one field; the default caps it at 128 KiB
    reader = csv.reader(lines, delimiter="," if fmt == "csv" else "\t")
    try:
        header = next(reader, None)
        if header is None:
            return
        if text_field not in header:
            raise _columns_error(path, text_field, header)
        position = header.index(text_field)
        for values in reader:
            if not values:
                continue  # a blank line
            if len(values) != len(header):
                raise XdtError(f"{path}: line {reader.line_num} has {len(values)} fields where the header has "
                               f"{len(header)} (a quote left open, or a {'comma' if fmt == 'csv' else 'tab'} in "
                               f"an unquoted field?)")
            yield dict(zip(header, values)), values[position], reader.line_num
    except csv.Error as error:
        raise XdtError(f"{path}: line {reader.line_num} is not valid {fmt.upper()} ({error})") from None


def read_chunks(path: Path, fmt: str, text_field: str, chunk_size: int, encoding: str = "utf-8") -> Iterator[Chunk]:
    """The input's rows, ``chunk_size`` at a time (the reader holds one chunk, never the file); refuses an
    input without rows."""
    if int(chunk_size) < 1:
        raise XdtError(f"chunk_size={chunk_size} is not valid: it must be a positive integer")
    counter = [0, 0]
    rows, texts, first = [], [], 0
    any_rows = False
    for row, text, line in read_rows(path, fmt, text_field, encoding, counter):
        if not rows:
            first = line
        rows.append(row)
        texts.append(text if isinstance(text, (str, list)) else str(text))
        if len(rows) == chunk_size:
            any_rows = True
            yield Chunk(rows, texts, first, counter[0])
            rows, texts = [], []
    if rows:
        yield Chunk(rows, texts, first, counter[0])
    elif not any_rows:
        what = "a header but no rows" if fmt in ("csv", "tsv") and counter[1] else "no rows (it is empty)"
        raise XdtError(f"input={path}: the file holds {what}; there is nothing to predict")


class Writer:
    """Rows out to ``path`` in its format (jsonl, csv, tsv), written beside it and renamed into place by
    :meth:`close`; nested values (a NER row's words, tags, spans) are JSON inside a csv/tsv cell."""

    def __init__(self, path: Path, fmt: str):
        self.path, self.fmt = path, fmt
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        self.handle = open(self.tmp, "w", encoding="utf-8", newline="")
        self.writer: csv.DictWriter | None = None
        self.rows = 0

    def write(self, rows: list[dict]) -> None:
        if self.fmt == "jsonl":
            self.handle.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        else:
            if self.writer is None:  # the columns of the first row (jsonl inputs may vary: missing cells are empty)
                self.writer = csv.DictWriter(self.handle, fieldnames=list(rows[0]), extrasaction="ignore",
                                             delimiter="," if self.fmt == "csv" else "\t", lineterminator="\n")
                self.writer.writeheader()
            self.writer.writerows({k: json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else v
                                   for k, v in row.items()} for row in rows)
        self.rows += len(rows)

    def close(self) -> None:
        self.handle.close()
        follow_umask(self.tmp)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.handle.close()
        self.tmp.unlink(missing_ok=True)


def output_path(cfg: DictConfig, in_fmt: str, out_dir: Path, run_dir: Path, input_path: Path) -> tuple[Path, str]:
    """Where predictions go and in which format (see configs/predict.yaml); never into the run folder."""
    if cfg.get("output"):
        path = Path(str(cfg.output)).expanduser()
        fmt = SUFFIXES.get(path.suffix.lstrip(".").lower())
        if fmt not in OUTPUT_FORMATS:
            raise XdtError(f"output={cfg.output}: write .jsonl, .csv or .tsv (the suffix picks the format)")
    else:
        fmt = in_fmt if in_fmt in OUTPUT_FORMATS else "jsonl"
        path = Path(out_dir) / f"predictions.{fmt}"
    resolved, run = path.resolve(), run_dir.resolve()
    if resolved == run or run in resolved.parents:
        raise XdtError(f"output={path} is inside the run folder {run_dir}; a run folder is data that xdt never "
                       f"writes into: choose another path")
    if resolved == input_path.resolve():
        raise XdtError(f"output={path} is the input file; choose another path")
    if path.exists() and not cfg.get("overwrite"):
        raise XdtError(f"output={path} exists; pass overwrite=true to replace it, or choose another path")
    if cfg.get("output") and not path.parent.is_dir():
        raise XdtError(f"output={path}: the folder {path.parent} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True)  # the command's own folder (Hydra made it already)
    return path, fmt


def _progress() -> Progress:
    return Progress(TextColumn("[bold]predict"), BarColumn(), TaskProgressColumn(),
                    TextColumn("{task.fields[rows]} rows"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, disable=not console.is_terminal, transient=False)


def _write_predictions(run, chunks: Iterator[Chunk], writer: Writer, label_field: str | None,
                       size: int) -> int:
    """Predict and write chunk after chunk under a progress bar; returns how many predictions equal the
    ``label_field`` column (0 without one)."""
    correct, start = 0, 0  # start: the input's bytes before this chunk
    with _progress() as progress:
        bar = progress.add_task("predict", total=max(size, 1), rows=0)
        for chunk in chunks:
            done = [0]

            def advance(n: int, chunk: Chunk = chunk, start: int = start, done: list = done) -> None:
                done[0] += n  # the bar moves batch by batch, by the chunk's bytes per row
                progress.update(bar, rows=writer.rows + done[0],
                                completed=start + (chunk.bytes_read - start) * done[0] / len(chunk.rows))

            predictions = run.predict(chunk.texts, on_batch=advance)
            if label_field:
                correct += sum(str(row.get(label_field)) == p[PREDICTION] for row, p in zip(chunk.rows, predictions))
            writer.write([{**row, **prediction} for row, prediction in zip(chunk.rows, predictions)])
            progress.update(bar, completed=chunk.bytes_read, rows=writer.rows)
            start = chunk.bytes_read
    return correct


def predict_file(cfg: DictConfig, out_dir: Path) -> dict:
    """``xdt predict`` (see the module docstring): returns the summary it writes to ``<out_dir>/predict.json``."""
    for key in ("run_dir", "input"):
        if not cfg.get(key):
            raise XdtError(f"xdt predict needs {key}=<{'folder of a training run' if key == 'run_dir' else 'file'}>")
    input_path = Path(str(cfg.input)).expanduser()
    fmt = input_format(input_path, cfg.get("format"))
    run_dir = Path(str(cfg.run_dir)).expanduser()
    text_field = TXT_COLUMN if fmt == "txt" else str(cfg.text_field)
    chunks = read_chunks(input_path, fmt, text_field, int(cfg.chunk_size), str(cfg.encoding))
    first = next(chunks)  # a missing text column or an empty input is refused before the model is loaded
    run = load_run(run_dir, checkpoint=str(cfg.checkpoint), device=cfg.device, batch_size=int(cfg.batch_size),
                   trust_remote_code=bool(cfg.trust_remote_code), max_length=cfg.get("max_length"))
    label_field = cfg.get("label_field")
    if label_field and run.task == TOKEN_CLASSIFICATION:
        raise XdtError("label_field is read for sequence-classification runs only; a token-classification run's "
                       "entity F1 is in its metrics.json")
    if label_field and label_field not in first.rows[0]:
        raise XdtError(f"label_field={label_field}: input={input_path} has no such column (columns: "
                       f"{', '.join(map(str, first.rows[0]))})")
    path, out_fmt = output_path(cfg, fmt, out_dir, run_dir, input_path)
    clashes = [c for c in run.columns if c in first.rows[0]]
    if clashes:
        log.warning("input columns %s are replaced in the output by the prediction columns of the same names",
                    ", ".join(clashes))
    writer = Writer(path, out_fmt)
    started = time.perf_counter()
    try:
        correct = _write_predictions(run, _chain(first, chunks), writer, label_field, input_path.stat().st_size)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    seconds = time.perf_counter() - started
    summary = {"run_dir": str(run_dir), "checkpoint": run.checkpoint, "step": run.step, "task": run.task,
               "input": str(input_path), "output": str(path), "rows": writer.rows, "seconds": round(seconds, 3),
               "rows_per_s": round(writer.rows / seconds, 1) if seconds else None}
    if label_field:
        summary["label_field"] = label_field
        summary["accuracy"] = correct / writer.rows
    if Path(out_dir).is_dir():
        atomic_write_json(Path(out_dir) / SUMMARY, summary)
    accuracy = f"; accuracy {summary['accuracy']:.4f} against {label_field}" if label_field else ""
    log.info("%d rows predicted with %s (%s) in %.1f s%s: %s", writer.rows, run_dir, run.checkpoint, seconds,
             accuracy, path)
    return summary


def _chain(first: Chunk, rest: Iterator[Chunk]) -> Iterator[Chunk]:
    yield first
    yield from rest


def predict_command(cfg: DictConfig, out_dir: Path) -> dict:
    """``xdt predict``; an error is recorded as ``failed`` in the command's own folder when it exists."""
    try:
        return predict_file(cfg, out_dir)
    except Exception as error:
        if Path(out_dir).is_dir():
            message = str(error) if isinstance(error, XdtError) else f"{type(error).__name__}: {error}"
            atomic_write_text(Path(out_dir) / FAILED, message + "\n")
        raise
