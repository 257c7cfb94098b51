"""Every bad input ends in one clear message naming the file, key or value; nothing written is lost."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch

from conftest import run_xdt
from xdt import checkpoint
from xdt.errors import XdtError
from xdt.eval_run import evaluate_run
from xdt.train import train


def reviews(path, rows=None, **extra):
    rows = rows or [{"text": f"review {i} {'great' if i % 2 else 'awful'}", "label": i % 2, "category": "a", **extra}
                    for i in range(40)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def file_domain(role: str, path, *settings: str) -> list[str]:
    return [f"{role}=file", f"{role}.file.path={path}", *(f"{role}.file.{s}" for s in settings)]


CASES = {
    "missing data file": (lambda t: file_domain("source_domain", t / "nope.jsonl"),
                          r"data file not found: .*nope\.jsonl \(from source_domain\.file\)"),
    "data path is a folder": (lambda t: file_domain("source_domain", t),
                              r"is not a file"),
    "missing text column": (lambda t: file_domain("source_domain", reviews(t / "r.jsonl"), "text_field=body"),
                            r"r\.jsonl: no text column 'body' \(columns: text, label, category\); "
                            r"set source_domain\.file\.text_field"),
    "missing label column": (lambda t: file_domain("source_domain", reviews(t / "r.jsonl"), "label_field=stars"),
                             r"no label column 'stars'.*source_domain\.file\.label_field"),
    "empty after filtering": (lambda t: file_domain("source_domain", reviews(t / "r.jsonl"), "filter={category: b}"),
                              r"source_domain\.file: the train split is empty .*filter"),
    "unknown domain key": (lambda t: [*file_domain("source_domain", reviews(t / "r.jsonl")),
                                      "+source_domain.file.pth=x"],
                           r"source_domain\.file: unknown key\(s\) pth for kind 'file'"),
    "path not given": (lambda t: ["source_domain=file"],
                       r"config value source_domain\.file\.path is not set .*source_domain\.file\.path=<value>"),
    "label sets differ": (lambda t: file_domain("target_domain", reviews(
        t / "three.jsonl", [{"text": f"t {i}", "label": i % 3} for i in range(60)])),
        r"label sets differ: source_domain\.syn_books has labels \['0', '1'\] but target_domain\.file has "
        r"\['0', '1', '2'\]"),
    "zero learning rate": (lambda t: ["optimizer.lr=0"], r"optimizer\.lr=0 is not valid: it must be a positive"),
    "negative learning rate": (lambda t: ["optimizer.lr=-1e-4"], r"optimizer\.lr=-0\.0001 is not valid"),
    "zero batch size": (lambda t: ["batch_size=0"], r"batch_size=0 is not valid: it must be a positive int"),
    "fractional batch size": (lambda t: ["batch_size=2.5"], r"batch_size=2\.5 is not valid"),
    "text batch size": (lambda t: ["batch_size=many"], r"batch_size='many' is not valid"),
    "no budget": (lambda t: ["max_steps=null"], r"set a training budget"),
    "non-positive discriminator rate": (lambda t: ["strategy=dann", "strategy.discriminator_lr_scale=0"],
                                        r"strategy\.discriminator_lr_scale=0 is not valid: it must be positive"),
    "unknown adversary": (lambda t: ["strategy=dann", "strategy.adversary=minimax"],
                          r"strategy\.adversary='minimax' is not valid: choose one of reversal, confusion"),
    "negative diversity": (lambda t: ["strategy=self_train", "strategy.diversity=-1"],
                           r"strategy\.diversity=-1 is not valid: it must be 0 \(off\) or positive"),
    "threshold above 1": (lambda t: ["strategy=self_train", "strategy.threshold=2"],
                          r"strategy\.threshold=2 is not valid: it is a probability, from 0 to 1"),
    "warm-up of the whole run": (lambda t: ["strategy=self_train", "strategy.warmup=1.0"],
                                 r"strategy\.warmup=1\.0 is not valid: it is a fraction of training"),
    "probe of the whole run": (lambda t: ["strategy=lp_ft", "strategy.probe=1"],
                               r"strategy\.probe=1 is not valid: it is a fraction of training"),
    "averaging from the end": (lambda t: ["average_from=1.5"],
                               r"average_from=1\.5 is not valid: it is the fraction of training after which weights "
                               r"are averaged, from 0 up to \(not including\) 1, or null for none"),
    "text warm-up ratio": (lambda t: ["warmup_ratio=abc"], r"warmup_ratio='abc' is not valid: it is the fraction"),
    "unknown selection": (lambda t: ["selection=best_target"], r"selection='best_target' is not valid"),
    "too long max_length": (lambda t: ["max_length=4096"], r"max_length=4096 is longer than model tiny allows "
                                                           r"\(512 tokens\)"),
    "NaN loss": (lambda t: ["optimizer=sgd", "optimizer.lr=1e6", "max_grad_norm=null"],
                 r"the loss became nan by step \d+; lower optimizer\.lr"),
    "bad domain kind": (lambda t: ["source_domain.syn_books.kind=folder"], r"kind='folder' is not a domain kind"),
    "unknown synthetic domain": (lambda t: ["source_domain.syn_books.domain=garden"],
                                 r"source_domain\.syn_books\.domain='garden' is not a synthetic domain"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_clear_error(case, smoke, tmp_path):
    overrides, message = CASES[case]
    with pytest.raises(XdtError, match=message):
        train(smoke(*overrides(tmp_path)), tmp_path / "run")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(smoke, tmp_path):
    path = reviews(tmp_path / "r.jsonl")
    path.chmod(0)
    with pytest.raises(XdtError, match=r"cannot read data file .*r\.jsonl: Permission denied"):
        train(smoke(*file_domain("source_domain", path)), tmp_path / "run")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_hardware_without_a_gpu(smoke, tmp_path):
    with pytest.raises(XdtError, match="hardware.device=cuda but torch sees no CUDA GPU"):
        train(smoke("hardware=gpu"), tmp_path / "run")


def test_a_finished_run_is_never_overwritten(smoke, tmp_path):
    run = tmp_path / "run"
    train(smoke(), run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(XdtError, match=r"already holds a run .*resume="):
        train(smoke("seed=5"), run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_resume_and_eval_need_a_run_folder(smoke, tmp_path):
    with pytest.raises(XdtError, match=r"resume=.*: no config\.yaml there"):
        train(smoke(f"resume={tmp_path}"), tmp_path / "x")
    with pytest.raises(XdtError, match=r"run_dir=.*: no config\.yaml there"):
        evaluate_run(smoke(f"run_dir={tmp_path}", name="eval"), tmp_path / "e")


def test_resuming_a_checkpoint_whose_optimizer_groups_differ_names_it(smoke, tmp_path):
    """A checkpoint from before DANN's discriminator had a learning-rate group of its own."""
    run = tmp_path / "run"
    train(smoke("strategy=dann", "strategy.discriminator_lr_scale=1", "target_domain=[syn_kitchen]",
                "max_steps=4", "eval_interval=2"), run)
    for name in ("done", "metrics.json"):
        (run / name).unlink()
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("discriminator_lr_scale: 1", "discriminator_lr_scale: 10"))
    with pytest.raises(XdtError, match=r"step-0000004: its optimizer state does not fit this run's parameter groups .*"
                                         r"config\.yaml was edited"):
        train(smoke(f"resume={run}"), tmp_path / "ignored")
    assert checkpoint.checkpoint_steps(run) == [2, 4]  # nothing written is lost


def test_eval_of_an_unknown_checkpoint_lists_the_available_ones(smoke, tmp_path):
    train(smoke(), tmp_path / "run")
    with pytest.raises(XdtError, match=r"checkpoint='step-9': no such checkpoint .*available: best, last, step-"):
        evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", "checkpoint=step-9", name="eval"), tmp_path / "e")


# ---- through the command line: exit status and no traceback ----------------------------------------

def latin1_file(folder):
    path = folder / "latin.csv"
    path.write_bytes("text,label\n".encode() + "".join(f"caf\u00e9 {i},{i % 2}\n" for i in range(30))
                     .encode("latin-1"))
    return ["debug=smoke", "source_domain=file", f"source_domain.file.path={path}", "target_domain=[]"]


CLI_CASES = {
    "unknown config option": (lambda t: ["debug=smoke", "model=nope"], r"Could not find 'model/nope'"),
    "unknown key": (lambda t: ["debug=smoke", "max_stepz=3"], r"Could not override 'max_stepz'"),
    "non-UTF-8 file": (latin1_file, r"latin\.csv: line 2 is not valid utf-8 text .*encoding=latin-1"),
    "negative batch size": (lambda t: ["debug=smoke", "batch_size=-8"], r"batch_size=-8 is not valid"),
    "resume with other overrides": (lambda t: ["resume=outputs/x", "seed=2"],
                                    r"other overrides \(seed=2\) would not be applied"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_bad_input_exits_non_zero_with_one_message(case, tmp_path):
    overrides, message = CLI_CASES[case]
    result = run_xdt("train", *overrides(tmp_path), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "Traceback" not in output, output
    assert re.search(message, output), output


def test_help_lists_commands_and_config_groups(tmp_path):
    top = run_xdt("--help", cwd=tmp_path)
    assert top.returncode == 0 and "train" in top.stdout and "eval" in top.stdout
    groups = run_xdt("train", "--help", cwd=tmp_path)
    assert groups.returncode == 0
    for group in ("model:", "source_domain:", "target_domain:", "strategy:", "optimizer:", "hardware:"):
        assert group in groups.stdout
    assert "fdu_apparel" in groups.stdout and "minilm" in groups.stdout
    unknown = run_xdt("fit", cwd=tmp_path)
    assert unknown.returncode != 0 and "unknown command 'fit'" in unknown.stderr


@pytest.mark.parametrize("folder", ["outputs/multi/3_seed=1,strategy=dann", "runs/it's [here] (v2)"])
def test_folders_named_like_sweep_jobs_pass_through_the_command_line(folder):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from xdt.cli import _quote_paths

    parsed = OverridesParser.create().parse_overrides(_quote_paths([f"run_dir={folder}", "seed=1,2"]))
    assert parsed[0].value() == folder
    assert parsed[1].is_sweep_override()  # other values keep Hydra's meaning
