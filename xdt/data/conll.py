"""CoNLL-style files for named entity recognition: one token per line with its tag, a blank line between
sentences (the CoNLL-2003 shared task's layout, which CrossNER's files follow).

Columns are split at whitespace (tokens hold none); the token and the tag column are configurable (CoNLL-2003's
own files have four: token, part of speech, chunk, tag). ``-DOCSTART-`` lines are skipped. Tags follow the BIO
scheme (``O``, ``B-<type>``, ``I-<type>``). An ``I-`` tag that does not continue an entity of its type (after
``O`` or another type) begins one, as conlleval reads it: it is repaired to ``B-`` and the repairs are counted
in the log. Anything else wrong with a file (a line with another number of columns, a tag that is not BIO)
ends in one message naming the file, the line and the value.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from xdt.data import readers
from xdt.errors import XdtError

log = logging.getLogger(__name__)

TAG = re.compile(r"^(?P<prefix>[BI])-(?P<type>\S+)$")
DOCSTART = "-DOCSTART-"


@dataclass
class Sentences:
    """The sentences of one file: tokens and tags side by side, and what reading them repaired or skipped."""

    tokens: list[list[str]] = field(default_factory=list)
    tags: list[list[str]] = field(default_factory=list)
    repaired: int = 0  # I- tags that began an entity, read as B-


def entity_type(tag: str) -> str | None:
    """The entity type of a BIO tag (None for ``O``)."""
    return None if tag == "O" else tag[2:]


def check_tag(tag: str, where: str) -> str:
    if tag != "O" and not TAG.match(tag):
        raise XdtError(f"{where}: tag {tag!r} is not BIO: use O, B-<type> or I-<type>")
    return tag


def repair(tags: list[str]) -> tuple[list[str], int]:
    """``tags`` with every I- that does not continue an entity of its type read as B- (conlleval), and how many."""
    fixed, count, previous = [], 0, "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or entity_type(previous) != entity_type(tag)):
            tag, count = "B-" + tag[2:], count + 1
        fixed.append(tag)
        previous = tag
    return fixed, count


def read_conll(path: Path, encoding: str, key: str, token_column: int = 0, tag_column: int = -1) -> Sentences:
    """The sentences of a CoNLL file (see the module docstring); ``key`` is the domain's config key, for messages."""
    text = readers.read_text(path, encoding, key)
    sentences, tokens, tags, width = Sentences(), [], [], None

    def close() -> None:
        if tokens:
            fixed, count = repair(tags)
            sentences.tokens.append(list(tokens))
            sentences.tags.append(fixed)
            sentences.repaired += count
        tokens.clear()
        tags.clear()

    for number, line in enumerate(readers.lines(text), start=1):
        columns = line.split()
        if not columns:
            close()
            continue
        if columns[0] == DOCSTART:
            close()
            continue
        width = width or len(columns)
        where = f"{path}: line {number}"
        if len(columns) != width:
            raise XdtError(f"{where} has {len(columns)} columns where the file's first line has {width} "
                           f"({line.strip()!r}); set {key}.token_column and {key}.tag_column, or mend the line")
        try:
            tokens.append(columns[token_column])
            tags.append(check_tag(columns[tag_column], where))
        except IndexError:
            raise XdtError(f"{where}: no column {token_column} (token) or {tag_column} (tag) in {line.strip()!r}; "
                           f"set {key}.token_column and {key}.tag_column") from None
    close()
    if sentences.repaired:
        log.info("%s: %d I- tags began an entity and were read as B- (as conlleval does)", path, sentences.repaired)
    return sentences
