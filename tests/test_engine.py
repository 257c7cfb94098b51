"""The one engine: gradient accumulation, tasks as plug-ins, hooks chosen by the config, bad input at composition."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import CONFIG_DIR, run_xdt, cut_off_copy
from safetensors.torch import load_file

from xdt import checkpoint
from xdt.config import instantiate, target_class
from xdt.engine import micro_batches
from xdt.errors import XdtError
from xdt.hooks import L2SP, AdapterRankAllocation, EarlyStopping, WeightAverage, build_hooks
from xdt.tasks.base import Task
from xdt.train import train

# No dropout: 1 x 32 and 2 x 16 then compute the same function, and only floating-point summation order differs.
SAME_MATH = ("max_steps=6", "eval_interval=3", "batch_size=32", "model.dropout=0.0")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_two_micro_batches_of_16_give_the_updates_of_one_batch_of_32(smoke, tmp_path):
    whole = train(smoke(*SAME_MATH), tmp_path / "whole")
    split = train(smoke(*SAME_MATH, "accumulate_grad_batches=2"), tmp_path / "split")
    for name, scores in whole["metrics"].items():
        for metric in ("accuracy", "f1_macro"):
            assert split["metrics"][name][metric] == pytest.approx(scores[metric], abs=1e-9), (name, metric)
    a = load_file(str(tmp_path / "whole" / "checkpoints" / "last" / checkpoint.MODEL_FILE))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "last" / checkpoint.MODEL_FILE))
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    losses = [[r["train"]["loss"] for r in map(json.loads, (tmp_path / run / "metrics.jsonl").read_text().splitlines())]
              for run in ("whole", "split")]
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)


def test_micro_batches_weigh_uneven_slices_by_their_rows():
    batch = {"input_ids": torch.arange(15).view(5, 3), "attention_mask": torch.tensor([[1, 1, 0]] * 3 + [[1, 0, 0]] * 2),
             "labels": torch.arange(5)}
    parts = list(micro_batches(batch, None, 2))
    assert [len(p["labels"]) for p, _, _ in parts] == [2, 3]
    assert sum(weight for _, _, weight in parts) == pytest.approx(2.0)  # Accelerate divides each by 2
    assert parts[1][0]["input_ids"].shape == (3, 2)  # trimmed to its own longest row
    assert list(micro_batches(batch, None, 1)) == [(batch, None, 1.0)]


def test_a_run_cut_between_accumulated_steps_resumes_exactly(smoke, tmp_path):
    overrides = ("max_steps=6", "eval_interval=3", "accumulate_grad_batches=2")
    full = train(smoke(*overrides), tmp_path / "full")
    cut = cut_off_copy(tmp_path / "full", tmp_path / "cut", last_step=6, kept_step=3)
    resumed = train(smoke(f"resume={cut}"), tmp_path / "ignored")
    assert resumed["metrics"] == full["metrics"]


@pytest.mark.parametrize("overrides, message", [
    (["accumulate_grad_batches=0"], r"accumulate_grad_batches=0 is not valid: it must be a positive int"),
    (["batch_size=30", "accumulate_grad_batches=4"],
     r"batch_size=30 must split evenly into accumulate_grad_batches=4 micro-batches"),
    (["task=language_modeling", "strategy=coral"],
     r"strategy=coral cannot serve task=language_modeling \(it serves sequence_classification, "
     r"token_classification\)"),
    (["+task.shots=3"], r"task\.shots is not a setting of xdt\.tasks\.sequence_classification\.SequenceClassification"),
])
def test_bad_engine_settings_are_refused_before_anything_is_written(smoke, tmp_path, overrides, message):
    with pytest.raises(XdtError, match=message):
        train(smoke(*overrides), tmp_path / "run")
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_an_unknown_task_is_one_message_with_the_choices(tmp_path):
    result = run_xdt("train", "debug=smoke", "task=ner", cwd=tmp_path)
    assert result.returncode == 1
    assert "Could not find 'task/ner'" in result.stderr and "language_modeling" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_shipped_task_is_a_task_and_every_strategy_names_tasks_that_exist():
    tasks = {p.stem for p in (CONFIG_DIR / "task").glob("*.yaml")}
    for name in tasks:
        node = _task_node(name)
        assert issubclass(target_class(node, "task"), Task) and target_class(node, "task").name == name
    for path in (CONFIG_DIR / "strategy").glob("*.yaml"):
        served = target_class(_load(path), "strategy").tasks
        assert served is None or set(served) <= tasks, path.name


def _load(path: Path):
    from omegaconf import OmegaConf

    return OmegaConf.load(path)


def _task_node(name: str):
    node = _load(CONFIG_DIR / "task" / f"{name}.yaml")
    return node.task if "task" in node else node  # language_modeling is a global package (it sets budgets too)


def test_hooks_come_from_the_config_and_the_loop_names_none(smoke):
    from xdt.models import build_classifier, load_tokenizer
    from xdt.strategies.base import StrategyContext

    cfg = smoke("l2sp.alpha=0.1", "average_from=0.5", "patience=2", "model.peft=adalora")
    model = build_classifier(cfg.model, load_tokenizer(cfg.model), 2, total_steps=12)
    strategy = instantiate(cfg.strategy, "strategy", model=model, context=StrategyContext())
    hooks = build_hooks(cfg, strategy, 12)
    assert [type(h) for h in hooks] == [L2SP, AdapterRankAllocation, WeightAverage, EarlyStopping]
    assert [type(h) for h in build_hooks(smoke(), strategy, 12)] == [AdapterRankAllocation]  # the adapters ask
    engine_source = (Path(__file__).resolve().parents[1] / "xdt" / "engine.py").read_text()
    for feature in ("L2SP", "l2sp", "WeightAverage", "update_and_allocate", "patience", "average_from"):
        assert feature not in engine_source.split("def loop(")[1], feature


def test_language_modeling_through_xdt_train_is_xdt_pretrain(smoke, cache_dir, tmp_path):
    """``xdt pretrain`` is a short form of ``xdt train task=language_modeling``: the same run."""
    from conftest import compose_config

    common = ["debug=smoke", "max_steps=4", "eval_interval=2", f"cache_dir={cache_dir}"]
    short = train(compose_config(common, name="pretrain"), tmp_path / "pretrain")
    long = train(compose_config([*common, "task=language_modeling"], name="train"), tmp_path / "train")
    assert short["metrics"] == long["metrics"] and short["start_metrics"] == long["start_metrics"]
    assert (tmp_path / "train" / "pretrained" / "config.json").is_file()
    assert (tmp_path / "train" / "pretrain.log").is_file()
