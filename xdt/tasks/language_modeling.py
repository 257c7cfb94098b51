"""Language modeling: masked LM for encoders, causal LM for decoders, on the source domains' text.

What ``xdt pretrain`` runs (``xdt train task=language_modeling`` is the same run): from scratch (random-init
models) or continued from pretrained weights (domain- and task-adaptive pretraining, DAPT/TAPT: Gururangan et
al., "Don't Stop Pretraining", ACL 2020). Labels are never read. Every source and target domain's validation
and test text is scored (perplexity, the accuracy of the predicted tokens), once before training too, so the
table shows what training changed. The checkpoint with the lowest mean source validation loss is saved in
Hugging Face format under ``pretrained/``, where ``xdt train model.init_from=<run folder>`` finds it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import datasets
from accelerate import Accelerator
from datasets import Dataset, concatenate_datasets
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from xdt import checkpoint
from xdt.atomic import atomic_folder
from xdt.config import instantiate
from xdt.console import print_lm_summary
from xdt.data.batching import Collator, make_loader, padding_multiple
from xdt.data.domains import SPLITS, RawDomain, load_group
from xdt.data.tokenize import tokenize
from xdt.errors import XdtError
from xdt.lm import OBJECTIVES, LanguageModel, Masker, build_language_model, evaluate_lm, resolve_objective
from xdt.models import PRETRAINED, check_max_length, count_parameters, encoder_config, load_tokenizer
from xdt.tasks.base import Scores, Setup, Task, training_steps

log = logging.getLogger(__name__)

TEXT_SPLITS = ("unlabeled", *SPLITS)


class LanguageModeling(Task):
    name = "language_modeling"
    log_file = "pretrain.log"
    unit = "tokens"
    evaluate_at_start = True

    def __init__(self, objective: str = "auto", mlm_probability: float = 0.15,
                 text_splits: tuple[str, ...] = ("unlabeled",)):
        if objective not in OBJECTIVES:
            raise XdtError(f"task.objective={objective!r} is not valid: choose {', '.join(OBJECTIVES)}")
        self.objective, self.mlm_probability, self.text_splits = objective, float(mlm_probability), list(text_splits)
        self.masker: Masker | None = None
        self.tokenizer = None

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        if cfg.get("selection", "source_val") != "source_val":
            raise XdtError(f"selection={cfg.selection}: task=language_modeling keeps the checkpoint with the lowest "
                           f"source validation loss (selection=source_val)")
        if (cfg.model.get("peft") or "none") != "none":
            raise XdtError(f"model.peft={cfg.model.peft}: task=language_modeling trains the whole model; "
                           f"pass model.peft=none")
        if cfg.get("pretrain"):
            raise XdtError("pretrain: a pretraining stage runs before fine-tuning; task=language_modeling is "
                           "pretraining itself, so remove the pretrain section")

    def setup(self, cfg: DictConfig, run_dir: Path, accelerator: Accelerator) -> Setup:
        tokenizer = load_tokenizer(cfg.model)
        check_max_length(int(cfg.max_length), tokenizer)
        objective = resolve_objective(self.objective, encoder_config(cfg.model, tokenizer).model_type)
        self.masker = Masker(tokenizer, self.mlm_probability) if objective == "mlm" else None
        self.tokenizer = tokenizer

        datasets.disable_progress_bars()
        sources = load_group(cfg.source_domain, "source_domain", cfg.max_examples)
        targets = load_group(cfg.get("target_domain"), "target_domain", cfg.max_examples)
        if not sources:
            raise XdtError("task=language_modeling needs source_domain=<domain whose text to train on>")
        length = int(cfg.max_length)
        with accelerator.main_process_first():
            corpus = concatenate_datasets([tokenize(d, tokenizer, length, cfg.cache_dir)
                                           for d in training_text(sources, self.text_splits)])
            held_out = {name: tokenize(d, tokenizer, length, cfg.cache_dir)
                        for name, d in held_out_sets(sources, targets).items()}
        collator = Collator(tokenizer.pad_token_id, padding_multiple(cfg.hardware, accelerator.device),
                            int(cfg.max_length))
        loader = make_loader(corpus, int(cfg.batch_size), collator, True, int(cfg.seed),
                             int(cfg.hardware.get("dataloader_workers", 0)))
        max_steps = training_steps(cfg, len(corpus))

        model = LanguageModel(build_language_model(cfg.model, tokenizer, objective), objective, self.masker)
        strategy = instantiate(cfg.strategy, "strategy", model=model)
        trainable, total = count_parameters(strategy)
        log.info("model %s, %s objective: %d trainable of %d parameters; %d training texts", cfg.model.name, objective,
                 trainable, total, len(corpus))
        describe = {"kind": "pretrain", "objective": objective, "model": cfg.model.name, "seed": int(cfg.seed),
                    "sources": [d.name for d in sources], "targets": [d.name for d in targets]}
        return Setup(strategy, loader, None, held_out, collator, max_steps, describe)

    def evaluate(self, strategy, loaders: dict[str, DataLoader], accelerator: Accelerator) -> Scores:
        return evaluate_lm(strategy.model, loaders, accelerator, self.masker)

    def scores(self, results: Scores) -> tuple[float, float]:
        value = -source_validation_loss(results)  # the lowest loss is best
        return value, value

    def selection_record(self, value: float | None) -> dict:
        return {"criterion": "source_val", "metric": "loss", "value": None if value is None else -value}

    def evaluation_line(self, results: Scores) -> str:
        loss = source_validation_loss(results)
        return f"source validation loss {loss:.4f} (perplexity {math.exp(loss):.2f})"

    def count(self, batch: dict) -> int:
        return int(batch["attention_mask"].sum())  # tokens, not texts

    def finish(self, strategy, chosen_step: int, records: list[dict], run_dir: Path,
               accelerator: Accelerator) -> dict:
        """The chosen checkpoint's scores, and its model saved under ``pretrained/`` in Hugging Face format."""
        checkpoint.load_weights(strategy, checkpoint.step_dir(run_dir, chosen_step))
        start = next((r["eval"] for r in records if r["step"] == 0), None)
        chosen = next(r["eval"] for r in records if r["step"] == chosen_step)
        if accelerator.is_main_process:
            def fill(folder: Path) -> None:
                strategy.model.lm.save_pretrained(folder)
                self.tokenizer.save_pretrained(folder)

            atomic_folder(run_dir / PRETRAINED, fill)  # never half a model where model.init_from looks
        log.info("fine-tune from it with: xdt train model.init_from=%s", run_dir)
        return {"metrics": chosen, "start_metrics": start, "pretrained": str(run_dir / PRETRAINED)}

    def print_summary(self, result: dict, run_dir: Path) -> None:
        print_lm_summary(result, title=f"xdt pretrain {run_dir}")


def training_text(domains: list[RawDomain], splits: list[str]) -> list[Dataset]:
    """The text of ``splits`` of every domain (labels dropped)."""
    unknown = [s for s in splits if s not in TEXT_SPLITS]
    if unknown or not splits:
        raise XdtError(f"task.text_splits={list(splits)}: choose one or more of {', '.join(TEXT_SPLITS)}")
    return [getattr(d, split).select_columns(["text"]) for d in domains for split in splits]


def held_out_sets(sources: list[RawDomain], targets: list[RawDomain]) -> dict[str, Dataset]:
    """Validation and test text of every domain, named like classification's sets (``target/fdu_MR/test``)."""
    roles = [("source", d) for d in sources] + [("target", d) for d in targets]
    return {f"{role}/{d.name}/{s}": getattr(d, s).select_columns(["text"]) for role, d in roles for s in SPLITS[1:]}


def source_validation_loss(results: Scores) -> float:
    """Mean over source domains of the validation loss: what checkpoint selection and early stopping watch."""
    losses = [m["loss"] for name, m in results.items() if name.startswith("source/") and name.endswith("/validation")]
    return sum(losses) / len(losses)
