"""Token classification: a tag per word (named entity recognition), scored per domain with entity-level F1.

The model is an encoder with a linear head over every token (:class:`xdt.models.TokenClassifier`), inside the
configured strategy. Words are aligned to sub-words as in Hugging Face's token-classification example: a word's
tag sits on its first sub-word, the others carry no label and are neither trained on nor scored. A sentence
longer than ``max_length`` is cut (the log counts them); its cut words are not scored. Scores (through a local
``seqeval`` evaluate module, conlleval's semantics): entity-level micro precision, recall and F1 with exact span
and type, the same per entity type, and token accuracy (CrossNER: Liu et al., "CrossNER: Evaluating
Cross-Domain Named Entity Recognition", AAAI 2021).

**Label spaces differ between domains**; ``train_on`` picks the protocol:

``source`` (zero-shot on shared types)
    train on the source domains' train splits; the label space is their entity types. A target is scored on
    the types it shares with the source: its own types that the source has, and those its domain config's
    ``label_map`` maps onto a source type (``politician: person``); its other types are not scored (read as
    ``O``). metrics.json lists, per target, the types scored and how they were mapped.
``target``
    train on the target domains' train splits, with their own types (the second stage below).
``source_then_target`` (pre-train then fine-tune, CrossNER's main baseline)
    one command, two engine runs (composed in :mod:`xdt.train`): the ``source`` protocol in ``<run>/source``,
    then ``target`` in ``<run>``, starting from the first run's encoder with a new head over the target's types.
``both`` (joint training)
    source and target train splits together, with one head over the union of their types in which each row
    sees only its own domain's tags (the other logits are masked before the loss and the prediction). One
    masked head rather than a head per domain: the shared types (person, location, ...) then share one set of
    weights across domains, which is the point of training jointly, and the same head scores every domain.
    Each target train sentence appears ``target_repeats`` times per pass (default 50, as in CrossNER's own
    joint training): CrossNER's targets have 100-200 train sentences against CoNLL-2003's 14,041, and without
    repeats a batch holds about one target sentence, so the target's types are barely learned.

Where a protocol trains on target labels (``target``, ``both``), the targets' validation (dev) split is
legitimate validation: it selects the checkpoint (``target_val`` in metrics.json); ``source`` selects on the
source's validation split. Early stopping watches the same split.

**Strategies**: ``erm``, ``fgm`` and the feature-alignment strategies (``dann``, ``coral``, ``mmd``). Alignment
compares *sentence* features (the mean of the token states) of source and unlabeled target sentences: the
domain shift of a sentence is in its words and style, which every token's state carries, while aligning token by
token would be dominated by the ``O`` tokens (most of every sentence) and could pull entity tokens of the target
onto non-entity tokens of the source. Strategies built on one label per text (``mtl``, ``self_train``,
``augment``, ``lp_ft``, ``reptile``, ``maml``) refuse this task when a run is composed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from datasets import Dataset, concatenate_datasets
from omegaconf import DictConfig
from rich.table import Table
from torch.utils.data import DataLoader

from xdt import checkpoint
from xdt.atomic import atomic_folder
from xdt.config import instantiate
from xdt.console import console
from xdt.data.batching import IGNORED, Collator, eval_loaders, make_loader, padding_multiple
from xdt.data.conll import entity_type
from xdt.data.domains import SPLITS, RawDomain, load_group
from xdt.data.tokenize import fingerprint, tokenize, tokenize_words
from xdt.errors import XdtError
from xdt.metrics import entity_metrics
from xdt.models import PRETRAINED, TokenClassifier, apply_peft, build_encoder, check_max_length, count_parameters, \
    load_tokenizer, max_input_length
from xdt.strategies.base import Strategy, StrategyContext
from xdt.tasks.base import Scores, Setup, Task, log_unscored_sets, training_steps

log = logging.getLogger(__name__)

TRAIN_ON = ("source", "target", "both", "source_then_target")
SELECTIONS = ("source_val", "last")


@dataclass
class LabelSpace:
    """The run's tags (``O`` and B-/I- of every type it trains on) and how each domain's tags enter it."""

    types: list[str]
    domain_types: dict[str, set[str]]  # domain key -> the types its rows may be taught and predicted (its mask)
    mapped: dict[str, dict[str, str]] = field(default_factory=dict)  # domain key -> {its type: run's type}

    @property
    def tags(self) -> list[str]:
        return ["O", *(f"{prefix}-{t}" for t in self.types for prefix in "BI")]

    def convert(self, key: str, tags: list[str]) -> list[str]:
        """A domain's tags in the run's space: mapped types renamed, types the space lacks read as O."""
        mapping = self.mapped.get(key, {})
        converted = []
        for tag in tags:
            kind = entity_type(tag)
            kind = mapping.get(kind, kind) if kind is not None else None
            converted.append("O" if kind is None or kind not in self.types else f"{tag[:2]}{kind}")
        return converted

    def masks(self, keys: list[str]) -> torch.Tensor:
        """One row per domain of ``keys``: which of the run's tags that domain's rows may have."""
        tags = self.tags
        return torch.tensor([[tag == "O" or entity_type(tag) in self.domain_types[key] for tag in tags]
                             for key in keys], dtype=torch.bool)


def label_space(train: list[RawDomain], scored: list[RawDomain], masked: bool) -> LabelSpace:
    """The types of the domains trained on; every other scored domain mapped onto them (``label_map``)."""
    types = sorted(set().union(*(d.labels() for d in train)))
    everything = set(types)
    domain_types = {d.key: (d.labels() if masked else everything) for d in [*train, *scored]}
    space = LabelSpace(types, domain_types)
    trained = {d.key for d in train}
    for domain in scored:
        if domain.key in trained:
            continue
        mapping = {str(k): str(v) for k, v in (domain.label_map or {}).items() if v is not None}
        unknown = {v for v in mapping.values() if v not in everything}
        if unknown:
            raise XdtError(f"{domain.key}.label_map maps onto {sorted(unknown)}, which no domain trained on has "
                           f"(their types: {', '.join(types)})")
        space.mapped[domain.key] = {k: v for k, v in mapping.items() if k in domain.labels()}
    return space


def describe_scoring(space: LabelSpace, domains: list[RawDomain]) -> dict[str, dict]:
    """For each scored domain not trained on: which of its types are scored, as which of the run's types, and
    which are not scored (read as O)."""
    described = {}
    for domain in domains:
        if domain.key not in space.mapped:
            continue
        own = domain.labels()
        mapping = space.mapped[domain.key]
        scored = {t: mapping.get(t, t) for t in sorted(own) if mapping.get(t, t) in space.types}
        described[domain.name] = {"scored": scored, "not_scored": sorted(own - set(scored))}
    return described


def converted(data: Dataset, key: str, space: LabelSpace) -> Dataset:
    """``data`` with its tags in the run's label space (see :meth:`LabelSpace.convert`)."""
    return data.map(lambda batch: {"tags": [space.convert(key, tags) for tags in batch["tags"]]}, batched=True,
                    new_fingerprint=fingerprint(data, space.types, sorted(space.mapped.get(key, {}).items())))


class TokenClassification(Task):
    name = "token_classification"

    def __init__(self, train_on: str = "source", export_encoder: bool = False, source_stage: dict | None = None,
                 target_repeats: int = 1):
        if train_on not in TRAIN_ON:
            raise XdtError(f"task.train_on={train_on!r} is not valid: choose {', '.join(TRAIN_ON)}")
        if isinstance(target_repeats, bool) or not isinstance(target_repeats, int) or target_repeats < 1:
            raise XdtError(f"task.target_repeats={target_repeats!r} is not valid: a whole number of times each target "
                           f"train sentence appears per pass in joint training (train_on=both), 1 or more")
        self.train_on, self.export_encoder = train_on, bool(export_encoder)
        self.target_repeats = target_repeats
        self.source_stage = dict(source_stage or {})  # read by xdt.train for source_then_target
        self.cfg: DictConfig | None = None
        self.space: LabelSpace | None = None
        self.selection_sets: list[str] = []
        self.scoring: dict = {}
        self.sets: dict[str, Dataset] = {}  # every set scored at the end: role/domain/validation|test
        self.collator: Collator | None = None
        self.tokenizer = None

    @property
    def trains_on(self) -> str:
        """Whose train splits this run trains on; a source_then_target run is the target stage (the source
        stage ran before it, in its own folder, and the run starts from its encoder: model.init_from)."""
        return "target" if self.train_on == "source_then_target" else self.train_on

    @property
    def repeats(self) -> int:
        """How many times each target train sentence appears per pass: ``target_repeats`` in joint training."""
        return self.target_repeats if self.trains_on == "both" else 1

    @classmethod
    def check(cls, cfg: DictConfig) -> None:
        if cfg.selection not in SELECTIONS:
            raise XdtError(f"selection={cfg.selection}: task=token_classification selects on the validation split of "
                           f"the domains it trains on (source_val) or takes the last step (last)")

    # ---- set-up ------------------------------------------------------------------------------------

    def setup(self, cfg: DictConfig, run_dir: Path, accelerator: Accelerator) -> Setup:
        if self.train_on == "source_then_target" and not cfg.model.get("init_from"):
            raise XdtError("task.train_on=source_then_target runs as two stages: start it with xdt train, which "
                           "trains on the source first and fine-tunes from that run's encoder")
        self.cfg = cfg
        datasets.disable_progress_bars()  # xdt logs what it loads; per-map bars would drown the log
        tokenizer = self.tokenizer = load_tokenizer(cfg.model)
        check_max_length(int(cfg.max_length), tokenizer)
        sources = load_group(cfg.source_domain, "source_domain", cfg.max_examples)
        targets = load_group(cfg.get("target_domain"), "target_domain", cfg.max_examples)
        trained = {"source": sources, "target": targets, "both": [*sources, *targets]}[self.trains_on]
        if not trained:
            raise XdtError(f"task.train_on={self.train_on} trains on the "
                           f"{'source' if self.trains_on == 'source' else 'target'} domains, but none is selected")
        self.space = label_space(trained, [*sources, *targets], masked=self.trains_on == "both")
        self.scoring = describe_scoring(self.space, targets)
        for name, how in self.scoring.items():
            log.info("%s is scored on the types it shares with the training domains: %s; not scored: %s", name,
                     ", ".join(f"{t}→{m}" if t != m else t for t, m in how["scored"].items()) or "none",
                     ", ".join(how["not_scored"]) or "none")
        # A row's ``domain``: its domain's index among those trained on (what domain-aware strategies and the
        # tag masks read); rows of a domain not trained on are scored only, and never masked.
        domain_index = {d.key: i for i, d in enumerate(trained)}
        length = int(cfg.max_length)
        tag_ids = {t: i for i, t in enumerate(self.space.tags)}

        def rows(domain: RawDomain, split: str) -> Dataset:
            encoded = tokenize_words(converted(getattr(domain, split), domain.key, self.space), tokenizer, length,
                                     tag_ids, cfg.cache_dir)
            cut = sum(encoded["truncated"])
            if cut:
                log.info("%s %s: %d of %d sentences are longer than max_length=%d tokens and were cut (their last "
                         "words are not scored)", domain.key, split, cut, len(encoded), length)
            return encoded.add_column("domain", [domain_index.get(domain.key, 0)] * len(encoded))

        with accelerator.main_process_first():
            train_rows = self._training_rows(trained, [rows(d, "train") for d in trained], targets)
            self.sets = {f"{role}/{d.name}/{split}": rows(d, split)
                         for role, group in (("source", sources), ("target", targets)) for d in group
                         for split in SPLITS[1:]}
        on_target = self.trains_on in ("target", "both")
        self.selection_sets = [f"{'target' if on_target else 'source'}/{d.name}/validation"
                               for d in (targets if on_target else sources)]
        # track_targets=false scores only the selecting sets during training, the others once at the end
        evaluation = self.sets if cfg.track_targets else {name: self.sets[name] for name in self.selection_sets}
        log_unscored_sets(list(self.sets), list(evaluation))
        self.collator = Collator(tokenizer.pad_token_id, padding_multiple(cfg.hardware, accelerator.device),
                                 int(cfg.max_length))
        max_steps = training_steps(cfg, len(train_rows))
        strategy = self._build_strategy(cfg, tokenizer, [d.key for d in trained], len(targets), max_steps)
        collator = self.collator
        workers = int(cfg.hardware.get("dataloader_workers", 0))
        source = make_loader(train_rows, int(cfg.batch_size), collator, True, int(cfg.seed), workers)
        target = None
        if strategy.target_stream:
            text = concatenate_datasets([tokenize(d.unlabeled, tokenizer, length, cfg.cache_dir)
                                         .add_column("domain", [i] * len(d.unlabeled)) for i, d in enumerate(targets)])
            target = make_loader(text, int(cfg.batch_size), collator, True, int(cfg.seed) + 1, workers)
        describe = {"task": self.name, "train_on": self.train_on, "target_repeats": self.repeats,
                    "strategy": strategy.name, "model": cfg.model.name,
                    "peft": cfg.model.get("peft") or "none", "seed": int(cfg.seed),
                    "sources": [d.name for d in sources], "targets": [d.name for d in targets]}
        return Setup(strategy, source, target, evaluation, collator, max_steps, describe)

    def _training_rows(self, trained: list[RawDomain], splits: list[Dataset], targets: list[RawDomain]) -> Dataset:
        """The train splits of the domains trained on, each target's repeated ``self.repeats`` times."""
        on_target = {d.key for d in targets}
        copies = [self.repeats if d.key in on_target else 1 for d in trained]
        if self.repeats > 1:
            log.info("joint training: each target train sentence appears %d times per pass (task.target_repeats): %s",
                     self.repeats, ", ".join(f"{d.name} {len(rows)} sentences as {len(rows) * n}"
                                             for d, rows, n in zip(trained, splits, copies) if d.key in on_target))
        return concatenate_datasets([rows for rows, n in zip(splits, copies) for _ in range(n)])

    def _build_strategy(self, cfg: DictConfig, tokenizer, trained: list[str], num_targets: int,
                        max_steps: int) -> Strategy:
        encoder = apply_peft(build_encoder(cfg.model, tokenizer), cfg.model, max_steps)
        limit = max_input_length(encoder.config)
        if limit is not None and int(cfg.max_length) > limit:
            raise XdtError(f"max_length={cfg.max_length} is longer than model {cfg.model.name} allows ({limit} tokens)")
        masks = self.space.masks(trained) if self.trains_on == "both" else None
        model = TokenClassifier(encoder, len(self.space.tags), masks, dropout=cfg.model.get("dropout"))
        context = StrategyContext.of(tokenizer, len(trained), num_targets)
        strategy = instantiate(cfg.strategy, "strategy", model=model, context=context)
        trainable, total = count_parameters(strategy)
        log.info("model %s, strategy %s, %d tags (%s): %d trainable of %d parameters", cfg.model.name, strategy.name,
                 len(self.space.tags), ", ".join(self.space.types), trainable, total)
        return strategy

    # ---- scores ------------------------------------------------------------------------------------

    def evaluate(self, strategy: Strategy, loaders: dict[str, DataLoader], accelerator: Accelerator) -> Scores:
        return evaluate_tags(strategy.model, loaders, accelerator, self.space.tags)

    def scores(self, results: Scores) -> tuple[float, float]:
        value = sum(results[name]["f1"] for name in self.selection_sets) / len(self.selection_sets)
        return value, value

    def selection_record(self, value: float | None) -> dict:
        criterion = self.cfg.selection if self.cfg.selection == "last" else \
            ("target_val" if self.trains_on in ("target", "both") else "source_val")
        return {"criterion": criterion, "metric": "f1", "sets": self.selection_sets, "value": value}

    def evaluation_line(self, results: Scores) -> str:
        value, _ = self.scores(results)
        return f"entity F1 {value:.4f} on {', '.join(self.selection_sets)}"

    def finish(self, strategy: Strategy, chosen_step: int, records: list[dict], run_dir: Path,
               accelerator: Accelerator) -> dict:
        record = next(r for r in records if r["step"] == chosen_step)
        metrics = {name: record["eval"][name] for name in self.sets if name in record["eval"]}
        if len(metrics) < len(self.sets) or self.export_encoder:
            checkpoint.load_weights(strategy, checkpoint.step_dir(run_dir, chosen_step))
        missing = {name: rows for name, rows in self.sets.items() if name not in metrics}
        if missing:  # sets not scored during training: scored now, on the chosen weights (the others are recorded)
            log.info("scoring %s on the checkpoint of step %d", ", ".join(missing), chosen_step)
            loaders = eval_loaders(missing, int(self.cfg.eval_batch_size), self.collator, accelerator)
            metrics.update(self.evaluate(strategy, loaders, accelerator))
            metrics = {name: metrics[name] for name in self.sets}
        if self.export_encoder:  # the next stage's encoder, in Hugging Face format (model.init_from=<run>)
            if accelerator.is_main_process:
                def fill(folder: Path) -> None:
                    encoder = strategy.model.encoder
                    (encoder.get_base_model() if hasattr(encoder, "get_base_model") else encoder).save_pretrained(folder)
                    self.tokenizer.save_pretrained(folder)

                atomic_folder(run_dir / PRETRAINED, fill)
        return {"tags": self.space.tags, "scoring": self.scoring, "metrics": metrics}

    def print_summary(self, result: dict, run_dir: Path) -> None:
        table = Table(title=f"xdt train {run_dir}", title_justify="left")
        for header in ("set", "entity F1", "precision", "recall", "token acc"):
            table.add_column(header, justify="left" if header == "set" else "right", no_wrap=header == "set")
        for name, scores in result["metrics"].items():
            table.add_row(name, *(f"{scores[m]:.3f}" for m in ("f1", "precision", "recall", "token_accuracy")))
        console.print(table)
        selection = result["selection"]
        console.print(f"checkpoint of step {result['selected_step']} of {result['steps']}, chosen by entity F1 on "
                      f"{', '.join(selection['sets'])} ({selection['criterion']}); wall time {result['wall_time_s']} s.")
        for name, how in result.get("scoring", {}).items():
            console.print(f"{name}: scored types {', '.join(f'{t}→{m}' if t != m else t for t, m in how['scored'].items())}"
                          f"; not scored: {', '.join(how['not_scored']) or 'none'}", highlight=False)


@torch.inference_mode()  # no autograd bookkeeping at all (faster than no_grad)
def evaluate_tags(model: TokenClassifier, loaders: dict[str, DataLoader], accelerator: Accelerator,
                  tags: list[str]) -> Scores:
    """Entity-level scores of every set: the predicted tag of each word's first sub-word against its label."""
    was_training = model.training
    model.eval()
    results = {}
    for name, loader in loaders.items():
        references, predictions = [], []
        for batch in loader:
            with accelerator.autocast():
                logits = model(batch["input_ids"], batch["attention_mask"], batch.get("domain"))
            predicted, labels = accelerator.pad_across_processes((logits.argmax(-1), batch["labels"]), dim=1,
                                                                 pad_index=IGNORED)
            predicted, labels = accelerator.gather_for_metrics((predicted, labels))
            for row_predicted, row_labels in zip(predicted.cpu().tolist(), labels.cpu().tolist()):
                scored = [(p, gold) for p, gold in zip(row_predicted, row_labels) if gold != IGNORED]
                references.append([tags[gold] for _, gold in scored])
                predictions.append([tags[p] for p, _ in scored])
        results[name] = entity_metrics(references, predictions)
    model.train(was_training)
    return results
