"""Data parallel through Accelerate: two CPU processes (gloo) against one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import DATA_DIR

# Same global batch (16, split 8 + 8), no dropout, 256 training examples (a whole number of batches): the
# two runs see the same batches and differ only by the order of floating-point sums in the gradient
# all-reduce, which moves the loss by ~1e-6 and can flip the odd near-tie prediction.
RUN = ["debug=smoke", "max_steps=24", "eval_interval=12", "model.dropout=0.0", "hardware=cpu"]
TOLERANCE = 0.01  # accuracy, per evaluation set


def launch(tmp_path, cache_dir, name: str, processes: int) -> dict:
    run_dir = tmp_path / name
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "xdt.cli", "train", *RUN, f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}"]
    env = {**os.environ, "XDT_DATA_DIR": str(DATA_DIR), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path, cache_dir):
    one = launch(tmp_path, cache_dir, "one", 1)
    two = launch(tmp_path, cache_dir, "two", 2)
    assert one["steps"] == two["steps"] == 24
    assert set(one["metrics"]) == set(two["metrics"])
    for name, scores in one["metrics"].items():
        assert abs(scores["accuracy"] - two["metrics"][name]["accuracy"]) <= TOLERANCE, name
    lines = [[json.loads(line)["train"]["loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
             for run in ("one", "two")]
    assert lines[0] == pytest.approx(lines[1], rel=1e-3)
    assert not any(p.name.startswith(".") or p.name == "outputs" for p in tmp_path.iterdir())  # one folder per run
