"""Kill a training run at random moments, resume it until it finishes, and compare it with a run never killed
(issue 18).

First a reference: ``xdt train debug=smoke max_steps=120 eval_interval=10 track_targets=false``, never
interrupted. Then ``--kills`` trials of the same command, each SIGKILLed (the whole process group) at a moment
drawn from a seeded RNG:

* ``random``: a uniform moment of the reference's run time, counted from when config.yaml appears;
* ``checkpoint``: while a checkpoint is being written (a ``.tmp-step-*`` folder exists), at a random one of the
  evaluations;
* ``links``: right after a checkpoint folder is renamed into place, before ``checkpoints/last`` points at it;
* ``model``: as soon as ``model/`` appears (while its files are written);
* ``final``: after the last step's checkpoint, at a uniform moment of the final phase (reloading the selected
  checkpoint, scoring every split, writing metrics.json and done), as long as it took in the reference.

The five kinds take turns in a shuffled order, so 20 trials kill 4 times at each.

Then ``xdt train resume=<run>`` until ``done`` exists; in about half the trials the first resume is killed too
(again at a drawn moment). Each finished trial is checked: ``metrics.json``'s metrics, selected step and steps
equal the reference's (bit for bit: the JSON values are compared as written), the ``metrics.jsonl`` records
equal the reference's (times left out), every file under ``checkpoints/`` opens and all its tensors read,
``model/`` holds the reference's files, each valid JSON (files whose bytes differ are listed in ``--json``),
no temporary files are left in ``checkpoints/``, and ``xdt eval run_dir=<run>`` succeeds.

Whatever ``python -m xdt.cli`` imports is measured (``PYTHONPATH=<checkout>`` picks another copy).

    python scripts/kill_resume.py                    # 20 kills, seed 0 (about 25 minutes on 2 busy cores)
    python scripts/kill_resume.py --kills 5 --seed 3 --json out.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from safetensors import safe_open

# track_targets=false: evaluations score source validation only (most of a smoke run's time otherwise), and
# the final evaluation reloads the selected checkpoint to score every split: one more path a kill can hit.
COMMAND = ["train", "debug=smoke", "max_steps=120", "eval_interval=10", "track_targets=false"]
MODES = ("random", "checkpoint", "links", "model", "final")
TIMEOUT_S = 600
LIVE: list[subprocess.Popen] = []  # started processes, killed if the script is interrupted


@dataclass
class Timing:
    """What the reference run took: where the kill moments are drawn from."""

    run_seconds: float  # the run's own wall time
    evaluations: int
    last_step: int
    final_seconds: float  # from the last step's checkpoint to done


def xdt(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``python -m xdt.cli <args>``; its output goes to a numbered ``command-N.txt`` in ``cwd`` (a pipe
    nobody reads while the script polls could fill up and stall the run)."""
    log = cwd / f"command-{len(list(cwd.glob('command-*.txt'))) + 1}.txt"
    with open(log, "w", encoding="utf-8") as handle:
        process = subprocess.Popen([sys.executable, "-m", "xdt.cli", *args], cwd=cwd, env=env,
                                   start_new_session=True, stdout=handle, stderr=subprocess.STDOUT)
    process.log = log
    LIVE.append(process)
    return process


def finish(process: subprocess.Popen) -> tuple[int, str]:
    try:
        process.wait(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        kill(process)
    return process.returncode, process.log.read_text(encoding="utf-8", errors="replace")


def kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()
             and not line.startswith("Set the environment variable HYDRA_FULL_ERROR")]
    return lines[-1][:160] if lines else ""


# ---- waiting for the moment to kill -------------------------------------------------------------------------

def wait_for(process: subprocess.Popen, ready, timeout: float = TIMEOUT_S, poll: float = 0.0005) -> bool:
    """Poll ``ready()`` until it is true (True) or the process has ended (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            return True
        if process.poll() is not None:
            return bool(ready())
        time.sleep(poll)
    return False


def tmp_checkpoints(run: Path) -> list[str]:
    try:
        return [name for name in os.listdir(run / "checkpoints") if name.startswith(".tmp-step-")]
    except FileNotFoundError:
        return []


def complete_steps(run: Path) -> set[str]:
    try:
        return {name for name in os.listdir(run / "checkpoints") if name.startswith("step-")}
    except FileNotFoundError:
        return set()


def last_target(run: Path) -> str | None:
    try:
        return os.readlink(run / "checkpoints" / "last")
    except OSError:
        return None


def strike(process: subprocess.Popen, run: Path, mode: str, rng: random.Random, timing: Timing,
           evaluations: int) -> tuple[str, bool]:
    """Kill ``process`` at a moment of kind ``mode`` (at one of its first ``evaluations`` checkpoints, for the
    kinds that wait for one); what happened, in words, and whether the process was still running (the kill
    landed) or had finished first."""
    if mode == "random":
        wait_for(process, lambda: (run / "config.yaml").exists(), poll=0.01)
        delay = rng.uniform(0, timing.run_seconds)
        time.sleep(delay)
        moment = f"random {delay:.2f}s"
    elif mode == "checkpoint":
        nth = rng.randint(1, evaluations)  # the nth checkpoint written by this process
        seen: set[str] = set()

        def nth_tmp() -> bool:
            names = tmp_checkpoints(run)
            seen.update(names)
            return bool(names) and len(seen) >= nth
        caught = wait_for(process, nth_tmp)
        moment = f"checkpoint #{nth} {'during ' + max(seen) if caught else '(missed)'}"
    elif mode == "links":
        nth = rng.randint(1, evaluations)
        before, seen = complete_steps(run), set()

        def renamed() -> bool:  # the nth new checkpoint folder is in place and last does not point at it yet
            steps = complete_steps(run)
            seen.update(steps - before)
            return len(seen) >= nth and max(steps) in seen and last_target(run) != max(steps)
        caught = wait_for(process, renamed)
        moment = f"links after checkpoint #{nth}" + ("" if caught else " (missed)")
    elif mode == "model":
        caught = wait_for(process, lambda: (run / "model").exists())
        moment = "model/" + ("" if caught else " (missed)")
    else:
        caught = wait_for(process, lambda: (run / "checkpoints" / f"step-{timing.last_step:07d}").is_dir())
        delay = rng.uniform(0, timing.final_seconds)
        time.sleep(delay)
        moment = f"final phase +{delay:.2f}s" + ("" if caught and not (run / "done").exists() else " (missed)")
    alive = process.poll() is None
    kill(process)
    checkpoints = sorted(complete_steps(run))
    last = checkpoints[-1] if checkpoints else "-"
    return f"{moment}{'' if alive else ' [had exited]'} (last checkpoint {last})", alive


# ---- checking a finished run ---------------------------------------------------------------------------------

def load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def records(run: Path) -> list[dict] | None:
    try:
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if line]
    except (OSError, json.JSONDecodeError):
        return None
    for row in rows:
        row.pop("elapsed_s", None)
    return rows


def unreadable_files(run: Path) -> list[str]:
    """Files under checkpoints/ (links followed) that do not open as safetensors with every tensor readable."""
    bad = []
    root = run / "checkpoints"
    for path in sorted(root.rglob("*")):
        if path.is_dir() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118  (a safe_open handle is not a dict)
                    handle.get_tensor(key)
        except Exception as error:  # noqa: BLE001  (any failure to read counts)
            bad.append(f"{path.relative_to(run)} ({type(error).__name__})")
    for name in ("best", "last"):
        if not (root / name).is_dir():
            bad.append(f"checkpoints/{name} (missing or dangling)")
    return bad


def model_files(run: Path) -> dict[str, str | None]:
    """model/'s files: relative name -> content hash, or None for a file that is not valid JSON (all of them are
    JSON when complete)."""
    folder = run / "model"
    files = {}
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.is_file():
            data = path.read_bytes()
            try:
                json.loads(data)
                files[str(path.relative_to(folder))] = hashlib.sha256(data).hexdigest()
            except ValueError:
                files[str(path.relative_to(folder))] = None
    return files


@dataclass
class Trial:
    number: int
    kills: list[str] = field(default_factory=list)
    landed: int = 0  # kills that hit a running process (the others came after it had finished)
    resumes: int = 0
    completed: bool = False
    identical: bool = False
    records_identical: bool = False
    unreadable: list[str] = field(default_factory=list)
    model_complete: bool = False  # model/ holds the reference's files, each valid JSON
    model_differs: list[str] = field(default_factory=list)  # files of model/ whose bytes differ from the reference's
    leftovers: list[str] = field(default_factory=list)  # temporary files or folders left in checkpoints/
    eval_ok: bool = False
    problem: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        if not self.completed:
            return f"trial {self.number:2d}: {' -> '.join(self.kills)} | NOT COMPLETED: {self.problem}"
        marks = [f"metrics {'identical' if self.identical else 'DIFFER'}",
                 f"records {'identical' if self.records_identical else 'DIFFER'}",
                 f"unreadable {len(self.unreadable)}", f"model/ {'ok' if self.model_complete else 'INCOMPLETE'}",
                 f"leftovers {len(self.leftovers)}",
                 f"eval {'ok' if self.eval_ok else 'FAILED'}"]
        extra = f" | {self.problem}" if self.problem else ""
        return (f"trial {self.number:2d}: {' -> '.join(self.kills)} -> {self.resumes} resume(s) | "
                f"{', '.join(marks)} | {self.seconds:.0f}s{extra}")


def comparable(result: dict) -> dict:
    return {key: result.get(key) for key in ("metrics", "transfer_gap", "selected_step", "steps", "selection")}


def run_trial(number: int, mode: str, root: Path, env: dict[str, str], reference: dict, rng: random.Random,
              timing: Timing) -> Trial:
    trial = Trial(number)
    started = time.perf_counter()
    work = root / f"trial-{number:02d}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    run = work / "run"
    moment, alive = strike(xdt([*COMMAND, f"hydra.run.dir={run}"], work, env), run, mode, rng, timing,
                           timing.evaluations)
    trial.kills.append(moment)
    trial.landed += alive
    kill_resume_too = rng.random() < 0.5
    if not (run / "config.yaml").exists():
        trial.problem = "killed before config.yaml was written (nothing to resume)"
        trial.seconds = time.perf_counter() - started
        return trial
    while not (run / "done").exists() and trial.resumes < 5:
        trial.resumes += 1
        process = xdt(["train", f"resume={run}"], work, env)
        if kill_resume_too and trial.resumes == 1:
            again = rng.choice(("random", "checkpoint", "links"))
            moment, alive = strike(process, run, again, rng, timing, max(1, timing.evaluations // 2))
            trial.kills.append("resume killed at " + moment)
            trial.landed += alive
            continue
        rc, output = finish(process)
        if rc != 0:
            trial.problem = f"resume exited {rc}: {last_line(output)}"
            break
    trial.completed = (run / "done").exists()
    if trial.completed:
        result = load_json(run / "metrics.json")
        trial.identical = result is not None and comparable(result) == comparable(reference["result"])
        trial.records_identical = records(run) == reference["records"]
        trial.unreadable = unreadable_files(run)
        files = model_files(run)
        trial.model_complete = set(files) == set(reference["model"]) and None not in files.values()
        trial.model_differs = sorted(name for name, digest in files.items() if digest != reference["model"].get(name))
        trial.leftovers = sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.startswith("."))
        rc, output = finish(xdt(["eval", f"run_dir={run}", f"hydra.run.dir={work / 'eval'}"], work, env))
        trial.eval_ok = rc == 0
        if rc != 0:
            trial.problem = f"eval exited {rc}: {last_line(output)}"
    elif not trial.problem:
        trial.problem = "no done after 5 resumes"
    trial.seconds = time.perf_counter() - started
    return trial


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20, help="trials, each killed at least once")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--json", type=Path, help="save the trials here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    root = Path(args.keep or tempfile.mkdtemp(prefix="xdt-kill-resume-")).resolve()
    root.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update({"XDT_CACHE_DIR": str(root / "cache"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "COLUMNS": "250"})
    probe = subprocess.run([sys.executable, "-c", "import xdt; print(xdt.__file__)"], env=env, capture_output=True,
                           text=True, cwd=root, check=False)
    print(f"xdt under test: {probe.stdout.strip() or probe.stderr.strip()}\nwork folder: {root}")
    print(f"command: xdt {' '.join(COMMAND)}; {args.kills} kills, seed {args.seed}\n", flush=True)
    started = time.perf_counter()

    reference_dir = root / "reference"
    shutil.rmtree(reference_dir, ignore_errors=True)
    clock = time.perf_counter()
    rc, output = finish(xdt([*COMMAND, f"hydra.run.dir={reference_dir}"], root, env))
    total = time.perf_counter() - clock
    result = load_json(reference_dir / "metrics.json")
    if rc != 0 or result is None:
        raise SystemExit(f"the reference run failed:\n{output[-3000:]}")
    reference = {"result": result, "records": records(reference_dir), "model": model_files(reference_dir)}
    last = reference_dir / "checkpoints" / f"step-{int(result['steps']):07d}"
    timing = Timing(float(result.get("wall_time_s") or total), len(reference["records"]), int(result["steps"]),
                    (reference_dir / "done").stat().st_mtime - last.stat().st_mtime)
    print(f"reference: {total:.1f} s in all, {timing.run_seconds:.1f} s of run, {timing.evaluations} evaluations, "
          f"final phase {timing.final_seconds:.1f} s after {last.name}, selected step {result['selected_step']}\n",
          flush=True)

    rng = random.Random(args.seed)
    modes = [MODES[i % len(MODES)] for i in range(args.kills)]
    rng.shuffle(modes)
    trials = []
    try:
        for number, mode in enumerate(modes, start=1):
            trials.append(run_trial(number, mode, root, env, reference, rng, timing))
            print(trials[-1].line(), flush=True)
    finally:
        for process in LIVE:
            if process.poll() is None:
                kill(process)
        done = [t for t in trials if t.completed]
        print(f"\n{len(trials)} trials ({sum(len(t.kills) for t in trials)} kills, {sum(t.landed for t in trials)} "
              f"of them before the process had finished): {len(done)} completed, "
              f"{sum(t.identical for t in done)} with metrics identical to the reference, "
              f"{sum(t.records_identical for t in done)} with identical metrics.jsonl records, "
              f"{sum(len(t.unreadable) for t in done)} unreadable checkpoint files "
              f"(in {sum(bool(t.unreadable) for t in done)} trials), "
              f"{sum(not t.model_complete for t in done)} with model/ incomplete, "
              f"{sum(bool(t.leftovers) for t in done)} with temporary leftovers in checkpoints/, "
              f"{sum(not t.eval_ok for t in done)} eval failures; {time.perf_counter() - started:.0f} s")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"xdt": probe.stdout.strip(), "seed": args.seed,
                                             "trials": [asdict(t) for t in trials]}, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
