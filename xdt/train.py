"""``xdt train``: the one training loop, top to bottom.

seed -> accelerator -> tokenizer, data -> model, strategy -> optimizer, schedule -> prepare ->
(resume) -> step loop over endless source (and target) batches -> evaluate and checkpoint every
``eval_interval`` steps -> reload the selected checkpoint -> final evaluation -> files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from xdt import checkpoint, selection
from xdt.atomic import atomic_folder
from xdt.averaging import WeightAverage
from xdt.config import check_constructor_keys, check_default_targets, check_training_settings, instantiate, \
    target_class
from xdt.console import print_summary, training_progress
from xdt.data.batching import Collator, make_loader
from xdt.data.pipeline import RunData, load_run_data
from xdt.errors import XdtError
from xdt.evaluate import eval_loaders, evaluate, shot_batches, transfer_gaps
from xdt.hardware import make_accelerator, process_state
from xdt.metrics.log import MetricsLog
from xdt.pipeline import pretrain_first
from xdt.models import build_classifier, count_parameters, frozen_weights_rebuildable, load_tokenizer, \
    max_input_length, model_files_problem, save_model_files
from xdt.regularization import L2SP
from xdt.run_folder import opened_run
from xdt.runtime import StopSignals
from xdt.strategies.base import Strategy, StrategyContext

log = logging.getLogger(__name__)

ORACLE_WARNING = ("selection=target_oracle: target labels chose the checkpoint, so target scores are optimistic "
                  "and not a fair estimate of transfer")


@dataclass
class LoopState:
    """What the loop carries from step to step, saved in every checkpoint so a resume continues exactly."""

    step: int = 0
    best_step: int = 0
    best_value: float = -math.inf
    monitor_best: float = -math.inf  # early stopping always watches source validation
    evals_since_improvement: int = 0
    samples: int = 0
    train_seconds: float = 0.0  # forward, backward and optimizer steps only
    wall_seconds: float = 0.0  # everything, over all segments of a resumed run


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run the experiment ``cfg`` in ``run_dir`` (or continue ``cfg.resume``); return the final metrics."""
    with opened_run(cfg, run_dir, "train.log", check_train_config, before_config=pretraining_stage) as (cfg, run_dir):
        return run(cfg, run_dir)


def check_train_config(cfg: DictConfig) -> None:
    """Every check that needs no data or model, before the run's config.yaml is written."""
    check_training_settings(cfg)
    if not cfg.get("resume"):
        check_default_targets(cfg)
    check_constructor_keys(cfg.optimizer, "optimizer", passed_in_code=("params",))
    check_constructor_keys(cfg.strategy, "strategy", passed_in_code=("model", "context"))


def pretraining_stage(cfg: DictConfig, run_dir: Path) -> DictConfig:
    """A ``pretrain:`` section runs first (DAPT/TAPT), in its own folder inside this run (see xdt.pipeline)."""
    if cfg.get("pretrain") and not cfg.model.get("init_from"):
        return pretrain_first(cfg, run_dir)
    return cfg


class LossWindow:
    """Running sums of the loss terms since the last log line, kept on the device (no sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def add(self, loss: torch.Tensor, terms: dict[str, torch.Tensor]) -> None:
        for name, value in {"loss": loss, **terms}.items():
            # on the loss's device: a strategy may report a term as a Python number or a CPU tensor
            self.sums[name] = self.sums.get(name, 0) + torch.as_tensor(value).detach().float().to(loss.device)
        self.count += 1

    def flush(self, step: int, accelerator: Accelerator) -> dict[str, float]:
        """Mean of each term over steps and processes; raises if the loss is not finite (and nothing
        after it gets saved)."""
        names = list(self.sums)  # insertion order: the same in every process
        totals = torch.stack([self.sums[name] for name in names]) / max(self.count, 1) if names else None
        if totals is not None and accelerator.num_processes > 1:
            totals = accelerator.reduce(totals, reduction="mean")  # each process saw its share of the batch
        means = dict(zip(names, totals.tolist())) if totals is not None else {}
        self.sums, self.count = {}, 0
        if means and not math.isfinite(means["loss"]):
            raise XdtError(f"the loss became {means['loss']} by step {step}; lower optimizer.lr or check the data "
                           f"(checkpoints written before this point are kept)")
        return means


def param_groups(module: torch.nn.Module, weight_decay: float, lr: float = 0.0,
                 lr_scales: Mapping[torch.nn.Module, float] | None = None) -> list[dict]:
    """Decay matrices only: biases and LayerNorm weights (1-d) get no weight decay. Parameters of a module
    in ``lr_scales`` train at ``lr`` times its scale, in groups of their own after the two base groups
    (which always come first, so optimizer states stay comparable across strategies)."""
    scale_of = {id(param): float(scale) for sub, scale in (lr_scales or {}).items() for param in sub.parameters()}
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {(1.0, True): [], (1.0, False): []}
    for param in module.parameters():
        if param.requires_grad:
            groups.setdefault((scale_of.get(id(param), 1.0), param.ndim >= 2), []).append(param)
    return [{"params": params, "weight_decay": float(weight_decay) if decay else 0.0,
             **({"lr": float(lr) * scale} if scale != 1.0 else {})}
            for (scale, decay), params in groups.items()]


def lr_schedule(optimizer, cfg: DictConfig, max_steps: int):
    warmup = int(float(cfg.warmup_ratio) * max_steps)
    if cfg.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_linear_schedule_with_warmup(optimizer, warmup, max_steps)


def batches_forever(loader: DataLoader, sampler, accelerator: Accelerator, start_step: int) -> Iterator[dict]:
    """Endless batches, epoch after epoch, beginning where a run at ``start_step`` left off."""
    epoch, skip = divmod(start_step, len(loader))
    while True:
        sampler.use_epoch(epoch)
        yield from accelerator.skip_first_batches(loader, skip) if skip else loader
        epoch, skip = epoch + 1, 0


@dataclass
class Session:
    """The pieces of a run that the stages after set-up share."""

    cfg: DictConfig
    run_dir: Path
    accelerator: Accelerator
    strategy: torch.nn.Module  # unwrapped: checkpoints and evaluation use it directly
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    metrics_log: MetricsLog
    describe: dict  # strategy, model, seed, domains: stamped on every record
    started: float = dataclasses.field(default_factory=time.perf_counter)
    shots: dict | None = None  # target name -> its shot batch, for strategies that adapt to them when scoring
    averager: WeightAverage | None = None  # average_from: evaluations and checkpoints use the averaged weights

    def averaged(self):
        """A block in which the strategy holds the averaged weights (a no-op without averaging)."""
        return self.averager.applied() if self.averager else contextlib.nullcontext({})

    def wall_seconds(self, state: LoopState) -> float:
        return state.wall_seconds + time.perf_counter() - self.started

    def save(self, state: LoopState, best: bool) -> None:
        """Checkpoint the current step and move ``last`` (and ``best``) to it."""
        loop = {**dataclasses.asdict(state), "wall_seconds": self.wall_seconds(state)}
        training_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                          "loop": loop}
        with self.averaged() as training_weights:  # the checkpoint's model is the averaged one
            if self.averager:
                training_state["averaging"] = self.averager.state(training_weights)
            checkpoint.save_checkpoint(self.run_dir, state.step, self.strategy, training_state, self.accelerator,
                                       include_frozen=not frozen_weights_rebuildable(self.cfg.model))
        if self.accelerator.is_main_process:
            checkpoint.link(self.run_dir, "last", state.step)
            if best:
                checkpoint.link(self.run_dir, "best", state.step)
            checkpoint.prune(self.run_dir)


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """The body of :func:`train`, once the run folder is open."""
    if (run_dir / "done").exists():
        log.info("%s has already finished; its metrics are in metrics.json", run_dir)
        return finished_metrics(run_dir)
    started = time.perf_counter()
    accelerator = make_accelerator(cfg.hardware)
    for key in ("batch_size", "eval_batch_size"):
        if int(cfg[key]) % accelerator.num_processes:
            raise XdtError(f"{key}={cfg[key]} is the global batch and must split evenly over "
                           f"{accelerator.num_processes} processes")
    set_seed(int(cfg.seed))

    tokenizer = load_tokenizer(cfg.model)
    check_max_length(int(cfg.max_length), tokenizer)
    with accelerator.main_process_first():  # the first process fills the tokenisation cache
        data = load_run_data(cfg.source_domain, cfg.get("target_domain"), tokenizer, int(cfg.max_length),
                             cfg.cache_dir, max_examples=cfg.max_examples, seed=int(cfg.seed),
                             shots=OmegaConf.select(cfg, "target_domain.shots", default=0))
    if cfg.selection in selection.NEEDS_TARGETS and not data.targets:
        raise XdtError(f"selection={cfg.selection} reads target domains, but no target_domain is selected")
    # batch_size is the global batch: with N processes each step splits one batch N ways.
    batches_per_epoch = math.ceil(data.num_train_rows / int(cfg.batch_size))
    max_steps = int(cfg.max_steps) if cfg.max_steps else max(1, math.ceil(float(cfg.epochs) * batches_per_epoch))
    # Target shots are labeled training domains of their own (so domain-aware strategies count them as
    # sources), unless the strategy keeps them out of training to adapt to them before scoring (meta-learning).
    data.shots_in_training = not target_class(cfg.strategy, "strategy").adapts_to_shots
    context = StrategyContext.of(tokenizer, data.num_labeled_domains, len(data.stream_targets(cfg.unlabeled_targets)))
    strategy = build_strategy(cfg, tokenizer, data.num_labels, context, max_steps)
    collator = Collator(tokenizer.pad_token_id, pad_to_multiple_of=8 if accelerator.device.type == "cuda" else None)
    source_loader, target_loader = train_loaders(cfg, data, strategy, collator, accelerator)
    samplers = [loader.batch_sampler if loader else None for loader in (source_loader, target_loader)]

    make_optimizer = instantiate(cfg.optimizer, "optimizer")  # a partial: parameters are given here
    optimizer = make_optimizer(param_groups(strategy, cfg.optimizer.weight_decay, cfg.optimizer.lr, strategy.lr_scales()))
    strategy, optimizer, source_loader = accelerator.prepare(strategy, optimizer, source_loader)
    if target_loader is not None:
        target_loader = accelerator.prepare(target_loader)
    scheduler = lr_schedule(optimizer, cfg, max_steps)
    unwrapped = accelerator.unwrap_model(strategy)
    l2sp = L2SP(unwrapped, float(cfg.l2sp.alpha), float(cfg.l2sp.beta)) if cfg.l2sp.alpha or cfg.l2sp.beta else None
    average_from = cfg.get("average_from")
    averager = WeightAverage(unwrapped, int(float(average_from) * max_steps) + 1) if average_from is not None else None
    if accelerator.is_main_process:
        write_model_files(run_dir / "model", unwrapped.model, tokenizer, data.label_names, context)

    describe = {"strategy": unwrapped.name, "model": cfg.model.name, "peft": cfg.model.get("peft") or "none",
                "seed": int(cfg.seed), "shots": data.shots,
                "sources": [d.name for d in data.sources], "targets": [d.name for d in data.targets]}
    metrics_log = MetricsLog(run_dir / "metrics.jsonl", write=accelerator.is_main_process)
    shots = shot_batches(data, collator, accelerator.device) if data.target_shots and not data.shots_in_training else None
    session = Session(cfg, run_dir, accelerator, unwrapped, optimizer, scheduler, metrics_log, describe,
                      started=started, shots=shots, averager=averager)
    state = resume(session) if cfg.resume else LoopState()
    source_batches = batches_forever(source_loader, samplers[0], accelerator, state.step)
    target_batches = batches_forever(target_loader, samplers[1], accelerator, state.step) if target_loader else None
    during = eval_loaders(data.eval_sets(*tracked_splits(cfg)), int(cfg.eval_batch_size), collator, accelerator)
    log.info("training %s for %d steps (batch %d, %d source examples)%s", run_dir, max_steps, cfg.batch_size,
             len(source_loader.dataset), f", resuming at step {state.step}" if state.step else "")

    window = LossWindow()
    strategy.train()
    stop_early = False
    with training_progress(accelerator.is_main_process) as bar, StopSignals() as stop:
        task = bar.add_task("train", total=max_steps, completed=state.step, info="")
        while state.step < max_steps and not stop_early:
            step_started = time.perf_counter()
            source = next(source_batches)
            target = next(target_batches) if target_batches else None
            with accelerator.autocast():
                loss, terms = strategy(source, target, progress=state.step / max_steps)
                if l2sp is not None:
                    terms["l2sp"] = l2sp()
                    loss = loss + terms["l2sp"]
            accelerator.backward(loss)
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(strategy.parameters(), float(cfg.max_grad_norm))
            optimizer.step()
            unwrapped.model.after_optimizer_step(state.step)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            if averager is not None:
                averager.update(state.step)
            state.samples += len(source["labels"]) * accelerator.num_processes
            window.add(loss, terms)
            evaluating = state.step % int(cfg.eval_interval) == 0 or state.step == max_steps
            if state.step % int(cfg.log_interval) == 0 or evaluating:
                train_terms = {**window.flush(state.step, accelerator), "lr": scheduler.get_last_lr()[0]}
                bar.update(task, completed=state.step, info=f"loss {train_terms['loss']:.4f}")
                log.info("step %d/%d  %s", state.step, max_steps,
                         "  ".join(f"{k} {v:.4g}" for k, v in train_terms.items()))
            state.train_seconds += time.perf_counter() - step_started
            if evaluating:
                stop_early = evaluate_and_save(session, state, during, train_terms)
            if stop.received is not None:
                session.save(state, best=False)
                log.warning("%s received at step %d: checkpoint saved; continue with: xdt train resume=%s",
                            signal.Signals(stop.received).name, state.step, run_dir)
                raise SystemExit(128 + stop.received)
    if stop_early:
        log.info("early stopping at step %d: source validation has not improved for %d evaluations",
                 state.step, state.evals_since_improvement)
    return finish(session, state, data, collator, stopped_early=stop_early)


def finished_metrics(run_dir: Path) -> dict:
    """The metrics.json of a finished run (a sweep re-launch returns them without training again)."""
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise XdtError(f"{run_dir} is marked done but {path.name} cannot be read ({error}); remove {run_dir / 'done'} "
                       f"and continue it with resume={run_dir} to evaluate it again") from None


def check_max_length(max_length: int, tokenizer) -> None:
    """A limit that leaves no room for text is refused: the tokenizer would ignore it and run full length."""
    special = tokenizer.num_special_tokens_to_add()
    if max_length <= special:
        raise XdtError(f"max_length={max_length} leaves no room for text: the tokenizer adds {special} special "
                       f"tokens to every example; use max_length={special + 1} or more (128 is usual)")


def write_model_files(folder: Path, model, tokenizer, label_names: list[str], context: StrategyContext) -> None:
    """Write ``model/`` (what rebuilding the classifier needs, see xdt.models.save_model_files) atomically, or
    write it again when a kill or a full disk left it incomplete: a resumed run must end with a usable one."""
    problem = model_files_problem(folder) if folder.exists() else None
    if folder.exists() and problem is None:
        return
    if problem is not None:
        log.warning("%s; writing it again", problem)

    def fill(tmp: Path) -> None:
        save_model_files(model, tokenizer, label_names, tmp)
        context.save(tmp / "strategy_context.json")

    atomic_folder(folder, fill)


def build_strategy(cfg: DictConfig, tokenizer, num_labels: int, context: StrategyContext,
                   total_steps: int) -> Strategy:
    """The classifier (checked against ``max_length``) inside the configured strategy."""
    model = build_classifier(cfg.model, tokenizer, num_labels, total_steps=total_steps)
    limit = max_input_length(model.encoder.config)
    if limit is not None and int(cfg.max_length) > limit:
        raise XdtError(f"max_length={cfg.max_length} is longer than model {cfg.model.name} allows ({limit} tokens)")
    strategy = instantiate(cfg.strategy, "strategy", model=model, context=context)
    trainable, total = count_parameters(strategy)
    log.info("model %s, strategy %s: %d trainable of %d parameters", cfg.model.name, strategy.name, trainable, total)
    return strategy


def train_loaders(cfg: DictConfig, data: RunData, strategy: Strategy, collator: Collator,
                  accelerator: Accelerator) -> tuple[DataLoader, DataLoader | None]:
    """Labeled source batches, and unlabeled target batches if the strategy trains on them."""
    workers = int(cfg.hardware.get("dataloader_workers", 0))
    with accelerator.main_process_first():
        source = make_loader(data.source_train(), int(cfg.batch_size), collator, True, int(cfg.seed), workers)
        if strategy.uses_target_data and not strategy.target_stream:
            log.warning("strategy %s can adapt to unlabeled target text, but no target domain is selected: it trains "
                        "on source batches alone", strategy.name)
        if not strategy.target_stream:
            return source, None
        unlabeled = data.target_unlabeled(cfg.unlabeled_targets)
        target = make_loader(unlabeled, int(cfg.batch_size), collator, True, int(cfg.seed) + 1, workers)
    return source, target


def resume(session: Session) -> LoopState:
    """Restore the newest complete checkpoint; with none yet, start over from step 0."""
    run_dir, accelerator = session.run_dir, session.accelerator
    steps = checkpoint.checkpoint_steps(run_dir)
    if not steps:
        log.info("no checkpoint in %s yet: starting from step 0", run_dir)
        session.metrics_log.keep_until(0)
        return LoopState()
    folder = checkpoint.step_dir(run_dir, steps[-1])
    saved = checkpoint.load_checkpoint(folder, session.strategy, accelerator.process_index)
    if session.averager is not None:  # the loaded weights are the average; the training weights come back
        session.averager.restore(saved.get("averaging"))
    check_optimizer_settings(saved["optimizer"], session.optimizer, folder)
    try:
        session.optimizer.load_state_dict(saved["optimizer"])
    except ValueError as error:  # e.g. a checkpoint from before a strategy gave a head its own learning rate
        raise XdtError(f"{folder}: its optimizer state does not fit this run's parameter groups ({error}); "
                       f"another version of xdt wrote it, or the run's config.yaml was edited since: start a new run") from None
    session.scheduler.load_state_dict(saved["scheduler"])
    state = LoopState(**saved["loop"])
    if accelerator.is_main_process:
        # A kill between writing a checkpoint and moving the links leaves the links one step behind.
        checkpoint.link(run_dir, "last", state.step)
        checkpoint.link(run_dir, "best", state.best_step)
        checkpoint.prune(run_dir)
    session.metrics_log.keep_until(state.step)
    log.info("resuming %s from the checkpoint of step %d", run_dir, state.step)
    return state


def check_optimizer_settings(saved: dict, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """The checkpoint's optimizer must be the run's: loading AdamW's state into SGD (config.yaml edited since)
    would fail later, at the first step, on a missing setting such as ``momentum``."""
    def settings(groups: list[dict]) -> set[str]:
        return {key for group in groups for key in group if key != "params"}

    ours, theirs = settings(optimizer.param_groups), settings(saved["param_groups"])
    if ours != theirs:
        raise XdtError(f"{folder}: written by another optimizer (its settings: {', '.join(sorted(theirs))}; this run's: "
                       f"{', '.join(sorted(ours))}); the run's config.yaml was edited since: restore it or start a new run")


def tracked_splits(cfg: DictConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (source, target) splits scored at every evaluation.

    With ``track_targets`` (the default) every split is, so any selection criterion can be applied to
    the records afterwards; without it, only what early stopping and ``cfg.selection`` read.
    """
    if cfg.track_targets:
        return ("validation", "test"), ("validation", "test")
    return ("validation",), ("validation",) if cfg.selection in selection.NEEDS_TARGETS else ()


def evaluate_and_save(session: Session, state: LoopState, loaders: dict, train_terms: dict) -> bool:
    """Evaluate, update selection and early stopping, log the record, checkpoint. True = stop early."""
    cfg = session.cfg
    with session.averaged():
        results = evaluate(session.strategy, loaders, session.accelerator, session.shots)
    metric = cfg.selection_metric
    monitor = selection.score(results, "source_val", metric)  # early stopping never reads target labels
    select = selection.score(results, cfg.selection, metric)
    improved = cfg.selection == "last" or select > state.best_value
    if improved:
        state.best_value, state.best_step = select, state.step
    if monitor > state.monitor_best:
        state.monitor_best, state.evals_since_improvement = monitor, 0
    else:
        state.evals_since_improvement += 1
    record = {**session.describe, "step": state.step, "train": train_terms, "eval": results,
              "selection": {"criterion": cfg.selection, "metric": metric, "value": select},
              "elapsed_s": round(session.wall_seconds(state), 3)}
    session.metrics_log.append(record)  # before the checkpoint: a resume drops records newer than its step
    session.save(state, best=improved)
    log.info("eval step %d: source validation %s %.4f%s", state.step, metric, monitor,
             "" if cfg.selection == "source_val" else f", selection value {select:.4f}")
    return cfg.patience is not None and state.evals_since_improvement >= int(cfg.patience)


def recorded_scores(records: list[dict], step: int, names: list[str]) -> dict[str, dict] | None:
    """The scores of every set in ``names`` at ``step`` if training already computed them all: the same
    weights on the same data give the same numbers, so the final evaluation need not repeat them."""
    record = next((r for r in records if r["step"] == step), None)
    if record is None or not set(names) <= set(record["eval"]):
        return None
    return {name: record["eval"][name] for name in names}


def pretraining_time(init_from: Path) -> float | None:
    """Wall seconds of the ``xdt pretrain`` run the weights came from (None for other model folders)."""
    metrics = init_from / "metrics.json"
    if not metrics.is_file():
        return None
    return json.loads(metrics.read_text(encoding="utf-8")).get("wall_time_s")


def finish(session: Session, state: LoopState, data: RunData, collator: Collator, stopped_early: bool) -> dict:
    """Reload the selected checkpoint, evaluate every split of every domain, write metrics.json and done."""
    cfg, run_dir, accelerator = session.cfg, session.run_dir, session.accelerator
    chosen = state.step if cfg.selection == "last" else state.best_step
    metrics = recorded_scores(session.metrics_log.records, chosen, data.eval_set_names())
    if metrics is None:  # some sets were not scored during training: score them now, on the chosen weights
        checkpoint.load_weights(session.strategy, checkpoint.step_dir(run_dir, chosen))
        loaders = eval_loaders(data.eval_sets(), int(cfg.eval_batch_size), collator, accelerator)
        metrics = evaluate(session.strategy, loaders, accelerator, session.shots)
    wall = session.wall_seconds(state)
    trainable, total = count_parameters(session.strategy)
    result = {**session.describe, "label_names": data.label_names,
              "selection": {"criterion": cfg.selection, "metric": cfg.selection_metric,
                            "value": None if cfg.selection == "last" else state.best_value},
              "source_validation_best": state.monitor_best,
              "selected_step": chosen, "steps": state.step, "stopped_early": stopped_early,
              "wall_time_s": round(wall, 2), "train_time_s": round(state.train_seconds, 2),
              "train_samples_per_s": round(state.samples / max(state.train_seconds, 1e-9), 2),
              "parameters": {"trainable": trainable, "total": total},
              "metrics": metrics, "transfer_gap": transfer_gaps(metrics)}
    if cfg.model.get("init_from"):
        result["init_from"] = cfg.model.init_from
        result["pretrain_wall_time_s"] = pretraining_time(Path(cfg.model.init_from))
    if cfg.selection == "target_oracle":
        result["warning"] = ORACLE_WARNING
        log.warning(ORACLE_WARNING)
    if accelerator.is_main_process:
        checkpoint.atomic_write_json(run_dir / "metrics.json", result)
        checkpoint.atomic_write_text(run_dir / "done", f"finished at step {state.step}\n")
        print_summary(result, title=f"xdt train {run_dir}")
    log.info("done: %s (wall time %.1f s, %.1f train samples/s)", run_dir, wall, result["train_samples_per_s"])
    return result
