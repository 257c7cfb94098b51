"""Tokenisation with ``datasets.map(batched=True)``, cached on disk under a key of (data, tokenizer,
max_length), so a second run over the same data with the same tokenizer reads the cache instead."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from datasets import Dataset
from datasets.fingerprint import Hasher
from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Bump when the columns or values `_encode` writes change, so old cache files are not reused.
FORMAT_VERSION = 1


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A stable digest of everything that decides the token ids: vocabulary, normaliser, special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return Hasher.hash(tokenizer)
    state = json.loads(backend.to_str())
    # A fast tokenizer records the truncation/padding of its last call; that is not part of its identity.
    state.pop("truncation", None)
    state.pop("padding", None)
    text = f"{type(tokenizer).__name__}\n{json.dumps(state, sort_keys=True)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _encode(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int) -> dict:
    ids = tokenizer(batch["text"], truncation=True, max_length=max_length, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    return {"input_ids": ids, "length": [len(x) for x in ids]}


def cache_path(data: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, cache_dir: str | Path) -> Path:
    """Where the tokenised ``data`` is cached: keyed by the data's content fingerprint, the tokenizer and
    ``max_length``."""
    key = Hasher.hash([data._fingerprint, tokenizer_fingerprint(tokenizer), max_length, FORMAT_VERSION])
    return Path(cache_dir).expanduser() / "tokenized" / f"{key}.arrow"


def tokenize(data: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, cache_dir: str | Path) -> Dataset:
    """``data`` with ``text`` replaced by ``input_ids`` and ``length``; other columns (label) kept."""
    path = cache_path(data, tokenizer, max_length, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.debug("tokenising %d texts (%s): %s", len(data), "cache hit" if path.exists() else "computing", path)
    return data.map(_encode, batched=True, batch_size=1000, remove_columns=["text"], cache_file_name=str(path),
                    load_from_cache_file=True, new_fingerprint=path.stem,
                    fn_kwargs={"tokenizer": tokenizer, "max_length": max_length})
