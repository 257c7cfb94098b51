"""``metrics.jsonl``: one self-describing JSON record per evaluation, rewritten atomically."""

from __future__ import annotations

import json
from pathlib import Path

from xdt.checkpoint import atomic_write_text


class MetricsLog:
    """The evaluation records of a run, in step order.

    The whole file is rewritten atomically on every append (it holds one line per evaluation, so
    this stays small): a kill never leaves a torn line.
    """

    def __init__(self, path: Path, write: bool = True):
        self.path = Path(path)
        self.write = write  # in data-parallel runs every process keeps the records, one writes them
        self.records: list[dict] = []
        if self.path.exists():
            self.records = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

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
