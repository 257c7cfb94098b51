"""bf16 on CPU is far slower than fp32 without bf16 matrix units and can be faster with them (Intel AMX):
the warning of ``hardware.mixed_precision`` on CPU says so only where it holds (docs/hardware.md, Precision)."""

from __future__ import annotations

import logging

import pytest
import torch
from omegaconf import OmegaConf

from xdt.hardware import cpu_has_matrix_units, make_accelerator

HW = {"device": "cpu", "num_threads": None, "tf32": False, "compile": False, "fast_dropout": True,
      "distributed": False}


@pytest.mark.parametrize("has_units", [False, True])
def test_bf16_on_cpu_is_warned_against_only_without_matrix_units(monkeypatch, caplog, has_units):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: has_units)
    with caplog.at_level(logging.WARNING, logger="xdt.hardware"):
        make_accelerator(OmegaConf.create({**HW, "mixed_precision": "bf16"}))
    warned = [r.getMessage() for r in caplog.records if "mixed_precision=bf16" in r.getMessage()]
    assert bool(warned) is not has_units
    if warned:
        assert "without bf16 matrix units" in warned[0]


def test_fp32_has_no_matrix_unit_question_and_an_unknown_check_counts_as_absent(monkeypatch):
    assert cpu_has_matrix_units("no") is False
    monkeypatch.delattr(torch.cpu, "_is_amx_fp16_supported")  # an older torch without the check
    assert cpu_has_matrix_units("fp16") is False
