"""Process-level plumbing of a run: its log file and the signals that ask it to stop."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def log_to_file(path: Path) -> Iterator[logging.Handler]:
    """Copy every log record of the run into ``path`` (appending, so a resumed run keeps its history).
    Yields the file's handler, for records meant for the file alone."""
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()


class StopSignals:
    """Turns SIGTERM and SIGINT into a flag the loop checks after every step, so it can checkpoint first.

    A second SIGINT (Ctrl-C twice) interrupts at once.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __enter__(self) -> "StopSignals":
        self.received: int | None = None
        self.previous = {}
        if threading.current_thread() is threading.main_thread():  # signals can only be caught there
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def ignore_stop_signals(worker_id: int) -> None:
    """A data-loader worker's init: ignore the stop signals, which `timeout`, SLURM and Ctrl-C send to the whole
    process group. The main process checkpoints and exits on them (``StopSignals``) and takes its workers down
    with it; a worker killed by the signal would instead raise an error in the main process (torch's SIGCHLD
    handler), failing the job without a checkpoint, and a sweep would go on to its next job."""
    for sig in StopSignals.SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
