"""Sweep jobs that run at once on one machine split its cores (issue 23: sweeps that fill a machine)."""

from __future__ import annotations

import logging

import pytest
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from xdt.hardware import make_accelerator, shared_threads, threads_per_job


@pytest.mark.parametrize("n_jobs, cores, threads", [(2, 2, 1), (4, 16, 4), (3, 16, 5), (8, 4, 1), (-1, 16, 1),
                                                     (-2, 16, 1), (-9, 16, 2)])
def test_each_job_gets_its_share_of_the_cores(n_jobs, cores, threads):
    assert threads_per_job(n_jobs, cores) == threads


@pytest.fixture
def launcher():
    """HydraConfig as a job of a sweep launched with ``launcher`` sees it; restored afterwards."""
    instance = HydraConfig.instance()
    saved, threads = instance.cfg, torch.get_num_threads()

    def set_launcher(node: dict) -> None:
        instance.cfg = OmegaConf.create({"hydra": {"launcher": node}})
    yield set_launcher
    instance.cfg = saved
    torch.set_num_threads(threads)


def test_a_parallel_sweep_job_takes_its_share_unless_num_threads_is_set(launcher, monkeypatch, caplog):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    launcher({"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 4})
    with caplog.at_level(logging.INFO, logger="xdt"):
        assert shared_threads() == 2
    assert "4 sweep jobs at once share 8 cores: 2 threads each" in caplog.text
    hardware = OmegaConf.create({"device": "cpu", "mixed_precision": "no", "num_threads": None, "tf32": False})
    make_accelerator(hardware)
    assert torch.get_num_threads() == 2
    make_accelerator(OmegaConf.merge(hardware, {"num_threads": 1}))  # a setting wins over the share
    assert torch.get_num_threads() == 1


def test_jobs_one_after_another_keep_every_core(launcher):
    launcher({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"})
    assert shared_threads() is None
    launcher({"n_jobs": 1})
    assert shared_threads() is None
