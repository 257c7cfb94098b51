"""Language models for ``xdt pretrain``: an encoder with its masked-LM head (BERT's objective, Devlin et
al., NAACL 2019) or a decoder with its causal-LM head (next-token prediction, GPT-2), and their
evaluation on held-out text: perplexity and the accuracy of the predicted tokens, per domain.

Only the positions that carry a loss go through the output layer (the masked ones, or every real
token but the last for a causal model): the same loss as scoring every position against the whole
vocabulary, at a fraction of the cost.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, PreTrainedModel, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES
from transformers.utils import logging as transformers_logging

from xdt.efficiency import count_head_positions
from xdt.errors import XdtError
from xdt.models import encoder_config, init_folder, mask_tokens

log = logging.getLogger(__name__)

OBJECTIVES = ("auto", "mlm", "clm")
AUTO_CLASSES = {"mlm": AutoModelForMaskedLM, "clm": AutoModelForCausalLM}


def resolve_objective(objective: str, model_type: str) -> str:
    """``auto``: masked LM for architectures that have one (encoders), causal LM for the others."""
    if objective not in OBJECTIVES:
        raise XdtError(f"task.objective={objective!r} is not valid: choose {', '.join(OBJECTIVES)}")
    if objective != "auto":
        return objective
    return "mlm" if model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES else "clm"


def build_language_model(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, objective: str) -> PreTrainedModel:
    """The model of ``cfg`` (``model`` group) with the output head of ``objective``: random init from
    ``model.random_init``, or the weights of ``model.init_from`` / ``model.name_or_path``. A head the
    checkpoint lacks (sentence encoders such as all-MiniLM-L6-v2 ship none) starts untrained."""
    config = encoder_config(cfg, tokenizer)
    auto = AUTO_CLASSES[objective]
    remote = bool(cfg.trust_remote_code)
    source = init_folder(cfg)
    try:
        if source is None and cfg.get("random_init"):
            return auto.from_config(config, trust_remote_code=remote)
        transformers_logging.disable_progress_bar()  # as in xdt.models.build_encoder
        return auto.from_pretrained(source or cfg.name_or_path, config=config, trust_remote_code=remote,
                                    revision=None if source else cfg.get("revision"))
    except ValueError as error:
        if "Unrecognized configuration class" in str(error):
            raise XdtError(f"task.objective={objective}: model {cfg.name} ({config.model_type}) has no "
                           f"{'masked' if objective == 'mlm' else 'causal'} language-model head; use task.objective=auto") from None
        raise XdtError(f"model {cfg.name}: could not build its language model ({error})") from None
    except OSError as error:
        raise XdtError(f"model weights from {source or cfg.name_or_path}: could not load them ({error})") from None


class LanguageModel(nn.Module):
    """Wraps a Hugging Face masked- or causal-LM model; computes the loss on the predicted positions only.

    ``masker`` masks training batches for MLM (None for CLM). The language-modeling task's model: strategies
    read its :meth:`loss`; ``encoder`` is the whole pretrained network (what L2-SP pulls towards its start)."""

    HEADS = {"mlm": ("cls", "lm_head"), "clm": ("lm_head",)}
    loss_name = "lm"

    def __init__(self, lm: PreTrainedModel, objective: str, masker: "Masker | None" = None):
        super().__init__()
        self.lm = lm
        self.objective = objective
        self.masker = masker
        name = next((n for n in self.HEADS[objective] if hasattr(lm, n)), None)
        self._head_name = name  # None: run the whole model and select positions from its logits

    @property
    def encoder(self) -> PreTrainedModel:
        return self.lm

    @property
    def position_head(self) -> nn.Module | None:
        """The output layer, run on the predicted positions only (what MFU counts it for: xdt.efficiency)."""
        return getattr(self.lm, self._head_name) if self._head_name is not None else None

    def loss(self, batch: dict) -> torch.Tensor:
        """The training loss of one batch: masked at random (MLM) or as it is (CLM)."""
        return self(*lm_inputs(batch, self.masker))

    def predicted(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits, targets, row index) of every position that carries a loss.

        MLM: the masked positions, whose targets are ``labels``. CLM: position t predicts token t+1 of
        the same sequence wherever that token is real (``labels`` unused).
        """
        if self._head_name is not None:
            states = self.lm.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            states = self.lm(input_ids=input_ids, attention_mask=attention_mask).logits
        if self.objective == "mlm":
            chosen = labels != -100
            targets = labels[chosen]
        else:
            states = states[:, :-1]
            chosen = attention_mask[:, 1:].bool()
            targets = input_ids[:, 1:][chosen]
        rows = chosen.nonzero()[:, 0]
        selected = states[chosen]
        if self._head_name is None:
            return selected, targets, rows
        count_head_positions(self, len(targets))
        logits = self.position_head(selected)
        return logits, targets, rows

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        """Mean cross-entropy per predicted token."""
        logits, targets, _ = self.predicted(input_ids, attention_mask, labels)
        if targets.numel() == 0:  # nothing masked in this batch: a zero loss that still touches the graph
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), targets)


class Masker:
    """BERT masking with the run's tokenizer: random during training, repeatable during evaluation."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, probability: float):
        if tokenizer.mask_token_id is None:
            raise XdtError("objective=mlm needs a tokenizer with a mask token; this one has none (use task.objective=clm)")
        if not 0 < probability < 1:
            raise XdtError(f"task.mlm_probability={probability} must be between 0 and 1")
        self.probability = probability
        self.mask_id = tokenizer.mask_token_id
        self.special = tuple(tokenizer.all_special_ids)
        self.vocab_size = len(tokenizer)

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(batch["input_ids"], batch["attention_mask"], self.probability, self.mask_id, self.special,
                           self.vocab_size, generator=generator)


def lm_inputs(batch: dict, masker: Masker | None,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(input_ids, attention_mask, labels) for one step: masked for MLM, as they are for CLM."""
    if masker is None:
        return batch["input_ids"], batch["attention_mask"], None
    inputs, labels = masker(batch, generator)
    return inputs, batch["attention_mask"], labels


@torch.inference_mode()  # no autograd bookkeeping at all (faster than no_grad)
def evaluate_lm(model: LanguageModel, loaders: dict[str, DataLoader], accelerator: Accelerator,
                masker: Masker | None, seed: int = 0) -> dict[str, dict]:
    """Per set: mean loss per predicted token (nats), perplexity = exp(loss), the accuracy of the
    predicted tokens (masked tokens for MLM, next tokens for CLM), and how many tokens were scored.

    MLM masks come from a generator seeded with ``seed`` per set, so every evaluation of a run scores
    the same positions and perplexities are comparable across steps and runs.
    """
    was_training = model.training
    model.eval()
    results = {}
    for name, loader in loaders.items():
        generator = torch.Generator(device=accelerator.device).manual_seed(seed)
        totals = torch.zeros(3, dtype=torch.float64)
        for batch in loader:
            input_ids, attention_mask, labels = lm_inputs(batch, masker, generator)
            with accelerator.autocast():
                logits, targets, rows = model.predicted(input_ids, attention_mask, labels)
            size = len(input_ids)
            # Per-row sums, so gather_for_metrics can drop the rows a distributed sampler repeats.
            per_row = torch.zeros(size, 3, device=logits.device, dtype=torch.float64)
            per_row[:, 0].index_add_(0, rows, F.cross_entropy(logits.float(), targets, reduction="none").double())
            per_row[:, 1].index_add_(0, rows, torch.ones_like(targets, dtype=torch.float64))
            per_row[:, 2].index_add_(0, rows, (logits.argmax(-1) == targets).double())
            totals += accelerator.gather_for_metrics(per_row).sum(0).cpu()
        loss_sum, tokens, correct = totals.tolist()
        loss = loss_sum / max(tokens, 1.0)
        results[name] = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)),
                         "token_accuracy": correct / max(tokens, 1.0), "tokens": int(tokens)}
    model.train(was_training)
    return results
