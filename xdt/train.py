"""``xdt train`` and ``xdt pretrain``: one engine run, or several when the config has stages (a ``pretrain:``
section; ``task.train_on=source_then_target`` for token classification).

Domain- and task-adaptive pretraining (DAPT, TAPT; Gururangan et al., "Don't Stop Pretraining", ACL 2020)
continue a language model's pretraining on the text of the domain it must work on, then fine-tune as
usual. With ``pretrain: {text_from: target, max_steps: 100}`` (see ``configs/experiment/tapt_*.yaml``),
``xdt train`` first runs the language-modeling task in ``<run folder>/pretrain`` (its own run folder, with its
own config, checkpoints, metrics and resume) on the unlabeled text of the run's target domains, then
fine-tunes from it: ``model.init_from`` in the fine-tuning run's config.yaml records where its weights
came from, and metrics.json adds the pretraining time so costs are compared honestly.

The two stages are two runs of the one engine, composed here, above it: the engine knows nothing of stages.
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from xdt import engine
from xdt.data.shots import SHOTS_KEY
from xdt.errors import XdtError

log = logging.getLogger(__name__)

PRETRAIN_DIR = "pretrain"
TEXT_FROM = ("target", "source", "both")
CONFIGS = Path(__file__).parent / "configs"
# What the pretraining stage takes over from the fine-tuning run unless the pretrain section sets it.
SHARED_KEYS = ("seed", "batch_size", "eval_batch_size", "max_length", "max_examples", "log_interval", "data_dir",
               "cache_dir", "optimizer", "hardware", "accumulate_grad_batches", "logger")


SOURCE_DIR = "source"


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run ``cfg`` in ``run_dir`` (or continue ``cfg.resume``), after its stages if it has any; return the
    final metrics."""
    return engine.train(cfg, run_dir, before_config=stages)


def stages(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """The runs a new run starts from, in order, each in its own folder inside the run: a language-model stage
    (``pretrain:``), then a source stage (``task.train_on=source_then_target``); the returned config starts from
    the last stage's weights (``model.init_from``)."""
    return source_stage(pretraining_stage(cfg, run_dir), run_dir)


def source_stage(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """Pre-train then fine-tune (CrossNER's main baseline): with ``task.train_on=source_then_target`` the run
    first trains on the source domains in ``<run>/source`` (its settings changed by ``task.source_stage``) and
    exports that encoder; the run itself then fine-tunes it on the targets' train splits with a new head."""
    if OmegaConf.select(cfg, "task.train_on") != "source_then_target":
        return cfg
    stage = Path(run_dir) / SOURCE_DIR
    first = OmegaConf.merge(cfg, {"task": {"train_on": "source", "export_encoder": True, "source_stage": {}},
                                  "pretrain": None}, cfg.task.get("source_stage") or {})
    log.info("training on the source in %s, then fine-tuning on the target in %s", stage, run_dir)
    return run_stage(cfg, first, stage, run_dir)


def run_stage(cfg: DictConfig, stage_cfg: DictConfig, stage: Path, run_dir: Path) -> DictConfig:
    """Train (or finish, if it was cut off: a re-launched sweep job) a stage of ``run_dir`` in its own folder
    ``stage``, and return ``cfg`` starting from the stage's weights."""
    if (stage / "config.yaml").is_file():
        stage_cfg.resume = str(stage)
    engine.train(stage_cfg, stage, stage_of=Path(run_dir))
    cfg = cfg.copy()
    cfg.model.init_from = str(stage.resolve())
    return cfg


def pretraining_stage(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """Run (or finish) the ``pretrain:`` stage of a new run and return its config starting from the stage's
    weights; a config without the section, or one that already starts from saved weights, is returned as is."""
    if not cfg.get("pretrain") or cfg.model.get("init_from"):
        return cfg
    stage = Path(run_dir) / PRETRAIN_DIR
    pre = pretraining_config(cfg)
    log.info("pretraining in %s, then fine-tuning in %s", stage, run_dir)
    return run_stage(cfg, pre, stage, run_dir)


def _domains(node: DictConfig | None) -> dict:
    return {k: v for k, v in (OmegaConf.to_container(node, resolve=True) if node else {}).items() if k != SHOTS_KEY}


def _settings(path: str) -> dict:
    """The settings of a shipped config file (``train``, ``task/language_modeling``), without its defaults list."""
    settings = OmegaConf.to_container(OmegaConf.load(CONFIGS / f"{path}.yaml"), resolve=False)
    settings.pop("defaults", None)
    return settings


def pretraining_config(cfg: DictConfig) -> DictConfig:
    """The language-modeling config of a fine-tuning run's ``pretrain`` section: what ``xdt pretrain`` would
    compose, with the fine-tuning run's model, data and hardware settings (``SHARED_KEYS``) unless the section
    sets them. ``text_from`` picks whose unlabeled text is trained on (the targets': TAPT on the target task;
    the sources' or both); the other domains of the run are the held-out domains its perplexity is measured on."""
    settings = OmegaConf.to_container(cfg.pretrain, resolve=True)
    text_from = settings.pop("text_from", "target")
    if text_from not in TEXT_FROM:
        raise XdtError(f"pretrain.text_from={text_from!r} is not valid: choose {', '.join(TEXT_FROM)}")
    sources, targets = _domains(cfg.source_domain), _domains(cfg.get("target_domain"))
    if text_from != "source" and not targets:
        raise XdtError(f"pretrain.text_from={text_from} reads the target domains' text, but no target_domain is selected")
    corpus = {"target": targets, "source": sources, "both": {**sources, **targets}}[text_from]
    held_out = {k: v for k, v in {**sources, **targets}.items() if k not in corpus}
    # What xdt pretrain composes: train.yaml's settings, the language-modeling task's (a global package), erm.
    base = OmegaConf.merge(_settings("train"), _settings("task/language_modeling"),
                           {"strategy": _settings("strategy/erm")})
    # Keys filled from config groups (optimizer, hardware, logger) are not in the files read above, but a
    # section may set them like any shared setting.
    unknown = sorted(key for key in settings if key not in base and key not in SHARED_KEYS)
    if unknown:
        raise XdtError(f"pretrain.{unknown[0]} is not a setting of xdt pretrain (settings such as objective belong to "
                       f"the task: pretrain.task.objective)")
    shared = {key: OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
              for key in SHARED_KEYS}
    model = {**OmegaConf.to_container(cfg.model, resolve=True), "peft": "none"}  # the whole model pretrains
    return OmegaConf.merge(base, shared, {"model": model, "source_domain": corpus, "target_domain": held_out},
                           settings)
