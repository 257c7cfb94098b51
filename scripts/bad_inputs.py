"""Run xdt on bad inputs as a user would, and tabulate what each one does (issue 18).

Each case is one row of ``CASES``: a setup (folders, files, copies of a finished smoke run), one command
``python -m xdt.cli ...`` run with its working directory in a fresh temporary folder, and what the right
outcome is. For every case the table gives the exit status, whether the output holds a traceback, its last
meaningful line, whether anything that existed before was modified (every file under the case's folder is
hashed before and after; a ``.log`` file that only grew counts as unchanged), and a verdict:

* OK: a bad input ends with a non-zero exit, no traceback, its message printed once, nothing lost, and no
  leftover run folder under ``outputs/``; or, where success is the right answer, exit 0 and a correct result.
* DEFECT, with its kinds: ``traceback``, ``exit-0`` (accepted a bad input), ``failed`` (refused a good one),
  ``wrong`` (exit 0 but a wrong result), ``code-ran`` (a file that only code from a run folder could create
  appeared), ``modified`` (a file that existed before changed or vanished), ``outside`` (a file appeared in
  the case's ``outside/`` folder, where nothing may write), ``twice`` (the error message printed twice),
  ``leftover`` (a failed command left a run folder under ``outputs/`` that does not say it failed: no
  ``failed`` marker, so it looks like a run cut off; a folder with the marker is noted in the table, and counts
  as a defect only with ``--strict-leftovers``), ``unclear`` (the message lacks what the case requires, such as
  the setting to change).

Whatever ``python -m xdt.cli`` imports is measured: run it with ``PYTHONPATH=<checkout>`` to measure another
copy of the code. Training cases use ``debug=smoke``; a finished smoke run is trained once and copied.

    python scripts/bad_inputs.py                            # every case (12 to 25 minutes on 2 busy cores)
    python scripts/bad_inputs.py --only resume --json out.json
    PYTHONPATH=/path/to/other/checkout python scripts/bad_inputs.py --keep /tmp/bad_inputs
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

STRICT_LEFTOVERS = False  # --strict-leftovers: a left run folder is a defect even when it says it failed
DATA_DIR = Path(os.environ.get("XDT_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
TIMEOUT_S = 600
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
LOG_PREFIX = re.compile(r"^(\[[^\]]*\]\s+)?(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+|^\[[\d :,-]+\]\[\w+\]\s*")
NOISE = ("Set the environment variable HYDRA_FULL_ERROR=1", "Error executing job with overrides")
DETAILS = ("Available options in", "Config search path:")
BOX = "─━═┏┓┗┛┡┩└┘│┃╇┳┻┯┷ "


# ---- running a command and looking at what it did ------------------------------------------------------

@dataclass
class Result:
    rc: int
    output: str
    seconds: float

    @property
    def lines(self) -> list[str]:
        """Output lines without colours, log prefixes, blank lines and Hydra's boilerplate."""
        kept = []
        for line in ANSI.sub("", self.output).splitlines():
            line = LOG_PREFIX.sub("", line.strip()).strip()
            if line and not line.startswith(NOISE) and not set(line) <= set(BOX):
                kept.append(line)
        return kept

    @property
    def last(self) -> str:
        """The message: a traceback's last line, else the last line that is not an indented detail (Hydra's
        full_key/object_type lines, lists of options and search paths) nor boilerplate."""
        if self.traceback:
            return self.lines[-1] if self.lines else ""
        for raw in reversed(ANSI.sub("", self.output).splitlines()):
            line = raw.strip()
            if not line or line.startswith(NOISE + DETAILS) or set(line) <= set(BOX):
                continue
            if raw[:1] in (" ", "\t") and not LOG_PREFIX.match(line):
                continue
            return LOG_PREFIX.sub("", line).strip()
        return ""

    @property
    def traceback(self) -> bool:
        return "Traceback (most recent call last)" in self.output

    def says(self, *words: str) -> bool:
        """Whether the output holds every one of ``words`` as a whole word (metrics.json is not metrics.jsonl)."""
        text = ANSI.sub("", self.output)
        return all(re.search(re.escape(word) + r"(?!\w)", text) for word in words)


def snapshot(root: Path) -> dict[str, str]:
    """relative path -> content hash (a symlink -> its target), for every file under ``root`` but the run folders'
    ``.lock`` files: a lock records which process holds the run (docs/run-folders.md), it is not data."""
    found = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.name == ".lock":
            continue
        if path.is_symlink():
            found[rel] = "link:" + os.readlink(path)
        elif path.is_file():
            found[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def grew_only(path: Path, old_hash: str, before_sizes: dict[str, int], rel: str) -> bool:
    """A log that was only appended to (its old bytes are a prefix of the new ones)."""
    if not rel.endswith(".log") or not path.is_file() or rel not in before_sizes:
        return False
    return hashlib.sha256(path.read_bytes()[:before_sizes[rel]]).hexdigest() == old_hash


class Context:
    """One case's folders: ``work/`` (the working directory) and ``outside/`` (never to be written)."""

    def __init__(self, root: Path, fixtures: Fixtures, env: dict[str, str]):
        self.root, self.fixtures, self.env = root, fixtures, env
        self.work, self.outside = root / "work", root / "outside"
        self.work.mkdir(parents=True)
        self.outside.mkdir()
        self.forbidden: list[Path] = []  # files that only code from a run folder could create
        self.before: set[str] = set()  # paths under root before the command (set by run_case)

    def xdt(self, *args: str, umask: int | None = None, env: dict[str, str] | None = None,
            timeout: float = TIMEOUT_S) -> Result:
        return run_xdt(list(args), self.work, {**self.env, **(env or {})}, umask, timeout)

    def new_runs(self, before: set[str]) -> list[Path]:
        """Run folders under ``work/outputs`` that were not there before (``before``: snapshot paths)."""
        return [p.parent for p in sorted((self.work / "outputs").rglob("config.yaml"))
                if ".hydra" not in p.parts and str(p.relative_to(self.root)) not in before]


def run_xdt(args: list[str], cwd: Path, env: dict[str, str], umask: int | None = None,
            timeout: float = TIMEOUT_S) -> Result:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "xdt.cli", *args], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                               preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)  # noqa: PLW1509
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        output += f"\n[bad_inputs: killed after {timeout} s]"
    return Result(process.returncode, output, time.perf_counter() - started)


# ---- fixtures: smoke runs trained once, copied into cases ---------------------------------------------

class Fixtures:
    def __init__(self, root: Path, env: dict[str, str]):
        self.root, self.env = root, env
        root.mkdir(parents=True, exist_ok=True)

    def _train(self, name: str, *overrides: str) -> Path:
        folder = self.root / name
        if not (folder / "done").exists():
            shutil.rmtree(folder, ignore_errors=True)
            result = run_xdt(["train", "debug=smoke", f"hydra.run.dir={folder}", *overrides], self.root, self.env)
            if result.rc != 0 or not (folder / "done").exists():
                raise SystemExit(f"fixture {name} did not train:\n{result.output[-3000:]}")
        return folder

    def finished(self) -> Path:
        return self._train("finished")

    def no_targets(self) -> Path:
        return self._train("no_targets", "target_domain=[]")

    def unfinished(self) -> Path:
        """A run stopped by SIGTERM soon after its first checkpoint (step 6 of 36): resumable, not done."""
        folder = self.root / "unfinished"
        if (folder / "checkpoints" / "last").exists() and not (folder / "done").exists():
            return folder
        shutil.rmtree(folder, ignore_errors=True)
        process = subprocess.Popen([sys.executable, "-m", "xdt.cli", "train", "debug=smoke", "max_steps=36",
                                    "eval_interval=6", f"hydra.run.dir={folder}"], cwd=self.root, env=self.env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not (folder / "checkpoints" / "last").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGTERM)
        process.wait()
        if (folder / "done").exists() or not (folder / "checkpoints" / "last").exists():
            raise SystemExit(f"fixture unfinished: could not stop {folder} after its first checkpoint")
        return folder


def copy_run(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest, symlinks=True)
    return dest


def edit_yaml(path: Path, change: Callable[[dict], None]) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def touch_node(target: Path) -> dict:
    """A config node whose instantiation creates ``target``. (The issue's ``{_target_: pathlib.Path.touch,
    args: [file]}`` fails on Path.touch's signature; the file is created when the path is built first.)"""
    return {"_target_": "pathlib.Path.touch", "_args_": [{"_target_": "pathlib.Path", "_args_": [str(target)]}]}


POSITIVE = ["great", "love", "excellent", "wonderful", "works", "perfect", "recommend", "sturdy"]
NEGATIVE = ["terrible", "broke", "waste", "awful", "refund", "cheap", "useless", "flimsy"]


def review_rows(n: int = 200, label: Callable[[int], object] = lambda i: i % 2) -> list[tuple[str, object]]:
    """``n`` small reviews whose words give their label away (label(i) decides row i's label)."""
    rows = []
    for i in range(n):
        words = POSITIVE if i % 2 else NEGATIVE
        rows.append((f"this kettle is {words[i % 8]} and {words[(i * 3 + 1) % 8]} item {i}", label(i)))
    return rows


def write_csv(path: Path, rows: list[tuple[str, object]], header: str = "text,label", bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = header + "\n" + "".join(f"{t},{y}\n" for t, y in rows)
    path.write_text(("\ufeff" if bom else "") + text, encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def remote_code(folder: Path, touched: Path) -> None:
    """Make ``folder`` a model folder whose config class lives in a Python file that creates ``touched``."""
    (folder / "evil.py").write_text(
        "import pathlib\n"
        f"pathlib.Path({str(touched)!r}).touch()\n"
        "from transformers import BertConfig\n\n\n"
        "class EvilConfig(BertConfig):\n    model_type = 'bert'\n", encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (folder / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")


def metrics_of(run: Path) -> dict | None:
    try:
        return json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


# ---- setups -----------------------------------------------------------------------------------------------

def finished_run(ctx: Context, name: str = "run") -> Path:
    return copy_run(ctx.fixtures.finished(), ctx.work / name)


def unfinished_run(ctx: Context, name: str = "run") -> Path:
    return copy_run(ctx.fixtures.unfinished(), ctx.work / name)


def crafted_strategy(ctx: Context, base: Callable[[Context], Path]) -> None:
    run = base(ctx)
    ctx.forbidden.append(ctx.outside / "pwned")
    edit_yaml(run / "config.yaml", lambda c: c["strategy"].update({"_args_": [touch_node(ctx.outside / "pwned")]}))


def crafted_optimizer(ctx: Context) -> None:
    run = unfinished_run(ctx)
    ctx.forbidden.append(ctx.outside / "pwned")
    edit_yaml(run / "config.yaml", lambda c: c["optimizer"].update({"eps": touch_node(ctx.outside / "pwned")}))


def trusted_code_in_run(ctx: Context) -> None:
    """config.yaml says trust_remote_code: true, and the run's own model/encoder carries code."""
    run = finished_run(ctx)
    ctx.forbidden.append(ctx.outside / "pwned")
    remote_code(run / "model" / "encoder", ctx.outside / "pwned")
    edit_yaml(run / "config.yaml", lambda c: c["model"].update({"trust_remote_code": True}))


def trusted_code_resume(ctx: Context) -> None:
    """An unfinished run whose config.yaml loads its model from a folder inside the run, trusting its code."""
    run = unfinished_run(ctx)
    ctx.forbidden.append(ctx.outside / "pwned")
    hub = run / "hub_model"
    shutil.copytree(run / "model" / "tokenizer", hub)
    shutil.copy(run / "model" / "encoder" / "config.json", hub / "config.json")
    remote_code(hub, ctx.outside / "pwned")
    edit_yaml(run / "config.yaml", lambda c: c["model"].update(
        {"trust_remote_code": True, "name_or_path": str(hub), "random_init": None}))


def best_links_outside(ctx: Context) -> None:
    run = finished_run(ctx)
    other = copy_run(ctx.fixtures.finished(), ctx.outside / "other_run")
    step = os.readlink(run / "checkpoints" / "best")
    (run / "checkpoints" / "best").unlink()
    (run / "checkpoints" / "best").symlink_to((other / "checkpoints" / step).resolve())


def damage(how: str, which: str = "best", file: str = "model.safetensors") -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        run = finished_run(ctx) if which == "best" else unfinished_run(ctx)
        path = (run / "checkpoints" / which).resolve() / file
        data = path.read_bytes()
        path.write_bytes({"cut": data[: len(data) // 2], "empty": b"",
                          "overwritten": b"not a checkpoint\n" * 100}[how])
    return setup


def model_dir_half_written(base: Callable[[Context], Path]) -> Callable[[Context], None]:
    """What a kill while model/ is written leaves: the encoder config and nothing else."""
    def setup(ctx: Context) -> None:
        run = base(ctx)
        for name in ("tokenizer", "labels.json", "strategy_context.json"):
            path = run / "model" / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return setup


def edited_config(change: Callable[[dict], None]) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        edit_yaml(unfinished_run(ctx) / "config.yaml", change)
    return setup


def to_minilm(config: dict) -> None:
    config["model"].update({"name": "minilm", "random_init": None})


def to_sgd(config: dict) -> None:
    config["optimizer"] = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9,
                           "nesterov": False, "weight_decay": 0.0}


def report_folder(ctx: Context, damage_second: Callable[[Path], None] | None = None) -> Path:
    """``work/runs/a`` (finished) and, with ``damage_second``, ``work/runs/b`` damaged by it."""
    copy_run(ctx.fixtures.finished(), ctx.work / "runs" / "a")
    if damage_second:
        damage_second(copy_run(ctx.fixtures.finished(), ctx.work / "runs" / "b"))
    return ctx.work / "runs"


def truncate(name: str, keep: float = 0.5) -> Callable[[Path], None]:
    def cut(run: Path) -> None:
        data = (run / name).read_bytes()
        (run / name).write_bytes(data[: int(len(data) * keep)])
    return cut


def half_written_jsonl(ctx: Context) -> None:
    report_folder(ctx)
    run = copy_run(ctx.fixtures.unfinished(), ctx.work / "runs" / "b")
    text = (run / "metrics.jsonl").read_text(encoding="utf-8")
    (run / "metrics.jsonl").write_text(text + text[: len(text) // 2], encoding="utf-8")


def symlinked_report(ctx: Context) -> None:
    runs = report_folder(ctx)
    victim = ctx.outside / "victim"
    victim.mkdir()
    (victim / "report.md").write_text("my own notes, not a report\n", encoding="utf-8")
    (runs / "report").symlink_to(victim)


MARKER = 0.123456


def metrics_linked_outside(ctx: Context) -> None:
    """The folder's one run has its metrics.json linked to a file outside whose accuracies are all MARKER."""
    run_b = copy_run(ctx.fixtures.finished(), ctx.work / "runs" / "b")
    secret = json.loads((run_b / "metrics.json").read_text(encoding="utf-8"))
    for scores in secret["metrics"].values():
        scores["accuracy"] = MARKER
    (ctx.outside / "secret.json").write_text(json.dumps(secret), encoding="utf-8")
    (run_b / "metrics.json").unlink()
    (run_b / "metrics.json").symlink_to(ctx.outside / "secret.json")


def no_target_runs(ctx: Context) -> None:
    copy_run(ctx.fixtures.no_targets(), ctx.work / "runs" / "a")


def file_domains(ctx: Context) -> None:
    write_csv(ctx.work / "a.csv", review_rows(200))
    write_csv(ctx.work / "b.csv", review_rows(60))  # a different size: its test split has 6 rows, a.csv's 20


def sweep(*overrides: str) -> list[str]:
    return ["train", "-m", "debug=smoke", "hydra.sweep.dir=sw", *overrides]


def ran_sweep(*overrides: str) -> Callable[[Context], None]:
    def setup(ctx: Context) -> None:
        ctx.xdt(*sweep(*overrides))
    return setup


def my_configs(ctx: Context) -> None:
    write_csv(ctx.work / "books.csv", review_rows(200))
    folder = ctx.work / "my-configs" / "source_domain"
    folder.mkdir(parents=True)
    (folder / "books.yaml").write_text(f"books:\n  kind: file\n  path: {ctx.work / 'books.csv'}\n", encoding="utf-8")


# ---- checks (beyond exit status, traceback and files): defect kinds, empty when right ------------------------

def targets_of_new_run(ctx: Context, res: Result) -> list[str] | None:
    runs = ctx.new_runs(ctx.before)
    result = metrics_of(runs[-1]) if runs else None
    return None if result is None else result.get("targets")


def no_synthetic_targets(ctx: Context, res: Result) -> list[str]:
    targets = targets_of_new_run(ctx, res)
    return [f"wrong: trained with targets {targets}"] if res.rc == 0 and targets and \
        any(t.startswith("syn_") for t in targets) else []


def no_targets_or_refused(ctx: Context, res: Result) -> list[str]:
    targets = targets_of_new_run(ctx, res)
    return [f"wrong: target_domain=null ran with targets {targets}"] if res.rc == 0 and targets else []


def target_is_b(ctx: Context, res: Result) -> list[str]:
    """a.csv (200 rows) and b.csv (60): if the target's test scores equal the source's on every metric,
    the target read a.csv's test split, not b.csv's."""
    runs = ctx.new_runs(ctx.before)
    result = metrics_of(runs[-1]) if runs and res.rc == 0 else None
    if res.rc != 0:
        return []
    if result is None:
        return ["wrong: exit 0 but no metrics.json"]
    tests = {name.split("/")[0]: scores for name, scores in result["metrics"].items() if name.endswith("/test")}
    if "target" not in tests:
        return [f"wrong: no target scores (sets: {', '.join(result['metrics'])})"]
    if tests["target"] == tests.get("source"):
        return ["wrong: target test scores equal the source's on every metric (b.csv not read)"]
    return []


def names(*words: str) -> Callable[[Context, Result], list[str]]:
    """The message must name every one of ``words`` (the setting to change, the file at fault)."""
    def check(ctx: Context, res: Result) -> list[str]:
        missing = [w for w in words if not res.says(w)]
        return [f"unclear: message does not name {', '.join(missing)}"] if res.rc != 0 and missing else []
    return check


def report_names(word: str) -> Callable[[Context, Result], list[str]]:
    """The command's output, or the report.md it wrote, must name ``word`` (the damaged file)."""
    def check(ctx: Context, res: Result) -> list[str]:
        report = ctx.work / "runs" / "report" / "report.md"
        text = res.output + (report.read_text(encoding="utf-8") if report.is_file() else "")
        return [] if re.search(re.escape(word) + r"(?!\w)", text) else [f"unclear: does not name {word}"]
    return check


def not_says(*words: str) -> Callable[[Context, Result], list[str]]:
    def check(ctx: Context, res: Result) -> list[str]:
        found = [w for w in words if res.says(w)]
        return [f"unclear: says {found[0]!r}"] if found else []
    return check


def absent(rel: str) -> Callable[[Context, Result], list[str]]:
    def check(ctx: Context, res: Result) -> list[str]:
        return [f"leftover: {rel} was created"] if (ctx.work / rel).exists() else []
    return check


def evaluates_after(ctx: Context, res: Result) -> list[str]:
    """After the resume, the run must be complete: done, and xdt eval of it works."""
    if res.rc != 0:
        return []
    again = ctx.xdt("eval", "run_dir=run")
    return [] if again.rc == 0 else [f"wrong: resume ended 0 but xdt eval of the run fails: {again.last[:80]}"]


def file_modes(umask: int) -> Callable[[Context, Result], list[str]]:
    def check(ctx: Context, res: Result) -> list[str]:
        wrong = []
        for path in [ctx.work / "run", *sorted((ctx.work / "run").rglob("*"))]:
            if path.is_symlink():
                continue
            expected = (0o777 if path.is_dir() else 0o666) & ~umask
            if path.stat().st_mode & 0o777 != expected:
                wrong.append(f"{path.relative_to(ctx.work)} {path.stat().st_mode & 0o777:o}")
        summary = (f"wrong: modes not {0o666 & ~umask:o}/{0o777 & ~umask:o} under umask {umask:03o}: "
                   f"{'; '.join(wrong[:3])}{' ...' if len(wrong) > 3 else ''}")
        return [summary] if wrong else []
    return check


def marker_not_reported(ctx: Context, res: Result) -> list[str]:
    files = [p for p in (ctx.work / "runs" / "report").glob("report.*") if p.is_file()]
    text = res.output + "".join(p.read_text(encoding="utf-8") for p in files)
    return ["wrong: reported the scores of a metrics.json linked from outside the folder"] \
        if f"{MARKER:.3f}" in text else []


def says_where_eval_wrote(ctx: Context, res: Result) -> list[str]:
    runs = sorted((ctx.work / "outputs").rglob("metrics.json"))
    if res.rc != 0 or not runs:
        return []
    folder = str(runs[-1].parent.relative_to(ctx.work))
    return [] if folder in res.output.replace("\n", "") else \
        [f"unclear: does not say it wrote {folder}/metrics.json"]


def sweep_skips(ctx: Context, res: Result) -> list[str]:
    return [] if res.rc != 0 or res.says("skipping") else ["wrong: did not skip the finished jobs"]


def run_concurrently(ctx: Context, args: list[str]) -> Result:
    """Two identical sweeps at once (say, launched from two terminals)."""
    started = time.perf_counter()
    processes = [subprocess.Popen([sys.executable, "-m", "xdt.cli", *args], cwd=ctx.work, env=ctx.env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=TIMEOUT_S)[0] for p in processes]
    rc = max(p.returncode for p in processes)
    return Result(rc, "\n".join(f"--- launch {i}\n{o}" for i, o in enumerate(outputs)), time.perf_counter() - started)


def no_double_training(ctx: Context, res: Result) -> list[str]:
    """Each job trained to its end once: its train.log has one ``done:`` line (a skipped job logs none)."""
    problems = []
    for job in sorted((ctx.work / "sw").glob("*_*")):
        log = (job / "train.log").read_text(encoding="utf-8") if (job / "train.log").exists() else ""
        if log.count("xdt.train: done: ") > 1:
            problems.append(f"{job.name} trained to the end {log.count('xdt.train: done: ')} times at once")
        elif not (job / "done").exists():
            problems.append(f"{job.name}: not done")
    return [f"wrong: {'; '.join(problems)}"] if problems else []


# ---- the cases ---------------------------------------------------------------------------------------------

@dataclass
class Case:
    name: str
    expect: str  # one line: what the right outcome is
    args: list[str]
    setup: Callable[[Context], None] | None = None
    success: bool | None = False  # True: exit 0 is right; False: a non-zero exit is; None: either
    check: Callable[[Context, Result], list[str]] | None = None
    allow: tuple[str, ...] = ()  # paths under work/ that may change (a run being resumed)
    umask: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    runner: Callable[[Context, list[str]], Result] | None = None


FDU = f"data_dir={DATA_DIR}"
FILE_A = "source_domain.file.path=a.csv"
CASES = [
    # run folders are data: nothing in one may run code, reach outside it, or be overwritten
    Case("eval_crafted_strategy_args", "eval of a run whose strategy has _args_: [Path.touch]: the file is not created",
         ["eval", "run_dir=run"], lambda c: crafted_strategy(c, finished_run), success=None),
    Case("resume_crafted_strategy_args", "resume of such a run: the file is not created",
         ["train", "resume=run"], lambda c: crafted_strategy(c, unfinished_run), success=None, allow=("run",)),
    Case("resume_crafted_optimizer", "resume of a run whose optimizer.eps is a Path.touch node: the file is not "
         "created",
         ["train", "resume=run"], crafted_optimizer, success=None, allow=("run",)),
    Case("eval_trust_remote_code_in_config", "eval of a run whose config.yaml sets trust_remote_code and carries "
         "code: the code does not run", ["eval", "run_dir=run"], trusted_code_in_run, success=None),
    Case("resume_trust_remote_code_in_config", "resume of a run whose config.yaml trusts code in a folder of the "
         "run: the code does not run", ["train", "resume=run"], trusted_code_resume, success=None, allow=("run",)),
    Case("eval_best_links_outside", "checkpoints/best links to a checkpoint outside the run: refused",
         ["eval", "run_dir=run"], best_links_outside),
    Case("report_symlinked_report_dir", "report/ is a link to a folder elsewhere: refused, nothing written there",
         ["report", "runs"], symlinked_report),
    Case("report_metrics_json_linked_outside", "a run's metrics.json links to a file outside: not read",
         ["report", "runs"], metrics_linked_outside, success=None, check=marker_not_reported),
    Case("train_hydra_run_dir_finished_run", "xdt train hydra.run.dir=<finished run>: refused, the run's files "
         "(.hydra/ included) unchanged", ["train", "debug=smoke", "hydra.run.dir=run"], finished_run),
    Case("resume_nonexistent", "resume=<no such folder>: refused, no folder created",
         ["train", "resume=nope/run"], check=absent("nope")),
    Case("resume_finished_run", "resume of a finished run: exit 0, says so, nothing rewritten",
         ["train", "resume=run"], finished_run, success=True),
    Case("resume_with_overrides", "resume=<run> max_steps=5: refused (overrides would be ignored)",
         ["train", "resume=run", "max_steps=5"], unfinished_run),
    Case("resume_config_edited_model", "resume after config.yaml was edited to model minilm: refused, one line",
         ["train", "resume=run"], edited_config(to_minilm)),
    Case("resume_config_edited_hidden_size", "resume after config.yaml's hidden size was edited: refused, one line",
         ["train", "resume=run"],
         edited_config(lambda c: c["model"]["random_init"].update({"hidden_size": 32, "intermediate_size": 64}))),
    Case("resume_config_edited_optimizer_sgd", "resume after config.yaml was edited to SGD: refused (AdamW state)",
         ["train", "resume=run"], edited_config(to_sgd)),
    Case("resume_damaged_checkpoint", "resume whose last checkpoint was cut short: refused, one line, kept",
         ["train", "resume=run"], damage("cut", "last")),
    Case("resume_model_dir_half_written", "resume after a kill while model/ was written: completes, eval works",
         ["train", "resume=run"], model_dir_half_written(unfinished_run), success=True, allow=("run",),
         check=evaluates_after),
    Case("eval_model_dir_half_written", "eval of a run whose model/ is half written: refused, one line",
         ["eval", "run_dir=run"], model_dir_half_written(finished_run)),
    Case("eval_checkpoint_cut_short", "eval of a checkpoint cut to half its size: refused, one line",
         ["eval", "run_dir=run"], damage("cut")),
    Case("eval_checkpoint_emptied", "eval of an emptied model.safetensors: refused, one line",
         ["eval", "run_dir=run"], damage("empty")),
    Case("eval_checkpoint_overwritten", "eval of a model.safetensors overwritten with text: refused, one line",
         ["eval", "run_dir=run"], damage("overwritten")),
    Case("eval_prints_where_it_wrote", "eval of a finished run: exit 0, says where metrics.json went, run unchanged",
         ["eval", "run_dir=run"], finished_run, success=True, check=says_where_eval_wrote),
    Case("eval_unfinished_run", "eval of an unfinished run (best checkpoint exists): exit 0",
         ["eval", "run_dir=run"], unfinished_run, success=True),
    Case("eval_checkpoint_name_unknown", "checkpoint=step-99: refused, lists the checkpoints there",
         ["eval", "run_dir=run", "checkpoint=step-99"], finished_run),
    Case("eval_not_a_run", "run_dir=<folder without config.yaml>: refused, one line",
         ["eval", "run_dir=empty"], lambda c: (c.work / "empty").mkdir()),
    Case("eval_no_run_dir", "xdt eval without run_dir: refused, one line", ["eval"]),
    # reports over damaged or odd folders
    Case("report_truncated_metrics_json_next_to_done", "done next to a cut metrics.json: the report names the file",
         ["report", "runs"], lambda c: report_folder(c, truncate("metrics.json")), success=None,
         check=report_names("metrics.json")),
    Case("resume_truncated_metrics_json_next_to_done", "resume of such a run: one line naming metrics.json",
         ["train", "resume=runs/b"], lambda c: report_folder(c, truncate("metrics.json")), success=None,
         check=names("metrics.json")),
    Case("report_half_written_metrics_jsonl", "a run's metrics.jsonl ends in half a line: report works, no traceback",
         ["report", "runs"], half_written_jsonl, success=True),
    Case("report_invalid_config_yaml", "a run's config.yaml is not YAML: report names the file, no traceback",
         ["report", "runs"],
         lambda c: report_folder(c, lambda r: (r / "config.yaml").write_text("strategy: [unclosed\n  seed: {")),
         success=None, check=report_names("config.yaml")),
    Case("report_only_run_without_targets", "report of one finished run with target_domain=[]: no traceback",
         ["report", "runs"], no_target_runs, success=None),
    Case("report_empty_folder", "report of a folder without runs: refused, one line",
         ["report", "empty"], lambda c: (c.work / "empty").mkdir()),
    Case("report_nonexistent", "report of a missing folder: refused, one line", ["report", "nope"]),
    # training settings and data
    Case("train_fdu_source_without_target", "source_domain=fdu_apparel alone: not evaluated on the synthetic "
         "default targets", ["train", "debug=smoke", "source_domain=fdu_apparel", FDU], success=None,
         check=no_synthetic_targets),
    Case("train_file_source_file_target", "source_domain=file target_domain=file (a.csv, b.csv): each file in "
         "its role, or refused", ["train", "debug=smoke", "source_domain=file", "target_domain=file", FILE_A,
                                   "target_domain.file.path=b.csv"], file_domains, success=None, check=target_is_b),
    Case("train_target_domain_null", "target_domain=null: no targets (or refused), never the defaults",
         ["train", "debug=smoke", "target_domain=null"], success=None, check=no_targets_or_refused),
    Case("train_max_length_1", "max_length=1 (no room for a token): refused, one line",
         ["train", "debug=smoke", "max_length=1"]),
    Case("train_float_labels", "labels 0.0/1.0/0.5 in a jsonl (scores, not classes): refused, names the labels",
         ["train", "debug=smoke", "source_domain=file", "source_domain.file.path=f.jsonl", "target_domain=[]"],
         lambda c: write_jsonl(c.work / "f.jsonl", [{"text": t, "label": [0.0, 1.0, 0.5][i % 3]}
                                                    for i, (t, _) in enumerate(review_rows(200))])),
    Case("train_seed_float", "seed=1.5: refused, one line", ["train", "debug=smoke", "seed=1.5"]),
    Case("train_seed_negative", "seed=-1: refused, one line", ["train", "debug=smoke", "seed=-1"]),
    Case("train_list_text_field", "a jsonl whose text fields are lists: refused, names the field",
         ["train", "debug=smoke", "source_domain=file", "source_domain.file.path=l.jsonl", "target_domain=[]"],
         lambda c: write_jsonl(c.work / "l.jsonl", [{"text": t.split(), "label": y} for t, y in review_rows(200)]),
         check=names("text")),
    Case("train_csv_with_bom", "a CSV saved with a UTF-8 BOM: reads its text column, exit 0",
         ["train", "debug=smoke", "source_domain=file", "source_domain.file.path=bom.csv", "target_domain=[]"],
         lambda c: write_csv(c.work / "bom.csv", review_rows(200), bom=True), success=True),
    Case("train_csv_two_missing_columns", "a CSV with neither the text nor the label column: names both settings",
         ["train", "debug=smoke", "source_domain=file", "source_domain.file.path=r.csv", "target_domain=[]"],
         lambda c: write_csv(c.work / "r.csv", review_rows(200), header="review,stars"),
         check=names("text_field", "label_field")),
    Case("train_data_not_found_names_data_dir", "FDU domain without data_dir: the message says data_dir/XDT_DATA_DIR",
         ["train", "debug=smoke", "source_domain=fdu_apparel", "target_domain=fdu_baby"], check=names("data_dir")),
    Case("eval_data_not_found_names_data_dir", "eval on an FDU target without data_dir: names data_dir",
         ["eval", "run_dir=run", "target_domain=fdu_baby"], finished_run, check=names("data_dir")),
    Case("train_optimizer_typo", "optimizer.lrr=1e-3: refused, one line",
         ["train", "debug=smoke", "optimizer.lrr=1e-3"]),
    Case("train_optimizer_plus_typo", "+optimizer.lrr=1e-3: refused, one line naming optimizer",
         ["train", "debug=smoke", "+optimizer.lrr=1e-3"], check=names("lrr")),
    Case("train_key_typo", "max_step=100: refused, one line", ["train", "debug=smoke", "max_step=100"]),
    Case("train_unknown_strategy", "strategy=foo: refused, lists the strategies",
         ["train", "debug=smoke", "strategy=foo"]),
    Case("train_max_steps_zero", "max_steps=0: refused, one line", ["train", "debug=smoke", "max_steps=0"]),
    Case("train_batch_size_text", "batch_size=abc: refused, one line", ["train", "debug=smoke", "batch_size=abc"]),
    Case("train_negative_lr", "optimizer.lr=-1: refused, one line", ["train", "debug=smoke", "optimizer.lr=-1"]),
    Case("train_file_without_path", "source_domain=file without a path: refused, names the key",
         ["train", "debug=smoke", "source_domain=file"], check=names("path")),
    Case("train_label_sets_differ", "a target whose labels differ from the source's: refused, one line",
         ["train", "debug=smoke", "source_domain=file", FILE_A, "target_domain=file", "target_domain.file.path=p.csv"],
         lambda c: (write_csv(c.work / "a.csv", review_rows(200)),
                    write_csv(c.work / "p.csv", review_rows(200, lambda i: "pos" if i % 2 else "neg")))),
    Case("train_user_domain_as_target", "a domain only in my-configs/source_domain used as target_domain: works, "
         "or the message says to put it in target_domain/", ["train", "--config-dir", "my-configs", "debug=smoke",
                                                              "source_domain=syn_books", "target_domain=books"],
         my_configs, success=None, check=lambda c, r: [] if r.rc == 0 else names("source_domain")(c, r)),
    Case("train_hardware_gpu_without_gpu", "hardware=gpu on a machine without CUDA: one line (or runs on a GPU)",
         ["train", "debug=smoke", "hardware=gpu"], success=None),
    Case("unknown_command", "xdt trian: refused, lists the commands", ["trian"]),
    Case("checkpoint_modes_umask_002", "files created under umask 002 are 664, folders 775",
         ["train", "debug=smoke", "hydra.run.dir=run"], success=True, umask=0o002, check=file_modes(0o002)),
    Case("checkpoint_modes_umask_077", "files created under umask 077 are 600, folders 700",
         ["train", "debug=smoke", "hydra.run.dir=run"], success=True, umask=0o077, check=file_modes(0o077)),
    # sweeps
    Case("sweep_relaunch_identical", "the same -m sweep into the same hydra.sweep.dir again: skips, changes nothing",
         sweep("seed=0,1"), ran_sweep("seed=0,1"), success=True, check=sweep_skips),
    Case("sweep_two_at_once", "two identical -m sweeps into one hydra.sweep.dir at once: no job trained twice",
         sweep("seed=0,1"), success=None, runner=run_concurrently, check=no_double_training),
    Case("sweep_relaunch_with_plus_nan", "re-launch of a finished sweep with +note=nan: skips its jobs, exit 0",
         sweep("+note=nan", "seed=0,1"), ran_sweep("+note=nan", "seed=0,1"), success=True, check=sweep_skips),
    Case("sweep_relaunch_with_lr_nan", "re-launch of a sweep with optimizer.lr=nan: fails on lr again, not as "
         "'a different configuration'", sweep("optimizer.lr=1e-3,nan"), ran_sweep("optimizer.lr=1e-3,nan"),
         check=not_says("different configuration")),
]


# ---- one case, the table, the summary ----------------------------------------------------------------------

def run_case(case: Case, root: Path, fixtures: Fixtures, env: dict[str, str]) -> dict:
    ctx = Context(root / case.name, fixtures, env)
    if case.setup:
        case.setup(ctx)
    before = snapshot(ctx.root)
    sizes = {rel: (ctx.root / rel).stat().st_size for rel in before if (ctx.root / rel).is_file()
             and not (ctx.root / rel).is_symlink()}
    ctx.before = set(before)
    before_runs = {p for p in (ctx.work / "outputs").glob("*/*")} if (ctx.work / "outputs").exists() else set()
    res = case.runner(ctx, case.args) if case.runner else ctx.xdt(*case.args, umask=case.umask, env=case.env)
    kinds = case.check(ctx, res) if case.check else []
    after = snapshot(ctx.root)
    allowed = tuple(f"work/{a}" for a in case.allow)
    changed = [rel for rel, digest in before.items()
               if after.get(rel) != digest and not rel.startswith(allowed)
               and not grew_only(ctx.root / rel, digest, sizes, rel)]
    forbidden = [str(p.relative_to(ctx.root)) for p in ctx.forbidden if p.exists()]
    outside = [rel for rel in after if rel.startswith("outside/") and rel not in before and rel not in forbidden]
    left = sorted(str(p.relative_to(ctx.work)) for p in (ctx.work / "outputs").glob("*/*")
                  if p not in before_runs) if (ctx.work / "outputs").exists() else []
    if case.success is True and res.rc != 0:
        kinds.insert(0, "failed")
    if case.success is False and res.rc == 0:
        kinds.insert(0, "exit-0")
    if res.traceback:
        kinds.append("traceback")
    if forbidden:
        kinds.append(f"code-ran: {', '.join(forbidden)} appeared")
    if changed:
        kinds.append(f"modified: {', '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}")
    if outside:
        kinds.append(f"outside: {', '.join(outside[:2])}{' ...' if len(outside) > 2 else ''}")
    if res.rc != 0 and res.last and sum(line == res.last for line in res.lines) > 1:
        kinds.append("twice")
    notes = []
    if res.rc != 0 and left and case.runner is None and case.args[:2] != ["train", "-m"]:
        marked = (ctx.work / left[-1] / "failed").exists()
        if marked and not STRICT_LEFTOVERS:
            notes.append(f"left {left[-1]} (marked failed)")
        else:
            kinds.append(f"leftover: {left[-1]}{' (marked failed)' if marked else ''}")
    return {"case": case.name, "expect": case.expect, "command": "xdt " + " ".join(case.args), "rc": res.rc,
            "traceback": res.traceback, "last_line": res.last, "changed": changed, "forbidden": forbidden,
            "outside": outside, "left": left, "verdict": "DEFECT" if kinds else "OK", "kinds": kinds, "notes": notes,
            "seconds": round(res.seconds, 1), "output_tail": res.output[-4000:]}


def kind_of(entry: str) -> str:
    return entry.split(":", 1)[0]


def print_row(row: dict) -> None:
    touched = "code" if row["forbidden"] else f"{len(row['changed'])} mod" if row["changed"] else \
        "outside" if row["outside"] else "-"
    verdict = row["verdict"] if row["verdict"] == "OK" else "DEFECT " + ",".join(map(kind_of, row["kinds"]))
    verdict += " (left marked)" if row["notes"] else ""
    last = row["last_line"].replace("\n", " ")
    print(f"{row['case']:<44} {row['rc']:>3} {'TB' if row['traceback'] else '-':>2} {touched:>7}  {verdict:<30} "
          f"{last[:100]}", flush=True)


def summary(rows: list[dict]) -> None:
    defects = [r for r in rows if r["verdict"] == "DEFECT"]
    kinds = collections.Counter(kind_of(k) for r in defects for k in r["kinds"])
    print(f"\n{len(rows)} cases: {len(rows) - len(defects)} OK, {len(defects)} DEFECT")
    print("defect kinds (a case may have several): " + ", ".join(f"{k} {n}" for k, n in kinds.most_common()))
    alone = collections.Counter(kind_of(r["kinds"][0]) for r in defects if len(r["kinds"]) == 1)
    print("cases with one kind only: " + ", ".join(f"{k} {n}" for k, n in alone.most_common()))
    for row in defects:
        print(f"  {row['case']}: {'; '.join(row['kinds'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="run the cases whose name contains this "
                        "(repeatable)")
    parser.add_argument("--json", type=Path, help="save every case's result (with its output's tail) here")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--list", action="store_true", help="list the cases and what each expects")
    parser.add_argument("--strict-leftovers", action="store_true", help="count a run folder a failed command "
                        "left under outputs/ as a defect even when it holds a failed marker")
    args = parser.parse_args()
    global STRICT_LEFTOVERS
    STRICT_LEFTOVERS = args.strict_leftovers
    cases = [c for c in CASES if not args.only or any(s in c.name for s in args.only)]
    if args.list:
        for case in cases:
            print(f"{case.name:<44} {case.expect}")
        return
    if not cases:
        raise SystemExit(f"no case matches {args.only}")
    root = Path(args.keep or tempfile.mkdtemp(prefix="xdt-bad-inputs-")).resolve()
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "XDT_DATA_DIR")}
    env.update({"XDT_CACHE_DIR": str(root / "cache"), "HF_HOME": str(root / "hf"), "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "250", "PYTHONWARNINGS": "ignore"})
    fixtures = Fixtures(root / "fixtures", env)
    probe = subprocess.run([sys.executable, "-c", "import xdt; print(xdt.__file__)"], env=env, capture_output=True,
                           text=True, cwd=root, check=False)
    print(f"xdt under test: {probe.stdout.strip() or probe.stderr.strip()}\nwork folder: {root}\n")
    print(f"{'case':<44} {'rc':>3} {'tb':>2} {'touched':>7}  {'verdict':<30} last line")
    rows = []
    started = time.perf_counter()
    try:
        for case in cases:
            if (root / case.name).exists():
                shutil.rmtree(root / case.name)
            rows.append(run_case(case, root, fixtures, env))
            print_row(rows[-1])
    finally:
        summary(rows)
        print(f"{time.perf_counter() - started:.0f} s")
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps({"xdt": probe.stdout.strip(), "cases": rows}, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
