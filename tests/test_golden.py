"""Golden values of the training loops (torchtune's golden-loss tests are the model): the final figures of fixed
runs, recorded from the code before the training loops of xdt/train.py and xdt/pretrain.py became one engine, must
not move. Each run goes through the command line, as a user starts it, into its own folder; the test reads the
figures a user reads (metrics.json and the last record of metrics.jsonl) and compares them with
tests/golden/engine.json.

The figures: the selected step, the number of steps run, the selection value, the training loss of the last
evaluation record, and per evaluation set accuracy and macro F1 (pretraining: loss, perplexity, token accuracy).
Recorded with ``scripts/record_golden.py`` (which takes the case table below): a change that moves a figure on
purpose re-records the runs it moves there and says why in its commit; one that moves a figure by accident is a
regression.

Tolerance: fp32 on CPU with a fixed thread count is deterministic; every case, recorded twice (the second time
from a warm tokenisation cache), gave bit-identical figures, the two-process gloo run included. So the
tolerance is 1e-6 absolute: "the printed digit on this CPU" (perplexity, the exp of a loss: 1e-6 of itself).
The runs are pinned to the thread count they were recorded with (OMP_NUM_THREADS=2 for one process, as the
default on the 2-core machine they were recorded on; 1 per process for the two-process run, as in
test_distributed.py). Another CPU (other vector units, another
torch build) may round differently: re-record there with the script rather than widening the tolerance.

Each case is a fresh process (about 5 s of imports); on 2 cores shared with other jobs the 19 fast cases took
13 minutes and the two slow ones (MiniLM's default run, the two-process run) 5 minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import DATA_DIR, run_xdt

import xdt

GOLDEN = Path(__file__).resolve().parent / "golden" / "engine.json"
TOLERANCE = 1e-6  # absolute, on every float; steps are compared exactly
# Perplexity is exp(loss): a loss that moves by 1e-6 moves it by 1e-6 of itself, so it is held relatively. At
# perplexities near 20,000, an absolute 1e-6 asked for a loss 5e-11 apart, finer than fp32 sums round alike on CPUs
# with other vector units (an AVX-512 machine moved the untrained tiny models' perplexities by 2e-8 of themselves).
RELATIVE = ("perplexity",)
THREADS = "2"  # intra-op threads of a one-process run (the default on the 2-core machine the values come from)
TIMEOUT = 1800  # seconds per command; the default MiniLM run takes 1-2 minutes on 2 idle cores, 10+ on busy ones

# The strategies as the code under test ships them: a strategy added without a golden value fails below,
# pointing at the script that records it.
STRATEGIES = sorted(p.stem for p in (Path(xdt.__file__).parent / "configs" / "strategy").glob("*.yaml"))
# A kill needs a run that goes on well after its first checkpoint: checkpoints at 10, 20 and 30.
KILLED = ("debug=smoke", "max_steps=30", "eval_interval=10")
# tests/test_distributed.py's run: one global batch of 16 split 8 + 8, no dropout, 256 training examples.
TWO_PROCESSES = ("debug=smoke", "max_steps=24", "eval_interval=12", "model.dropout=0.0", "hardware=cpu")


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...] = ()
    command: str = "train"  # or pretrain
    how: str = "run"        # run | kill_and_resume (SIGKILL after the first checkpoint, then resume=) | two_processes
    slow: bool = False

    def describe(self) -> str:
        launcher = "torchrun --nproc-per-node 2 -m xdt.cli" if self.how == "two_processes" else "xdt"
        text = " ".join([launcher, self.command, *self.overrides])
        return text + (" (SIGKILL after the first checkpoint, then xdt train resume=<run>)"
                       if self.how == "kill_and_resume" else "")


CASES: list[Case] = [
    Case("default_minilm", (), slow=True),
    *[Case(f"smoke_{s}", ("debug=smoke", f"strategy={s}")) for s in STRATEGIES],
    Case("smoke_dann_lora", ("debug=smoke", "strategy=dann", "model.peft=lora")),
    Case("pretrain_smoke_tiny", ("debug=smoke", "model=tiny"), command="pretrain"),
    Case("pretrain_smoke_tiny_gpt", ("debug=smoke", "model=tiny_gpt"), command="pretrain"),
    Case("smoke_sigkill_resume", KILLED, how="kill_and_resume"),
    Case("smoke_two_processes_gloo", TWO_PROCESSES, how="two_processes", slow=True),
    Case("smoke_average_from_0.5", ("debug=smoke", "average_from=0.5")),
    Case("smoke_l2sp_alpha_0.1", ("debug=smoke", "l2sp.alpha=0.1")),
    Case("smoke_reptile_shots_8", ("debug=smoke", "strategy=reptile", "target_domain.shots=8")),
]
CASES_BY_NAME = {case.name: case for case in CASES}


# ---------------------------------------------------------------------------------------------- running a case
def _env(threads: str) -> dict:
    return {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}{result.stderr[-3000:]}"


def _kill_after_first_checkpoint(case: Case, run_dir: Path, cache_dir: Path, workdir: Path) -> None:
    log = workdir / f"{case.name}.killed.out"
    env = {**os.environ, "XDT_DATA_DIR": str(DATA_DIR), **_env(THREADS)}
    with open(log, "w") as out:  # a file, not a pipe: a full pipe would block the run
        process = subprocess.Popen([sys.executable, "-m", "xdt.cli", case.command, *case.overrides,
                                    f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}"],
                                   cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + TIMEOUT
        # checkpoints/step-NNNNNNN/ appears complete (it is renamed into place once written)
        while not any((run_dir / "checkpoints").glob("step-*")):
            assert process.poll() is None, f"the run ended before its first checkpoint:\n{log.read_text()[-3000:]}"
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert not (run_dir / "done").exists(), "the run finished before SIGKILL; make it longer"
    _check(run_xdt(case.command, f"resume={run_dir}", cwd=workdir, env=_env(THREADS), timeout=TIMEOUT), "resume")


def run_case(case: Case, workdir: Path, cache_dir: Path) -> dict:
    """Run ``case`` in ``workdir/<name>`` with the code importable now, and return its figures."""
    run_dir = workdir / case.name
    common = (f"hydra.run.dir={run_dir}", f"cache_dir={cache_dir}")
    if case.how == "run":
        result = run_xdt(case.command, *case.overrides, *common, cwd=workdir, env=_env(THREADS), timeout=TIMEOUT)
        _check(result, case.describe())
    elif case.how == "kill_and_resume":
        _kill_after_first_checkpoint(case, run_dir, cache_dir, workdir)
    elif case.how == "two_processes":
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                   "-m", "xdt.cli", case.command, *case.overrides, *common]
        env = {**os.environ, "XDT_DATA_DIR": str(DATA_DIR), **_env("1")}
        _check(subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT,
                              check=False),
               case.describe())
    else:
        raise ValueError(f"unknown how={case.how!r}")
    return figures(run_dir)


def figures(run_dir: Path) -> dict:
    """What a user reads of a finished run: metrics.json and the last evaluation record of metrics.jsonl."""
    saved = json.loads((run_dir / "metrics.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    last = [r for r in records if r.get("eval")][-1]
    keys = ("loss", "perplexity", "token_accuracy") if saved.get("kind") == "pretrain" else ("accuracy", "f1_macro")
    return {"selected_step": saved["selected_step"], "steps": saved["steps"],
            "selection_value": saved["selection"]["value"],
            "train_loss": last["train"]["loss"], "train_loss_step": last["step"],
            "metrics": {name: {k: scores[k] for k in keys} for name, scores in saved["metrics"].items()}}


# ------------------------------------------------------------------------------------------------- comparing
def flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key} "))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def moved_beyond_tolerance(key: str, a: float, b: float) -> bool:
    """Whether a float figure moved (NaN always counts as moved)."""
    allowed = TOLERANCE * max(abs(a), abs(b)) if key.endswith(RELATIVE) else TOLERANCE
    return not abs(a - b) <= allowed


def differences(golden: dict, now: dict) -> list[str]:
    """One line per figure that moved (or appeared, or went missing), naming it with its old and new value."""
    old, new = flatten(golden), flatten(now)
    lines = [f"{key}: golden {old[key]!r}, missing now" for key in old if key not in new]
    lines += [f"{key}: not in the golden values, now {new[key]!r}" for key in new if key not in old]
    for key in (k for k in old if k in new):
        a, b = old[key], new[key]
        if isinstance(a, float) or isinstance(b, float):
            if moved_beyond_tolerance(key, a, b):
                lines.append(f"{key}: golden {a!r}, now {b!r} (diff {b - a:+.3g})")
        elif a != b:  # steps, and anything that is not a float
            lines.append(f"{key}: golden {a!r}, now {b!r}")
    return lines


def load_golden() -> dict:
    return json.loads(GOLDEN.read_text())


# ---------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_golden_values(case, tmp_path, cache_dir):
    golden = load_golden()["runs"].get(case.name)
    if golden is None:
        pytest.fail(f"no golden values for {case.name} ({case.describe()}): record them with "
                    f"`python scripts/record_golden.py --only {case.name}` and say in the commit why they are new")
    moved = differences(golden["figures"], run_case(case, tmp_path, cache_dir))
    assert not moved, (f"{case.name} ({case.describe()}) moved {len(moved)} figure(s) beyond {TOLERANCE}:\n  "
                       + "\n  ".join(moved))


def test_every_golden_run_is_still_a_case():
    """A run with golden values that is no longer run (a strategy removed or renamed) is a user-visible change."""
    assert sorted(set(load_golden()["runs"]) - set(CASES_BY_NAME)) == []


def test_perplexity_is_held_to_a_relative_tolerance_and_everything_else_to_an_absolute_one():
    golden = {"metrics": {"test perplexity": 18347.53519712497, "test accuracy": 0.5, "test loss": 9.8}}
    assert differences(golden, {"metrics": {"test perplexity": 18347.5355433, "test accuracy": 0.5,
                                            "test loss": 9.8 + 5e-7}}) == []
    moved = differences(golden, {"metrics": {"test perplexity": 18347.6, "test accuracy": 0.500002,
                                             "test loss": float("nan")}})
    assert [line.split(":")[0] for line in moved] == ["metrics test perplexity", "metrics test accuracy",
                                                       "metrics test loss"]
