"""Sequence classification: one label per text (review sentiment), scored per domain and split.

The model is an encoder with mean pooling and a linear head (:class:`xdt.models.SequenceClassifier`), inside
the configured strategy. Source domains give labeled training rows; target domains are scored, and their
unlabeled text feeds strategies that adapt to it. With ``target_domain.shots=k`` each target's k labeled
examples per class join training, or, for strategies that adapt to them before scoring (meta-learning), stay
out of it (:mod:`xdt.data.shots`). The reported checkpoint is the one ``selection`` picks
(:mod:`xdt.selection`); early stopping always watches source validation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader

from xdt import checkpoint, selection
from xdt.atomic import atomic_folder
from xdt.config import instantiate, target_class
from xdt.console import print_summary
from xdt.data.batching import Collator, eval_loaders, make_loader, padding_multiple
from xdt.data.run_data import RunData, load_run_data
from xdt.errors import XdtError
from xdt.metrics import classification_metrics
from xdt.models import build_classifier, check_max_length, count_parameters, load_tokenizer, max_input_length, \
    model_files_problem, save_model_files
from xdt.strategies.base import Batch, Strategy, StrategyContext
from xdt.tasks.base import Scores, Setup, Task, log_unscored_sets, training_steps
from xdt.transfer_validation import SetOutputs, pooled, token_bags, transfer_scores

log = logging.getLogger(__name__)

ORACLE_WARNING = ("selection=target_oracle: target labels chose the checkpoint, so target scores are optimistic "
                  "and not a fair estimate of transfer")


class SequenceClassification(Task):
    name = "sequence_classification"

    def __init__(self) -> None:
        self.cfg: DictConfig | None = None
        self.data: RunData | None = None
        self.collator: Collator | None = None
        self.shots: dict[str, Batch] | None = None  # target -> its shots, for strategies that adapt to them

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        selection.check(cfg.selection)

    def setup(self, cfg: DictConfig, run_dir: Path, accelerator: Accelerator) -> Setup:
        self.cfg = cfg
        tokenizer = load_tokenizer(cfg.model)
        check_max_length(int(cfg.max_length), tokenizer)
        with accelerator.main_process_first():  # the first process fills the tokenisation cache
            data = load_run_data(cfg.source_domain, cfg.get("target_domain"), tokenizer, int(cfg.max_length),
                                 cfg.cache_dir, max_examples=cfg.max_examples, seed=int(cfg.seed),
                                 shots=OmegaConf.select(cfg, "target_domain.shots", default=0))
        if cfg.selection in selection.NEEDS_TARGETS and not data.targets:
            raise XdtError(f"selection={cfg.selection} reads target domains, but no target_domain is selected")
        max_steps = training_steps(cfg, data.num_train_rows)
        # Target shots are labeled training domains of their own (so domain-aware strategies count them as
        # sources), unless the strategy keeps them out of training to adapt to them before scoring (meta-learning).
        data.shots_in_training = not target_class(cfg.strategy, "strategy").adapts_to_shots
        context = StrategyContext.of(tokenizer, data.num_labeled_domains,
                                     len(data.stream_targets(cfg.unlabeled_targets)))
        strategy = build_strategy(cfg, tokenizer, data.num_labels, context, max_steps)
        self.collator = Collator(tokenizer.pad_token_id, padding_multiple(cfg.hardware, accelerator.device),
                                 int(cfg.max_length))
        source, target = train_loaders(cfg, data, strategy, self.collator, accelerator)
        if accelerator.is_main_process:
            write_model_files(run_dir / "model", strategy.model, tokenizer, data.label_names, context)
        if data.target_shots and not data.shots_in_training:
            self.shots = shot_batches(data, self.collator, accelerator.device)
        self.data = data
        describe = {"strategy": strategy.name, "model": cfg.model.name, "peft": cfg.model.get("peft") or "none",
                    "seed": int(cfg.seed), "shots": data.shots,
                    "sources": [d.name for d in data.sources], "targets": [d.name for d in data.targets]}
        evaluation = data.eval_sets(*tracked_splits(cfg))
        log_unscored_sets(data.eval_set_names(), list(evaluation))
        return Setup(strategy, source, target, evaluation, self.collator, max_steps, describe)

    def evaluate(self, strategy: Strategy, loaders: dict[str, DataLoader], accelerator: Accelerator) -> Scores:
        return evaluate(strategy, loaders, accelerator, self.shots)

    def scores(self, results: Scores) -> tuple[float, float]:
        metric = self.cfg.selection_metric
        return (selection.score(results, self.cfg.selection, metric),
                selection.score(results, "source_val", metric))  # early stopping never reads target labels

    def selection_record(self, value: float | None) -> dict:
        return {"criterion": self.cfg.selection, "metric": self.cfg.selection_metric, "value": value}

    def evaluation_line(self, results: Scores) -> str:
        select, monitor = self.scores(results)
        line = f"source validation {self.cfg.selection_metric} {monitor:.4f}"
        return line if self.cfg.selection == "source_val" else f"{line}, selection value {select:.4f}"

    def finish(self, strategy: Strategy, chosen_step: int, records: list[dict], run_dir: Path,
               accelerator: Accelerator) -> dict:
        """Every split of every domain at the chosen step: from the record of that step where training scored
        it, the others scored now on the chosen checkpoint's weights."""
        cfg, data = self.cfg, self.data
        names = data.eval_set_names()
        metrics = recorded_scores(records, chosen_step, names)
        missing = [name for name in names if name not in metrics]
        if missing:  # only the sets training did not score: a set scored at that step would score the same again
            log.info("scoring %s on the checkpoint of step %d", ", ".join(missing), chosen_step)
            checkpoint.load_weights(strategy, checkpoint.step_dir(run_dir, chosen_step))
            sets = data.eval_sets()
            loaders = eval_loaders({name: sets[name] for name in sets_to_score(missing, names)},
                                   int(cfg.eval_batch_size), self.collator, accelerator)
            results = evaluate(strategy, loaders, accelerator, self.shots)
            metrics.update({name: results[name] for name in missing})
            metrics = {name: metrics[name] for name in names}
        result = {"label_names": data.label_names, "metrics": metrics, "transfer_gap": transfer_gaps(metrics)}
        if cfg.selection == "target_oracle":
            result["warning"] = ORACLE_WARNING
            log.warning(ORACLE_WARNING)
        return result

    def print_summary(self, result: dict, run_dir: Path) -> None:
        print_summary(result, title=f"xdt train {run_dir}")


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


def tracked_splits(cfg: DictConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The (source, target) splits scored at every evaluation.

    With ``track_targets`` (the default) every split is, so any selection criterion can be applied to
    the records afterwards; without it, only what early stopping and ``cfg.selection`` read.
    """
    if cfg.track_targets:
        return ("validation", "test"), ("validation", "test")
    return ("validation",), ("validation",) if cfg.selection in selection.NEEDS_TARGETS else ()


def sets_to_score(missing: list[str], names: list[str]) -> list[str]:
    """The sets the end of a run scores: the ones training did not, and source validation again where a target
    validation set is among them (its label-free scores read source validation; the same weights score it the same)."""
    def validation(name: str, role: str) -> bool:
        return name.startswith(f"{role}/") and name.endswith("/validation")

    if not any(validation(name, "target") for name in missing):
        return missing
    return missing + [name for name in names if validation(name, "source") and name not in missing]


def shot_batches(data: RunData, collator: Collator, device: torch.device) -> dict[str, Batch]:
    """Each target's few-shot examples as one batch on ``device``, keyed by target name, for strategies
    that adapt to them before scoring (:attr:`Strategy.adapts_to_shots`)."""
    return {name: {key: value.to(device) for key, value in collator(list(rows)).items()}
            for name, rows in data.shot_sets().items()}


def evaluate(strategy, loaders: dict[str, DataLoader], accelerator: Accelerator,
             shots: dict[str, Batch] | None = None) -> Scores:
    """Metrics of ``strategy.predict`` on every loader, keyed like the loaders (``role/domain/split``), and
    the label-free scores that unsupervised model selection reads: prediction entropy and IM of every set, and
    on each target validation set deep embedded validation and reverse validation against source validation
    (:mod:`xdt.transfer_validation`).

    ``shots`` (target name -> its labeled shots) makes each such target's sets be scored by
    ``strategy.adapted(shots)``, adapted once per target; sources are always scored by ``strategy``.
    Adapting takes gradient steps, so it happens first, outside the inference mode the scoring runs in.
    """
    was_training = strategy.training
    strategy.eval()
    scorers = {name: strategy for name in loaders}
    adapted: dict[str, Strategy] = {}
    with torch.no_grad():  # adapted() turns gradients on for its own inner steps only
        for name in loaders:
            role, domain = name.split("/")[:2]
            if role == "target" and shots and domain in shots:
                if domain not in adapted:
                    adapted[domain] = strategy.adapted(shots[domain])
                scorers[name] = adapted[domain]
    # Only validation sets feed the label-free scores that read both domains, and only those the strategy itself
    # scored: features of one model compare, an adapted copy's do not.
    kept = {name for name in loaders if name.endswith("/validation") and scorers[name] is strategy}
    scored = {name: score_set(scorers[name], loader, accelerator, name in kept) for name, loader in loaders.items()}
    results = {name: scores for name, (scores, _) in scored.items()}
    add_transfer_scores(results, {name: scored[name][1] for name in kept})
    strategy.train(was_training)
    return results


def add_transfer_scores(results: Scores, outputs: dict[str, SetOutputs]) -> None:
    """Deep embedded validation and reverse validation of each target validation set in ``outputs``, against the
    source validation sets there pooled, into that set's scores (``dev_risk``, ``reverse_accuracy``)."""
    sources = [out for name, out in outputs.items() if name.startswith("source/") and name.endswith("/validation")]
    if not sources:
        return
    source = pooled(sources)
    for name, target in outputs.items():
        if name.startswith("target/") and name.endswith("/validation"):
            results[name].update(transfer_scores(source, target))


@torch.inference_mode()  # no autograd bookkeeping at all (no_grad still tracks versions and views)
def score_set(scorer, loader: DataLoader, accelerator: Accelerator,
              keep_outputs: bool = False) -> tuple[dict[str, float | None], SetOutputs | None]:
    """The metrics and label-free scores of one evaluation set, and (with ``keep_outputs``) its features,
    predictions, labels and bags of words, for :mod:`xdt.transfer_validation`."""
    gathered = []  # per batch: probabilities, labels[, features, bags of words]
    for batch in loader:
        with accelerator.autocast():
            logits, features = scorer.predict_with_features(batch)
        parts = (logits.float().softmax(-1), batch["labels"])
        if keep_outputs:
            parts += (features.float(), token_bags(batch["input_ids"], batch["attention_mask"]))
        gathered.append([part.cpu() for part in accelerator.gather_for_metrics(parts)])
    columns = [torch.cat(column).numpy() for column in zip(*gathered)]
    probabilities, labels = columns[:2]
    scores = {**classification_metrics(labels, probabilities), **selection.unsupervised_scores(probabilities)}
    return scores, SetOutputs(columns[2], probabilities, labels, columns[3]) if keep_outputs else None


def transfer_gaps(metrics: Scores, metric: str = "accuracy") -> dict[str, float]:
    """Mean source test ``metric`` minus each target's test ``metric``, keyed by target domain."""
    source = [m[metric] for name, m in metrics.items() if name.startswith("source/") and name.endswith("/test")]
    if not source:
        return {}
    reference = float(np.mean(source))
    return {name.split("/")[1]: reference - m[metric] for name, m in metrics.items()
            if name.startswith("target/") and name.endswith("/test")}


def recorded_scores(records: list[dict], step: int, names: list[str]) -> Scores:
    """The scores of the sets in ``names`` that training computed at ``step`` (all of them with track_targets,
    those selection reads without): the same weights on the same data give the same numbers, so the final
    evaluation need not repeat them."""
    record = next((r for r in records if r["step"] == step), {"eval": {}})
    return {name: record["eval"][name] for name in names if name in record["eval"]}
