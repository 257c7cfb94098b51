"""Shared fixtures: Hydra composition against the shipped configs, a per-session tokenisation cache,
and the location of the real data in ../shared/data (tests that need it skip when it is absent)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import xdt.config  # noqa: F401  (registers the ${xdt.*} resolvers)

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
DATA_DIR = Path(os.environ.get("XDT_DATA_DIR", ROOT.parent / "shared" / "data")).resolve()
FDU = DATA_DIR / "fdu-mtl"

needs_fdu = pytest.mark.skipif(not FDU.is_dir(), reason=f"FDU-MTL data not found at {FDU} (set XDT_DATA_DIR)")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One tokenisation cache for the whole session, so repeated data is tokenised once."""
    return tmp_path_factory.mktemp("xdt-cache")


def compose_config(overrides: list[str], name: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(name, overrides=overrides)


@pytest.fixture
def smoke(cache_dir):
    """Compose a ``debug=smoke`` training config (tiny model, small data) plus ``overrides``."""
    def make(*overrides: str, name: str = "train") -> DictConfig:
        base = ["debug=smoke", f"cache_dir={cache_dir}", f"data_dir={DATA_DIR}"] if name == "train" else \
            [f"cache_dir={cache_dir}", f"data_dir={DATA_DIR}"]
        return compose_config([*base, *overrides], name)
    return make


def run_xdt(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed ``xdt`` command as a user would."""
    full_env = {**os.environ, "XDT_DATA_DIR": str(DATA_DIR), **(env or {})}
    return subprocess.run([sys.executable, "-m", "xdt.cli", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def cut_off_copy(finished: Path, cut: Path, last_step: int, kept_step: int) -> Path:
    """A copy of the finished run ``finished`` at ``cut`` as if it had been killed after checkpointing
    ``kept_step``: no ``done``, no metrics.json, no checkpoint of ``last_step``, ``last`` naming ``kept_step``."""
    from xdt import checkpoint

    shutil.copytree(finished, cut, symlinks=True)
    for name in ("done", "metrics.json"):
        (cut / name).unlink()
    shutil.rmtree(checkpoint.step_dir(cut, last_step))
    (cut / "checkpoints" / "last").unlink()
    (cut / "checkpoints" / "last").symlink_to(checkpoint.step_dir(cut, kept_step).name)
    return cut
