"""scripts/profile_step.py (issue 23): a run's own training steps, profiled, with their time by kind of operator
adding up to the steps' wall time, and the MFU figures computed from the run's FLOP count."""

from __future__ import annotations

import importlib.util
import logging
import re
import sys

import pytest

from conftest import DATA_DIR, ROOT
from xdt.console import console

spec = importlib.util.spec_from_file_location("profile_step", ROOT / "scripts" / "profile_step.py")
profile_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(profile_step)


@pytest.mark.parametrize("name, kind", [
    ("aten::addmm", "matrix multiplies"),
    ("aten::bmm", "matrix multiplies"),
    ("aten::copy_", "copies and casts"),
    ("aten::random_", "dropout masks"),
    ("aten::native_layer_norm_backward", "softmax, layer norm, activations"),
    ("aten::_foreach_mul_", "optimizer and clipping"),
    ("aten::_fused_adamw_", "optimizer and clipping"),
    ("aten::mul", "elementwise and reductions"),
    ("aten::fill_", "gradient buffers (zero fills)"),
    ("aten::frobnicate", profile_step.OTHER_OPERATORS),
    ("Optimizer.step#AdamW.step", profile_step.FRAMEWORK),
    ("autograd::engine::evaluate_function: AddmmBackward0", profile_step.FRAMEWORK),
])
def test_operators_are_put_in_their_kind(name, kind):
    assert profile_step.kind_of(name) == kind


@pytest.fixture
def script_globals(monkeypatch):
    """The script quiets the console and INFO logging, as a process of its own may; give both back after."""
    monkeypatch.setattr(console, "quiet", console.quiet)
    yield
    logging.disable(logging.NOTSET)


def test_a_runs_steps_are_profiled_and_their_kinds_add_up_to_their_time(monkeypatch, capsys, cache_dir,
                                                                        script_globals):
    monkeypatch.setattr(sys, "argv", ["profile_step.py", "--warmup", "1", "--steps", "2", "--", "debug=smoke",
                                      f"cache_dir={cache_dir}", f"data_dir={DATA_DIR}"])
    profile_step.main()
    printed = capsys.readouterr().out
    assert printed.startswith("2 profiled steps: median ")
    shares = {kind.strip(): float(share) for kind, share in re.findall(r"^(.+?)\s+[\d.]+\s+([\d.]+)%$", printed, re.M)}
    assert shares["matrix multiplies"] > 0 and profile_step.UNTRACED in shares
    assert sum(shares.values()) == pytest.approx(100, abs=0.5)  # every second of the steps is in one row
    mfu = float(re.search(r"MFU of these steps: ([\d.]+)", printed).group(1))
    ceiling = float(re.search(r"matmul ceiling: ([\d.]+)", printed).group(1))
    assert 0 < mfu <= ceiling

