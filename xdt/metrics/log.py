"""``metrics.jsonl``: one self-describing JSON record per evaluation, rewritten atomically."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from xdt.atomic import atomic_write_text
from xdt.errors import XdtError

log = logging.getLogger(__name__)


class MetricsLog:
    """The evaluation records of a run, in step order.

    The whole file is rewritten atomically on every append (it holds one line per evaluation, so
    this stays small): xdt never leaves a torn line. A file copied while it was written, or cut by a
    full disk, may still end in one: see :func:`read_records`.
    """

    def __init__(self, path: Path, write: bool = True):
        self.path = Path(path)
        self.write = write  # in data-parallel runs every process keeps the records, one writes them
        self.records: list[dict] = read_records(self.path) if self.path.exists() else []

    def append(self, record: dict) -> None:
        self.records.append(record)
        self._write()

    def keep_until(self, step: int) -> None:
        """Drop records after ``step``: a resumed run repeats those evaluations from its checkpoint."""
        kept = [r for r in self.records if r["step"] <= step]
        if len(kept) != len(self.records):
            self.records = kept
            self._write()

    def _write(self) -> None:
        if self.write:
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in self.records))


def _parse(line: bytes) -> tuple[dict | None, str]:
    """One line as a record, or None and what is wrong with it."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "is not UTF-8 text"
    except json.JSONDecodeError as error:
        return None, f"is not valid JSON ({error.msg} at column {error.colno})"
    return (record, "") if isinstance(record, dict) else (None, "is not a JSON object")


def read_records(path: Path) -> list[dict]:
    """Every complete record of ``path``.

    A damaged last line is what an interrupted write leaves: it is dropped with a warning, and the
    records before it are kept (a resumed run repeats that evaluation). A damaged line before the last
    means the file was changed by something else, so nothing after it can be trusted: XdtError.
    """
    try:
        lines = [(n, line) for n, line in enumerate(Path(path).read_bytes().split(b"\n"), 1) if line.strip()]
    except OSError as error:
        raise XdtError(f"{path} cannot be read: {error.strerror or error}") from None
    records = []
    for index, (number, line) in enumerate(lines):
        record, problem = _parse(line)
        if record is not None:
            records.append(record)
        elif index == len(lines) - 1:
            log.warning("%s: line %d %s; it looks cut off by an interrupted write, so it is left out and the "
                        "%d complete records before it are used", path, number, problem, len(records))
        else:
            raise XdtError(f"{path}: line {number} {problem}, and records follow it: the file is damaged "
                           f"(restore it from a copy, or start the run again)")
    return records
