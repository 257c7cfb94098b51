"""Model builders: a pretrained encoder (hub name or local folder) or a random-init one built from a
config, optionally wrapped with PEFT adapters, under a mean-pooling classification head; and the
masked-LM head strategies add on top of the same encoder.

Every strategy works on :class:`SequenceClassifier`, whose ``features`` is the pooled representation
that alignment strategies (DANN, CORAL, MMD) compare across domains. Mean pooling is used by default
because it works for every encoder architecture alike, and it is how all-MiniLM-L6-v2 was trained.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from peft import AdaLoraConfig, IA3Config, LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, PretrainedConfig, \
    PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as transformers_logging

from xdt.data.batching import stack_batches
from xdt.efficiency import count_head_positions
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

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                 embedding_offset: torch.Tensor | None = None) -> torch.Tensor:
        """The pooled representation of each sequence, shape (batch, hidden).

        ``embedding_offset`` is added to the word embeddings (adversarial training perturbs them).
        """
        if embedding_offset is None:
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        else:
            embeddings = self.encoder.get_input_embeddings()(input_ids) + embedding_offset
            hidden = self.encoder(inputs_embeds=embeddings, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, attention_mask)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (batch, num_labels)."""
        return self.classify(self.features(input_ids, attention_mask))

    # What strategies read (xdt.strategies.base): the task's loss, and features to align across domains.
    loss_name = "classification"

    def loss(self, batch: dict, embedding_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of the labeled ``batch``: the task's loss, which ``erm`` trains on (FGM perturbs the
        embeddings by ``embedding_offset``)."""
        features = self.features(batch["input_ids"], batch["attention_mask"], embedding_offset)
        return F.cross_entropy(self.classify(features), batch["labels"])

    def features_and_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The pooled features of a labeled batch (what alignment strategies compare) and its loss."""
        features = self.features(batch["input_ids"], batch["attention_mask"])
        return features, F.cross_entropy(self.classify(features), batch["labels"])

    def alignment_features(self, batch: dict) -> torch.Tensor:
        return self.features(batch["input_ids"], batch["attention_mask"])

    def joint_features_and_loss(self, source: dict, target: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``features_and_loss(source)`` and ``alignment_features(target)`` from one encoder pass over both
        batches stacked (see :meth:`xdt.strategies.base.Strategy.features_of_both`)."""
        features = self.features(*stack_batches(source, target))
        rows = source["input_ids"].shape[0]
        return (features[:rows], F.cross_entropy(self.classify(features[:rows]), source["labels"]),
                features[rows:])


class TokenClassifier(nn.Module):
    """Encoder -> every token's state -> dropout -> linear head over the run's tags (named entity recognition).

    ``tag_masks`` (domains x tags, bool) restricts each example to its domain's tags when one head serves
    several label sets (joint training on domains with their own entity types): the other tags' logits are set
    to a large negative value before the loss and before the prediction, so a domain is never taught, nor
    scored on, another domain's types. Rows carry their domain's index in ``domain``.
    """

    loss_name = "classification"

    def __init__(self, encoder: PreTrainedModel, num_tags: int, tag_masks: torch.Tensor | None = None,
                 dropout: float | None = None):
        super().__init__()
        self.encoder = encoder
        rate = dropout if dropout is not None else getattr(encoder.config, "hidden_dropout_prob", 0.1)
        self.dropout = nn.Dropout(rate)
        self.head = nn.Linear(encoder.config.hidden_size, num_tags)
        masks = tag_masks if tag_masks is not None else torch.ones(1, num_tags, dtype=torch.bool)
        self.register_buffer("tag_masks", masks, persistent=False)  # rebuilt from the run's labels, never loaded

    def states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               embedding_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Every token's last hidden state, shape (batch, length, hidden)."""
        if embedding_offset is None:
            return self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embeddings = self.encoder.get_input_embeddings()(input_ids) + embedding_offset
        return self.encoder(inputs_embeds=embeddings, attention_mask=attention_mask).last_hidden_state

    def logits(self, states: torch.Tensor, domain: torch.Tensor | None) -> torch.Tensor:
        """Tag logits per token, with each row's domain's tags only (see the class docstring)."""
        logits = self.head(self.dropout(states))
        if self.tag_masks.shape[0] > 1 and domain is not None:
            allowed = self.tag_masks[domain].unsqueeze(1)  # (batch, 1, tags)
            logits = logits.masked_fill(~allowed, torch.finfo(logits.dtype).min / 2)
        return logits

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                domain: torch.Tensor | None = None) -> torch.Tensor:
        return self.logits(self.states(input_ids, attention_mask), domain)

    def _loss(self, states: torch.Tensor, batch: dict) -> torch.Tensor:
        logits = self.logits(states, batch.get("domain"))
        return F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100)

    def loss(self, batch: dict, embedding_offset: torch.Tensor | None = None) -> torch.Tensor:
        """Token cross-entropy over the labeled sub-words (the first of each word)."""
        return self._loss(self.states(batch["input_ids"], batch["attention_mask"], embedding_offset), batch)

    def features_and_loss(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentence features (the mean of the token states) and the token loss, from one pass of the encoder."""
        states = self.states(batch["input_ids"], batch["attention_mask"])
        return mean_pool(states, batch["attention_mask"]), self._loss(states, batch)

    def alignment_features(self, batch: dict) -> torch.Tensor:
        return mean_pool(self.states(batch["input_ids"], batch["attention_mask"]), batch["attention_mask"])

    def joint_features_and_loss(self, source: dict, target: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``features_and_loss(source)`` and ``alignment_features(target)`` from one encoder pass over both
        batches stacked (see :meth:`xdt.strategies.base.Strategy.features_of_both`)."""
        input_ids, attention_mask = stack_batches(source, target)
        states = self.states(input_ids, attention_mask)
        rows, length = source["input_ids"].shape
        features = mean_pool(states, attention_mask)
        return features[:rows], self._loss(states[:rows, :length], source), features[rows:]


def mean_pool(states: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the real tokens' states, shape (batch, hidden)."""
    mask = attention_mask.unsqueeze(-1).to(states.dtype)
    return (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)


PRETRAINED = "pretrained"  # the folder of a pretraining run that holds its final model, in Hugging Face format


def init_folder(cfg: DictConfig) -> Path | None:
    """The Hugging Face folder ``model.init_from`` points at: a pretraining run's ``pretrained/``
    (``xdt pretrain`` writes it) or any folder holding a saved model."""
    if not cfg.get("init_from"):
        return None
    given = Path(str(cfg.init_from)).expanduser()
    folder = given / PRETRAINED if (given / PRETRAINED).is_dir() else given
    if not (folder / "config.json").is_file():
        hint = " (that pretraining run has not finished)" if (given / "config.yaml").is_file() else ""
        raise XdtError(f"model.init_from={cfg.init_from}: no saved model there (neither {PRETRAINED}/config.json "
                       f"nor config.json){hint}")
    return folder.resolve()



def load_tokenizer(cfg: DictConfig) -> PreTrainedTokenizerBase:
    """The tokenizer of ``model.init_from`` if set, else of ``model.name_or_path`` (for random-init
    models: the vocabulary they use)."""
    folder = init_folder(cfg)
    source = folder or cfg.name_or_path
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=bool(cfg.trust_remote_code),
                                                  revision=None if folder else cfg.get("revision"))
    except (OSError, ValueError) as error:
        raise XdtError(f"model.name_or_path={source!r}: could not load its tokenizer ({error})") from None
    if tokenizer.pad_token is None:  # decoder vocabularies (GPT-2) ship without one
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _drop_pooler(encoder: PreTrainedModel) -> PreTrainedModel:
    # BERT-style encoders carry a pooler xdt never uses; its parameters would get no gradient, which
    # DistributedDataParallel rejects. The forward pass skips a pooler set to None.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


DROPOUT_FIELDS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout",
                  "hidden_dropout", "attention_probs_dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop")


def encoder_config(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase) -> PretrainedConfig:
    """The Hugging Face config of the encoder to build: ``model.random_init`` or the pretrained one's,
    with every dropout rate set to ``model.dropout`` when that is given."""
    folder = init_folder(cfg)
    if folder is not None:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=bool(cfg.trust_remote_code))
    elif cfg.get("random_init"):
        spec = OmegaConf.to_container(cfg.random_init, resolve=True)
        model_type = spec.pop("model_type", "bert")
        config = AutoConfig.for_model(model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                      **spec)
    else:
        try:
            config = AutoConfig.from_pretrained(cfg.name_or_path, trust_remote_code=bool(cfg.trust_remote_code),
                                                revision=cfg.get("revision"))
        except (OSError, ValueError) as error:
            raise XdtError(f"model.name_or_path={cfg.name_or_path!r}: could not load its config ({error})") from None
    if cfg.get("dropout") is not None:
        for field in DROPOUT_FIELDS:
            if isinstance(getattr(config, field, None), float):
                setattr(config, field, float(cfg.dropout))
    return config


def build_encoder(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, pretrained: bool = True) -> PreTrainedModel:
    """The encoder: weights from ``model.init_from`` (a pretraining run) or ``model.name_or_path``, or
    random init from ``model.random_init``.

    ``pretrained=False`` builds the same architecture without loading weights (to load a checkpoint
    into). ``trust_remote_code`` is passed only as the user set it (default false).
    """
    config = encoder_config(cfg, tokenizer)
    remote = bool(cfg.trust_remote_code)
    source = init_folder(cfg)
    if not pretrained or (source is None and cfg.get("random_init")):
        return _drop_pooler(AutoModel.from_config(config, trust_remote_code=remote))
    transformers_logging.disable_progress_bar()  # xdt logs what it loads; a bar per job would clutter a sweep's log
    try:
        encoder = AutoModel.from_pretrained(source or cfg.name_or_path, config=config, trust_remote_code=remote,
                                            revision=None if source else cfg.get("revision"))
    except (OSError, ValueError) as error:
        raise XdtError(f"model weights from {source or cfg.name_or_path}: could not load them ({error})") from None
    if source is not None:
        log.info("encoder weights from %s", source)
    return _drop_pooler(encoder)


PEFT_METHODS = {"lora": LoraConfig, "adalora": AdaLoraConfig, "ia3": IA3Config}


def apply_peft(encoder: PreTrainedModel, cfg: DictConfig, total_steps: int) -> PreTrainedModel:
    """Wrap the encoder with the adapters ``model.peft`` names (LoRA, AdaLoRA or IA3 through ``peft``);
    only the adapters of the encoder train. ``total_steps`` sets AdaLoRA's rank-allocation schedule."""
    method = cfg.get("peft") or "none"
    if method == "none":
        return encoder
    if method not in PEFT_METHODS:
        raise XdtError(f"model.peft={method!r} is not valid: choose none, {', '.join(PEFT_METHODS)}")
    options = {k: v for k, v in OmegaConf.to_container(cfg.peft_settings[method], resolve=True).items()
               if v is not None}
    if method == "adalora":
        options["total_step"] = total_steps
    try:
        return get_peft_model(encoder, PEFT_METHODS[method](**options))
    except (TypeError, ValueError) as error:
        raise XdtError(f"model.peft={method} with model.peft_settings.{method}={options}: {error}") from None


def build_classifier(cfg: DictConfig, tokenizer: PreTrainedTokenizerBase, num_labels: int,
                     pretrained: bool = True, total_steps: int = 1000) -> SequenceClassifier:
    """The classifier a strategy trains, with PEFT adapters if ``model.peft`` asks for them; see
    :func:`build_encoder` for ``pretrained``."""
    encoder = apply_peft(build_encoder(cfg, tokenizer, pretrained), cfg, total_steps)
    return SequenceClassifier(encoder, num_labels, pooling=cfg.get("pooling", "mean"), dropout=cfg.get("dropout"))


def frozen_weights_rebuildable(cfg: DictConfig) -> bool:
    """Whether weights that do not train can be rebuilt from ``model.name_or_path`` (PEFT on a pretrained
    encoder), so checkpoints can leave them out; a random-init encoder's frozen weights cannot."""
    return (cfg.get("peft") or "none") != "none" and (not cfg.get("random_init") or bool(cfg.get("init_from")))


def max_input_length(config: PretrainedConfig) -> int | None:
    """The longest input the encoder's position embeddings allow (RoBERTa reserves two positions)."""
    positions = getattr(config, "max_position_embeddings", None)
    if positions is None:
        return None
    return positions - 2 if config.model_type in ("roberta", "xlm-roberta", "camembert") else positions


def check_max_length(max_length: int, tokenizer: PreTrainedTokenizerBase) -> None:
    """A limit that leaves no room for text is refused: the tokenizer would ignore it and run full length."""
    special = tokenizer.num_special_tokens_to_add()
    if max_length <= special:
        raise XdtError(f"max_length={max_length} leaves no room for text: the tokenizer adds {special} special "
                       f"tokens to every example; use max_length={special + 1} or more (128 is usual)")


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in module.parameters())
    return sum(p.numel() for p in module.parameters() if p.requires_grad), total


def save_model_files(model: SequenceClassifier, tokenizer: PreTrainedTokenizerBase, label_names: list[str],
                     folder: Path) -> None:
    """Write what rebuilding the classifier needs without network: encoder config, tokenizer, label names."""
    encoder = model.encoder.get_base_model() if hasattr(model.encoder, "get_base_model") else model.encoder
    encoder.config.save_pretrained(folder / "encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    (folder / "labels.json").write_text(json.dumps(label_names) + "\n", encoding="utf-8")


def model_files_problem(folder: Path) -> str | None:
    """What is wrong with a run's ``model/`` folder (missing, or cut off while it was written), or None.

    Every file :func:`save_model_files` and the strategy context write must be there and parse, and the
    tokenizer must load: a folder that fails here would make every later ``xdt eval`` of the run fail."""
    folder = Path(folder)
    if not folder.is_dir():
        return f"{folder} is missing"
    try:
        for name in ("labels.json", "strategy_context.json", "encoder/config.json"):
            json.loads((folder / name).read_text(encoding="utf-8"))
        AutoTokenizer.from_pretrained(folder / "tokenizer")
    except (OSError, ValueError, TypeError) as error:  # JSONDecodeError is a ValueError
        return f"{folder} is incomplete or damaged ({str(error).splitlines()[0] if str(error) else type(error).__name__})"
    return None


def rebuild_classifier(model_dir: Path, cfg: DictConfig, total_steps: int) -> tuple[
        SequenceClassifier, PreTrainedTokenizerBase, list[str]]:
    """The classifier of a saved run, ready for a checkpoint to be loaded into it.

    Built from the files :func:`save_model_files` wrote (no network), except with PEFT on a pretrained
    encoder: its frozen weights, which checkpoints leave out, load again from ``model.name_or_path``.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_dir / "tokenizer")
    label_names = json.loads((model_dir / "labels.json").read_text(encoding="utf-8"))
    if frozen_weights_rebuildable(cfg):
        return build_classifier(cfg, tokenizer, len(label_names), True, total_steps), tokenizer, label_names
    config = AutoConfig.from_pretrained(model_dir / "encoder", trust_remote_code=bool(cfg.trust_remote_code))
    encoder = _drop_pooler(AutoModel.from_config(config, trust_remote_code=bool(cfg.trust_remote_code)))
    encoder = apply_peft(encoder, cfg, total_steps)
    model = SequenceClassifier(encoder, len(label_names), pooling=cfg.get("pooling", "mean"), dropout=cfg.get("dropout"))
    return model, tokenizer, label_names


class MaskedLMHead(nn.Module):
    """The masked-language-model head of the encoder's architecture, run on top of the shared encoder.

    Built from ``AutoModelForMaskedLM`` for the encoder's config, with the output projection tied to
    the shared word embeddings, as in BERT pretraining. Where the architecture's head is one module
    (``cls`` in BERT, ``lm_head`` in RoBERTa) it runs on the masked positions only: the same loss as
    scoring every token against the 30k-word vocabulary, at a fraction of the cost. Other architectures
    run the whole masked-LM model with its encoder replaced by the shared one. Heads of pretrained sentence
    encoders are not in their checkpoints (all-MiniLM-L6-v2 has none), so the head starts untrained.
    """

    HEAD_ATTRIBUTES = ("cls", "lm_head")

    def __init__(self, encoder: PreTrainedModel):
        super().__init__()
        mlm = AutoModelForMaskedLM.from_config(encoder.config)
        mlm.get_output_embeddings().weight = encoder.get_input_embeddings().weight
        object.__setattr__(self, "encoder", encoder)  # shared with the classifier: not registered twice
        name = next((n for n in self.HEAD_ATTRIBUTES if hasattr(mlm, n)), None)
        self.head = getattr(mlm, name) if name else None
        self.mlm = None
        if name is None:
            delattr(mlm, mlm.base_model_prefix)  # "distilbert", ...: unregistered, the shared encoder replaces it
            object.__setattr__(mlm, mlm.base_model_prefix, encoder)
            self.mlm = mlm

    @property
    def position_head(self) -> nn.Module | None:
        """The head when it runs on the masked positions only (what MFU counts it for: xdt.efficiency)."""
        return self.head

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Masked-LM cross-entropy of predicting ``labels`` (-100 = not masked)."""
        if self.head is None:
            return self.mlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        masked = labels != -100
        targets = labels[masked]
        if not len(targets):
            return hidden.sum() * 0.0
        count_head_positions(self, len(targets))
        return F.cross_entropy(self.head(hidden[masked]), targets)


def mask_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor, probability: float, mask_token_id: int,
                special_token_ids: tuple[int, ...], vocab_size: int,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (Devlin et al., NAACL 2019): choose ``probability`` of the real tokens; of those,
    80% become the mask token, 10% a random token, 10% stay. Returns (inputs, labels with -100 elsewhere).
    A ``generator`` makes the masks repeatable (evaluation masks the same tokens every time)."""
    device = input_ids.device
    maskable = attention_mask.bool() & ~torch.isin(input_ids, torch.tensor(special_token_ids, device=device))
    chosen = maskable & (torch.rand(input_ids.shape, generator=generator, device=device) < probability)
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    draw = torch.rand(input_ids.shape, generator=generator, device=device)
    inputs = torch.where(chosen & (draw < 0.8), torch.full_like(input_ids, mask_token_id), input_ids)
    random_tokens = torch.randint(vocab_size, input_ids.shape, generator=generator, device=device)
    inputs = torch.where(chosen & (draw >= 0.8) & (draw < 0.9), random_tokens, inputs)
    return inputs, labels
