"""A run's data: source and target domains loaded, labels mapped to shared ids, text tokenised (cached).

With ``target_domain.shots=k`` (see :mod:`xdt.data.shots`) the labeled training rows also hold k
examples per class of each target domain's train split, each target as one more training domain; for
strategies that adapt to the shots before scoring a target instead (meta-learning), the loop sets
``shots_in_training`` to False and reads them from :meth:`RunData.shot_sets`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from datasets import Dataset, concatenate_datasets
from omegaconf import DictConfig
from transformers import PreTrainedTokenizerBase

from xdt.data.domains import SPLITS, RawDomain, label_space, load_group
from xdt.data.shots import check_shots, draw_all
from xdt.data.tokenize import fingerprint, tokenize
from xdt.errors import XdtError


def encode_labels(data: Dataset, label_names: list[str]) -> Dataset:
    """Replace raw string labels by their index in ``label_names``."""
    ids = {name: i for i, name in enumerate(label_names)}
    return data.map(lambda batch: {"label": [ids[y] for y in batch["label"]]}, batched=True,
                    new_fingerprint=fingerprint(data, label_names))


@dataclass
class RunData:
    """Everything the loop and the evaluation read, tokenised on first use."""

    sources: list[RawDomain]
    targets: list[RawDomain]
    label_names: list[str]
    tokenizer: PreTrainedTokenizerBase
    max_length: int
    cache_dir: str | Path
    shots: int = 0  # target_domain.shots: labeled examples per class taken from each target's train split
    target_shots: list[Dataset] = field(default_factory=list)  # per target, its shot rows; [] when shots=0
    shots_in_training: bool = True  # False: the shots are an adaptation set only (see Strategy.adapts_to_shots)
    _tokenized: dict = field(default_factory=dict, repr=False)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)

    @property
    def training_shots(self) -> list[Dataset]:
        """The per-target shots that join the training rows: all of them, or none when they only adapt."""
        return self.target_shots if self.shots_in_training else []

    @property
    def num_labeled_domains(self) -> int:
        """Domains of the labeled training rows: the sources, then each target whose shots join them."""
        return len(self.sources) + len(self.training_shots)

    @property
    def num_train_rows(self) -> int:
        """Rows of :meth:`source_train` (an epoch), known without tokenising."""
        return sum(len(d.train) for d in self.sources) + sum(len(s) for s in self.training_shots)

    def _tokens(self, domain: RawDomain, split: str) -> Dataset:
        return self._encoded((domain.key, split), getattr(domain, split), labeled=split != "unlabeled")

    def _encoded(self, key: tuple[str, str], data: Dataset, labeled: bool) -> Dataset:
        """``data`` tokenised (labels as ids when ``labeled``), kept under ``key`` for the run."""
        if key not in self._tokenized:
            if labeled:
                data = encode_labels(data, self.label_names)
            self._tokenized[key] = tokenize(data, self.tokenizer, self.max_length, self.cache_dir)
        return self._tokenized[key]

    def source_train(self) -> Dataset:
        """Labeled training rows with a ``domain`` column: every source's train split (domain = its index
        in ``sources``), then any target shots (domain = ``len(sources)`` + the target's index)."""
        parts = [self._tokens(d, "train").add_column("domain", [i] * len(d.train)) for i, d in enumerate(self.sources)]
        for i, (target, shots) in enumerate(zip(self.targets, self.training_shots)):
            rows = self._encoded((target.key, "shots"), shots, labeled=True)
            parts.append(rows.add_column("domain", [len(self.sources) + i] * len(shots)))
        return concatenate_datasets(parts)

    def shot_sets(self) -> dict[str, Dataset]:
        """Each target's shots, tokenised, keyed by the target's name (as in ``target/<name>/<split>``)."""
        return {target.name: self._encoded((target.key, "shots"), shots, labeled=True)
                for target, shots in zip(self.targets, self.target_shots)}

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
                  max_examples: int | None = None, shots: Any = 0, seed: int = 0) -> RunData:
    """Load the configured domains and check their labels agree.

    ``label_names`` fixes the label ids (``xdt eval`` passes the saved run's); otherwise the first
    source domain's sorted labels define them. ``max_examples`` caps every split of every domain.
    ``shots`` (the ``target_domain.shots`` setting, checked here) labeled examples per class of each
    target's train split are drawn with ``seed``; they join the training rows unless the caller sets
    ``shots_in_training`` to False (``xdt eval`` draws them only for strategies that adapt to them).
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
    shots = check_shots(shots, targets)
    target_shots = draw_all(targets, names, shots, seed, first_index=len(sources)) if shots else []
    return RunData(sources, targets, names, tokenizer, max_length, cache_dir, shots, target_shots)
