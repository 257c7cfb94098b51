"""``xdt pretrain``: language-model training on the source domains' text, top to bottom.

The same stages, run folders, checkpoints and resume rules as ``xdt train`` (it reuses that loop's
pieces): seed -> accelerator -> tokenizer, text -> language model -> optimizer, schedule -> prepare ->
evaluate the starting point -> step loop (mask, forward, backward, step) -> evaluate and checkpoint every
``eval_interval`` steps -> the checkpoint with the lowest source validation loss, saved in Hugging Face
format under ``pretrained/``, where ``xdt train model.init_from=<run folder>`` finds it.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import datasets
from accelerate.utils import set_seed
from datasets import Dataset, concatenate_datasets
from omegaconf import DictConfig

from xdt import checkpoint
from xdt.atomic import atomic_folder
from xdt.config import check_constructor_keys, check_default_targets, check_training_settings, instantiate
from xdt.console import print_lm_summary, training_progress
from xdt.data.batching import Collator, make_loader
from xdt.data.domains import SPLITS, RawDomain, load_group
from xdt.data.tokenize import tokenize
from xdt.errors import XdtError
from xdt.evaluate import eval_loaders
from xdt.hardware import make_accelerator
from xdt.lm import LanguageModel, Masker, build_language_model, evaluate_lm, lm_inputs, resolve_objective
from xdt.metrics.log import MetricsLog
from xdt.models import PRETRAINED, count_parameters, encoder_config, load_tokenizer
from xdt.runtime import StopSignals
from xdt.run_folder import opened_run
from xdt.train import LoopState, LossWindow, Session, batches_forever, check_max_length, finished_metrics, \
    lr_schedule, param_groups, resume

log = logging.getLogger(__name__)

TEXT_SPLITS = ("unlabeled", *SPLITS)


def pretrain(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Pretrain as ``cfg`` says in ``run_dir`` (or continue ``cfg.resume``); return the final metrics."""
    with opened_run(cfg, run_dir, "pretrain.log", check_pretrain_config) as (cfg, run_dir):
        return run(cfg, run_dir)


def check_pretrain_config(cfg: DictConfig) -> None:
    """Every check that needs no data or model, before the run's config.yaml is written."""
    check_training_settings(cfg)
    if not cfg.get("resume"):
        check_default_targets(cfg)
    check_constructor_keys(cfg.optimizer, "optimizer", passed_in_code=("params",))


def text_only(data: Dataset) -> Dataset:
    return data.select_columns(["text"])


def training_text(domains: list[RawDomain], splits: list[str]) -> list[Dataset]:
    """The text of ``splits`` of every domain (labels dropped)."""
    unknown = [s for s in splits if s not in TEXT_SPLITS]
    if unknown or not splits:
        raise XdtError(f"text_splits={list(splits)}: choose one or more of {', '.join(TEXT_SPLITS)}")
    return [text_only(getattr(d, split)) for d in domains for split in splits]


def held_out_sets(sources: list[RawDomain], targets: list[RawDomain]) -> dict[str, Dataset]:
    """Validation and test text of every domain, named like ``xdt train``'s sets (``target/fdu_MR/test``)."""
    sets = {f"source/{d.name}/{s}": text_only(getattr(d, s)) for d in sources for s in SPLITS[1:]}
    sets.update({f"target/{d.name}/{s}": text_only(getattr(d, s)) for d in targets for s in SPLITS[1:]})
    return sets


def source_validation_loss(results: dict[str, dict]) -> float:
    """Mean over source domains of the validation loss: what checkpoint selection and early stopping watch."""
    losses = [m["loss"] for name, m in results.items() if name.startswith("source/") and name.endswith("/validation")]
    return sum(losses) / len(losses)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """The body of :func:`pretrain`, once the run folder is open."""
    if (run_dir / "done").exists():
        log.info("%s has already finished; its metrics are in metrics.json", run_dir)
        return finished_metrics(run_dir)
    started = time.perf_counter()
    accelerator = make_accelerator(cfg.hardware)
    set_seed(int(cfg.seed))
    tokenizer = load_tokenizer(cfg.model)
    check_max_length(int(cfg.max_length), tokenizer)
    objective = resolve_objective(cfg.objective, encoder_config(cfg.model, tokenizer).model_type)
    masker = Masker(tokenizer, float(cfg.mlm_probability)) if objective == "mlm" else None

    datasets.disable_progress_bars()
    sources = load_group(cfg.source_domain, "source_domain", cfg.max_examples)
    targets = load_group(cfg.get("target_domain"), "target_domain", cfg.max_examples)
    if not sources:
        raise XdtError("xdt pretrain needs source_domain=<domain whose text to train on>")
    length = int(cfg.max_length)
    with accelerator.main_process_first():
        corpus = concatenate_datasets([tokenize(d, tokenizer, length, cfg.cache_dir)
                                       for d in training_text(sources, list(cfg.text_splits))])
        held_out = {name: tokenize(d, tokenizer, length, cfg.cache_dir)
                    for name, d in held_out_sets(sources, targets).items()}
    collator = Collator(tokenizer.pad_token_id, pad_to_multiple_of=8 if accelerator.device.type == "cuda" else None)
    loader = make_loader(corpus, int(cfg.batch_size), collator, True, int(cfg.seed),
                         int(cfg.hardware.get("dataloader_workers", 0)))
    batches_per_epoch = math.ceil(len(corpus) / int(cfg.batch_size))
    max_steps = int(cfg.max_steps) if cfg.max_steps else max(1, math.ceil(float(cfg.epochs) * batches_per_epoch))

    model = LanguageModel(build_language_model(cfg.model, tokenizer, objective), objective)
    trainable, total = count_parameters(model)
    log.info("model %s, %s objective: %d trainable of %d parameters; %d training texts", cfg.model.name, objective,
             trainable, total, len(corpus))
    optimizer = instantiate(cfg.optimizer, "optimizer")(param_groups(model, cfg.optimizer.weight_decay))
    sampler = loader.batch_sampler
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = lr_schedule(optimizer, cfg, max_steps)
    unwrapped = accelerator.unwrap_model(model)

    describe = {"kind": "pretrain", "objective": objective, "model": cfg.model.name, "seed": int(cfg.seed),
                "sources": [d.name for d in sources], "targets": [d.name for d in targets]}
    metrics_log = MetricsLog(run_dir / "metrics.jsonl", write=accelerator.is_main_process)
    session = Session(cfg, run_dir, accelerator, unwrapped, optimizer, scheduler, metrics_log, describe,
                      started=started)
    evaluators = eval_loaders(held_out, int(cfg.eval_batch_size), collator, accelerator)
    state = resume(session) if cfg.resume else LoopState()
    if state.step == 0 and not metrics_log.records:  # the starting point: what pretraining is measured against
        evaluate_and_save(session, state, evaluators, masker, {}, checkpoint_too=False)
    batches = batches_forever(loader, sampler, accelerator, state.step)
    log.info("pretraining %s for %d steps (batch %d)%s", run_dir, max_steps, cfg.batch_size,
             f", resuming at step {state.step}" if state.step else "")

    window = LossWindow()
    model.train()
    stop_early = False
    with training_progress(accelerator.is_main_process) as bar, StopSignals() as stop:
        task = bar.add_task("pretrain", total=max_steps, completed=state.step, info="")
        while state.step < max_steps and not stop_early:
            step_started = time.perf_counter()
            batch = next(batches)
            input_ids, attention_mask, labels = lm_inputs(batch, masker)
            with accelerator.autocast():
                loss = model(input_ids, attention_mask, labels)
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), float(cfg.max_grad_norm))
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            state.samples += int(attention_mask.sum()) * accelerator.num_processes  # tokens, not texts
            window.add(loss, {})
            evaluating = state.step % int(cfg.eval_interval) == 0 or state.step == max_steps
            if state.step % int(cfg.log_interval) == 0 or evaluating:
                terms = {**window.flush(state.step, accelerator), "lr": scheduler.get_last_lr()[0]}
                bar.update(task, completed=state.step, info=f"loss {terms['loss']:.4f}")
                log.info("step %d/%d  %s", state.step, max_steps, "  ".join(f"{k} {v:.4g}" for k, v in terms.items()))
            state.train_seconds += time.perf_counter() - step_started
            if evaluating:
                stop_early = evaluate_and_save(session, state, evaluators, masker, terms)
            if stop.received is not None:
                session.save(state, best=False)
                log.warning("%s received at step %d: checkpoint saved; continue with: xdt pretrain resume=%s",
                            signal.Signals(stop.received).name, state.step, run_dir)
                raise SystemExit(128 + stop.received)
    return finish(session, state, tokenizer, stop_early)


def evaluate_and_save(session: Session, state: LoopState, loaders: dict, masker: Masker | None, train_terms: dict,
                      checkpoint_too: bool = True) -> bool:
    """Evaluate every held-out set, log the record, checkpoint; the lowest source validation loss is best.
    True = stop early."""
    cfg = session.cfg
    results = evaluate_lm(session.strategy, loaders, session.accelerator, masker)
    value = -source_validation_loss(results)
    improved = value > state.best_value and checkpoint_too
    if improved:
        state.best_value, state.best_step = value, state.step
        state.monitor_best, state.evals_since_improvement = value, 0
    elif checkpoint_too:
        state.evals_since_improvement += 1
    session.metrics_log.append({**session.describe, "step": state.step, "train": train_terms, "eval": results,
                                "elapsed_s": round(session.wall_seconds(state), 3)})
    if checkpoint_too:
        session.save(state, best=improved)
    log.info("eval step %d: source validation loss %.4f (perplexity %.2f)", state.step, -value, math.exp(-value))
    return cfg.patience is not None and state.evals_since_improvement >= int(cfg.patience)


def finish(session: Session, state: LoopState, tokenizer, stopped_early: bool) -> dict:
    """Save the best checkpoint's model under ``pretrained/`` and write metrics.json and done."""
    cfg, run_dir, accelerator = session.cfg, session.run_dir, session.accelerator
    checkpoint.load_weights(session.strategy, checkpoint.step_dir(run_dir, state.best_step))
    records = session.metrics_log.records
    start = next((r["eval"] for r in records if r["step"] == 0), None)
    chosen = next(r["eval"] for r in records if r["step"] == state.best_step)
    wall = session.wall_seconds(state)
    result = {**session.describe, "selected_step": state.best_step, "steps": state.step,
              "stopped_early": stopped_early, "selection": {"criterion": "source_val", "metric": "loss", "value": -state.best_value},
              "wall_time_s": round(wall, 2), "train_time_s": round(state.train_seconds, 2),
              "train_tokens_per_s": round(state.samples / max(state.train_seconds, 1e-9), 1),
              "parameters": dict(zip(("trainable", "total"), count_parameters(session.strategy))),
              "metrics": chosen, "start_metrics": start, "pretrained": str(run_dir / PRETRAINED)}
    if accelerator.is_main_process:
        def fill(folder: Path) -> None:
            session.strategy.lm.save_pretrained(folder)
            tokenizer.save_pretrained(folder)

        atomic_folder(run_dir / PRETRAINED, fill)  # never half a model where model.init_from looks
        checkpoint.atomic_write_json(run_dir / "metrics.json", result)
        checkpoint.atomic_write_text(run_dir / "done", f"finished at step {state.step}\n")
        print_lm_summary(result, title=f"xdt pretrain {run_dir}")
    log.info("done: %s (wall time %.1f s); fine-tune from it with: xdt train model.init_from=%s", run_dir, wall,
             run_dir)
    return result
