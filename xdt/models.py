"""Model builders: a pretrained encoder (hub name or local folder) or a random-init one built from a
config, under a mean-pooling classification head.

Every strategy works on :class:`SequenceClassifier`, whose ``features`` is the pooled representation
that alignment strategies (DANN, CORAL, MMD) compare across domains. Mean pooling is used by default
because it works for every encoder architecture alike, and it is how all-MiniLM-L6-v2 was trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel, \
    PreTrainedTokenizerBase

from xdt.errors import XdtError

log = logging.getLogger(__name__)


class SequenceClassifier(nn.Module):
    """Encoder -> pooled features -> dropout -> linear head."""

    def __init__(self, encoder: PreTrainedModel, num_labels: int, pooling: str = "mean",
                 dropout: float | None = None):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise XdtError(f"model.pooling={pooling!r} is not valid: choose mean or cls")
        self.encoder = encoder
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        rate = dropout if dropout is not None else getattr(encoder.config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(rate)
        self.head = nn.Linear(hidden, num_labels)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The pooled representation of each sequence, shape (batch, hidden)."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (batch, num_labels)."""
        return self.classify(self.features(input_ids, attention_mask))


def load_tokenizer(cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model.name_or_path`` (for random-init models: the vocabulary they use)."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(cfg.name_or_path, trust_remote_code=bool(cfg.trust_remote_code),
                                                  revision=cfg.get("revision"))
    except (OSError, ValueError) as error:
        raise XdtError(f"model.name_or_path={cfg.name_or_path!r}: could not load its tokenizer ({error})") from None
    if tokenizer.pad_token is None:  # decoder vocabularies (GPT-2) ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _drop_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    # BERT-style encoders carry a pooler xdt never uses; its parameters would get no gradient, which
    # DistributedDataParallel rejects. The forward pass skips a pooler set to None.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def encoder_config(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The Hugging Face config of the encoder to build: ``model.random_init`` or the pretrained one's."""
    if cfg.get("random_init"):
        spec = OmegaConf.to_container(cfg.random_init, resolve=True)
        model_type = spec.pop("model_type", "bert")
        return AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **spec)
    try:
        return AutoConfig.from_pretrained(cfg.name_or_path, trust_remote_code=bool(cfg.trust_remote_code),
                                          revision=cfg.get("revision"))
    except (OSError, ValueError) as error:
        raise XdtError(f"model.name_or_path={cfg.name_or_path!r}: could not load its config ({error})") from None


def build_encoder(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, pretrained: bool = True) -> PreTrainedModel:
    """The encoder: pretrained weights from ``model.name_or_path``, or random init from ``model.random_init``.

    ``pretrained=False`` builds the same architecture without loading weights (to load a checkpoint
    into). ``trust_remote_code`` is passed only as the user set it (default false).
    """
    config = encoder_config(cfg, tokenizer)
    remote = bool(cfg.trust_remote_code)
    if cfg.get("random_init") or not pretrained:
        return _drop_pooler(AutoModel.from_config(config, trust_remote_code=remote))
    try:
        encoder = AutoModel.from_pretrained(cfg.name_or_path, config=config, trust_remote_code=remote,
                                            revision=cfg.get("revision"))
    except (OSError, ValueError) as error:
        raise XdtError(f"model.name_or_path={cfg.name_or_path!r}: could not load its weights ({error})") from None
    return _drop_pooler(encoder)


def build_classifier(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, num_labels: int,
                     pretrained: bool = True) -> SequenceClassifier:
    """The classifier a strategy trains; see :func:`build_encoder` for ``pretrained``."""
    encoder = build_encoder(cfg, tokenizer, pretrained)
    return SequenceClassifier(encoder, num_labels, pooling=cfg.get("pooling", "mean"), dropout=cfg.get("dropout"))


def max_input_length(config: PretrainedConfig) -> int | None:
    """The longest input the encoder's position embeddings allow (RoBERTa reserves two positions)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    return positions - 2 if config.model_type in ("roberta", "xlm-roberta", "camembert") else positions


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total


def save_model_files(model: SequenceClassifier, tokenizer: PreTrainedTokenizerBase, label_names: list[str],
                     folder: Path) -> None:
    """Write what rebuilding the classifier needs without network: encoder config, tokenizer, label names."""
    model.encoder.config.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "labels.json").write_text(json.dumps(label_names) + "\n", encoding="utf-8")


def rebuild_classifier(model_dir: Path, cfg: DictConfig) -> tuple[SequenceClassifier, PreTrainedTokenizerBase,
                                                                   list[str]]:
    """The classifier of a saved run, from the files :func:`save_model_files` wrote (no network), with
    untrained weights: load a checkpoint into it."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir / "tokenizer")
    config = AutoConfig.from_pretrained(model_dir / "encoder", trust_remote_code=bool(cfg.trust_remote_code))
    encoder = _drop_pooler(AutoModel.from_config(config, trust_remote_code=bool(cfg.trust_remote_code)))
    label_names = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
    model = SequenceClassifier(encoder, len(label_names), pooling=cfg.get("pooling", "mean"), dropout=cfg.get("dropout"))
    return model, tokenizer, label_names
