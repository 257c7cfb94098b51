"""Every option of every config group composes, and the pieces they describe can be built."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from conftest import CONFIG_DIR, DATA_DIR, compose_config
from xdt.config import instantiate
from xdt.data.domains import KINDS
from xdt.data.shots import domain_entries

GROUPS = ["model", "source_domain", "target_domain", "strategy", "optimizer", "hardware", "debug", "experiment"]

# Values a user must supply for options whose config marks them ??? (mandatory).
REQUIRED = {
    ("source_domain", "file"): ["source_domain.file.path=x.csv"],
    ("target_domain", "file"): ["target_domain.file.path=x.csv"],
    ("source_domain", "split_files"): ["source_domain.split_files.train=a", "source_domain.split_files.test=b"],
    ("target_domain", "split_files"): ["target_domain.split_files.train=a", "target_domain.split_files.test=b"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


CASES = [(group, option) for group in GROUPS for option in options(group)]


def test_every_group_has_options():
    assert all(options(group) for group in GROUPS)
    assert len(CASES) > 40


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_resolves(group, option):
    cfg = compose_config([f"{group}={option}", f"data_dir={DATA_DIR}", *REQUIRED.get((group, option), [])])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if group in ("source_domain", "target_domain"):
        # a domain is filed under its own name (target_domain also holds the shots setting)
        assert [name for name, _ in domain_entries(resolved[group], group)] == [option]
        assert resolved[group][option]["kind"] in KINDS
    if group == "model":
        assert resolved["model"]["name"] == option
        assert resolved["model"]["trust_remote_code"] is False


def test_eval_config_composes_with_a_target_list():
    cfg = compose_config(["run_dir=some/run", "target_domain=[fdu_video,syn_kitchen]", f"data_dir={DATA_DIR}"],
                         name="eval")
    assert list(cfg.target_domain) == ["fdu_video", "syn_kitchen"]
    assert "target_domain" not in compose_config(["run_dir=x"], name="eval")


def test_target_domain_list_keeps_each_domain_apart():
    cfg = compose_config(["target_domain=[fdu_baby,fdu_MR]", "target_domain.fdu_MR.validation_size=50",
                          f"data_dir={DATA_DIR}"])
    assert cfg.target_domain.fdu_MR.encoding == "cp1252" and cfg.target_domain.fdu_baby.encoding == "utf-8"
    assert cfg.target_domain.fdu_MR.validation_size == 50 and cfg.target_domain.fdu_baby.validation_size == 200
    assert cfg.target_domain.fdu_baby.data_dir == f"{DATA_DIR}/fdu-mtl"
    assert cfg.target_domain.fdu_baby.train == "baby.task.train"


@pytest.mark.parametrize("option", options("optimizer"))
def test_optimizers_build(option):
    cfg = compose_config([f"optimizer={option}"])
    make = instantiate(cfg.optimizer, "optimizer")
    optimizer = make([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, torch.optim.Optimizer)
    assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr


def test_model_name_or_path_overrides_any_model():
    for option in options("model"):
        cfg = compose_config([f"model={option}", "model.name_or_path=/my/model"])
        assert cfg.model.name_or_path == "/my/model"


def test_default_is_minilm_on_synthetic_data_on_cpu():
    cfg = compose_config([])
    assert cfg.model.name == "minilm" and cfg.strategy._target_.endswith("ERM") and cfg.hardware.device == "cpu"
    domains = [d for role in ("source_domain", "target_domain") for _, d in domain_entries(cfg[role], role)]
    assert len(domains) == 3 and all(d.kind == "synthetic" for d in domains) and cfg.target_domain.shots == 0
