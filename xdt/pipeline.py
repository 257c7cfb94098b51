"""Pretrain, then fine-tune, as one command: a ``pretrain:`` section in a ``xdt train`` config.

Domain- and task-adaptive pretraining (DAPT, TAPT; Gururangan et al., "Don't Stop Pretraining", ACL 2020)
continue a language model's pretraining on the text of the domain it must work on, then fine-tune as
usual. With ``pretrain: {text_from: target, max_steps: 100}`` (see ``configs/experiment/tapt_*.yaml``),
``xdt train`` first runs ``xdt pretrain`` in ``<run folder>/pretrain`` (its own run folder, with its own
config, checkpoints, metrics and resume) on the unlabeled text of the run's target domains, then
fine-tunes from it: ``model.init_from`` in the fine-tuning run's config.yaml records where its weights
came from, and metrics.json adds the pretraining time so costs are compared honestly.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from xdt.data.shots import SHOTS_KEY
from xdt.errors import XdtError

log = logging.getLogger(__name__)

PRETRAIN_DIR = "pretrain"
TEXT_FROM = ("target", "source", "both")
PRETRAIN_CONFIG = Path(__file__).parent / "configs" / "pretrain.yaml"
# What the pretraining stage takes over from the fine-tuning run unless the pretrain section sets it.
SHARED_KEYS = ("seed", "batch_size", "eval_batch_size", "max_length", "max_examples", "log_interval", "data_dir",
               "cache_dir", "optimizer", "hardware")


def _domains(node: DictConfig | None) -> dict:
    return {k: v for k, v in (OmegaConf.to_container(node, resolve=True) if node else {}).items() if k != SHOTS_KEY}


def pretrain_config(cfg: DictConfig) -> DictConfig:
    """The ``xdt pretrain`` config of a fine-tuning run's ``pretrain`` section.

    ``text_from`` picks whose unlabeled text is trained on (the targets': TAPT on the target task; the
    sources' or both); the other domains of the run are the held-out domains its perplexity is measured on.
    """
    settings = OmegaConf.to_container(cfg.pretrain, resolve=True)
    text_from = settings.pop("text_from", "target")
    if text_from not in TEXT_FROM:
        raise XdtError(f"pretrain.text_from={text_from!r} is not valid: choose {', '.join(TEXT_FROM)}")
    sources, targets = _domains(cfg.source_domain), _domains(cfg.get("target_domain"))
    if text_from != "source" and not targets:
        raise XdtError(f"pretrain.text_from={text_from} reads the target domains' text, but no target_domain is selected")
    corpus = {"target": targets, "source": sources, "both": {**sources, **targets}}[text_from]
    held_out = {k: v for k, v in {**sources, **targets}.items() if k not in corpus}
    base = OmegaConf.load(PRETRAIN_CONFIG)
    base.pop("defaults")
    shared = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
              for key in SHARED_KEYS}
    model = {**OmegaConf.to_container(cfg.model, resolve=True), "peft": "none"}  # the whole model pretrains
    return OmegaConf.merge(base, shared, {"model": model, "source_domain": corpus, "target_domain": held_out},
                           settings)


def pretrain_first(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """Run (or finish) the pretraining stage of ``cfg`` and return ``cfg`` starting from its weights."""
    from xdt.pretrain import pretrain

    stage = Path(run_dir) / PRETRAIN_DIR
    pre = pretrain_config(cfg)
    if (stage / "config.yaml").is_file():  # cut off earlier (a re-launched sweep job): continue it
        pre.resume = str(stage)
    log.info("pipeline: pretraining in %s, then fine-tuning in %s", stage, run_dir)
    pretrain(pre, stage)
    cfg = cfg.copy()
    cfg.model.init_from = str(stage.resolve())
    return cfg
