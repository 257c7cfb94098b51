"""Where and with which code something was made: the git commit of the xdt checkout and the machine.

A run records these in its metrics.json (``xdt``, ``machine``) and a report in its header, so a published figure
names the code that made it. Nothing here reads a run folder.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path

import xdt

GIT_TIMEOUT_S = 5


def git_commit() -> str:
    """The commit of the git checkout xdt is imported from (``git rev-parse HEAD``, with ``+ uncommitted changes in
    xdt/`` when the package's files differ from it), or "unknown": not a checkout (an installed wheel), no git, or
    git slower than a few seconds. A checkout counts only if its ``xdt/`` is this package, so an installed copy
    inside some other repository (a virtual environment in a checkout) is not given that repository's commit."""
    package = Path(xdt.__file__).resolve().parent
    git = ["git", "-c", "core.fsmonitor=false", "-C", str(package)]
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # read only: git status may not even refresh the index
    try:
        found = subprocess.run([*git, "rev-parse", "--show-toplevel", "HEAD"], check=False, capture_output=True,
                               text=True, timeout=GIT_TIMEOUT_S, env=env, stdin=subprocess.DEVNULL)
        top, commit = found.stdout.splitlines()
        if found.returncode != 0 or (Path(top) / "xdt").resolve() != package or not re.fullmatch(r"[0-9a-f]{40}",
                                                                                                  commit):
            return "unknown"
        changed = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", "."], check=False,
                                 capture_output=True, text=True, timeout=GIT_TIMEOUT_S, env=env,
                                 stdin=subprocess.DEVNULL)
    except (OSError, ValueError, subprocess.SubprocessError):
        return "unknown"
    return commit + (" + uncommitted changes in xdt/" if changed.returncode == 0 and changed.stdout.strip() else "")


def cpu_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), or what the platform module knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def gpu_names() -> str:
    """The GPUs torch sees (``2 x NVIDIA H200``), or why none is listed. torch is imported only if installed."""
    import importlib.util
    try:
        if importlib.util.find_spec("torch") is None:
            return "no GPU listed (torch is not installed)"
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return ", ".join(f"{names.count(n)} x {n}" if names.count(n) > 1 else n for n in dict.fromkeys(names))
        mps = getattr(torch.backends, "mps", None)
        return "Apple MPS" if mps is not None and mps.is_available() else "no GPU (torch sees no CUDA device)"
    except Exception as error:  # a broken driver must not stop a report  # noqa: BLE001
        return f"unknown ({type(error).__name__})"


def machine() -> str:
    return (f"{platform.platform()}, Python {platform.python_version()}; {cpu_name()} ({os.cpu_count()} logical "
            f"cores); {gpu_names()}")


def code_version() -> dict[str, str]:
    """xdt's version and the commit it runs from, as a run records them in metrics.json."""
    return {"version": xdt.__version__, "commit": git_commit()}
