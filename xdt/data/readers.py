"""Readers for labeled text files: csv, tsv, jsonl/json, parquet and the FDU-MTL ``label<TAB>text`` lines.

Every reader returns plain columns and turns what can go wrong with a user's file (missing, not
readable, wrong encoding, missing columns, malformed line) into one XdtError naming the file and the
config key to change.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path

from xdt.errors import XdtError

TABLE_FORMATS = ("csv", "tsv", "jsonl", "json", "parquet")
FORMATS = (*TABLE_FORMATS, "label_tab_text", "lines")

Labeled = tuple[list[str], list]


def detect_format(path: Path, fmt: str | None, key: str) -> str:
    """The file's format: ``fmt`` when given, else its suffix (after checking the file is there)."""
    check_file(path, key)
    fmt = fmt or path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise XdtError(f"{path}: cannot tell the file format from the suffix '{path.suffix}'; "
                       f"set {key}.format to one of {', '.join(FORMATS)}")
    return fmt


def check_file(path: Path, key: str, data_dir: Path | None = None) -> None:
    """An XdtError unless ``path`` is a file; ``data_dir`` is the folder relative paths were taken from."""
    if not path.exists():
        raise XdtError(f"data file not found: {path} (from {key}){_data_dir_hint(path, key, data_dir)}")
    if not path.is_file():
        raise XdtError(f"{path} (from {key}) is not a file")


def _data_dir_hint(path: Path, key: str, data_dir: Path | None) -> str:
    """For a missing file under ``data_dir``: which folder that was and how to change it. The folder
    usually comes from the run's ``data_dir`` (configs/base/fdu_mtl.yaml reads ``${data_dir}/fdu-mtl``),
    whose default, ``data`` under the working folder, nothing in the domain's own config shows."""
    if data_dir is None or not path.is_relative_to(data_dir):
        return ""
    folder = data_dir if data_dir.is_absolute() else f"{data_dir} (that is {data_dir.resolve()})"
    return (f"; it was looked for in {key}.data_dir={folder}. Name the folder that holds the data with "
            f"data_dir=<folder> on the command line or export XDT_DATA_DIR=<folder> (the FDU-MTL domains read "
            f"<data_dir>/fdu-mtl), or set {key}.data_dir=<folder>")


def _codec(encoding: str) -> str:
    """The codec for ``encoding``: utf-8-sig for any spelling of utf-8, since files saved by Excel or
    Notepad begin with a byte-order mark that plain utf-8 keeps as part of the first column name
    ('\\ufefftext') or label; utf-8-sig drops it and reads a file without one the same."""
    try:
        return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding
    except LookupError:
        return encoding  # read_text reports it with the key


def read_text(path: Path, encoding: str, key: str) -> str:
    """The file decoded; errors name the file and the ``encoding`` key."""
    check_file(path, key)
    try:
        with open(path, encoding=_codec(encoding), newline="") as handle:
            return handle.read()
    except UnicodeDecodeError as error:
        # error.object holds the bytes decoded (after any byte-order mark), error.start counts from there
        line = error.object[: error.start].count(b"\n") + 1
        raise XdtError(f"{path}: line {line} is not valid {encoding} text (byte {error.object[error.start]:#04x}); "
                       f"set {key}.encoding to the file's encoding, for example {key}.encoding=latin-1") from None
    except LookupError:
        raise XdtError(f"{key}.encoding={encoding!r} is not an encoding Python knows") from None
    except OSError as error:
        raise XdtError(f"cannot read data file {path}: {error.strerror}") from None


def lines(text: str) -> list[str]:
    """Lines split at newlines only: ``str.splitlines`` would also split at characters such as U+0085,
    which a Latin-1 file holds wherever its author typed a Windows-1252 ellipsis."""
    lines = [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def check_columns(columns: list, fields: dict[str, str | None], where: str, key: str) -> None:
    """An XdtError naming every field of ``fields`` ({"text": text_field, "label": label_field or None})
    missing from ``columns``, in one message: one at a time, a user who fixed the text column would
    only then learn that the label column was missing too."""
    missing = {what: field for what, field in fields.items() if field and field not in columns}
    if missing:
        names = " and ".join(f"no {what} column '{field}'" for what, field in missing.items())
        keys = " and ".join(f"{key}.{what}_field" for what in missing)
        raise XdtError(f"{where}: {names} (columns: {', '.join(map(str, columns))}); set {keys}")


def text_and_labels(rows: list[dict], text_field: str, label_field: str | None, path: Path, key: str) -> Labeled:
    """The text and label columns of ``rows``; labels are None when ``label_field`` is."""
    if rows:
        check_columns(list(rows[0]), {"text": text_field, "label": label_field}, str(path), key)
    texts = [row.get(text_field) for row in rows]
    return texts, [row.get(label_field) for row in rows] if label_field else [None] * len(rows)


def read_rows(path: Path, fmt: str, encoding: str, key: str) -> list[dict]:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        check_file(path, key)
        try:
            return pq.read_table(path).to_pylist()
        except Exception as error:  # pyarrow raises several unrelated types for a bad file
            raise XdtError(f"{path}: not a readable parquet file ({error})") from None
    text = read_text(path, encoding, key)
    if fmt in ("csv", "tsv"):  # parsed from the whole text: quoted fields may span lines
        return list(csv.DictReader(io.StringIO(text), delimiter="," if fmt == "csv" else "\t"))
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as error:
            raise XdtError(f"{path}: not valid JSON ({error})") from None
    rows = []
    for number, line in enumerate(lines(text), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise XdtError(f"{path}: line {number} is not valid JSON ({error.msg})") from None
    return rows


def read_table(path: Path, fmt: str, encoding: str, text_field: str, label_field: str | None,
               key: str) -> Labeled:
    """Texts and (raw) labels of a csv/tsv/jsonl/json/parquet file; labels are None when ``label_field`` is."""
    return text_and_labels(read_rows(path, fmt, encoding, key), text_field, label_field, path, key)


def read_label_tab_text(path: Path, encoding: str, key: str) -> Labeled:
    """FDU-MTL lines: ``label<TAB>text``."""
    texts, labels = [], []
    for number, line in enumerate(lines(read_text(path, encoding, key)), start=1):
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            raise XdtError(f"{path}: line {number} has no TAB between label and text (format label_tab_text)")
        texts.append(text)
        labels.append(label)
    return texts, labels


def read_lines(path: Path, encoding: str, key: str) -> list[str]:
    """One unlabeled text per non-empty line."""
    return [line for line in lines(read_text(path, encoding, key)) if line.strip()]


def read_labeled(path: Path, fmt: str, encoding: str, text_field: str, label_field: str, key: str) -> Labeled:
    """Dispatch on ``fmt`` for a labeled file."""
    if fmt == "label_tab_text":
        return read_label_tab_text(path, encoding, key)
    if fmt == "lines":
        raise XdtError(f"{path}: format 'lines' has no labels; use it only for unlabeled text ({key})")
    return read_table(path, fmt, encoding, text_field, label_field, key)


def read_unlabeled(path: Path, fmt: str, encoding: str, text_field: str, key: str) -> list[str]:
    """Texts of an unlabeled file: raw lines, or the text column of a table (labels ignored)."""
    if fmt in ("lines", "label_tab_text"):
        return read_lines(path, encoding, key)
    return read_table(path, fmt, encoding, text_field, None, key)[0]
