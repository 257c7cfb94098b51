"""``hardware.compile`` (issue 23): the encoder compiled with TorchInductor on this CPU, batches padded to length
buckets, compiling timed apart from training, and checkpoints that an eager evaluation scores the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import DATA_DIR, compose_config
from xdt.data.batching import COMPILE_BUCKET, Collator, padding_multiple
from xdt.errors import XdtError
from xdt.eval_run import evaluate_run
from xdt.train import train

TINY = ["debug=smoke", "max_steps=4", "eval_interval=2", "max_examples=64", f"data_dir={DATA_DIR}"]


def test_compiled_runs_pad_batches_to_length_buckets():
    compiled = OmegaConf.create({"compile": True})
    eager = OmegaConf.create({"compile": False})
    assert padding_multiple(compiled, torch.device("cpu")) == COMPILE_BUCKET
    assert padding_multiple(eager, torch.device("cpu")) is None
    assert padding_multiple(eager, torch.device("cuda")) == 8
    batch = Collator(0, padding_multiple(compiled, torch.device("cpu")))([{"input_ids": [5] * 33}, {"input_ids": [7]}])
    assert batch["input_ids"].shape == (2, 64) and batch["attention_mask"].sum().item() == 34
    # rounding up stops at max_length (a model's positions may end there): 100 -> 100, not 128
    capped = Collator(0, COMPILE_BUCKET, max_length=100)
    assert capped([{"input_ids": [5] * 100}])["input_ids"].shape == (1, 100)
    assert capped([{"input_ids": [5] * 33}])["input_ids"].shape == (1, 64)


def test_a_compiled_run_times_compiling_apart_and_its_checkpoint_scores_the_same_eager(tmp_path, cache_dir):
    run = tmp_path / "run"
    result = train(compose_config([*TINY, "hardware.compile=true", f"cache_dir={cache_dir}"]), run)
    assert result["compile_time_s"] > 0 and result["train_time_s"] > 0
    log = (run / "train.log").read_text()
    assert "compiled with torch.compile" in log and "compiled a graph" in log
    assert result["efficiency"]["useful_tokens"] > 0  # the steps that only ran a graph
    # The checkpoint holds the encoder's weights under their usual names: an eager xdt eval reads it and scores
    # the test sets as the compiled model did (to floating-point rounding: at most one example apart).
    evaluated = evaluate_run(compose_config([f"run_dir={run}", f"cache_dir={cache_dir}", f"data_dir={DATA_DIR}"],
                                            name="eval"), tmp_path / "eval")
    for name, scores in evaluated["metrics"].items():
        if name.endswith("/test"):
            assert scores["accuracy"] == pytest.approx(result["metrics"][name]["accuracy"], abs=1 / 64 + 1e-9)
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["compile_time_s"] == result["compile_time_s"]


@pytest.mark.parametrize("overrides, message", [
    (["hardware.compile=maybe"], r"hardware\.compile='maybe' is not valid: true or false"),
    (["hardware.compile=true", "strategy=maml", "source_domain=[syn_books,syn_dvd]", "target_domain=[syn_kitchen]"],
     r"hardware\.compile=true does not serve strategy=maml"),
])
def test_settings_compile_cannot_serve_are_refused_with_one_message(tmp_path, cache_dir, overrides, message):
    with pytest.raises(XdtError, match=message):
        train(compose_config([*TINY, f"cache_dir={cache_dir}", *overrides]), tmp_path / "run")
    assert not (tmp_path / "run" / "done").exists()
    if "strategy=maml" in overrides:  # the strategy's class says enough: refused before any data is read
        assert not (tmp_path / "run" / "config.yaml").exists()
