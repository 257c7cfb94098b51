"""``xdt eval``: rebuild a saved classification run from its folder (no network, no code from it) and score it
on its own domains or any other."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedTokenizerBase

from xdt import checkpoint, quantize, saved_run
from xdt.atomic import atomic_write_json, atomic_write_text
from xdt.config import instantiate
from xdt.console import console, print_summary
from xdt.data.batching import Collator, eval_loaders
from xdt.data.run_data import load_run_data
from xdt.errors import XdtError
from xdt.hardware import make_accelerator
from xdt.models import model_files_problem, rebuild_classifier
from xdt.run_files import FAILED
from xdt.strategies.base import Strategy, StrategyContext
from xdt.tasks.sequence_classification import evaluate, shot_batches, transfer_gaps

log = logging.getLogger(__name__)


def _checkpoint_folder(run_dir: Path, which: str) -> Path:
    """The checkpoint folder ``which`` names, resolved; a link out of the run is refused (see xdt.saved_run)."""
    folder = run_dir / checkpoint.CHECKPOINTS / which
    if not folder.is_dir():
        available = ", ".join(["best", "last", *(f"step-{s:07d}" for s in checkpoint.checkpoint_steps(run_dir))])
        raise XdtError(f"checkpoint={which!r}: no such checkpoint in {run_dir / checkpoint.CHECKPOINTS} "
                       f"(available: {available})")
    return saved_run.check_tree(run_dir, folder)


def _rebuild_strategy(run_dir: Path, run_cfg: DictConfig,
                      folder: Path) -> tuple[Strategy, PreTrainedTokenizerBase, list[str]]:
    """The strategy of a saved run with the weights of checkpoint ``folder``, and the run's tokenizer and labels."""
    # AdaLoRA needs a schedule length to be built; evaluation never steps it, so any valid value does.
    model, tokenizer, label_names = rebuild_classifier(run_dir / "model", run_cfg.model,
                                                       total_steps=int(run_cfg.max_steps or 1000))
    context = StrategyContext.load(run_dir / "model" / "strategy_context.json", tokenizer)
    strategy = instantiate(run_cfg.strategy, "strategy", model=model, context=context)
    checkpoint.load_weights(strategy, folder)
    return strategy, tokenizer, label_names


def evaluate_run(cfg: DictConfig, out_dir: Path) -> dict:
    """``xdt eval`` (see :func:`evaluate_saved_run`); an error is recorded as ``failed`` in ``out_dir`` when
    that folder exists (Hydra made it before the command began), so a refused evaluation's folder says why it
    holds no metrics; a folder that does not exist yet is not created for it."""
    try:
        return evaluate_saved_run(cfg, out_dir)
    except Exception as error:
        message = str(error) if isinstance(error, XdtError) else f"{type(error).__name__}: {error}"
        if Path(out_dir).is_dir():
            atomic_write_text(Path(out_dir) / FAILED, message + "\n")
        raise


def evaluate_saved_run(cfg: DictConfig, out_dir: Path) -> dict:
    """``xdt eval``: rebuild a saved run's model from its own files and evaluate it.

    Evaluates the run's source validation/test splits and the target domains given in
    ``target_domain`` (default: the run's own targets), and writes ``metrics.json`` into ``out_dir``.
    With ``quantize=dynamic_int8`` it also evaluates an int8 copy of the model and adds a ``quantized``
    entry (see :mod:`xdt.quantize`); the fp32 metrics stay those of a plain evaluation.
    """
    if not cfg.get("run_dir"):
        raise XdtError("xdt eval needs run_dir=<folder of a training run>")
    method = quantize.requested_method(cfg)
    run_dir = Path(cfg.run_dir).expanduser()
    run_cfg = saved_run.load_config(run_dir, "run_dir", trust_remote_code=bool(cfg.trust_remote_code))
    task = str(OmegaConf.select(run_cfg, "task._target_", default=""))
    if not task.endswith(".SequenceClassification"):
        raise XdtError(f"run_dir={run_dir}: a {task.rsplit('.', 1)[-1] or 'other'} run; xdt eval re-scores "
                       f"sequence-classification runs (its own metrics.json holds every score; a language model "
                       f"is fine-tuned from with model.init_from={run_dir})")
    saved_run.check_tree(run_dir, run_dir / "model")
    problem = model_files_problem(run_dir / "model")
    if problem is not None:
        raise XdtError(f"{problem}: the run was cut off while writing it; xdt train resume={run_dir} writes it again")
    folder = _checkpoint_folder(run_dir, cfg.checkpoint)
    accelerator = make_accelerator(cfg.hardware)
    strategy, tokenizer, label_names = _rebuild_strategy(run_dir, run_cfg, folder)
    targets = cfg.target_domain if cfg.get("target_domain") else run_cfg.get("target_domain")
    # A strategy that adapts to target shots adapts again here: the same k per class, drawn with the run's seed.
    shots = OmegaConf.select(run_cfg, "target_domain.shots", default=0) if strategy.adapts_to_shots else 0
    if shots and method is not None:
        raise XdtError(f"quantize={method}: {run_dir} was trained with {strategy.name} and target_domain.shots="
                       f"{shots}, which adapts the weights to each target's shots before scoring it; quantised "
                       f"weights cannot take those SGD steps, so evaluate it without quantize")
    data = load_run_data(run_cfg.source_domain, targets, tokenizer, run_cfg.max_length, cfg.cache_dir,
                         label_names=label_names, max_examples=run_cfg.max_examples, shots=shots,
                         seed=int(run_cfg.seed))
    strategy.to(accelerator.device)  # evaluation computes no gradients, so no DDP wrapper is needed
    collator = Collator(tokenizer.pad_token_id)
    loaders = eval_loaders(data.eval_sets(), cfg.eval_batch_size, collator, accelerator)
    quantized = None
    if method is None:
        metrics = evaluate(strategy, loaders, accelerator, shot_batches(data, collator, accelerator.device))
    else:
        metrics, quantized = quantize.compare(strategy, lambda module: evaluate(module, loaders, accelerator),
                                              method, cfg.get("quantize_repeats", 1))
    result = {"run_dir": str(run_dir), "checkpoint": folder.name, "step": checkpoint.saved_step(folder),
              "strategy": strategy.name, "model": run_cfg.model.get("name"), "seed": run_cfg.seed,
              "metrics": metrics, "transfer_gap": transfer_gaps(metrics)}
    if quantized is not None:
        result["quantized"] = quantized
    if accelerator.is_main_process:
        written = Path(out_dir) / "metrics.json"
        atomic_write_json(written, result)
        print_summary(result, title=f"xdt eval {run_dir} ({folder.name})")
        if quantized is not None:
            quantize.print_comparison(metrics, quantized)
        console.print(f"metrics written to {written}", soft_wrap=True, highlight=False)
    return result
