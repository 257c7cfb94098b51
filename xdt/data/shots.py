"""Few-shot target adaptation: ``target_domain.shots=k`` adds k labeled examples per class of every
target domain to training.

The shots come from the target's train split only, so its validation and test splits stay untouched;
train rows whose text also occurs in the target's validation or test split are never drawn (real data,
FDU-MTL included, repeats some reviews across splits), so no shot is ever scored. The draw depends on the
run's ``seed`` and the domain's name only: another target in the list does not change it, and for one
seed the k=8 shots are among the k=32 ones (each class is permuted once and its first k rows taken), so a
sweep over k gives a learning curve over nested training sets.

``shots`` sits in the ``target_domain`` node beside the domains (a default in ``configs/train.yaml``,
so the command line sets it without a ``+``); :func:`domain_entries` is how code that walks a
``source_domain``/``target_domain`` node skips it. This module imports no heavy libraries at load time
(``xdt report`` uses it).
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from xdt.errors import XdtError

if TYPE_CHECKING:
    from datasets import Dataset

    from xdt.data.domains import RawDomain

log = logging.getLogger(__name__)

SHOTS_KEY = "shots"  # reserved in the target_domain node: never a domain name
KEY = f"target_domain.{SHOTS_KEY}"


def domain_entries(group: Mapping | None, role: str = "target_domain") -> list[tuple[str, Any]]:
    """The (name, config) pairs of a ``source_domain`` or ``target_domain`` node.

    ``shots`` is reserved in ``target_domain`` only: a stray ``source_domain.shots`` stays an entry, so
    loading it fails with a message instead of being ignored.
    """
    return [(str(name), node) for name, node in (group or {}).items()
            if not (role == "target_domain" and name == SHOTS_KEY)]


def check_shots(value: Any, targets: list[RawDomain]) -> int:
    """``value`` as a whole number of examples per class, or an XdtError naming ``target_domain.shots``."""
    names = ", ".join(t.name for t in targets) or "none selected"
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise XdtError(f"{KEY}={value!r} must be a whole number >= 0: the labeled examples per class taken from "
                       f"the train split of each target domain ({names})")
    if value and not targets:
        raise XdtError(f"{KEY}={value} takes labeled examples from the target domains, but no target_domain "
                       f"is selected")
    return value


def eligible_rows(domain: RawDomain, label_names: list[str]) -> dict[str, np.ndarray]:
    """Per label, the train rows that may become shots: those whose text is in no evaluation split."""
    scored = {text.strip() for split in (domain.validation, domain.test) for text in split["text"]}
    texts, labels = domain.train["text"], domain.train["label"]
    rows: dict[str, list[int]] = {label: [] for label in label_names}
    for i, (text, label) in enumerate(zip(texts, labels)):
        if text.strip() not in scored and label in rows:
            rows[label].append(i)
    return {label: np.asarray(found, dtype=np.int64) for label, found in rows.items()}


def draw_shots(domain: RawDomain, label_names: list[str], shots: int, seed: int) -> Dataset:
    """``shots`` train rows of ``domain`` per label (raw ``text``/``label`` columns), drawn with ``seed``."""
    rows = eligible_rows(domain, label_names)
    smallest = min(rows, key=lambda label: len(rows[label]))
    if shots > len(rows[smallest]):
        raise XdtError(f"{KEY}={shots} is more than {domain.key} has of label '{smallest}': its train split "
                       f"holds {len(rows[smallest])} such examples (not counting texts that also appear in its "
                       f"validation or test split); choose {KEY} <= {len(rows[smallest])}")
    # crc32, not hash(): Python salts string hashes per process, and the draw must repeat across runs.
    rng = np.random.default_rng([seed, zlib.crc32(domain.name.encode())])
    # One permutation per label whatever ``shots`` is: smaller draws are prefixes of larger ones.
    chosen = np.concatenate([rng.permutation(rows[label])[:shots] for label in label_names])
    return domain.train.select(np.sort(chosen))


def draw_all(targets: list[RawDomain], label_names: list[str], shots: int, seed: int,
             first_index: int) -> list[Dataset]:
    """The shots of every target (one Dataset each); logs what joins training.

    ``first_index`` is the training ``domain`` index of the first target (the number of sources).
    """
    drawn = [draw_shots(target, label_names, shots, seed) for target in targets]
    for i, (target, rows) in enumerate(zip(targets, drawn)):
        log.info("few-shot: %d labeled examples per class (%d in all) drawn from the train split of target %s "
                 "(training domain %d unless the strategy adapts to them instead)", shots, len(rows), target.name,
                 first_index + i)
    return drawn
