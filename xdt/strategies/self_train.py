"""Self-training by pseudo-labelling (Lee, "Pseudo-Label: The Simple and Efficient Semi-Supervised
Learning Method for Deep Neural Networks", ICML 2013 workshop; with FixMatch's confidence threshold,
Sohn et al., NeurIPS 2020).

After a warm-up of plain ERM (the first ``warmup`` fraction of training), each unlabeled target
example whose predicted class has probability at least ``threshold`` is trained on as if that class
were its label. Loss = source cross-entropy + ``weight`` * mean pseudo-label cross-entropy over the
target batch (examples under the threshold count as zero, as in FixMatch).

Pseudo-labels confirm the model's own mistakes, and the surest mistake is drifting towards one class:
once most confident target predictions say "negative", training on them makes more of them negative.
``diversity`` (1.0 in the shipped config) weights the diversity term of information maximisation (SHOT,
Liang et al., ICML 2020): log K - H(mean predicted distribution over the target batch), zero when the
batch's predictions are spread evenly over the K classes. Without it, apparel -> MR (MiniLM, seed 0)
drifted to one class: the term, logged as ``diversity``, rose from 0.02 to 0.51 (log 2 = 0.69) while 92 %
of target rows got a confident pseudo-label. It assumes the target's classes are roughly balanced (as in
FDU-MTL); set it to 0 for a target known to be skewed. (The constructor's default stays 0, so a run
saved before the term existed resumes with the objective it started with.)

``views`` says where a pseudo-label comes from. ``same`` (the default): from the very forward pass that is
trained on it. ``eda``: consistency training as FixMatch does it, with text augmentation as UDA (Xie et al.,
"Unsupervised Data Augmentation for Consistency Training", NeurIPS 2020) does for text: the target batch as it
is gets the pseudo-labels (a forward pass without gradients), and the loss is taken on a copy of it rewritten by
one EDA operation per example (``alpha`` of its words; :mod:`xdt.strategies.augment`), so the model learns to
give a changed sentence the label it gives the original. It costs a forward pass of the target batch more.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

from xdt.checks import check_fraction
from xdt.errors import XdtError
from xdt.strategies.augment import BUILTIN_LEXICON, OPERATIONS, eda, load_lexicon, texts_of, with_texts
from xdt.strategies.base import Batch, Strategy, StrategyContext

VIEWS = ("same", "eda")


class SelfTraining(Strategy):
    name = "self_train"
    uses_target_data = True

    def __init__(self, model, context: StrategyContext = StrategyContext(), threshold: float = 0.9,
                 weight: float = 1.0, warmup: float = 0.2, diversity: float = 0.0, views: str = "same",
                 alpha: float = 0.1):
        super().__init__(model, context)
        if views not in VIEWS:
            raise XdtError(f"strategy.views={views!r} is not valid: choose {' or '.join(VIEWS)}")
        if views == "eda" and context.tokenizer is None:
            raise XdtError("strategy.views=eda needs the run's tokenizer to turn token ids back into text")
        check_fraction("strategy.alpha", alpha, "a fraction of each text's words")
        self.views, self.alpha = views, alpha
        self.lexicon = load_lexicon(BUILTIN_LEXICON) if views == "eda" else {}
        if not diversity >= 0:
            raise XdtError(f"strategy.diversity={diversity} is not valid: it must be 0 (off) or positive")
        # A threshold above 1 or a warm-up of the whole run would silently give no pseudo-label at all.
        if not 0 <= threshold <= 1:
            raise XdtError(f"strategy.threshold={threshold} is not valid: it is a probability, from 0 to 1")
        check_fraction("strategy.warmup", warmup)
        self.threshold, self.weight, self.warmup, self.diversity = threshold, weight, warmup, diversity

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if target is None or progress < self.warmup:
            _, classification = self.source_features(source)
            zero = classification.new_zeros(())
            return classification, {"classification": classification, "pseudo": zero, "pseudo_fraction": zero,
                                    "diversity": zero}
        trained_on = self.rewritten(target) if self.views == "eda" else target
        _, classification, target_features = self.features_of_both(source, trained_on)
        logits = self.model.classify(target_features)
        if self.views == "eda":
            with torch.no_grad():
                labelled_by = self.model.classify(self.target_features(target))
        else:
            labelled_by = logits.detach()
        confidence, pseudo_labels = labelled_by.softmax(-1).max(-1)
        confident = (confidence >= self.threshold).float()
        pseudo = (F.cross_entropy(logits, pseudo_labels, reduction="none") * confident).mean()
        diversity = class_imbalance(logits)
        loss = classification + self.weight * pseudo + self.diversity * diversity
        return loss, {"classification": classification, "pseudo": pseudo, "pseudo_fraction": confident.mean(),
                      "diversity": diversity}


    def rewritten(self, target: Batch) -> Batch:
        """The target batch with every example rewritten by one EDA operation (Python's ``random``, which
        checkpoints save, chooses which and where)."""
        tokenizer = self.context.tokenizer
        texts = texts_of(target, list(range(len(target["input_ids"]))), tokenizer)
        return with_texts(target, {i: " ".join(eda(text.split(), random.choice(OPERATIONS), self.alpha, self.lexicon,
                                                     random)) for i, text in enumerate(texts)}, tokenizer)


def class_imbalance(logits: torch.Tensor) -> torch.Tensor:
    """log K - H(mean softmax over the batch): 0 when the batch's predictions average to uniform, log K
    when every row predicts the same class with certainty (SHOT's diversity term, Liang et al. 2020)."""
    mean = logits.float().softmax(-1).mean(0)
    return math.log(logits.shape[-1]) + (mean * mean.clamp_min(1e-12).log()).sum()
