"""The one training loop, for every task, top to bottom (after nanoGPT's ``train.py`` and Accelerate's examples).

seed -> accelerator -> the task's data and model, inside the configured strategy -> optimizer, schedule ->
``prepare`` -> hooks (L2-SP, AdaLoRA, weight averaging, early stopping; chosen by the config) -> (resume) ->
step loop over endless source (and target) batches -> evaluate and checkpoint every ``eval_interval`` steps
-> the selected checkpoint's final metrics -> ``metrics.json`` and ``done``. Trackers (TensorBoard, MLflow, W&B;
the ``logger`` group) are sent the same records at the same points (:mod:`xdt.tracking`).

Who owns what: the engine owns what is the same for every task (devices, precision and data parallelism
through Accelerate, gradient accumulation, clipping, the schedule, checkpoints, exact resume, stop signals,
the progress bar and the metrics files). A task (:mod:`xdt.tasks`) owns its data, model and metrics; a
strategy (:mod:`xdt.strategies`) owns the training loss; hooks (:mod:`xdt.hooks`) own the features that
cut across them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from xdt import checkpoint, efficiency, provenance
from xdt.atomic import atomic_write_json, atomic_write_text
from xdt.compiling import check_compile, compile_encoder, compiled_graphs
from xdt.config import check_constructor_keys, check_default_targets, check_training_settings, instantiate, positive, \
    target_class
from xdt.console import console, training_progress
from xdt.cpu_dropout import use_fast_dropout
from xdt.data.batching import COMPILE_BUCKET, eval_loaders
from xdt.errors import XdtError
from xdt.hardware import make_accelerator
from xdt.hooks import Hooks, build_hooks
from xdt.metrics.log import MetricsLog
from xdt.models import count_parameters, frozen_weights_rebuildable
from xdt.run_files import DONE
from xdt.run_folder import opened_run
from xdt.runtime import StopSignals
from xdt.tasks.base import Setup, Task
from xdt.tracking import Tracking, check_logger

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What the loop carries from step to step, saved in every checkpoint so a resume continues exactly."""

    step: int = 0
    best_step: int = 0
    best_value: float = -math.inf
    monitor_best: float = -math.inf  # early stopping always watches source validation
    evals_since_improvement: int = 0
    samples: int = 0  # what the task counts: examples, or tokens
    useful_tokens: float = 0.0  # real (non-padding) tokens of the batches trained on (xdt.efficiency)
    all_tokens: float = 0.0  # the same with padding
    squared_lengths: float = 0.0  # the sum of their sequences' squared lengths (attention FLOPs)
    head_positions: float = 0.0  # positions a masked-LM head ran on (efficiency.count_head_positions)
    train_seconds: float = 0.0  # forward, backward and optimizer steps only
    compile_seconds: float = 0.0  # steps that compiled a graph (hardware.compile), kept out of train_seconds
    wall_seconds: float = 0.0  # everything, over all segments of a resumed run


def train(cfg: DictConfig, run_dir: str | Path,
          before_config: Callable[[DictConfig, Path], DictConfig] | None = None, stage_of: Path | None = None) -> dict:
    """Run ``cfg`` in ``run_dir`` (or continue ``cfg.resume``) and return its final metrics.

    ``before_config`` may change a new run's config before its config.yaml is written (xdt.train runs the
    pretraining stage there); ``stage_of`` is the run a stage belongs to (its trackers name it after both)."""
    log_file = target_class(cfg.task, "task").log_file
    with opened_run(cfg, run_dir, log_file, check_config, before_config) as (cfg, run_dir):
        return run(cfg, run_dir, stage_of)


def check_config(cfg: DictConfig) -> None:
    """Every check that needs no data or model, before the run's config.yaml is written."""
    check_training_settings(cfg)
    if not cfg.get("resume"):
        check_default_targets(cfg)
    accumulate = positive(cfg, "accumulate_grad_batches")
    if int(cfg.batch_size) % accumulate:
        raise XdtError(f"batch_size={cfg.batch_size} must split evenly into accumulate_grad_batches={accumulate} "
                       f"micro-batches")
    check_constructor_keys(cfg.task, "task")
    check_constructor_keys(cfg.optimizer, "optimizer", passed_in_code=("params",))
    check_constructor_keys(cfg.strategy, "strategy", passed_in_code=("model", "context"))
    task, strategy = target_class(cfg.task, "task"), target_class(cfg.strategy, "strategy")
    if strategy.tasks is not None and task.name not in strategy.tasks:
        name = str(cfg.strategy._target_).rsplit(".", 2)[-2]  # xdt.strategies.<module>.<Class>: the config's name
        raise XdtError(f"strategy={name} cannot serve task={task.name} (it serves {', '.join(strategy.tasks)}); "
                       f"choose a strategy that does, such as strategy=erm")
    task.check(cfg)
    check_compile(cfg.hardware, strategy.name)  # before any data is read: the strategy's class says enough
    check_logger(cfg)


def finished_metrics(run_dir: Path) -> dict:
    """The metrics.json of a finished run (a sweep re-launch returns them without training again)."""
    path = run_dir / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise XdtError(f"{run_dir} is marked done but {path.name} cannot be read ({error}); remove {run_dir / DONE} "
                       f"and continue it with resume={run_dir} to evaluate it again") from None


# ---- the pieces of a step ---------------------------------------------------------------------------

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


def micro_batches(source: dict, target: dict | None, parts: int) -> Iterator[tuple[dict, dict | None, float]]:
    """``parts`` slices of a batch (and of the target batch beside it), each with the weight that makes the
    summed gradients those of the whole batch: its share of the rows times ``parts`` (Accelerate divides every
    micro-batch's loss by ``parts``). Each slice is trimmed to its own longest row."""
    if parts == 1:
        yield source, target, 1.0
        return
    rows = len(source["input_ids"])
    bounds = [round(i * rows / parts) for i in range(parts + 1)]
    target_rows = len(target["input_ids"]) if target is not None else 0
    target_bounds = [round(i * target_rows / parts) for i in range(parts + 1)]
    for i in range(parts):
        part = _rows(source, bounds[i], bounds[i + 1])
        target_part = _rows(target, target_bounds[i], target_bounds[i + 1]) if target is not None else None
        yield part, target_part, (bounds[i + 1] - bounds[i]) * parts / rows


def _rows(batch: dict, start: int, stop: int) -> dict:
    """Rows ``start:stop`` of a collated batch, without the padding columns no row of theirs needs."""
    part = {key: value[start:stop] for key, value in batch.items()}
    width = int(part["attention_mask"].sum(1).max()) if stop > start else 0
    return {key: value[:, :width] if value.dim() == 2 else value for key, value in part.items()}


# ---- a run ------------------------------------------------------------------------------------------

@dataclass
class Training:
    """The pieces of a run that the loop, evaluation, checkpoints and the end share."""

    cfg: DictConfig
    run_dir: Path
    accelerator: Accelerator
    task: Task
    model: torch.nn.Module  # the prepared strategy (DistributedDataParallel with several processes)
    strategy: torch.nn.Module  # the same, unwrapped: checkpoints and evaluation use it directly
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    hooks: Hooks
    metrics_log: MetricsLog
    describe: dict  # stamped on every record
    max_steps: int
    tracking: Tracking  # the trackers chosen by the logger group (none by default)
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def wall_seconds(self, state: LoopState) -> float:
        return state.wall_seconds + time.perf_counter() - self.started

    def save(self, state: LoopState, best: bool) -> None:
        """Checkpoint the current step and move ``last`` (and ``best``) to it."""
        loop = {**dataclasses.asdict(state), "wall_seconds": self.wall_seconds(state)}
        training_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                          "loop": loop}
        with self.hooks.evaluation_weights():  # the checkpoint's model is the one evaluations score
            training_state.update(self.hooks.states())
            checkpoint.save_checkpoint(self.run_dir, state.step, self.strategy, training_state, self.accelerator,
                                       include_frozen=not frozen_weights_rebuildable(self.cfg.model))
        if self.accelerator.is_main_process:
            checkpoint.link(self.run_dir, "last", state.step)
            if best:
                checkpoint.link(self.run_dir, "best", state.step)
            checkpoint.prune(self.run_dir)


def run(cfg: DictConfig, run_dir: Path, stage_of: Path | None = None) -> dict:
    """The body of :func:`train`, once the run folder is open."""
    if (run_dir / DONE).exists():
        log.info("%s has already finished; its metrics are in metrics.json", run_dir)
        return finished_metrics(run_dir)
    training, setup = prepare(cfg, run_dir, stage_of)
    state = resume(training) if cfg.resume else LoopState()
    with training.tracking.session(training.accelerator, state.step):
        evaluation = eval_loaders(setup.evaluation, int(cfg.eval_batch_size), setup.collator, training.accelerator)
        if training.task.evaluate_at_start and state.step == 0 and not training.metrics_log.records:
            evaluate_and_save(training, state, evaluation, {}, save=False)  # the reference training is measured against
        meter = EfficiencyMeter(training, state)
        stopped_early = loop(training, state, setup, evaluation, meter)
        return finish(training, state, stopped_early, meter)


def prepare(cfg: DictConfig, run_dir: Path, stage_of: Path | None = None) -> tuple[Training, Setup]:
    """seed -> accelerator -> the task's data and model -> optimizer and schedule -> prepare -> hooks."""
    started = time.perf_counter()
    tracking = Tracking(cfg, run_dir, stage_of)  # the trackers are handed to the Accelerator, started later
    accelerator = make_accelerator(cfg.hardware, gradient_accumulation_steps=int(cfg.accumulate_grad_batches),
                                   log_with=tracking.log_with)
    for key in ("batch_size", "eval_batch_size"):
        if int(cfg[key]) % accelerator.num_processes:
            raise XdtError(f"{key}={cfg[key]} is the global batch and must split evenly over "
                           f"{accelerator.num_processes} processes")
    set_seed(int(cfg.seed))
    task = instantiate(cfg.task, "task")
    setup = task.setup(cfg, run_dir, accelerator)
    strategy = setup.strategy
    if cfg.hardware.get("fast_dropout") and accelerator.device.type == "cpu" and not cfg.hardware.get("compile"):
        log.info("hardware.fast_dropout: %d dropout layers and the attention of %d models draw their masks 16 "
                 "bits at a time (xdt.cpu_dropout)", *use_fast_dropout(strategy))
    if cfg.hardware.get("compile"):
        log.info("hardware.compile: %s compiled with torch.compile (inductor), batches padded to multiples of %d "
                 "tokens; the first step of each new shape compiles (timed apart: compile_time_s)",
                 compile_encoder(strategy), COMPILE_BUCKET)
    make_optimizer = instantiate(cfg.optimizer, "optimizer")  # a partial: parameters are given here
    optimizer = make_optimizer(param_groups(strategy, cfg.optimizer.weight_decay, cfg.optimizer.lr,
                                            strategy.lr_scales()))
    # The batch orders (their epochs) are set on the samplers the task made, not on Accelerate's shards of them.
    setup.source_sampler = setup.source.batch_sampler
    setup.target_sampler = setup.target.batch_sampler if setup.target is not None else None
    model, optimizer, setup.source = accelerator.prepare(strategy, optimizer, setup.source)
    if setup.target is not None:
        setup.target = accelerator.prepare(setup.target)
    scheduler = lr_schedule(optimizer, cfg, setup.max_steps)
    hooks = build_hooks(cfg, strategy, setup.max_steps)
    metrics_log = MetricsLog(run_dir / "metrics.jsonl", write=accelerator.is_main_process)
    training = Training(cfg, run_dir, accelerator, task, model, accelerator.unwrap_model(model), optimizer,
                        scheduler, hooks, metrics_log, setup.describe, setup.max_steps, tracking, started=started)
    return training, setup


def loop(training: Training, state: LoopState, setup: Setup, evaluation: dict[str, DataLoader],
         meter: EfficiencyMeter) -> bool:
    """Steps until the budget is spent or early stopping ends training; True if it stopped early."""
    cfg, accelerator, max_steps = training.cfg, training.accelerator, training.max_steps
    source = batches_forever(setup.source, setup.source_sampler, accelerator, state.step)
    target = batches_forever(setup.target, setup.target_sampler, accelerator, state.step) \
        if setup.target is not None else None
    log.info("training %s for %d steps (batch %d, %d source examples)%s", training.run_dir, max_steps, cfg.batch_size,
             len(setup.source.dataset), f", resuming at step {state.step}" if state.step else "")
    window = LossWindow()
    compiling = bool(cfg.hardware.get("compile"))
    training.model.train()
    stop_early = False
    with training_progress(accelerator.is_main_process) as bar, StopSignals() as stop:
        progress_bar = bar.add_task("train", total=max_steps, completed=state.step, info="")
        while state.step < max_steps and not stop_early:
            step_started = time.perf_counter()
            graphs = compiled_graphs() if compiling else 0
            batch = next(source)
            target_batch = next(target) if target else None
            loss, terms = train_step(training, state, batch, target_batch)
            state.step += 1
            compiled = compiling and compiled_graphs() > graphs  # its time and tokens are compiling's, not a step's
            if not compiled:
                state.samples += training.task.count(batch) * accelerator.num_processes
                meter.tokens.add(batch, target_batch)
            window.add(loss, terms)
            evaluating = state.step % int(cfg.eval_interval) == 0 or state.step == max_steps
            logging_step = state.step % int(cfg.log_interval) == 0 or evaluating
            if logging_step:
                train_terms = {**window.flush(state.step, accelerator), "lr": training.scheduler.get_last_lr()[0]}
                bar.update(progress_bar, completed=state.step, info=f"loss {train_terms['loss']:.4f}")
            seconds = time.perf_counter() - step_started
            if compiled:
                state.compile_seconds += seconds
                log.info("step %d compiled a graph (batch of %d x %d tokens): %.1f s", state.step,
                         *batch["input_ids"].shape, seconds)
            else:
                state.train_seconds += seconds
            if logging_step or stop.received is not None:
                meter.fold(state)  # the token counts join the state before any checkpoint saves it
            if logging_step:
                log.info("step %d/%d  %s  |  %s", state.step, max_steps,
                         "  ".join(f"{k} {v:.4g}" for k, v in train_terms.items()), meter.since_last_line(state))
                training.tracking.train(state.step, train_terms)
            if evaluating:
                stop_early = evaluate_and_save(training, state, evaluation, train_terms)
            if stop.received is not None:
                training.save(state, best=False)
                log.warning("%s received at step %d: checkpoint saved; continue with: xdt train resume=%s",
                            signal.Signals(stop.received).name, state.step, training.run_dir)
                raise SystemExit(128 + stop.received)
    if stop_early:
        log.info("early stopping at step %d: source validation has not improved for %d evaluations",
                 state.step, state.evals_since_improvement)
    return stop_early


class EfficiencyMeter:
    """Counts the tokens the loop trains on and turns them into throughput and MFU (:mod:`xdt.efficiency`)."""

    def __init__(self, training: Training, state: LoopState) -> None:
        self.tokens = efficiency.TokenCount()
        self.processes = training.accelerator.num_processes
        self.strategy = training.strategy
        self.flops = efficiency.flop_model(training.strategy)
        self.precision = efficiency.precision_in_use(training.cfg.hardware)
        self.device, self.cache_dir = training.accelerator.device, training.cfg.cache_dir
        self.peak = efficiency.device_peak(self.device, self.precision, self.cache_dir)
        self.line_start = self.counts(state)

    @staticmethod
    def counts(state: LoopState) -> tuple[float, float, float, float]:
        return state.train_seconds, state.useful_tokens, state.squared_lengths, state.head_positions

    def fold(self, state: LoopState) -> None:
        real, total, squares = self.tokens.take()
        state.useful_tokens += real * self.processes
        state.all_tokens += total * self.processes
        state.squared_lengths += squares * self.processes
        state.head_positions += efficiency.take_head_positions(self.strategy) * self.processes

    def since_last_line(self, state: LoopState) -> str:
        seconds, real, squares, head_positions = (now - then for now, then in zip(self.counts(state),
                                                                                  self.line_start))
        self.line_start = self.counts(state)
        if seconds <= 0:
            return "0 tok/s"
        mfu = self.flops.flops(real, squares, head_positions) / seconds / self.peak.flops
        return f"{real / seconds:.0f} tok/s  MFU {mfu:.2f}"

    def record(self, state: LoopState) -> dict:
        # Measured again at the end: one measurement under a passing load would inflate the run's MFU.
        end = efficiency.device_peak(self.device, self.precision, self.cache_dir, repeats=5)
        peak = efficiency.run_peak(self.peak, end)
        return efficiency.efficiency(self.flops, state.useful_tokens, state.all_tokens, state.squared_lengths,
                                     state.train_seconds, peak.flops, peak.source, self.precision,
                                     state.head_positions)


def train_step(training: Training, state: LoopState, source: dict, target: dict | None
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimizer step: forward and backward over the batch's micro-batches, clip, step, schedule.
    Returns the step's loss and its named terms (weighted over micro-batches)."""
    accelerator, model, hooks = training.accelerator, training.model, training.hooks
    parts = accelerator.gradient_accumulation_steps
    losses: list[tuple[float, torch.Tensor, dict]] = []
    for source_part, target_part, weight in micro_batches(source, target, parts):
        with accelerator.accumulate(model):  # gradients sync across processes on the last micro-batch only
            with accelerator.autocast():
                loss, terms = model(source_part, target_part, progress=state.step / training.max_steps)
                loss = hooks.add_loss_terms(loss, terms)
            accelerator.backward(loss if weight == 1.0 else loss * weight)
        losses.append((weight / parts, loss, terms))
    if training.cfg.max_grad_norm:
        accelerator.clip_grad_norm_(model.parameters(), float(training.cfg.max_grad_norm))
    training.optimizer.step()
    hooks.after_optimizer_step(state.step + 1)
    training.scheduler.step()
    training.optimizer.zero_grad(set_to_none=True)
    if len(losses) == 1:
        return losses[0][1], losses[0][2]
    total = sum(share * loss.detach() for share, loss, _ in losses)
    names = dict.fromkeys(name for _, _, terms in losses for name in terms)
    return total, {name: sum(share * torch.as_tensor(terms[name]).detach().float()
                             for share, _, terms in losses if name in terms) for name in names}


def evaluate_and_save(training: Training, state: LoopState, loaders: dict[str, DataLoader], train_terms: dict,
                      save: bool = True) -> bool:
    """Evaluate, update selection and early stopping, log the record, checkpoint. True = stop early.
    ``save=False`` only records the scores (a language model's starting point)."""
    cfg = training.cfg
    with training.hooks.evaluation_weights():
        results = training.task.evaluate(training.strategy, loaders, training.accelerator)
    select, monitor = training.task.scores(results)
    improved = save and (cfg.selection == "last" or select > state.best_value)
    if improved:
        state.best_value, state.best_step = select, state.step
    if save and monitor > state.monitor_best:
        state.monitor_best, state.evals_since_improvement = monitor, 0
    elif save:
        state.evals_since_improvement += 1
    record = {**training.describe, "step": state.step, "train": train_terms, "eval": results,
              "selection": training.task.selection_record(select), "elapsed_s": round(training.wall_seconds(state), 3)}
    training.metrics_log.append(record)  # before the checkpoint: a resume drops records newer than its step
    training.tracking.evaluation(record, training.describe)
    if save:
        training.save(state, best=improved)
    log.info("eval step %d: %s", state.step, training.task.evaluation_line(results))
    return save and training.hooks.should_stop(state)


def resume(training: Training) -> LoopState:
    """Restore the newest complete checkpoint; with none yet, start over from step 0."""
    run_dir, accelerator = training.run_dir, training.accelerator
    steps = checkpoint.checkpoint_steps(run_dir)
    if not steps:
        log.info("no checkpoint in %s yet: starting from step 0", run_dir)
        training.metrics_log.keep_until(0)
        return LoopState()
    folder = checkpoint.step_dir(run_dir, steps[-1])
    saved = checkpoint.load_checkpoint(folder, training.strategy, accelerator.process_index)
    training.hooks.load_states(saved)  # after the weights: weight averaging puts the training weights back
    check_optimizer_settings(saved["optimizer"], training.optimizer, folder)
    try:
        training.optimizer.load_state_dict(saved["optimizer"])
    except ValueError as error:  # e.g. a checkpoint from before a strategy gave a head its own learning rate
        raise XdtError(f"{folder}: its optimizer state does not fit this run's parameter groups ({error}); "
                       f"another version of xdt wrote it, or the run's config.yaml was edited since: start a new run") from None
    training.scheduler.load_state_dict(saved["scheduler"])
    state = LoopState(**saved["loop"])
    if accelerator.is_main_process:
        # A kill between writing a checkpoint and moving the links leaves the links one step behind.
        checkpoint.link(run_dir, "last", state.step)
        checkpoint.link(run_dir, "best", state.best_step)
        checkpoint.prune(run_dir)
    training.metrics_log.keep_until(state.step)
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


def earlier_wall_time(init_from: Path) -> float | None:
    """Wall seconds of the xdt run the weights came from (a pretraining or source stage; None for other folders)."""
    metrics = init_from / "metrics.json"
    if not metrics.is_file():
        return None
    return json.loads(metrics.read_text(encoding="utf-8")).get("wall_time_s")


def finish(training: Training, state: LoopState, stopped_early: bool, meter: EfficiencyMeter) -> dict:
    """The selected checkpoint's final metrics (from the task), written with the run's totals as metrics.json,
    then ``done``."""
    cfg, run_dir, accelerator = training.cfg, training.run_dir, training.accelerator
    chosen = state.step if cfg.selection == "last" else state.best_step
    task_result = training.task.finish(training.strategy, chosen, training.metrics_log.records, run_dir, accelerator)
    wall = training.wall_seconds(state)
    trainable, total = count_parameters(training.strategy)
    result = {**training.describe,
              "selection": training.task.selection_record(None if cfg.selection == "last" else state.best_value),
              "source_validation_best": state.monitor_best,
              "selected_step": chosen, "steps": state.step, "stopped_early": stopped_early,
              "wall_time_s": round(wall, 2), "train_time_s": round(state.train_seconds, 2),
              **({"compile_time_s": round(state.compile_seconds, 2)} if cfg.hardware.get("compile") else {}),
              f"train_{training.task.unit}_per_s": round(state.samples / max(state.train_seconds, 1e-9), 2),
              "efficiency": meter.record(state), "parameters": {"trainable": trainable, "total": total},
              **task_result,
              "xdt": provenance.code_version(), "machine": provenance.machine()}
    if cfg.model.get("init_from"):  # the run started from another run's weights: say which, and what they cost
        result["init_from"] = cfg.model.init_from
        result["pretrain_wall_time_s"] = earlier_wall_time(Path(cfg.model.init_from))
    if accelerator.is_main_process:
        atomic_write_json(run_dir / "metrics.json", result)
        atomic_write_text(run_dir / DONE, f"finished at step {state.step}\n")
        training.task.print_summary(result, run_dir)
        compiled = f"; compiling took {result['compile_time_s']:.1f} s, outside these figures" \
            if "compile_time_s" in result else ""
        console.print(f"efficiency: {efficiency.describe(result['efficiency'])}{compiled}", highlight=False)
    training.tracking.final(result, training.describe, state.step)
    log.info("done: %s (wall time %.1f s, %.1f train %s/s; %s)", run_dir, wall,
             result[f"train_{training.task.unit}_per_s"], training.task.unit,
             efficiency.describe(result["efficiency"]))
    return result
