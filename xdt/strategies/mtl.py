"""Multi-task learning: several source domains with their own heads, and an auxiliary masked-LM loss.

Two parts, each switched on alone or together:

* **Per-domain heads** (``domain_heads``): with several source domains (``source_domain=[a,b,c]``)
  the encoder is shared and every source domain gets its own classification head next to the shared
  head; each example trains the shared head and its domain's head. The shared head is the one used
  for evaluation and for unseen target domains (the shared/private idea of Liu, Qiu and Huang,
  "Adversarial Multi-task Learning for Text Classification", ACL 2017, without the adversary).
* **Masked-LM loss** (``mlm_weight`` > 0): a masked-language-model loss on the unlabeled target text
  (and, with ``mlm_on_source``, on the source text) next to the classification loss, so the encoder
  keeps modelling the target's language while it learns the task (UDALM: Karouzos, Paraskevopoulos and
  Potamianos, "UDALM: Unsupervised Domain Adaptation through Language Modeling", NAACL 2021).

Loss = shared-head cross-entropy + domain-head cross-entropy + ``mlm_weight`` * masked-LM loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from xdt.models import MaskedLMHead, mask_tokens
from xdt.strategies.base import Batch, Strategy, StrategyContext


class MultiTask(Strategy):
    name = "mtl"

    def __init__(self, model, context: StrategyContext = StrategyContext(), domain_heads: bool = True,
                 mlm_weight: float = 0.5, mlm_on_source: bool = False, mask_probability: float = 0.15):
        super().__init__(model, context)
        hidden, labels = model.encoder.config.hidden_size, model.head.out_features
        self.domain_heads = (nn.ModuleList(nn.Linear(hidden, labels) for _ in range(context.num_sources))
                             if domain_heads and context.num_sources > 1 else None)
        self.mlm_weight, self.mlm_on_source, self.mask_probability = mlm_weight, mlm_on_source, mask_probability
        self.uses_target_data = mlm_weight > 0
        self.mlm_head = MaskedLMHead(model.encoder) if mlm_weight > 0 else None

    def masked_lm_loss(self, batch: Batch) -> torch.Tensor:
        c = self.context
        inputs, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], self.mask_probability,
                                     c.mask_token_id, c.special_token_ids, c.vocab_size)
        return self.mlm_head(inputs, batch["attention_mask"], labels)

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features, classification = self.source_features(source)
        loss, terms = classification, {"classification": classification}
        if self.domain_heads is not None:
            dropped = self.model.dropout(features)
            logits = torch.stack([head(dropped) for head in self.domain_heads])  # (domains, batch, labels)
            own = logits[source["domain"], torch.arange(len(features), device=features.device)]
            terms["domain_heads"] = F.cross_entropy(own, source["labels"])
            loss = loss + terms["domain_heads"]
        if self.mlm_head is not None:
            texts = ([target] if target is not None else []) + ([source] if self.mlm_on_source else [])
            if texts:
                terms["mlm"] = torch.stack([self.masked_lm_loss(batch) for batch in texts]).mean()
                loss = loss + self.mlm_weight * terms["mlm"]
        return loss, terms
