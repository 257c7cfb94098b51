"""The reference of xdt's run settings, read from the comments beside them in configs/*.yaml.

Each top-level key of a command's YAML (and one level of nested keys, such as ``l2sp.alpha``) becomes a
:class:`Setting`: its key, its default exactly as the YAML writes it, and its comment (a comment may go on over
the following lines that hold only a comment, indented). ``xdt <command> --help`` prints these tables through the
``${xdt.settings:<command>}`` resolver in configs/hydra/help/, and ``scripts/config_reference.py`` writes them to
docs/config.md. The YAML parser finds the keys and values; only the comments are read from the lines.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

CONFIG_DIR = Path(__file__).parent / "configs"
DOC = "docs/config.md"
REGENERATE = ".venv/bin/python scripts/config_reference.py"
SKIPPED = ("defaults",)  # the defaults list: Hydra prints the config groups itself


@dataclass(frozen=True)
class Setting:
    key: str  # as on the command line: max_steps, l2sp.alpha, task.train_on
    default: str  # as written in the YAML ("" for a mapping of nested settings)
    description: str  # the YAML comment, "" when it has none
    file: str  # where it is set, relative to the config folder


def _comment(lines: list[str], line: int, column: int, indent: int) -> str:
    """The comment after ``column`` of ``line``, with the comment-only lines below it indented past ``indent``."""
    rest = lines[line][column:].strip()
    if not rest.startswith("#"):
        return ""
    parts = [rest[1:].strip()]
    for below in lines[line + 1:]:
        stripped = below.lstrip()
        if not stripped.startswith("#") or len(below) - len(stripped) <= indent:
            break
        parts.append(stripped[1:].strip())
    return " ".join(parts)


def _default(text: str, node: yaml.Node) -> str:
    """The value as the YAML writes it; a block list in flow style, a block mapping as ""."""
    if isinstance(node, yaml.MappingNode) and not node.flow_style:
        return ""
    if isinstance(node, yaml.SequenceNode) and not node.flow_style:
        return "[" + ", ".join(_default(text, item) for item in node.value) + "]"
    return text[node.start_mark.index:node.end_mark.index] or "null"  # "key:" alone is null


def _entries(text: str, lines: list[str], mapping: yaml.MappingNode, prefix: str, file: str,
             depth: int) -> Iterator[Setting]:
    """The settings of ``mapping`` and, for the top level, of the block mappings in it (``_target_`` and
    the like are not settings)."""
    for key_node, value in mapping.value:
        key = str(key_node.value)
        if key.startswith("_") or (depth == 0 and key in SKIPPED):
            continue
        block = isinstance(value, yaml.MappingNode) and not value.flow_style
        # a block mapping's comment follows its key; anything else's follows its value
        end = key_node.end_mark
        line, column = (end.line, lines[end.line].index(":", end.column) + 1) if block else \
            (value.end_mark.line, value.end_mark.column)
        description = _comment(lines, line, column, key_node.start_mark.column)
        if not block or description:
            yield Setting(prefix + key, _default(text, value), description, file)
        if block and depth == 0:
            yield from _entries(text, lines, value, f"{prefix}{key}.", file, depth + 1)


def read_settings(path: Path, config_dir: Path = CONFIG_DIR) -> list[Setting]:
    """Every setting a YAML file sets, with its comment. A group's file (configs/task/x.yaml) puts its keys
    under the group's name (task.train_on), unless it is ``# @package _global_``."""
    text = path.read_text()
    lines = text.splitlines()
    node = yaml.compose(text)
    if node is None:
        return []
    relative = path.relative_to(config_dir) if path.is_relative_to(config_dir) else Path(path.name)
    is_global = any(re.match(r"#\s*@package\s+_global_", line) for line in lines)
    prefix = "" if is_global or len(relative.parts) == 1 else ".".join(relative.parts[:-1]) + "."
    return list(_entries(text, lines, node, prefix, str(relative), 0))


def undocumented(path: Path) -> list[str]:
    """The keys of a YAML file that have no comment (a mapping of nested settings needs one on each of them)."""
    return [s.key for s in read_settings(path, path.parent) if not s.description]


def task_files(config_dir: Path = CONFIG_DIR) -> list[Path]:
    return sorted((config_dir / "task").glob("*.yaml"))


def logger_files(config_dir: Path = CONFIG_DIR) -> list[Path]:
    """The trackers of the logger group (configs/logger/), whose settings sit under ``logger.<tracker>``."""
    return sorted((config_dir / "logger").glob("*.yaml"))


def _merged(*groups: list[Setting]) -> list[Setting]:
    """Later files override earlier ones key by key (as Hydra merges them); new keys go at the end."""
    merged: dict[str, Setting] = {}
    for settings in groups:
        merged.update({s.key: s for s in settings})
    return list(merged.values())


def sections(command: str, config_dir: Path = CONFIG_DIR) -> list[tuple[str, list[Setting]]]:
    """(title, settings) of each table ``xdt <command> --help`` prints."""
    if command == "pretrain":  # xdt train with task=language_modeling (configs/pretrain.yaml)
        lm = config_dir / "task" / "language_modeling.yaml"
        settings = _merged(read_settings(config_dir / "train.yaml", config_dir), read_settings(lm, config_dir))
        return [("xdt pretrain: xdt train's settings with task=language_modeling's (configs/train.yaml, "
                 "configs/task/language_modeling.yaml)", settings)]
    tables = [(f"xdt {command} (configs/{command}.yaml)", read_settings(config_dir / f"{command}.yaml", config_dir))]
    if command == "train":
        tables += [(f"task={path.stem}: added or changed by configs/task/{path.name}", settings)
                   for path in task_files(config_dir) if (settings := read_settings(path, config_dir))]
        tables += [(f"logger={path.stem}: settings of configs/logger/{path.name} (docs/tracking.md)", settings)
                   for path in logger_files(config_dir) if (settings := read_settings(path, config_dir))]
    return tables


def explained(setting: Setting) -> str:
    """The description, plus what a default that is not a plain value means."""
    notes = [f"${name} if set, else {fallback.strip(chr(34) + chr(39))}" for name, fallback in
             re.findall(r"\$\{oc\.env:([A-Za-z_]\w*),([^}]*)\}", setting.default)]
    if setting.default == "???":
        notes.append("???: no default, give it on the command line")
    return " ".join([setting.description, *(f"[{note}]" for note in notes)]).strip()


def help_text(command: str, width: int = 118) -> str:
    """The Settings section of ``xdt <command> --help``: key, default and description, one key a row
    (a default longer than 16 characters puts its description on the next line)."""
    blocks = []
    for title, settings in sections(command):
        key_width = max(len(s.key) for s in settings)
        default_width = max(len(s.default) for s in settings if len(s.default) <= 16)
        indent = " " * (key_width + default_width + 4)
        rows = [title]
        for s in settings:
            head = f"{s.key:<{key_width}}  {s.default:<{default_width}}  "
            if len(head) > len(indent):
                rows.append(head.rstrip())
                head = indent
            rows.append(textwrap.fill(explained(s), width, initial_indent=head, subsequent_indent=indent)
                        or head.rstrip())
        blocks.append("\n".join(rows))
    return "\n\n".join(blocks)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "\\<")


def _table(settings: list[Setting]) -> list[str]:
    return ["| key | default | what it does |", "|---|---|---|",
            *(f"| `{s.key}` | {f'`{_cell(s.default)}`' if s.default else ''} | {_cell(explained(s))} |"
              for s in settings)]


def markdown(config_dir: Path = CONFIG_DIR) -> str:
    """docs/config.md: a table per command, written from the YAML comments."""
    lines = ["# Config reference", "",
             f"Regenerate with `{REGENERATE}`: it writes this page from the comments in",
             "configs/*.yaml, so edit those (tests/test_config_reference.py fails while the page is stale).",
             "`xdt <command> --help` prints the same tables, after the config groups (`model=`, `strategy=`, ...).",
             "Override any key with `key=value`.", ""]
    for heading, command in (("xdt train", "train"), ("xdt eval", "eval"), ("xdt predict", "predict"),
                             ("xdt export", "export"), ("xdt features", "features")):
        lines += [f"## {heading}", ""]
        for number, (title, settings) in enumerate(sections(command, config_dir)):
            if number:
                lines += [f"### {title}", ""]
            lines += [*_table(settings), ""]
        if command == "train":
            lines += ["## xdt pretrain", "",
                      "`xdt pretrain` is `xdt train task=language_modeling` (configs/pretrain.yaml): every setting of",
                      "`xdt train` applies, with the defaults of the `task=language_modeling` table above.", ""]
    return "\n".join(lines)
