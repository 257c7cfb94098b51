"""The plug-in contract every transfer strategy follows (after DomainBed's ``Algorithm``).

A strategy is a small ``nn.Module`` that holds the classifier (``self.model``) and any extra heads
(a domain discriminator, say). Its ``forward`` turns one labeled source batch, and optionally one
unlabeled target batch, into a loss and a dict of named loss terms for the logs. It never steps an
optimizer: the training loop does, so mixed precision, clipping and data parallelism live in one place.
The loop calls the strategy itself (``strategy(source, target, progress)``), not a method, so that
DistributedDataParallel sees the forward pass and synchronises gradients.

To add a strategy, write ``xdt/strategies/<name>.py`` with a subclass and
``configs/strategy/<name>.yaml`` whose ``_target_`` names it and lists its hyperparameters; nothing
else changes.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from xdt.models import SequenceClassifier

Batch = dict[str, torch.Tensor]
"""A collated batch: ``input_ids``, ``attention_mask``, and for labeled data ``labels``; ``domain``
is the index of the example's domain among the run's sources (or targets, for target batches)."""


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may know about the run besides its model (saved with the run, so ``xdt eval``
    rebuilds the same strategy)."""

    num_sources: int = 1  # source batches carry ``domain`` in [0, num_sources)
    num_targets: int = 0  # target domains whose unlabeled text forms the target stream
    mask_token_id: int | None = None  # for strategies with a masked-language-model loss
    special_token_ids: tuple[int, ...] = ()  # never masked
    vocab_size: int = 0
    tokenizer: PreTrainedTokenizerBase | None = dataclasses.field(default=None, compare=False, repr=False)

    def save(self, path: Path) -> None:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "tokenizer"}
        path.write_text(json.dumps(values) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: Path, tokenizer: PreTrainedTokenizerBase | None = None) -> "StrategyContext":
        values = json.loads(path.read_text(encoding="utf-8"))
        return cls(**{**values, "special_token_ids": tuple(values["special_token_ids"]), "tokenizer": tokenizer})

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, num_sources: int, num_targets: int) -> "StrategyContext":
        return cls(num_sources=num_sources, num_targets=num_targets, mask_token_id=tokenizer.mask_token_id,
                   special_token_ids=tuple(tokenizer.all_special_ids), vocab_size=len(tokenizer),
                   tokenizer=tokenizer)


class Strategy(nn.Module):
    """Base class: holds the classifier; subclasses define the training loss."""

    #: Short name used in records and tables (the config file's name by convention).
    name: str = "strategy"

    #: Whether :meth:`features_of_both` encodes a step's source and target batches in one pass, stacked: True,
    #: False, or None to decide by device (stacked on a GPU or other accelerator, a pass each on CPU).
    stack_streams: bool | None = None

    #: The tasks (``configs/task/``) whose models this strategy can train; None: every task (it reads only the
    #: model's ``loss``). Most strategies compare pooled features of whole texts, which sequence classifiers have.
    tasks: tuple[str, ...] | None = ("sequence_classification",)

    #: Whether ``forward`` consumes unlabeled target batches; the loop loads them only if so.
    uses_target_data: bool = False

    #: With ``target_domain.shots=k``: False, the shots join the training rows (one more labeled domain
    #: per target); True, they stay out of training and :meth:`adapted` fits a copy of the strategy to a
    #: target's shots before that target is scored (meta-learning's adaptation set).
    adapts_to_shots: bool = False

    def __init__(self, model: SequenceClassifier, context: StrategyContext = StrategyContext()):
        super().__init__()
        self.model = model
        self.context = context
        # Whether a row's output depends on the other rows of its batch (see features_of_both).
        self.model_mixes_rows = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())

    @property
    def target_stream(self) -> bool:
        """Whether the loop passes target batches to ``forward`` (the strategy wants them and there are targets)."""
        return self.uses_target_data and self.context.num_targets > 0

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss for one step, and its named terms for the logs (the loop detaches them).

        Every strategy names its source cross-entropy ``classification``; strategies that wrap another
        (FGM) read that term from it. ``progress`` is the fraction of training done, in [0, 1), for
        schedules such as DANN's.
        """
        raise NotImplementedError

    def adapted(self, shots: Batch) -> "Strategy":
        """The strategy that scores a target domain, given that target's labeled shots (one batch).

        Only called when :attr:`adapts_to_shots` is True; it must leave ``self`` unchanged.
        """
        return self

    def lr_scales(self) -> dict[nn.Module, float]:
        """Submodules that train at a multiple of ``optimizer.lr`` (none by default): a head learning from
        scratch beside a pretrained encoder may need to move faster than the encoder it judges."""
        return {}

    def predict(self, batch: Batch) -> torch.Tensor:
        """Class logits for evaluation (the model's own forward, whatever its task)."""
        return self.model(batch["input_ids"], batch["attention_mask"])

    def predict_with_features(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits and the pooled features they come from, from one forward pass (label-free validation,
        :mod:`xdt.transfer_validation`, reads both)."""
        features = self.model.features(batch["input_ids"], batch["attention_mask"])
        return self.model.classify(features), features

    def source_features(self, source: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Features of a source batch (pooled per text: what alignment strategies compare across domains) and
        the task's loss on it, from one forward pass (the task's model computes both)."""
        return self.model.features_and_loss(source)

    def target_features(self, target: Batch | None) -> torch.Tensor | None:
        return None if target is None else self.model.alignment_features(target)

    def features_of_both(self, source: Batch,
                         target: Batch | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`source_features` and :meth:`target_features` (None without a target batch), from one encoder
        pass over the two batches stacked.

        One pass of 2B rows launches half the kernels of two passes of B rows, which is what a small model's
        step on a GPU waits on. The result is the same computation: every layer of a transformer treats each
        row on its own (layer norm normalises each token; attention skips the padding the stacking adds),
        and dropout draws an independent mask per element either way, so only which random numbers fall
        where differs. Layers that mix rows through batch statistics (batch norm) would see a batch of both
        domains, which changes the result (and is itself a known adaptation method, AdaBN): a model with
        one gets two passes instead. So does a step on CPU (unless :attr:`stack_streams` says otherwise): its
        cost follows the tokens, and stacking pads the shorter batch to the longer one's length, which made
        DANN's step slower there, not faster (``scripts/bench_strategies.py --strategies erm dann
        dann/stacked``).
        """
        if target is None or self.model_mixes_rows or not self.stacks_on(source["input_ids"].device):
            return self.features_one_by_one(source, target)
        return self.model.joint_features_and_loss(source, target)

    def stacks_on(self, device: torch.device) -> bool:
        """Whether steps on ``device`` stack the source and target batches (see :meth:`features_of_both`)."""
        return device.type != "cpu" if self.stack_streams is None else self.stack_streams

    def features_one_by_one(self, source: Batch,
                            target: Batch | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """What :meth:`features_of_both` returns, from one encoder pass per batch."""
        features, loss = self.source_features(source)
        return features, loss, self.target_features(target)
