"""``xdt pretrain`` (masked and causal LM on the tiny models), fine-tuning from it with ``model.init_from``,
and the pretrain-then-fine-tune pipeline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from omegaconf import OmegaConf

from conftest import CONFIG_DIR, compose_config, run_xdt
from xdt import checkpoint
from xdt.errors import XdtError
from xdt.models import build_classifier, load_tokenizer
from xdt.runs import find_runs
from xdt.sweep import _same_config
from xdt.train import pretraining_config, train


@pytest.fixture
def lm_smoke(cache_dir):
    """A ``debug=smoke`` pretraining config (tiny model, small data) plus ``overrides``."""
    def make(*overrides: str):
        return compose_config(["debug=smoke", f"cache_dir={cache_dir}", "max_steps=12", "eval_interval=6",
                               "task.text_splits=[unlabeled,train]", *overrides], name="pretrain")
    return make


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("model, objective", [("tiny", "mlm"), ("tiny_gpt", "clm")])
def test_pretraining_lowers_held_out_perplexity_below_the_random_init(model, objective, lm_smoke, tmp_path):
    result = train(lm_smoke(f"model={model}"), tmp_path / "run")
    assert result["objective"] == objective
    start, end = result["start_metrics"], result["metrics"]
    for name in ("source/syn_books/test", "target/syn_dvd/test", "target/syn_kitchen/test"):
        assert end[name]["perplexity"] < 0.9 * start[name]["perplexity"], name
        assert end[name]["tokens"] == start[name]["tokens"] > 0
    # A random model's perplexity is near the vocabulary size; the records hold step 0, 6 and 12.
    assert start["target/syn_dvd/test"]["perplexity"] > 10_000
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 6, 12]
    assert (tmp_path / "run" / "pretrained" / "config.json").is_file() and (tmp_path / "run" / "done").is_file()
    # MFU counts the output layer for the positions it predicted: ~15% of the tokens (MLM), nearly all (CLM).
    record = result["efficiency"]
    flops, tokens, positions = record["flop_model"], record["useful_tokens"], record["flop_model"]["head_positions"]
    assert flops["head_weights"] > flops["matmul_weights"] / 2  # the vocabulary projection
    assert (0.05 * tokens < positions < 0.3 * tokens) if objective == "mlm" else (0.5 * tokens < positions < tokens)
    attention = record["model_flops"] - 6 * flops["matmul_weights"] * tokens - 6 * flops["head_weights"] * positions
    assert 0 < attention < 0.1 * record["model_flops"]  # the 12 L d T^2 term, small at these lengths


def test_evaluation_masks_the_same_tokens_every_time(lm_smoke, tmp_path):
    run = tmp_path / "run"
    train(lm_smoke("max_steps=6"), run)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["eval"]["target/syn_dvd/test"]["tokens"] == records[-1]["eval"]["target/syn_dvd/test"]["tokens"]


def test_init_from_loads_exactly_the_pretrained_weights(lm_smoke, smoke, tmp_path):
    train(lm_smoke(), tmp_path / "lm")
    stored = load_file(str(tmp_path / "lm" / "checkpoints" / "best" / checkpoint.MODEL_FILE))
    cfg = smoke(f"model.init_from={tmp_path / 'lm'}")
    model = build_classifier(cfg.model, load_tokenizer(cfg.model), 2)
    encoder = model.encoder.state_dict()
    compared = 0
    prefix = "model.lm.bert."  # the strategy's model, the language model's BERT: ... -> encoder.layer.0...
    for name, tensor in stored.items():
        if name.startswith(prefix) and name[len(prefix):] in encoder:
            assert torch.equal(encoder[name[len(prefix):]], tensor), name
            compared += 1
    assert compared == len([k for k in encoder if not k.startswith("pooler")]) > 10
    random_init = build_classifier(smoke().model, load_tokenizer(smoke().model), 2).encoder.state_dict()
    assert not torch.equal(random_init["embeddings.word_embeddings.weight"], encoder["embeddings.word_embeddings.weight"])


def test_pipeline_pretrains_then_fine_tunes_in_two_folders(smoke, tmp_path):
    cfg = smoke("+pretrain.text_from=target", "+pretrain.max_steps=4", "+pretrain.eval_interval=4",
                "+pretrain.task.text_splits=[unlabeled,train]", "max_steps=4", "eval_interval=4")
    result = train(cfg, tmp_path / "run")
    stage = tmp_path / "run" / "pretrain"
    pre = read_json(stage / "metrics.json")
    assert pre["sources"] == ["syn_dvd", "syn_kitchen"] and pre["targets"] == ["syn_books"] and pre["steps"] == 4
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert f"init_from: {stage.resolve()}" in saved
    assert result["init_from"] == str(stage.resolve()) and result["pretrain_wall_time_s"] == pre["wall_time_s"]
    assert [r.path for r in find_runs(tmp_path)] == [tmp_path / "run"]  # the stage is not a row of a report
    assert _same_config(cfg, tmp_path / "run" / "config.yaml")  # a re-launched sweep knows the job as its own


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("tapt_*.yaml")))
def test_shipped_pretraining_presets_compose_with_their_group_settings(preset, smoke):
    # A pretrain: section may set keys that come from config groups (optimizer, hardware, logger): the tapt
    # presets set pretrain.optimizer.lr, which a check against train.yaml's own keys once refused.
    stage = pretraining_config(smoke(f"experiment={preset}"))
    preset_lr = OmegaConf.load(CONFIG_DIR / "experiment" / f"{preset}.yaml").pretrain.optimizer.lr
    assert stage.optimizer.lr == preset_lr and stage.optimizer._target_ == "torch.optim.AdamW"
    assert list(stage.source_domain) == ["fdu_MR" if "MR" in preset else "fdu_baby"]


def test_cut_off_pretraining_resumes_to_the_same_result(lm_smoke, tmp_path):
    full = tmp_path / "full"
    train(lm_smoke(), full)
    cut = tmp_path / "cut"
    shutil.copytree(full, cut, symlinks=True)
    for name in ("done", "metrics.json"):
        (cut / name).unlink()
    shutil.rmtree(cut / "pretrained")
    shutil.rmtree(checkpoint.step_dir(cut, 12))
    (cut / "checkpoints" / "last").unlink()
    (cut / "checkpoints" / "last").symlink_to("step-0000006")
    config = (cut / "config.yaml").read_text()
    resumed = train(lm_smoke(f"resume={cut}"), cut)
    assert (cut / "config.yaml").read_text() == config
    assert resumed["metrics"] == read_json(full / "metrics.json")["metrics"]


@pytest.mark.parametrize("overrides, message", [
    (["task.objective=bogus"], "task.objective='bogus' is not valid"),
    (["model=tiny_gpt", "task.objective=mlm"], "no masked language-model head"),
    (["task.text_splits=[labels]"], "task.text_splits=['labels']"),
    (["task.mlm_probability=1.5"], "task.mlm_probability=1.5"),
    (["strategy=dann"], "strategy=dann cannot serve task=language_modeling"),
    (["model.peft=lora"], "task=language_modeling trains the whole model"),
])
def test_bad_pretraining_settings_are_one_clear_error(overrides, message, lm_smoke, tmp_path):
    with pytest.raises(XdtError, match=message.replace("[", r"\[").replace("]", r"\]")):
        train(lm_smoke(*overrides), tmp_path / "run")


def test_init_from_a_folder_without_a_model(smoke, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(XdtError, match="model.init_from=.*no saved model there"):
        train(smoke(f"model.init_from={tmp_path / 'empty'}"), tmp_path / "run")


def test_pretrain_command_line(tmp_path, cache_dir):
    done = run_xdt("pretrain", "debug=smoke", "max_steps=3", "eval_interval=3", f"cache_dir={cache_dir}",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "perplexity" in done.stdout and "model.init_from=" in done.stdout + done.stderr
    assert (tmp_path / "run" / "pretrained" / "model.safetensors").is_file()
