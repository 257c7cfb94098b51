"""A run folder's life, for every command that trains: open it (new, or resumed from its saved config), hold
its lock, log into it, and mark it ``failed`` when the run ends in an error.

Order matters, so that nothing already written is lost:

1. a resumed run must exist; the folder's lock is taken (two launchers never train one folder at once);
2. a new run into a folder that already holds one is refused before anything is written there;
3. the settings are checked before ``config.yaml`` is written, so a typo leaves no run behind, only its log
   and a ``failed`` marker saying why;
4. from then on an error writes ``failed`` (the message, and the traceback of an unexpected error) and the run
   can be continued with ``resume=``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import traceback
from pathlib import Path
from typing import Callable, Iterator

from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xdt import checkpoint, saved_run
from xdt.atomic import atomic_write_text
from xdt.errors import XdtError
from xdt.hardware import process_state
from xdt.run_files import DONE, FAILED
from xdt.runtime import log_to_file

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_held: set[Path] = set()  # run folders this process has locked (run_job locks, then train locks again)


class RunBusy(XdtError):
    """Another process holds the run folder's lock."""


@contextlib.contextmanager
def run_lock(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``<run>/.lock`` while this process works on the run, or raise :class:`RunBusy`.

    Two sweeps launched into one ``hydra.sweep.dir`` (or a resume typed twice) would otherwise train the same
    folder at once and corrupt it. ``flock`` locks die with their process, so a killed run leaves no stale lock.
    """
    key = Path(run_dir).resolve()
    if not enabled or key in _held:
        yield
        return
    key.mkdir(parents=True, exist_ok=True)
    handle = open(key / LOCK_FILE, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise RunBusy(f"{run_dir} is being trained by {owner}; it is left to that process") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        _held.add(key)
        try:
            yield
        finally:
            _held.discard(key)
    finally:
        handle.close()  # releases the lock


def shared_run_dir(run_dir: Path, hardware: DictConfig) -> Path:
    """The main process's run folder, for every process of a data-parallel launch.

    Each process composes its own config, and a dated folder name can fall on either side of a second;
    the main process's folder wins, and a stray empty folder of another process is removed.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:  # no launcher: one process (hardware is checked later, in
        return run_dir                                 # the run, so a refused setting is recorded in its folder)
    state = process_state(hardware)  # the process group, from the launcher's environment
    shared = [str(run_dir)]
    broadcast_object_list(shared, from_process=0)
    if Path(shared[0]) != run_dir and not state.is_main_process and run_dir.is_dir() and \
            {p.name for p in run_dir.iterdir()} <= {".hydra"}:
        shutil.rmtree(run_dir, ignore_errors=True)
    return Path(shared[0])


def resolved_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` with every interpolation resolved (what ``config.yaml`` holds), or a message naming the key."""
    try:
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))
    except OmegaConfBaseException as error:
        reason = str(error).splitlines()[0]
        raise XdtError(f"config value {error.full_key} is not set or cannot be resolved ({reason}); "
                       f"set it with {error.full_key}=<value>") from None


def _record_failure(run_dir: Path, error: Exception, file_log: logging.Handler) -> None:
    """Write ``failed`` and the error into the run's log file (the console shows it once, from the CLI).
    A finished run is never marked failed: an error after ``done`` is about reading it, not about the run."""
    if (run_dir / DONE).exists():
        return
    message = str(error) if isinstance(error, XdtError) else f"{type(error).__name__}: {error}"
    detail = "" if isinstance(error, XdtError) else "\n\n" + traceback.format_exc()
    file_log.handle(logging.makeLogRecord({"name": "xdt", "levelno": logging.ERROR, "levelname": "ERROR",
                                           "msg": "%s", "args": (message + detail,)}))
    with contextlib.suppress(OSError):  # a full disk must not hide the error itself
        atomic_write_text(run_dir / FAILED, message + detail + "\n")


@contextlib.contextmanager
def opened_run(cfg: DictConfig, run_dir: str | Path, log_name: str, check: Callable[[DictConfig], None],
               before_config: Callable[[DictConfig, Path], DictConfig] | None = None
               ) -> Iterator[tuple[DictConfig, Path]]:
    """Open the run of ``cfg`` in ``run_dir`` (or the folder ``cfg.resume`` names) and yield (config, folder).

    ``check`` rejects bad settings before ``config.yaml`` is written; ``before_config`` may change a new run's
    config first (the pretraining stage sets ``model.init_from``). In a data-parallel run only the main
    process locks and writes.
    """
    resume = cfg.get("resume")
    run_dir = Path(resume or run_dir).expanduser()
    if resume and not run_dir.is_dir():
        raise XdtError(f"resume={resume}: no such folder")
    run_dir = shared_run_dir(run_dir, cfg.hardware)
    if resume and (run_dir / DONE).exists():  # finished: read, never written to again (not even its log)
        yield saved_run.load_config(run_dir, "resume"), run_dir
        return
    main = PartialState().is_main_process
    with run_lock(run_dir, enabled=main):
        if resume:
            cfg = saved_run.load_config(run_dir, "resume", OmegaConf.select(cfg, "model.trust_remote_code",
                                                                            default=False))
            cfg.resume = str(run_dir)
        elif (run_dir / "config.yaml").exists():
            raise XdtError(f"{run_dir} already holds a run (config.yaml exists); continue it with resume={run_dir} "
                           f"or pick another folder with hydra.run.dir=<folder>")
        with log_to_file(run_dir / log_name) as file_log:
            try:
                if not resume:
                    cfg = resolved_config(cfg)
                check(cfg)
                if main:
                    (run_dir / FAILED).unlink(missing_ok=True)
                if not resume:
                    if before_config is not None:
                        cfg = before_config(cfg, run_dir)
                    if main:
                        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg))
                yield cfg, run_dir
            except Exception as error:
                error = _as_message(error, run_dir)
                if main:
                    _record_failure(run_dir, error, file_log)
                raise error from None


def _as_message(error: Exception, run_dir: Path) -> Exception:
    """A full disk, wherever it struck, as one message that says what survived (checkpoints are written
    atomically, so the last complete one is intact); other errors as they are."""
    if not isinstance(error, OSError) or error.errno != errno.ENOSPC:
        return error
    where = error.filename or run_dir
    last = checkpoint.linked_step(run_dir, "last")
    kept = f"the last good checkpoint is step {last}" if last else "no checkpoint had been written yet"
    return XdtError(f"disk full at {where}; {kept}: free some space, then continue with resume={run_dir}")
