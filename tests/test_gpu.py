"""CUDA: every strategy trains under bf16, fp16 and fp32 on one GPU, and a GPU-trained run reloads on GPU and CPU.

Skipped where torch sees no GPU (CI has none). On a GPU machine: ``python -m pytest -m gpu``.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from conftest import CONFIG_DIR
from test_strategies import build_and_load, initial_weights
from xdt.eval_run import evaluate_run
from xdt.train import train

STRATEGIES = sorted(p.stem for p in (CONFIG_DIR / "strategy").glob("*.yaml"))

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "no"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_trains_on_one_gpu(strategy, precision, smoke, tmp_path):
    cfg = smoke(f"strategy={strategy}", "hardware=gpu", f"hardware.mixed_precision={precision}",
                "target_domain=[syn_kitchen]", "max_steps=12", "eval_interval=6")
    result = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train"]["loss"] for r in records if "train" in r]
    assert losses and all(math.isfinite(x) for x in losses), losses

    before, after = initial_weights(cfg), build_and_load(cfg, tmp_path / "run").state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k].cpu())}
    assert any(k.startswith("model.encoder.") for k in changed), "the encoder did not train"
    assert any(k.startswith("model.head.") for k in changed), "the head did not train"

    # The saved run reloads on the GPU with the same scores; on the CPU in fp32 the accuracies stay within
    # a few examples (autocast rounds differently from fp32).
    on_gpu = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", "hardware=gpu",
                                f"hardware.mixed_precision={precision}", name="eval"), tmp_path / "eval_gpu")
    on_cpu = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", "hardware=cpu", name="eval"), tmp_path / "eval_cpu")
    for split, scores in result["metrics"].items():
        assert on_gpu["metrics"][split]["accuracy"] == pytest.approx(scores["accuracy"], abs=1e-9), split
        assert on_cpu["metrics"][split]["accuracy"] == pytest.approx(scores["accuracy"], abs=0.02), split


def test_tf32_follows_the_setting_both_ways(smoke):
    from xdt.hardware import make_accelerator
    make_accelerator(smoke("hardware=gpu", "hardware.tf32=true").hardware)
    assert torch.backends.cuda.matmul.allow_tf32
    make_accelerator(smoke("hardware=gpu", "hardware.tf32=false").hardware)
    assert not torch.backends.cuda.matmul.allow_tf32
