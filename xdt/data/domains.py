"""Domains: one config each, loaded into labeled train/validation/test splits plus an unlabeled stream.

A domain config is plain data with a ``kind``; the kind's dataclass below holds its fields (an unknown
or missing field is an error naming the key) and loads it. The ``KINDS`` table is the registry.

Labels stay strings here ("0", "pos", "5"), passed through the domain's optional ``label_map`` (which
every kind has, to join words in one file and numbers in another); :func:`label_space` later maps them to
ids shared by every domain of a run, so a target whose label set differs from the source's is caught
before training. Values that would otherwise turn into nonsense without a word (scores as labels, lists
as text) are refused here, with the file and the key to change.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset
from omegaconf import DictConfig, OmegaConf

from xdt.data import conll, readers, synthetic
from xdt.data.shots import domain_entries
from xdt.errors import XdtError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def data_file(file: str, data_dir: str | None, key: str) -> Path:
    """``file`` taken from ``data_dir`` when relative; a missing one is reported with that folder."""
    path = Path(file).expanduser()
    folder = Path(data_dir).expanduser() if data_dir else None
    path = path if path.is_absolute() or folder is None else folder / path
    readers.check_file(path, key, folder)
    return path


@dataclass
class RawDomain:
    """A loaded domain: labeled splits with columns ``text`` and ``label`` (raw string labels), and
    ``unlabeled`` (column ``text``): the domain's unlabeled split, or its train texts without labels."""

    name: str
    key: str
    train: Dataset
    validation: Dataset
    test: Dataset
    unlabeled: Dataset
    label_map: dict | None = None  # CoNLL domains: entity type -> another domain's type, for zero-shot scoring

    def labels(self) -> set[str]:
        """The labels of a classification domain, or the entity types of a CoNLL domain."""
        if "tags" in self.train.column_names:
            return {tag[2:] for split in SPLITS for tags in getattr(self, split)["tags"] for tag in tags if tag != "O"}
        return {label for split in SPLITS for label in getattr(self, split).unique("label")}

    def capped(self, limit: int) -> "RawDomain":
        """Every split cut to at most ``limit`` rows: a fixed random subset (seed 0), for quick runs."""
        def cap(data: Dataset) -> Dataset:
            return data.shuffle(seed=0).select(range(limit)) if len(data) > limit else data

        return RawDomain(self.name, self.key, *(cap(getattr(self, s)) for s in (*SPLITS, "unlabeled")),
                         label_map=self.label_map)


@dataclass(frozen=True)
class Origin:
    """Where labeled rows come from, for messages: the file (or dataset split), the domain's config key,
    and the settings naming its columns (None for files whose columns have no names, like label_tab_text)."""

    where: str
    key: str
    text_field: str | None = "text"
    label_field: str | None = "label"

    @classmethod
    def of_file(cls, path: Path, key: str, fmt: str, text_field: str, label_field: str) -> "Origin":
        named = fmt != "label_tab_text"
        return cls(str(path), key, text_field if named else None, label_field if named else None)

    def column(self, what: str) -> str:
        """'the text column 'body' (source_domain.d.text_field)', or 'the text column' without names."""
        field_name = getattr(self, f"{what}_field")
        return f"the {what} column '{field_name}' ({self.key}.{what}_field)" if field_name else f"the {what} column"


def _label(value: Any) -> str | None:
    """A raw label as a string; integral floats and bools become "0", "1", ...; missing stays None."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, (float, np.floating)) and value.is_integer()):
        value = int(value)
    return str(value).strip()


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _refuse_nested(values: list, what: str, origin: Origin) -> None:
    """Lists and mappings would become their Python form ("['a', 'b']") as a text or a label."""
    nested = next((v for v in values if isinstance(v, (list, tuple, Mapping, np.ndarray))), None)
    if nested is None:
        return
    fix = {"text": "a column of plain text, or join each value into one string in the file",
           "label": "a column of single class labels (xdt gives each text one class)"}[what]
    kind = "mappings" if isinstance(nested, Mapping) else "lists"
    raise XdtError(f"{origin.where}: {origin.column(what)} holds {kind}, such as {_short(nested)}, not {what}s; "
                   f"set {origin.key}.{what}_field to {fix}")


def _is_fraction(label: str) -> bool:
    """True for a number with a fractional part, such as "0.37" (a CSV holds numbers as text)."""
    try:
        number = float(label)
    except ValueError:
        return False
    return math.isfinite(number) and not number.is_integer()


def _refuse_scores(labels: list[str | None], origin: Origin) -> None:
    """Scores are not classes: each distinct value would become a class of its own, and accuracy fall
    to about zero without a word."""
    scores = sorted({y for y in labels if y is not None and _is_fraction(y)}, key=float)
    if not scores:
        return
    column_fix = f"set {origin.key}.label_field to a column of classes or " if origin.label_field else ""
    raise XdtError(f"{origin.where}: {origin.column('label')} holds numbers with a fraction, such as {scores[0]} "
                   f"({len(scores)} distinct values); classification needs class labels (0/1, pos/neg, ...), "
                   f"not scores: {column_fix}bin the scores into classes in the file (if these numbers are "
                   f"classes, give each one a name in {origin.key}.label_map)")


def _mapped(labels: list[str | None], label_map: Any, origin: Origin) -> list[str | None]:
    """``labels`` through the domain's ``label_map``. Keys and values compare as the strings
    :func:`_label` makes, since YAML reads ``1: pos`` with an integer key; a label mapped to null
    drops its rows. A label the map lacks is an error: passed through, it would be a class of its own."""
    if not isinstance(label_map, Mapping):
        raise XdtError(f"{origin.key}.label_map must map raw labels to the run's labels, such as "
                       f"{{positive: '1', negative: '0'}}; got {label_map!r}")
    table = {_label(raw): _label(name) for raw, name in label_map.items()}
    unknown = sorted({y for y in labels if y not in (None, "") and y not in table})
    if unknown:
        shown = ", ".join(map(repr, unknown[:5])) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise XdtError(f"{origin.where}: label{'s' if len(unknown) > 1 else ''} {shown} "
                       f"{'are' if len(unknown) > 1 else 'is'} not in {origin.key}.label_map, which knows "
                       f"{', '.join(map(repr, table))}; add {'them' if len(unknown) > 1 else 'it'} to the map")
    return [table[y] if y not in (None, "") else y for y in labels]


def labeled_split(texts: list, labels: list, origin: Origin, label_map: Mapping | None = None) -> Dataset:
    """A Dataset of (text, label) rows, labels as strings passed through ``label_map`` when it is given;
    rows with no text or no label are dropped with a warning."""
    _refuse_nested(texts, "text", origin)
    _refuse_nested(labels, "label", origin)
    names = [_label(y) for y in labels]
    if label_map:
        names = _mapped(names, label_map, origin)
    else:  # with a label_map, its keys name the raw classes explicitly, whatever they look like
        _refuse_scores(names, origin)
    rows = [(str(t), y) for t, y in zip(texts, names) if t is not None and str(t).strip()]
    kept = [(t, y) for t, y in rows if y not in (None, "")]
    if len(kept) < len(texts):
        log.warning("%s: dropped %d of %d rows with an empty text or label", origin.where, len(texts) - len(kept),
                    len(texts))
    return Dataset.from_dict({"text": [t for t, _ in kept], "label": [y for _, y in kept]})


def text_split(texts: list, origin: Origin) -> Dataset:
    """A Dataset of the non-empty ``texts`` (column ``text``), such as a domain's unlabeled split."""
    _refuse_nested(texts, "text", origin)
    return Dataset.from_dict({"text": [str(t) for t in texts if t is not None and str(t).strip()]})


def _split_by_fractions(data: Dataset, fractions: Mapping[str, float], seed: int, key: str) -> dict[str, Dataset]:
    """Shuffle once with ``seed`` and cut into train/validation/test by ``fractions``."""
    if set(fractions) != set(SPLITS) or any(float(f) < 0 for f in fractions.values()):
        raise XdtError(f"{key}.fractions must give train, validation and test as non-negative numbers; "
                       f"got {dict(fractions)}")
    total = sum(float(f) for f in fractions.values())
    order = np.random.default_rng(seed).permutation(len(data))
    n_val = round(len(data) * float(fractions["validation"]) / total)
    n_test = round(len(data) * float(fractions["test"]) / total)
    cuts = {"validation": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    return {split: data.select(np.sort(idx)) for split, idx in cuts.items()}


def _row_filter(filters: Mapping[str, Any] | None, columns: list[str], key: str, where: str):
    """A predicate keeping rows whose values match ``filters`` ({column: value or [values]}), or None."""
    if not filters:
        return None
    allowed = {}
    for column, wanted in filters.items():
        if column not in columns:
            raise XdtError(f"{key}.filter: {where} has no column '{column}' (columns: {', '.join(columns)})")
        allowed[column] = {str(v) for v in (wanted if isinstance(wanted, (list, tuple)) else [wanted])}
    return lambda row: all(str(row[column]) in values for column, values in allowed.items())


@dataclass
class FileDomain:
    """One labeled file (csv, tsv, jsonl, json or parquet), split reproducibly by ``split_seed``."""

    path: str
    format: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    encoding: str = "utf-8"
    fractions: dict = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    split_seed: int = 0
    filter: dict | None = None
    label_map: dict | None = None

    def load(self, name: str, key: str) -> RawDomain:
        path = Path(self.path).expanduser()
        fmt = readers.detect_format(path, self.format, key)
        if fmt in ("label_tab_text", "lines"):
            texts, labels = readers.read_labeled(path, fmt, self.encoding, self.text_field, self.label_field, key)
            if self.filter:
                raise XdtError(f"{key}.filter needs named columns; format {fmt} has only label and text")
        else:
            rows = readers.read_rows(path, fmt, self.encoding, key)
            keep = _row_filter(self.filter, list(rows[0]) if rows else [], key, str(path))
            rows = [row for row in rows if keep(row)] if keep else rows
            texts, labels = readers.text_and_labels(rows, self.text_field, self.label_field, path, key)
        origin = Origin.of_file(path, key, fmt, self.text_field, self.label_field)
        data = labeled_split(texts, labels, origin, self.label_map)
        splits = _split_by_fractions(data, self.fractions, self.split_seed, key)
        return RawDomain(name, key, **splits, unlabeled=splits["train"].select_columns(["text"]))


@dataclass
class SplitFilesDomain:
    """Separate train/test (and optional validation and unlabeled) files, like the FDU-MTL layout.

    Without a validation file, the last ``validation_size`` rows of the train file become validation
    (FDU-MTL's protocol: of 1600 train lines, the first 1400 train and the last 200 validate).
    Relative paths are taken from ``data_dir``.
    """

    train: str
    test: str
    validation: str | None = None
    validation_size: int | None = None
    unlabeled: str | None = None
    data_dir: str | None = None
    format: str | None = None
    text_field: str = "text"
    label_field: str = "label"
    encoding: str = "utf-8"
    label_map: dict | None = None

    def _path(self, file: str, key: str) -> Path:
        return data_file(file, self.data_dir, key)

    def _labeled(self, file: str, key: str) -> Dataset:
        path = self._path(file, key)
        fmt = readers.detect_format(path, self.format, key)
        texts, labels = readers.read_labeled(path, fmt, self.encoding, self.text_field, self.label_field, key)
        return labeled_split(texts, labels, Origin.of_file(path, key, fmt, self.text_field, self.label_field),
                             self.label_map)

    def load(self, name: str, key: str) -> RawDomain:
        train, test = self._labeled(self.train, key), self._labeled(self.test, key)
        if self.validation:
            validation = self._labeled(self.validation, key)
        elif self.validation_size:
            if not 0 < int(self.validation_size) < len(train):
                raise XdtError(f"{key}.validation_size={self.validation_size} must be between 1 and the "
                               f"{len(train)} train rows - 1")
            cut = len(train) - int(self.validation_size)
            train, validation = train.select(range(cut)), train.select(range(cut, len(train)))
        else:
            raise XdtError(f"{key}: give a validation file ({key}.validation=<path>) or "
                           f"{key}.validation_size=<rows taken from the end of train>")
        if self.unlabeled:
            path = self._path(self.unlabeled, key)
            fmt = readers.detect_format(path, self.format, key) if path.suffix else "lines"
            texts = readers.read_unlabeled(path, fmt, self.encoding, self.text_field, key)
            unlabeled = text_split(texts, Origin.of_file(path, key, fmt, self.text_field, self.label_field))
        else:
            unlabeled = train.select_columns(["text"])
        return RawDomain(name, key, train, validation, test, unlabeled)


@dataclass
class HubDomain:
    """A dataset from the Hugging Face hub (or any ``datasets.load_dataset`` builder, such as ``json``
    with ``data_files``), with an optional row filter such as a product category.

    ``splits`` maps xdt's split names to the dataset's; a missing validation split is carved from
    train by ``validation_fraction``; a missing unlabeled split falls back to train texts.
    """

    path: str
    name: str | None = None
    revision: str | None = None
    data_files: Any = None
    splits: dict = field(default_factory=lambda: {"train": "train", "validation": None, "test": "test",
                                                  "unlabeled": None})
    validation_fraction: float = 0.1
    split_seed: int = 0
    text_field: str = "text"
    label_field: str = "label"
    filter: dict | None = None
    max_examples: int | None = None
    label_map: dict | None = None

    def _split(self, split: str, key: str, labeled: bool) -> Dataset:
        import datasets

        try:
            rows = datasets.load_dataset(self.path, self.name, split=split, revision=self.revision,
                                         data_files=self.data_files)
        except Exception as error:  # network, missing dataset or split: all reported the same way
            raise XdtError(f"{key}: could not load split '{split}' of dataset '{self.path}'"
                           f"{f' ({self.name})' if self.name else ''}: {error}") from None
        keep = _row_filter(self.filter, rows.column_names, key, f"dataset '{self.path}' split '{split}'")
        if keep:
            rows = rows.filter(keep)
        if self.max_examples and len(rows) > self.max_examples:
            rows = rows.shuffle(seed=self.split_seed).select(range(int(self.max_examples)))
        where = f"dataset '{self.path}' split '{split}'"
        readers.check_columns(rows.column_names, {"text": self.text_field,
                                                  "label": self.label_field if labeled else None}, where, key)
        if not labeled:
            return text_split(list(rows[self.text_field]), Origin(where, key, self.text_field, None))
        return labeled_split(list(rows[self.text_field]), list(rows[self.label_field]),
                             Origin(where, key, self.text_field, self.label_field), self.label_map)

    def load(self, name: str, key: str) -> RawDomain:
        names = {"validation": None, "unlabeled": None, **self.splits}
        train = self._split(names["train"], key, labeled=True)
        test = self._split(names["test"], key, labeled=True)
        if names["validation"]:
            validation = self._split(names["validation"], key, labeled=True)
        else:
            parts = _split_by_fractions(train, {"train": 1 - self.validation_fraction,
                                                "validation": self.validation_fraction, "test": 0},
                                        self.split_seed, key)
            train, validation = parts["train"], parts["validation"]
        unlabeled = (self._split(names["unlabeled"], key, labeled=False) if names["unlabeled"]
                     else train.select_columns(["text"]))
        return RawDomain(name, key, train, validation, test, unlabeled)


@dataclass
class SyntheticDomain:
    """Built-in review-like data with a designed shift (see :mod:`xdt.data.synthetic`)."""

    domain: str
    train_size: int = 2000
    validation_size: int = 200
    test_size: int = 500
    unlabeled_size: int = 2000
    seed: int = 0
    label_map: dict | None = None

    def load(self, name: str, key: str) -> RawDomain:
        if self.domain not in synthetic.DOMAINS:
            raise XdtError(f"{key}.domain={self.domain!r} is not a synthetic domain; "
                           f"choose one of {', '.join(synthetic.DOMAINS)}")
        sizes = {"train": self.train_size, "validation": self.validation_size, "test": self.test_size}
        splits = {split: labeled_split(*synthetic.generate(self.domain, split, int(size), self.seed),
                                       Origin(key, key), self.label_map) for split, size in sizes.items()}
        unlabeled = synthetic.generate(self.domain, "unlabeled", int(self.unlabeled_size), self.seed)[0]
        return RawDomain(name, key, **splits, unlabeled=text_split(unlabeled, Origin(key, key)))


@dataclass
class ConllDomain:
    """Named-entity data in CoNLL files (:mod:`xdt.data.conll`): a train, a validation and a test file, relative
    to ``data_dir``. Rows have ``tokens`` and ``tags`` (and ``text``, the tokens joined, for language models);
    the unlabeled text is the sentences of all three files without their tags, or an ``unlabeled`` text file
    (one sentence per line). ``label_map`` maps this domain's entity types onto another domain's
    (``politician: person``); the token-classification task applies it where a run scores this domain on a
    label space other than its own (zero-shot transfer), and ignores it otherwise."""

    train: str
    validation: str
    test: str
    unlabeled: str | None = None
    data_dir: str | None = None
    token_column: int = 0
    tag_column: int = -1
    encoding: str = "utf-8"
    label_map: dict | None = None

    def _path(self, file: str, key: str) -> Path:
        return data_file(file, self.data_dir, key)

    def _split(self, file: str, key: str) -> Dataset:
        sentences = conll.read_conll(self._path(file, key), self.encoding, key, int(self.token_column),
                                     int(self.tag_column))
        return Dataset.from_dict({"tokens": sentences.tokens, "tags": sentences.tags,
                                  "text": [" ".join(tokens) for tokens in sentences.tokens]})

    def load(self, name: str, key: str) -> RawDomain:
        splits = {split: self._split(getattr(self, split), key) for split in SPLITS}
        if self.unlabeled:
            path = self._path(self.unlabeled, key)
            unlabeled = text_split(readers.read_lines(path, self.encoding, key), Origin(str(path), key))
        else:
            unlabeled = Dataset.from_dict({"text": [t for split in SPLITS for t in splits[split]["text"]]})
        return RawDomain(name, key, **splits, unlabeled=unlabeled, label_map=self.label_map)


KINDS = {"file": FileDomain, "split_files": SplitFilesDomain, "hub": HubDomain, "synthetic": SyntheticDomain,
         "conll": ConllDomain}


def load_domain(name: str, node: DictConfig, key: str, max_examples: int | None = None) -> RawDomain:
    """Load the domain configured at ``key`` (for example ``target_domain.fdu_baby``), optionally
    capping every split at ``max_examples`` rows."""
    params = OmegaConf.to_container(node, resolve=True)
    if not isinstance(params, dict):
        raise XdtError(f"{key} must be a domain config (a mapping with a 'kind'), got {params!r}")
    kind = params.pop("kind", None)
    # Keys that begin with "_" are helpers for interpolation inside the YAML (configs/base/fdu_mtl.yaml).
    params = {k: v for k, v in params.items() if not k.startswith("_")}
    if kind not in KINDS:
        raise XdtError(f"{key}.kind={kind!r} is not a domain kind; choose one of {', '.join(KINDS)}")
    spec = KINDS[kind]
    known = {f.name for f in dataclasses.fields(spec)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise XdtError(f"{key}: unknown key(s) {', '.join(unknown)} for kind '{kind}'; "
                       f"known keys: {', '.join(sorted(known))}")
    missing = [f.name for f in dataclasses.fields(spec)
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               and params.get(f.name) is None]
    if missing:
        raise XdtError(f"{key}: missing value for {', '.join(f'{key}.{m}' for m in missing)}")
    domain = spec(**params).load(name, key)
    if max_examples:
        domain = domain.capped(int(max_examples))
    for split in SPLITS:
        if len(getattr(domain, split)) == 0:
            raise XdtError(f"{key}: the {split} split is empty (after dropping empty rows and applying any filter)")
    log.info("domain %s (%s): %d train, %d validation, %d test, %d unlabeled", name, kind, len(domain.train),
             len(domain.validation), len(domain.test), len(domain.unlabeled))
    return domain


def load_group(group: DictConfig | None, role: str, max_examples: int | None = None) -> list[RawDomain]:
    """Every domain selected in ``source_domain`` or ``target_domain`` (a mapping name -> config;
    the reserved key ``shots`` is a setting, not a domain)."""
    return [load_domain(name, node, f"{role}.{name}", max_examples) for name, node in domain_entries(group, role)]


def _label_order(label: str) -> tuple:
    """Numeric labels in numeric order ("2" before "10"), then the others alphabetically."""
    try:
        return (0, float(label), label)
    except ValueError:
        return (1, 0.0, label)


def label_space(sources: list[RawDomain], targets: list[RawDomain]) -> list[str]:
    """The run's label names (index = class id); every domain must have the same label set."""
    reference = sources[0]
    names = sorted(reference.labels(), key=_label_order)
    for domain in [*sources[1:], *targets]:
        if domain.labels() != set(names):
            raise XdtError(f"label sets differ: {reference.key} has labels {names} but {domain.key} has "
                           f"{sorted(domain.labels(), key=_label_order)}; every source and target domain must "
                           f"use the same labels")
    if len(names) < 2:
        raise XdtError(f"{reference.key}: only one label ({names}) in the data; classification needs two or more")
    return names
