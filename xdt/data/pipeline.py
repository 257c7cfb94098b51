"""A run's data: source and target domains loaded, labels mapped to shared ids, text tokenised (cached)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets import Dataset, concatenate_datasets
from datasets.fingerprint import Hasher
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from xdt.data.domains import SPLITS, RawDomain, label_space, load_group
from xdt.data.tokenize import tokenize
from xdt.errors import XdtError


def encode_labels(data: Dataset, label_names: list[str]) -> Dataset:
    """Replace raw string labels by their index in ``label_names``."""
    ids = {name: i for i, name in enumerate(label_names)}
    return data.map(lambda batch: {"label": [ids[y] for y in batch["label"]]}, batched=True,
                    new_fingerprint=Hasher.hash([data._fingerprint, label_names]))


@dataclass
class RunData:
    """Everything the loop and the evaluation read, tokenised on first use."""

    sources: list[RawDomain]
    targets: list[RawDomain]
    label_names: list[str]
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    cache_dir: str | Path
    _tokenized: dict = field(default_factory=dict, repr=False)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    def _tokens(self, domain: RawDomain, split: str) -> Dataset:
        key = (domain.key, split)
        if key not in self._tokenized:
            data = getattr(domain, split)
            if split != "unlabeled":
                data = encode_labels(data, self.label_names)
            self._tokenized[key] = tokenize(data, self.tokenizer, self.max_length, self.cache_dir)
        return self._tokenized[key]

    def source_train(self) -> Dataset:
        """Labeled train rows of every source domain, with a ``domain`` column (its index in ``sources``)."""
        parts = [self._tokens(d, "train").add_column("domain", [i] * len(d.train)) for i, d in enumerate(self.sources)]
        return concatenate_datasets(parts)

    def stream_targets(self, names: list[str] | None = None) -> list[RawDomain]:
        """The target domains whose unlabeled text strategies train on: all of them, or those ``names``."""
        if names is None:
            return self.targets
        known = {d.name: d for d in self.targets}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise XdtError(f"unlabeled_targets names {unknown}, which are not among the selected target domains "
                           f"({', '.join(known) or 'none'})")
        return [known[n] for n in names]

    def target_unlabeled(self, names: list[str] | None = None) -> Dataset:
        """Unlabeled text of the stream's target domains, with a ``domain`` column (index in the stream)."""
        parts = [self._tokens(d, "unlabeled").add_column("domain", [i] * len(d.unlabeled))
                 for i, d in enumerate(self.stream_targets(names))]
        return concatenate_datasets(parts)

    def eval_set_names(self, source_splits: tuple[str, ...] = SPLITS[1:],
                       target_splits: tuple[str, ...] = SPLITS[1:]) -> list[str]:
        """The names :meth:`eval_sets` gives, without tokenising anything."""
        return [f"source/{d.name}/{s}" for d in self.sources for s in source_splits] + \
            [f"target/{d.name}/{s}" for d in self.targets for s in target_splits]

    def eval_sets(self, source_splits: tuple[str, ...] = SPLITS[1:],
                  target_splits: tuple[str, ...] = SPLITS[1:]) -> dict[str, Dataset]:
        """Labeled evaluation sets named ``role/domain/split``, for example ``target/fdu_baby/test``."""
        sets = {f"source/{d.name}/{s}": self._tokens(d, s) for d in self.sources for s in source_splits}
        sets.update({f"target/{d.name}/{s}": self._tokens(d, s) for d in self.targets for s in target_splits})
        return sets


def load_run_data(source_cfg: DictConfig | None, target_cfg: DictConfig | None, tokenizer: PreTrainedTokenizerBase,
                  max_length: int, cache_dir: str | Path, label_names: list[str] | None = None,
                  max_examples: int | None = None) -> RunData:
    """Load the configured domains and check their labels agree.

    ``label_names`` fixes the label ids (``xdt eval`` passes the saved run's); otherwise the first
    source domain's sorted labels define them. ``max_examples`` caps every split of every domain.
    """
    datasets.disable_progress_bars()  # xdt logs what it loads; per-map bars would drown the log
    sources = load_group(source_cfg, "source_domain", max_examples)
    targets = load_group(target_cfg, "target_domain", max_examples)
    names = label_space(sources, targets) if sources else None
    if label_names is not None:
        for domain in [*sources, *targets]:
            if domain.labels() != set(label_names):
                raise XdtError(f"label sets differ: the saved run was trained on labels {label_names} but "
                               f"{domain.key} has {sorted(domain.labels())}")
        names = list(label_names)
    return RunData(sources, targets, names, tokenizer, max_length, cache_dir)
