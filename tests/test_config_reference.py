"""The settings reference (issue 21): every key of the run configs has a comment, docs/config.md is what the
generator writes now, and ``xdt <command> --help`` lists every key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import CONFIG_DIR, ROOT, run_xdt
from xdt.config_reference import DOC, REGENERATE, logger_files, markdown, read_settings, sections, task_files, \
    undocumented

FILES = [CONFIG_DIR / "train.yaml", CONFIG_DIR / "eval.yaml", CONFIG_DIR / "pretrain.yaml", *task_files(CONFIG_DIR),
         *logger_files(CONFIG_DIR), CONFIG_DIR / "predict.yaml", CONFIG_DIR / "export.yaml",
         CONFIG_DIR / "features.yaml"]
IDS = [str(path.relative_to(CONFIG_DIR)) for path in FILES]


def assert_documented(path: Path) -> None:
    missing = undocumented(path)
    assert not missing, (f"{path}: no comment for {', '.join(missing)} (write '# what it does' after the "
                         f"value, then run {REGENERATE})")


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_every_key_has_a_comment(path):
    assert_documented(path)
    first = [line for line in path.read_text().splitlines() if not line.startswith("# @package")][0]
    assert first.startswith("# xdt "), f"{path.name}: the first line should show the command that uses it"


def test_a_key_without_a_comment_fails(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("# xdt train\n"
                    "defaults:\n  - _self_\n"
                    "max_steps: 90   # a budget,\n                # continued here\n"
                    "# a comment for the next key at the left margin continues nothing\n"
                    "seed: 0\n"
                    "l2sp:           # a mapping of settings\n  alpha: 0.0   # documented\n  beta: 0.0\n"
                    "data_dir: ${oc.env:XDT_DATA_DIR,data}  # root\n"
                    "splits: [a, b] # documented\n")
    with pytest.raises(AssertionError, match=r"x\.yaml: no comment for seed, l2sp\.beta \("):
        assert_documented(path)
    settings = {s.key: s for s in read_settings(path, tmp_path)}
    assert list(settings) == ["max_steps", "seed", "l2sp", "l2sp.alpha", "l2sp.beta", "data_dir", "splits"]
    assert settings["max_steps"].description == "a budget, continued here"
    assert settings["data_dir"].default == "${oc.env:XDT_DATA_DIR,data}"
    assert settings["splits"].default == "[a, b]"
    group = tmp_path / "task"
    group.mkdir()
    (group / "t.yaml").write_text("# xdt train task=t\n_target_: x.T\nrate: 0.5  # a task setting\n")
    assert [s.key for s in read_settings(group / "t.yaml", tmp_path)] == ["task.rate"]  # the group's package


@pytest.mark.parametrize("path", FILES, ids=IDS)
def test_reader_agrees_with_the_yaml_parser(path):
    """The keys and defaults read are those YAML loads (the comments are the only thing read from the lines)."""
    text = path.read_text()
    loaded = yaml.safe_load(text) or {}  # configs/logger/none.yaml sets nothing
    if "@package _global_" not in text and path.parent != CONFIG_DIR and loaded:
        loaded = {path.parent.name: loaded}
    settings = read_settings(path, CONFIG_DIR)
    for setting in settings:
        if setting.default:
            node = loaded
            for part in setting.key.split("."):
                node = node[part]
            assert yaml.safe_load(f"v: {setting.default}")["v"] == node, setting
    def holds_settings(value: object) -> bool:  # not a mapping of _target_ alone
        return not isinstance(value, dict) or any(not key.startswith("_") for key in value)

    assert {s.key.split(".")[0] for s in settings} == {
        key for key, value in loaded.items() if key != "defaults" and not key.startswith("_") and holds_settings(value)}


def test_comments_continue_on_the_lines_below():
    train = {s.key: s for s in read_settings(CONFIG_DIR / "train.yaml")}
    assert train["accumulate_grad_batches"].description.endswith("(batch_size must divide by it)")
    assert train["average_from"].description.endswith("null = off; e.g. 0.5")
    assert train["pretrain"].description.endswith("see configs/experiment/tapt_*.yaml")
    pretrain = {s.key: s for _, settings in sections("pretrain") for s in settings}
    assert pretrain["max_steps"].default == "200" and pretrain["task.objective"].default == "auto"
    assert set(train) < set(pretrain)


def test_docs_page_is_what_the_generator_writes():
    assert (ROOT / DOC).read_text() == markdown(), f"{DOC} is stale: run {REGENERATE}"


@pytest.mark.parametrize("command", ["train", "eval", "pretrain", "predict", "export", "features"])
def test_help_lists_every_setting(command, tmp_path):
    result = run_xdt(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "== Settings ==" in text
    settings = text[text.index("== Settings =="):text.index("== Config ==")]
    for _, table in sections(command):
        for setting in table:
            assert f"\n{setting.key} " in settings or f"\n{setting.key}\n" in settings, setting.key
    if command in ("train", "eval", "pretrain", "features"):  # predict and export have no groups, no data_dir
        assert "== Config groups ==" in text
        assert "${oc.env:XDT_DATA_DIR,data}" in settings  # shown verbatim, not resolved


def test_hydra_help_still_works(tmp_path):
    result = run_xdt("train", "--hydra-help", cwd=tmp_path)
    assert result.returncode == 0 and "Hydra (" in result.stdout, result.stderr
