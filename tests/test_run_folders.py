"""Run folders are data, never code, and nothing written into one is lost: crafted folders for eval and resume,
links that lead out of a run, a half-written model/, two launchers on one folder, damaged checkpoints, a full
disk, file permissions (issue 18)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import run_xdt
from xdt import checkpoint
from xdt.errors import XdtError
from xdt.eval_run import evaluate_run
from xdt.run_folder import RunBusy, run_lock
from xdt.sweep import _same_value
from xdt.train import train

SMOKE = ["max_steps=4", "eval_interval=2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory, cache_dir) -> Path:
    """One finished smoke run; tests copy it before changing anything."""
    from conftest import DATA_DIR, compose_config

    folder = tmp_path_factory.mktemp("finished") / "run"
    train(compose_config(["debug=smoke", f"cache_dir={cache_dir}", f"data_dir={DATA_DIR}", *SMOKE]), folder)
    return folder


def copy_run(finished: Path, tmp_path: Path, unfinish: bool = False) -> Path:
    run = tmp_path / "run"
    shutil.copytree(finished, run, symlinks=True)
    if unfinish:  # as if stopped after its last checkpoint
        for name in ("done", "metrics.json"):
            (run / name).unlink()
    return run


def edit_config(run: Path, edit) -> None:
    config = yaml.safe_load((run / "config.yaml").read_text())
    edit(config)
    (run / "config.yaml").write_text(yaml.safe_dump(config))


def files_of(folder: Path) -> dict[Path, bytes]:
    """Every file of a run but its lock file (which records who holds the lock)."""
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p.name != ".lock"}


# ---- a run folder never runs code ------------------------------------------------------------------

def plant_target(config: dict, marker: Path) -> None:
    """A harmless stand-in for os.system: a nested target that would create a folder."""
    config["strategy"]["_args_"] = [{"_target_": "os.makedirs", "_args_": [str(marker)]}]


def test_eval_refuses_a_target_the_run_folder_names(finished, smoke, tmp_path):
    run, marker = copy_run(finished, tmp_path), tmp_path / "pwned"
    edit_config(run, lambda c: plant_target(c, marker))
    with pytest.raises(XdtError, match=r"config\.yaml: strategy\._args_\[0\]\._target_='os\.makedirs' is not a "
                                       r"class xdt knows"):
        evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "e")
    assert not marker.exists()


def test_resume_refuses_a_target_the_run_folder_names(finished, smoke, tmp_path):
    run, marker = copy_run(finished, tmp_path, unfinish=True), tmp_path / "pwned"
    edit_config(run, lambda c: c["optimizer"].update(_target_="os.makedirs", name=str(marker)))
    with pytest.raises(XdtError, match=r"optimizer\._target_='os\.makedirs' is not a class xdt knows"):
        train(smoke(f"resume={run}"), tmp_path / "ignored")
    assert not marker.exists() and not (run / "failed").exists()


def test_a_saved_interpolation_is_not_resolved(finished, smoke, tmp_path):
    run = copy_run(finished, tmp_path)
    edit_config(run, lambda c: c.update(data_dir="${xdt.package_dir:os.path}"))
    with pytest.raises(XdtError, match=r"data_dir='\$\{xdt\.package_dir:os\.path\}' is an interpolation"):
        evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "e")


def test_trust_remote_code_comes_from_the_command_line_only(finished, smoke, tmp_path):
    """A folder that ships a .py file and an auto_map to it, with trust_remote_code: true in its config."""
    run, marker = copy_run(finished, tmp_path), tmp_path / "remote-code-ran"
    edit_config(run, lambda c: c["model"].update(trust_remote_code=True))
    encoder = run / "model" / "encoder"
    (encoder / "evil.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n"
                                     "from transformers import BertConfig as EvilConfig\n")
    config = json.loads((encoder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.EvilConfig"}
    (encoder / "config.json").write_text(json.dumps(config))
    result = evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "e")
    assert not marker.exists()
    assert result["metrics"] == json.loads((finished / "metrics.json").read_text())["metrics"]


# ---- links stay inside the run ---------------------------------------------------------------------

def test_eval_refuses_a_checkpoint_link_that_leads_out_of_the_run(finished, smoke, tmp_path):
    run, elsewhere = copy_run(finished, tmp_path), tmp_path / "elsewhere"
    shutil.copytree(finished / "checkpoints" / "step-0000004", elsewhere)
    best = run / "checkpoints" / "best"
    best.unlink()
    best.symlink_to(elsewhere)
    with pytest.raises(XdtError, match=r"checkpoints/best leads outside the run folder .* \(to .*elsewhere\)"):
        evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "e")


def test_eval_refuses_model_files_linked_from_outside(finished, smoke, tmp_path):
    run = copy_run(finished, tmp_path)
    outside = tmp_path / "labels.json"
    shutil.move(run / "model" / "labels.json", outside)
    (run / "model" / "labels.json").symlink_to(outside)
    with pytest.raises(XdtError, match=r"model/labels\.json leads outside the run folder"):
        evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "e")


# ---- model/ is written whole -----------------------------------------------------------------------

def test_a_half_written_model_folder_is_written_again_on_resume(finished, smoke, tmp_path):
    run = copy_run(finished, tmp_path, unfinish=True)
    tokenizer = run / "model" / "tokenizer" / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:1000])  # cut off by a kill
    with pytest.raises(XdtError, match=r"model is incomplete or damaged .*resume="):
        evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "e")
    train(smoke(f"resume={run}"), tmp_path / "ignored")
    assert (run / "done").exists()
    result = evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "e2")
    assert result["metrics"] == json.loads((run / "metrics.json").read_text())["metrics"]


def test_model_folder_is_replaced_atomically(tmp_path):
    from xdt.atomic import atomic_folder

    target = tmp_path / "model"
    atomic_folder(target, lambda tmp: (tmp / "a.json").write_text("1"))

    def dies(tmp: Path) -> None:
        (tmp / "a.json").write_text("half")
        raise KeyboardInterrupt  # a kill while the new folder is being filled

    with pytest.raises(KeyboardInterrupt):
        atomic_folder(target, dies)
    assert (target / "a.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind


# ---- one launcher per run folder -------------------------------------------------------------------

def hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds the run's lock, as a second launcher training it would."""
    code = ("import sys, time\nfrom pathlib import Path\nfrom xdt.run_folder import run_lock\n"
            "with run_lock(Path(sys.argv[1])):\n    print('locked', flush=True)\n    time.sleep(120)\n")
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_run_another_process_trains_is_left_to_it(finished, smoke, tmp_path):
    run = copy_run(finished, tmp_path, unfinish=True)
    before = files_of(run)
    holder = hold_lock(run)
    try:
        with pytest.raises(RunBusy, match=r"is being trained by process \d+ on .*; it is left to that process"):
            train(smoke(f"resume={run}"), tmp_path / "ignored")
    finally:
        holder.kill()
        holder.wait()
    assert files_of(run) == before  # no failed marker, nothing rewritten
    with run_lock(run):  # released when its process died
        pass


def test_two_sweeps_in_one_folder_share_the_jobs(tmp_path, cache_dir):
    """The second launcher skips the job the first is training, and says so."""
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "debug=smoke", *SMOKE, "seed=0,1", f"hydra.sweep.dir={sweep}", f"cache_dir={cache_dir}"]
    (sweep / "0_seed=0").mkdir(parents=True)
    holder = hold_lock(sweep / "0_seed=0")
    try:
        result = run_xdt(*args, cwd=tmp_path)
    finally:
        holder.kill()
        holder.wait()
    output = " ".join((result.stdout + result.stderr).split())  # rich wraps long log lines
    assert "skipping 0_seed=0" in output and "is being trained by process" in output, output
    assert not (sweep / "0_seed=0" / "failed").exists() and not (sweep / "0_seed=0" / "done").exists()
    assert (sweep / "1_seed=1" / "done").exists()


def test_nan_equals_nan_when_a_sweep_finds_its_own_job():
    assert _same_value({"a": [float("nan"), 1]}, {"a": [float("nan"), 1]})
    assert not _same_value({"a": float("nan")}, {"a": 1.0})


# ---- damage and edits: one message, nothing lost ---------------------------------------------------

@pytest.mark.parametrize("damage", ["cut short", "emptied", "overwritten"])
def test_eval_of_a_damaged_checkpoint_names_the_file(finished, smoke, tmp_path, damage):
    run = copy_run(finished, tmp_path)
    weights = run / "checkpoints" / "best" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"cut short": data[: len(data) // 2], "emptied": b"",
                         "overwritten": b"\x00" * len(data)}[damage])
    with pytest.raises(XdtError, match=r"model\.safetensors is damaged or missing .*checkpoint=last"):
        evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "e")


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"]["random_init"].update(hidden_size=32, intermediate_size=64),
     r"model\.safetensors does not fit the model built from the run's config\.yaml \(size mismatch"),
    (lambda c: c.update(optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.01, "momentum": 0.9,
                                   "weight_decay": 0.0}),
     r"written by another optimizer .*config\.yaml was edited since"),
])
def test_resume_after_config_yaml_was_edited_names_it(finished, smoke, tmp_path, edit, message):
    run = copy_run(finished, tmp_path, unfinish=True)
    edit_config(run, edit)
    with pytest.raises(XdtError, match=message):
        train(smoke(f"resume={run}"), tmp_path / "ignored")
    assert checkpoint.checkpoint_steps(run) == checkpoint.checkpoint_steps(finished)  # nothing lost


def test_a_full_disk_says_where_and_which_checkpoint_survives(smoke, tmp_path, monkeypatch):
    run = tmp_path / "run"
    real_save = checkpoint.save_state
    calls = []

    def fills_the_disk(path, state):
        calls.append(path)
        if len(calls) > 2:  # the second checkpoint (after the first one's RNG and training state)
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, state)

    monkeypatch.setattr(checkpoint, "save_state", fills_the_disk)
    with pytest.raises(XdtError, match=r"disk full at .*; the last good checkpoint is step 2: free some space, "
                                       r"then continue with resume="):
        train(smoke(*SMOKE), run)
    assert checkpoint.checkpoint_steps(run) == [2] and (run / "failed").exists()


def test_checkpoint_files_follow_the_umask(finished):
    """safetensors writes its files 0600; a group must be able to eval and resume each other's runs."""
    umask = os.umask(0)
    os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (finished / "checkpoints" / "best").iterdir()}
    assert set(modes.values()) == {0o666 & ~umask}, modes


# ---- the command line ------------------------------------------------------------------------------

def test_a_refused_run_prints_its_message_once_and_says_in_its_folder_that_it_failed(tmp_path):
    result = run_xdt("train", "debug=smoke", "batch_size=0", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and output.count("batch_size=0 is not valid") == 1, output
    assert "Error executing job" not in output
    assert "batch_size=0 is not valid" in (tmp_path / "run" / "failed").read_text()
    assert not (tmp_path / "run" / "config.yaml").exists()  # not a run: nothing to resume or report
    assert "batch_size=0 is not valid" in (tmp_path / "run" / "train.log").read_text()


def test_a_finished_runs_folder_is_not_touched_by_a_new_run(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    before = files_of(run)
    result = run_xdt("train", "debug=smoke", f"hydra.run.dir={run}", cwd=tmp_path)
    assert result.returncode == 1 and "already holds a run" in result.stderr
    assert files_of(run) == before


def test_resume_of_a_folder_that_is_not_a_run(tmp_path):
    missing = run_xdt("train", f"resume={tmp_path / 'nowhere'}", cwd=tmp_path)
    assert missing.returncode == 1 and "no such folder" in missing.stderr
    assert not (tmp_path / "nowhere").exists()
    started = tmp_path / "started"
    started.mkdir()
    (started / "train.log").write_text("killed during start-up\n")
    early = run_xdt("train", f"resume={started}", cwd=tmp_path)
    assert early.returncode == 1 and "stopped during start-up, before it wrote config.yaml" in early.stderr


def test_eval_says_where_it_wrote_the_metrics(finished, tmp_path):
    result = run_xdt("eval", f"run_dir={finished}", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"metrics written to {tmp_path / 'e' / 'metrics.json'}" in result.stdout


def test_a_users_domain_kept_only_as_a_source_is_explained_as_a_target(tmp_path):
    mine = tmp_path / "my-configs"
    (mine / "source_domain").mkdir(parents=True)
    (mine / "source_domain" / "my_apparel.yaml").write_text("my_apparel:\n  kind: file\n  path: x.jsonl\n")
    result = run_xdt("train", "--config-dir", str(mine), "debug=smoke", "target_domain=my_apparel", cwd=tmp_path)
    assert result.returncode == 1
    assert f"ln -s source_domain {mine / 'target_domain'}" in result.stderr, result.stderr


def test_a_refused_eval_says_so_in_the_folder_hydra_made_for_it(tmp_path):
    result = run_xdt("eval", f"run_dir={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'e'}", cwd=tmp_path)
    assert result.returncode == 1 and "no config.yaml there" in (tmp_path / "e" / "failed").read_text()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has a GPU")
def test_a_refused_device_is_recorded_in_the_run_folder(tmp_path):
    result = run_xdt("train", "debug=smoke", "hardware=gpu", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 1 and "torch sees no CUDA GPU" in (tmp_path / "run" / "failed").read_text()


def test_a_finished_run_resumed_again_is_only_read(finished, tmp_path):
    run = copy_run(finished, tmp_path)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and not p.is_symlink()}
    result = run_xdt("train", f"resume={run}", cwd=tmp_path)
    assert result.returncode == 0 and "has already finished" in result.stdout + result.stderr
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and not p.is_symlink()} == before
