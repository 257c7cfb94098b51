"""Efficiency in every run (issue 23): useful tokens, padding, the FLOP model and MFU against a peak that is
published (CUDA) or measured once and cached (CPU)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from xdt import checkpoint, efficiency
from xdt.efficiency import FlopModel, TokenCount, device_peak, flop_model
from xdt.models import MaskedLMHead, build_encoder, load_tokenizer
from xdt.train import train


def test_tokens_are_counted_without_padding_with_their_squared_lengths():
    count = TokenCount()
    count.add({"attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])},
              None, {"input_ids": torch.zeros(2, 2)},  # no batch, and a batch without a mask, count nothing
              {"attention_mask": torch.tensor([[1, 1, 1, 1, 1]])})
    assert count.take() == (10.0, 13.0, 3**2 + 2**2 + 5**2)
    assert count.take() == (0.0, 0.0, 0.0)  # taken: the next read starts from zero


def test_the_flop_model_counts_matmul_weights_not_embeddings(smoke):
    cfg = smoke()
    encoder = build_encoder(cfg.model, load_tokenizer(cfg.model))
    model = nn.Sequential(encoder, nn.Linear(encoder.config.hidden_size, 2))
    flops = flop_model(model)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    embeddings = sum(p.numel() for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    assert flops.matmul_weights == linear and embeddings > 0
    assert (flops.layers, flops.width) == (encoder.config.num_hidden_layers, encoder.config.hidden_size)
    # 6 N per token, and 12 L d T^2 per sequence of T tokens
    assert FlopModel(10, 2, 4).flops(tokens=5, squared_lengths=25) == 6 * 10 * 5 + 12 * 2 * 4 * 25


def test_a_head_that_runs_on_the_predicted_positions_counts_for_them_only(smoke):
    cfg = smoke()
    tokenizer = load_tokenizer(cfg.model)
    encoder = build_encoder(cfg.model, tokenizer)
    model = MaskedLMHead(encoder)  # as mtl holds it: next to the classifier that owns the shared encoder
    flops = flop_model(nn.ModuleList([encoder, model]))
    head = sum(m.weight.numel() for m in model.head.modules() if isinstance(m, nn.Linear))
    assert flops.head_weights == head > 0 and flops.matmul_weights == flop_model(encoder).matmul_weights > 0
    assert FlopModel(10, 2, 4, head_weights=100).flops(5, 25, head_positions=2) == 6 * 10 * 5 + 6 * 100 * 2 + \
        12 * 2 * 4 * 25
    ids = torch.randint(5, len(tokenizer), (3, 8))
    labels = torch.full_like(ids, -100)
    labels[0, 1], labels[2, 3], labels[2, 5] = 7, 8, 9
    model.train()(ids, torch.ones_like(ids), labels)
    model(ids, torch.ones_like(ids), labels)
    assert efficiency.take_head_positions(model) == 6 and efficiency.take_head_positions(model) == 0
    model.eval()(ids, torch.ones_like(ids), labels)  # evaluation is not a training step's work
    assert efficiency.take_head_positions(model) == 0


def test_a_cpu_peak_is_the_best_measurement_this_machine_has_shown(tmp_path, monkeypatch):
    """Each run measures; a measurement taken under load (lower) never lowers the peak runs compare with."""
    rates = iter([5e10, 3e10, 7e10, 6e10])
    monkeypatch.setattr(efficiency, "measure_matmul", lambda device, dtype, *args, **kwargs: next(rates))
    cpu = torch.device("cpu")
    assert [device_peak(cpu, "fp32", tmp_path).flops for _ in range(3)] == [5e10, 5e10, 7e10]
    peak = device_peak(cpu, "fp32", tmp_path)
    assert peak.flops == 7e10 and peak.measured == 6e10 and "best fp32" in peak.source
    (tmp_path / "device_peak.json").write_text("not json")  # a damaged file is a fresh start, not a crash
    monkeypatch.setattr(efficiency, "measure_matmul", lambda device, dtype, *args, **kwargs: 2e10)
    assert device_peak(cpu, "fp32", tmp_path)[0] == 2e10


def test_a_run_whose_start_was_measured_under_load_is_compared_with_the_better_end_measurement(tmp_path,
                                                                                               monkeypatch):
    """The first run on a machine has no better figure to fall back on than its own: a load at its start alone
    must not inflate the MFU its metrics.json keeps."""
    rates = iter([3e10, 7e10])  # start under load, end idle
    monkeypatch.setattr(efficiency, "measure_matmul", lambda device, dtype, *args, **kwargs: next(rates))
    cpu = torch.device("cpu")
    start = device_peak(cpu, "fp32", tmp_path)
    peak = efficiency.run_peak(start, device_peak(cpu, "fp32", tmp_path, repeats=5))
    assert start.flops == 3e10 and peak.flops == 7e10
    assert "this run measured 30 GFLOP/s at its start and 70 at its end" in peak.source


def test_the_real_cpu_measurement_is_a_plausible_rate_and_leaves_the_runs_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    rate = efficiency.measure_matmul(torch.device("cpu"), torch.float32, size=256, repeats=3)
    assert 1e8 < rate < 1e14
    assert torch.equal(torch.rand(3), expected)  # a run's dropout must not depend on whether the peak was cached


def test_a_known_gpu_takes_its_published_peak_for_the_precision_in_use(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    peak, source, _ = device_peak(torch.device("cuda"), "bf16", tmp_path)
    assert peak == pytest.approx(989.4e12) and "published dense bf16 peak of NVIDIA H100" in source
    assert device_peak(torch.device("cuda"), "fp32", tmp_path)[0] == pytest.approx(67e12)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert device_peak(torch.device("cuda"), "tf32", tmp_path)[0] == pytest.approx(378e12)


def test_every_run_reports_its_efficiency_and_a_resumed_run_counts_every_segment(smoke, cache_dir, tmp_path):
    full = train(smoke(), tmp_path / "full")
    record = full["efficiency"]
    assert record["useful_tokens"] > 0 and 0 <= record["padding_fraction"] < 1
    seconds = full["train_time_s"]  # rounded to 0.01 s in metrics.json
    assert record["useful_tokens"] / (seconds + 0.006) <= record["useful_tokens_per_s"] <= \
        record["useful_tokens"] / max(seconds - 0.006, 1e-3)
    assert 0 < record["mfu"] < 1 and record["precision"] == "fp32" and "best fp32" in record["peak"]
    known = json.loads((cache_dir / "device_peak.json").read_text())
    assert "at its start and" in record["peak"] and record["peak_flops_per_s"] == max(
        flops for key, flops in known.items() if key.startswith("fp32 on "))
    assert "MFU" in (tmp_path / "full" / "train.log").read_text()
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", cut, symlinks=True)
    for name in ("done", "metrics.json"):
        (cut / name).unlink()
    shutil.rmtree(checkpoint.step_dir(cut, full["steps"]))
    (cut / "checkpoints" / "last").unlink()
    (cut / "checkpoints" / "last").symlink_to(checkpoint.step_dir(cut, full["steps"] // 2).name)
    resumed = train(smoke(f"resume={cut}"), tmp_path / "ignored")
    assert resumed["efficiency"]["useful_tokens"] == record["useful_tokens"]
    assert resumed["efficiency"]["model_flops"] == record["model_flops"]
    assert json.loads((cut / "metrics.json").read_text())["efficiency"]["padding_fraction"] == \
        record["padding_fraction"]
