"""Data augmentation of the source text on the fly: EDA and, for users with network, back-translation.

EDA (Wei and Zou, "EDA: Easy Data Augmentation Techniques for Boosting Performance on Text
Classification Tasks", EMNLP 2019): each chosen example gets one of four operations, changing about
``alpha`` of its words: synonym replacement and random insertion of a synonym (both need a synonym
lexicon: the small built-in one for English reviews, or your own ``word<TAB>syn,syn`` file), random
swap of two words, and random deletion of words. Back-translation (Sennrich, Haddow and Birch, ACL 2016)
translates chosen examples into a pivot language and back with two translation models (for example
``Helsinki-NLP/opus-mt-en-de`` and ``Helsinki-NLP/opus-mt-de-en``); the models are frozen and not
saved in checkpoints.

Each step, every source example is replaced by an augmented copy with probability ``probability``
(the label stays); the loss is the cross-entropy on the resulting batch. Randomness comes from
Python's ``random`` module, whose state checkpoints save, so a resumed run augments identically.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

from xdt.errors import XdtError
from xdt.strategies.base import Batch, Strategy, StrategyContext

BUILTIN_LEXICON = Path(__file__).resolve().parents[1] / "data" / "lexicons" / "en_reviews.tsv"
OPERATIONS = ("synonym", "insert", "swap", "delete")


def load_lexicon(path: Path) -> dict[str, list[str]]:
    """``word<TAB>synonym,synonym`` lines ('#' starts a comment; '-' inside a synonym stands for a space)."""
    if not Path(path).is_file():
        raise XdtError(f"strategy.lexicon: synonym file not found: {path}")
    lexicon: dict[str, list[str]] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, synonyms = line.partition("\t")
            lexicon.setdefault(word.strip().lower(), []).extend(
                s.strip().replace("-", " ") for s in synonyms.split(",") if s.strip())
    return lexicon


def eda(words: list[str], operation: str, alpha: float, lexicon: dict[str, list[str]],
        rng: random.Random) -> list[str]:
    """One EDA operation on a list of words, changing about ``alpha`` of them (at least one)."""
    words = list(words)
    n = max(1, round(alpha * len(words)))
    with_synonyms = [i for i, w in enumerate(words) if w.lower() in lexicon]
    if operation == "synonym":
        for i in rng.sample(with_synonyms, min(n, len(with_synonyms))):
            words[i] = rng.choice(lexicon[words[i].lower()])
    elif operation == "insert":
        choices = [lexicon[words[i].lower()] for i in with_synonyms]  # taken before insertions shift positions
        for _ in range(n if choices else 0):
            words.insert(rng.randrange(len(words) + 1), rng.choice(rng.choice(choices)))
    elif operation == "swap" and len(words) > 1:
        for _ in range(n):
            i, j = rng.sample(range(len(words)), 2)
            words[i], words[j] = words[j], words[i]
    elif operation == "delete" and len(words) > 1:
        kept = [w for w in words if rng.random() >= alpha]
        words = kept or [rng.choice(words)]
    return words


def texts_of(batch: Batch, rows: list[int], tokenizer) -> list[str]:
    """The text of the batch's ``rows``, decoded from their token ids without special tokens or padding."""
    ids = [batch["input_ids"][i][batch["attention_mask"][i].bool()].tolist() for i in rows]
    return tokenizer.batch_decode(ids, skip_special_tokens=True)


def with_texts(batch: Batch, texts: dict[int, str], tokenizer) -> Batch:
    """``batch`` with row ``i`` tokenised again from ``texts[i]`` (truncated to the batch's width) and padded to
    the longest row, as batches are; every other key (labels, domains) is kept as it is."""
    width = batch["input_ids"].shape[1]
    rows = [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"].cpu(), batch["attention_mask"].cpu())]
    if texts:
        for i, ids in zip(texts, tokenizer(list(texts.values()), truncation=True, max_length=width)["input_ids"]):
            rows[i] = ids
    padded = tokenizer.pad({"input_ids": rows}, return_tensors="pt")
    device = batch["input_ids"].device
    return {**batch, "input_ids": padded["input_ids"].to(device), "attention_mask": padded["attention_mask"].to(device)}


class BackTranslator:
    """Two frozen sequence-to-sequence models: text -> pivot language -> text. Not an nn.Module on
    purpose: it is neither trained nor saved. The models load on first use (``xdt eval`` never needs them)."""

    def __init__(self, forward: str, backward: str, max_new_tokens: int = 128, num_beams: int = 1):
        self.names = (forward, backward)
        self.models, self.tokenizers = [], []
        self.generation = {"max_new_tokens": max_new_tokens, "num_beams": num_beams, "do_sample": False}

    def _load(self) -> None:
        try:
            self.models = [AutoModelForSeq2SeqLM.from_pretrained(name).eval() for name in self.names]
            self.tokenizers = [AutoTokenizer.from_pretrained(name) for name in self.names]
        except (OSError, ValueError) as error:
            raise XdtError(f"strategy.back_translation: could not load {self.names}: {error}") from None

    @torch.no_grad()
    def __call__(self, texts: list[str], device: torch.device) -> list[str]:
        if not self.models:
            self._load()
        for model, tokenizer in zip(self.models, self.tokenizers):
            model.to(device)
            inputs = tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                               return_token_type_ids=False).to(device)
            texts = tokenizer.batch_decode(model.generate(**inputs, **self.generation), skip_special_tokens=True)
        return texts


class Augment(Strategy):
    name = "augment"

    def __init__(self, model, context: StrategyContext = StrategyContext(), probability: float = 0.5,
                 alpha: float = 0.1, operations: list[str] = list(OPERATIONS), lexicon: str | None = "builtin",
                 back_translation: dict | None = None):
        super().__init__(model, context)
        unknown = [op for op in operations if op not in OPERATIONS]
        if unknown:
            raise XdtError(f"strategy.operations: unknown {unknown}; choose from {', '.join(OPERATIONS)}")
        if context.tokenizer is None:
            raise XdtError("strategy=augment needs the run's tokenizer to turn token ids back into text")
        self.probability, self.alpha, self.operations = probability, alpha, list(operations)
        self.lexicon = load_lexicon(BUILTIN_LEXICON if lexicon == "builtin" else lexicon) if lexicon else {}
        if not self.lexicon:
            self.operations = [op for op in self.operations if op not in ("synonym", "insert")]
        options = dict(back_translation or {})
        self.back_translation_probability = float(options.pop("probability", 0.0)) if options else 0.0
        self.back_translator = BackTranslator(**options) if options else None

    def augmented(self, source: Batch) -> Batch:
        """The batch with some examples replaced by augmented copies (same labels and domains)."""
        tokenizer = self.context.tokenizer
        chosen = [i for i in range(len(source["input_ids"])) if random.random() < self.probability]
        texts = texts_of(source, chosen, tokenizer)
        translate = [k for k in range(len(chosen)) if random.random() < self.back_translation_probability]
        if self.back_translator and translate:
            translated = self.back_translator([texts[k] for k in translate], source["input_ids"].device)
            for k, text in zip(translate, translated):
                texts[k] = text
        for k, text in enumerate(texts):
            if k not in translate and self.operations:
                texts[k] = " ".join(eda(text.split(), random.choice(self.operations), self.alpha, self.lexicon,
                                        random))
        return with_texts(source, dict(zip(chosen, texts)), tokenizer)

    def forward(self, source: Batch, target: Batch | None = None,
                progress: float = 0.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _, classification = self.source_features(self.augmented(source))
        return classification, {"classification": classification}
