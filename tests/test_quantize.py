"""``xdt eval quantize=dynamic_int8`` on tiny runs: fp32 metrics as a plain eval gives them, int8 metrics and
their differences, timing and size, a quantised copy that leaves the evaluated model alone, PEFT adapters,
and clear errors for values it cannot honour."""

from __future__ import annotations

import json
import re
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import DATA_DIR, compose_config
from xdt import checkpoint, quantize
from xdt.errors import XdtError
from xdt.eval_run import evaluate_run
from xdt.report import write_reports
from xdt.train import train

QUANTIZED_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def tiny_run(folder: Path, cache_dir: Path, *overrides: str) -> Path:
    """A smoke run cut down further (2 steps, 64 examples a split): only its checkpoint matters here."""
    train(compose_config(["debug=smoke", "max_steps=2", "eval_interval=2", "max_examples=64",
                          f"cache_dir={cache_dir}", f"data_dir={DATA_DIR}", *overrides]), folder)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> Path:
    return tiny_run(tmp_path_factory.mktemp("quantize") / "run", cache_dir)


@pytest.fixture
def spy(monkeypatch) -> list[tuple[torch.nn.Module, torch.nn.Module, dict]]:
    """Records (fp32 strategy, its quantised copy) each time xdt eval quantises, with a snapshot of the fp32
    weights taken at that moment, so a test can check the copy and that the original stayed as it was."""
    calls = []
    original = quantize.quantized_copy

    def recording(strategy):
        before = {k: v.clone() for k, v in strategy.state_dict().items()}
        copy = original(strategy)
        calls.append((strategy, copy, before))
        return copy

    monkeypatch.setattr(quantize, "quantized_copy", recording)
    return calls


def eval_config(run_dir: Path, cache_dir: Path, *overrides: str):
    return compose_config([f"run_dir={run_dir}", f"cache_dir={cache_dir}", f"data_dir={DATA_DIR}", *overrides],
                          name="eval")


def check_quantized_entry(result: dict, plain: dict) -> None:
    """The fp32 metrics equal a plain eval's exactly; the int8 entry is complete and self-consistent."""
    assert result["metrics"] == plain["metrics"]
    entry = result["quantized"]
    assert entry["method"] == "dynamic_int8" and set(entry["metrics"]) == set(plain["metrics"])
    for name, fp32 in result["metrics"].items():
        int8 = entry["metrics"][name]
        assert set(int8) == set(fp32)
        assert entry["change"][name] == {m: int8[m] - fp32[m] for m in fp32}
    assert entry["fp32_eval_s"] > 0 and entry["int8_eval_s"] > 0
    assert entry["speedup"] == entry["fp32_eval_s"] / entry["int8_eval_s"]
    assert 0 < entry["int8_size_mb"] < entry["fp32_size_mb"]


def check_copy(spy_calls: list, run_dir: Path) -> None:
    """One quantised copy, with int8 Linear layers only; the evaluated fp32 strategy still holds exactly the
    checkpoint's weights and no quantised module."""
    (strategy, copy, before), = spy_calls
    assert any(isinstance(m, QUANTIZED_LINEAR) for m in copy.modules())
    assert not any(type(m) is torch.nn.Linear for m in copy.modules())  # every Linear was quantised
    assert not any(isinstance(m, QUANTIZED_LINEAR) for m in strategy.modules())
    after = strategy.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    saved = load_file(str(run_dir / "checkpoints" / "best" / "model.safetensors"))
    assert all(torch.equal(after[k], saved[k]) for k in saved)


def test_int8_eval_reports_metrics_changes_speedup_and_size(run, cache_dir, tmp_path, spy, capsys):
    plain = evaluate_run(eval_config(run, cache_dir), tmp_path / "plain")
    assert "quantized" not in plain and spy == []  # quantize=null (the default) changes nothing
    capsys.readouterr()
    result = evaluate_run(eval_config(run, cache_dir, "quantize=dynamic_int8", "quantize_repeats=2"), tmp_path / "q")
    assert json.loads((tmp_path / "q" / "metrics.json").read_text()) == json.loads(json.dumps(result))
    check_quantized_entry(result, plain)
    assert result["quantized"]["repeats"] == 2 and result["quantized"]["threads"] == torch.get_num_threads()
    check_copy(spy, run)
    printed = capsys.readouterr().out
    assert "fp32 acc" in printed and "int8 acc" in printed and "speed-up" in printed
    assert "target/syn_kitchen/test" in printed


def test_lora_adapters_are_merged_into_the_quantised_copy(cache_dir, tmp_path, spy):
    run_dir = tiny_run(tmp_path / "lora", cache_dir, "model.peft=lora")
    plain = evaluate_run(eval_config(run_dir, cache_dir), tmp_path / "plain")
    result = evaluate_run(eval_config(run_dir, cache_dir, "quantize=dynamic_int8"), tmp_path / "q")
    check_quantized_entry(result, plain)
    check_copy(spy, run_dir)
    (strategy, copy, _), = spy
    assert any("lora_A" in name for name, _ in strategy.named_modules())  # the fp32 model keeps its adapters
    assert not any("lora" in name for name, _ in copy.named_modules())    # the copy has them merged


@pytest.mark.parametrize("overrides,message", [
    (["quantize=bogus"], r"quantize='bogus' is not valid: choose null \(no quantisation\) or dynamic_int8"),
    (["quantize=dynamic_int8", "hardware=gpu"], r"dynamic int8 quantisation runs on CPU.*pass hardware=cpu"),
    (["quantize=dynamic_int8", "quantize_repeats=0"], r"quantize_repeats=0 is not valid"),
], ids=["unknown value", "gpu", "no repeats"])
def test_quantize_values_it_cannot_honour_are_one_clear_error(overrides, message, cache_dir, tmp_path):
    # The check comes before the run folder is read, so no run is needed and nothing is written.
    with pytest.raises(XdtError, match=message):
        evaluate_run(eval_config(tmp_path / "no-run", cache_dir, *overrides), tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_the_report_tabulates_the_int8_evaluations_kept_in_run_folders(run, cache_dir, tmp_path):
    copied = tmp_path / "sweep" / "run"
    shutil.copytree(run, copied)
    result = evaluate_run(eval_config(copied, cache_dir, "quantize=dynamic_int8"), copied / "int8")
    assert (copied / "checkpoints" / "best").is_dir() and not (copied / "checkpoints" / "best").is_symlink()
    assert result["step"] == checkpoint.linked_step(run, "best")  # a copy made the link a folder: its state says
    (copied / "broken").mkdir()
    (copied / "broken" / "metrics.json").write_text('{"quantized": {"metrics": 1}}')
    (copied / "plain").mkdir()  # an evaluation without quantisation is not an int8 one, and not a problem
    (copied / "plain" / "metrics.json").write_text(json.dumps({k: v for k, v in result.items() if k != "quantized"}))

    write_reports(tmp_path / "sweep", out_dir=tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Int8 evaluation" in text
    section = text.split("## Int8 evaluation", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| erm | 1 |"))

    def target_mean(scores: dict) -> float:  # the mean over the run's target test sets
        return statistics.mean(s["accuracy"] for name, s in scores.items() if re.fullmatch(r"target/.*/test", name))
    fp32, int8 = target_mean(result["metrics"]), target_mean(result["quantized"]["metrics"])
    source = result["quantized"]["change"]["source/syn_books/test"]["accuracy"]
    assert row.split(" | ")[2:6] == [f"{fp32:.3f}", f"{int8:.3f}", f"{int8 - fp32:+.3f}", f"{source:+.3f}"]
    assert f"{result['quantized']['speedup']:.2f}×" in row
    assert "Passed over: run/broken/metrics.json: its quantized entry has no scores" in text
    assert "run/plain" not in text


def test_a_report_without_int8_evaluations_has_no_int8_table(run, tmp_path):
    shutil.copytree(run, tmp_path / "sweep" / "run", ignore=shutil.ignore_patterns("int8"))
    write_reports(tmp_path / "sweep", out_dir=tmp_path / "report")
    assert "Int8 evaluation" not in (tmp_path / "report" / "report.md").read_text()
