"""Linear probing, then fine-tuning, LP-FT (Kumar, Raghunathan, Jones, Ma and Liang, "Fine-Tuning can
Distort Pretrained Features and Underperform Out-of-Distribution", ICLR 2022).

Plain fine-tuning starts from a random head, so the first updates push the encoder hard to fit the source
labels through a head that is still wrong; Kumar et al. show this distorts the pretrained features along
the directions the source data spans and leaves the others, where out-of-distribution data differs, as
they were: in-distribution accuracy holds up, out-of-distribution accuracy falls. Training the head alone
first (a linear probe on frozen features) and only then fine-tuning everything starts the encoder's
updates from a head that already fits, so they are smaller and distort less.

Here the probe is the first ``probe`` fraction of the run's step budget: the source cross-entropy flows
into the head but is cut off from the encoder (the encoder's gradient is zero, not absent, so data
parallelism sees every parameter used). The rest of the budget is plain fine-tuning. The head trains at
``head_lr_scale`` times the optimizer's learning rate throughout, because at a fine-tuning learning rate
a linear head barely moves within a probe of a few dozen steps: on MiniLM's pooled features of FDU-MTL
apparel reviews, 50 probe steps on the fine-tuning schedule (peak 5e-5) reach 0.53 source validation
accuracy at 1x, 0.61 at 10x, 0.81 at 100x and 0.85 at 1000x (``scripts/linear_probe_rates.py``). It
ignores target text, like ERM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xdt.checks import check_fraction
from xdt.errors import XdtError
from xdt.strategies.base import Batch, Strategy, StrategyContext


class LinearProbeThenFineTune(Strategy):
    name = "lp_ft"

    def __init__(self, model, context: StrategyContext = StrategyContext(), probe: float = 0.33,
                 head_lr_scale: float = 100.0):
        super().__init__(model, context)
        check_fraction("strategy.probe", probe)
        if not head_lr_scale > 0:
            raise XdtError(f"strategy.head_lr_scale={head_lr_scale} is not valid: it must be positive")
        self.probe, self.head_lr_scale = probe, head_lr_scale

    def lr_scales(self) -> dict[torch.nn.Module, float]:
        return {self.model.head: self.head_lr_scale}

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = self.model.features(source["input_ids"], source["attention_mask"])
        probing = progress < self.probe
        if probing:  # same value, zero gradient into the encoder
            features = features.detach() + 0.0 * features
        loss = F.cross_entropy(self.model.classify(features), source["labels"])
        return loss, {"classification": loss, "probing": loss.new_full((), float(probing))}
