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

from xdt.data.batching import IGNORED
from xdt.errors import XdtError

log = logging.getLogger(__name__)

# Bump when the columns or values `_encode` writes change, so old cache files are not reused.
FORMAT_VERSION = 1


def fingerprint(data: Dataset, *derivation) -> str:
    """A cache key for ``data`` transformed by ``derivation`` (a tokenizer's digest, max_length, label ids, ...).

    ``datasets`` keeps a dataset's content fingerprint in a private attribute, ``_fingerprint``, and offers no
    public getter; every cache key of xdt reads it here and nowhere else, and
    ``tests/test_data.py::test_the_dataset_fingerprint_xdt_reads_follows_the_content`` fails if a release of
    ``datasets`` moves or changes it."""
    return Hasher.hash([data._fingerprint, *derivation])


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
    key = fingerprint(data, tokenizer_fingerprint(tokenizer), max_length, FORMAT_VERSION)
    return Path(cache_dir).expanduser() / "tokenized" / f"{key}.arrow"


def tokenize(data: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, cache_dir: str | Path) -> Dataset:
    """``data`` with ``text`` replaced by ``input_ids`` and ``length``; other columns (label) kept."""
    path = cache_path(data, tokenizer, max_length, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    log.debug("tokenising %d texts (%s): %s", len(data), "cache hit" if path.exists() else "computing", path)
    return data.map(_encode, batched=True, batch_size=1000, remove_columns=["text"], cache_file_name=str(path),
                    load_from_cache_file=True, new_fingerprint=path.stem,
                    fn_kwargs={"tokenizer": tokenizer, "max_length": max_length})


def _encode_words(batch: dict, tokenizer: PreTrainedTokenizerBase, max_length: int, tag_ids: dict[str, int]) -> dict:
    """Words to sub-word ids; each word's tag on its first sub-word, IGNORED on the others and on special tokens
    (Hugging Face's token-classification example). A sentence cut by ``max_length`` is marked ``truncated``."""
    encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length,
                        return_attention_mask=False, return_token_type_ids=False)
    labels, truncated = [], []
    for i, tags in enumerate(batch["tags"]):
        words, previous, row = encoded.word_ids(i), None, []
        for word in words:
            row.append(IGNORED if word is None or word == previous else tag_ids[tags[word]])
            previous = word
        labels.append(row)
        truncated.append(max((w for w in words if w is not None), default=-1) < len(tags) - 1)
    ids = encoded["input_ids"]
    return {"input_ids": ids, "labels": labels, "length": [len(x) for x in ids], "truncated": truncated}


def tokenize_words(data: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int, tag_ids: dict[str, int],
                   cache_dir: str | Path) -> Dataset:
    """``data`` (columns ``tokens`` and ``tags``) as ``input_ids`` with one label id per sub-word (see
    :func:`_encode_words`), cached like :func:`tokenize` under a key that includes the tag ids."""
    if not tokenizer.is_fast:
        raise XdtError("token classification aligns words to sub-words, which needs a fast tokenizer; "
                       f"{type(tokenizer).__name__} is not one")
    key = fingerprint(data, tokenizer_fingerprint(tokenizer), max_length, sorted(tag_ids.items()), FORMAT_VERSION)
    path = Path(cache_dir).expanduser() / "tokenized" / f"{key}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    words = [c for c in ("tokens", "tags", "text") if c in data.column_names]
    return data.map(_encode_words, batched=True, batch_size=1000, remove_columns=words,
                    cache_file_name=str(path), load_from_cache_file=True, new_fingerprint=path.stem,
                    fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "tag_ids": tag_ids})
