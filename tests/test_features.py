"""``xdt features`` (issue 22, part 3): feature maps of smoke runs. The command writes a PNG per run and
features.json into its own folder (never into the run); the same seed gives the same sample and coordinates; the
proxy A-distance lies in [-2, 2] and tells designed cases apart (shifted clouds near 2, one distribution near 0);
several runs give the side-by-side figure; bad input is one message naming the key or folder."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import compose_config, run_xdt
from test_predict_export import smoke_run, snapshot
from xdt import features
from xdt.errors import XdtError
from xdt.features import feature_maps, map_run, plan_run, proxy_a_distance

PNG = b"\x89PNG\r\n\x1a\n"
POINTS = 60  # per domain: t-SNE of three domains takes a second or two


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> Path:
    """A finished ERM smoke run (syn_books -> syn_dvd, syn_kitchen; 128 test texts per domain); only read."""
    return smoke_run(tmp_path_factory.mktemp("features-erm") / "erm", cache_dir)


@pytest.fixture(scope="module")
def dann_run(tmp_path_factory, cache_dir) -> Path:
    return smoke_run(tmp_path_factory.mktemp("features-dann") / "dann", cache_dir, "strategy=dann")


def features_config(run_dir, *overrides: str):
    value = f"[{','.join(map(str, run_dir))}]" if isinstance(run_dir, list) else str(run_dir)
    return compose_config([f"run_dir={value}", f"max_points={POINTS}", "device=cpu", *overrides], name="features")


def test_command_writes_a_png_and_features_json_and_leaves_the_run_alone(run, tmp_path):
    before = snapshot(run)
    result = run_xdt("features", f"run_dir={run}", f"max_points={POINTS}", "device=cpu",
                     f"hydra.run.dir={tmp_path / 'cmd'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "cmd" / "features.json").read_text())  # the command's own folder
    assert summary["method"] == "tsne" and summary["seed"] == 0 and summary["max_points"] == POINTS
    assert summary["side_by_side"] is None
    (entry,) = summary["runs"]
    metrics = json.loads((run / "metrics.json").read_text())
    assert entry["checkpoint"] == f"step-{metrics['selected_step']:07d}"
    assert entry["sources"] == ["syn_books"] and entry["targets"] == ["syn_dvd", "syn_kitchen"]
    assert entry["points"] == {"syn_books": POINTS, "syn_dvd": POINTS, "syn_kitchen": POINTS}
    for target in entry["targets"]:
        assert -2.0 <= entry["proxy_a_distance"][target] <= 2.0
        assert entry["target_accuracy"][target] == metrics["metrics"][f"target/{target}/test"]["accuracy"]
    figure = tmp_path / "cmd" / entry["figure"]
    assert figure.read_bytes()[:8] == PNG and figure.stat().st_size > 20_000
    assert snapshot(run) == before  # nothing written into the run folder


def test_the_same_seed_gives_the_same_sample_and_coordinates(run):
    cfg = features_config(run)
    settings = features.check_settings(cfg)
    first, second = (map_run(plan_run(run, cfg), settings, cfg) for _ in range(2))
    assert np.array_equal(first.coordinates, second.coordinates)
    assert first.a_distance == second.a_distance
    assert all(np.array_equal(a.rows, b.rows) for a, b in zip(first.domains, second.domains))
    other_cfg = features_config(run, "seed=1")
    other = map_run(plan_run(run, other_cfg), features.check_settings(other_cfg), other_cfg)
    assert not np.array_equal(first.domains[0].rows, other.domains[0].rows)  # another sample of texts
    pca_cfg = features_config(run, "method=pca")
    pca = [map_run(plan_run(run, pca_cfg), features.check_settings(pca_cfg), pca_cfg) for _ in range(2)]
    assert np.array_equal(pca[0].coordinates, pca[1].coordinates)
    assert pca[0].coordinates.shape == (3 * POINTS, 2)
    assert 0 < sum(pca[0].projection["variance_share"]) <= 1


def test_the_features_are_those_the_head_classifies(run):
    """LoadedRun.features is the pooled representation: the head applied to it gives the run's logits."""
    from xdt.inference import load_run

    loaded = load_run(run, device="cpu")
    texts = ["a gripping story, I read it twice", "it broke after a week", "fine"]
    pooled = loaded.features(texts, batch_size=2)
    head = loaded.model.head
    logits = torch.from_numpy(pooled) @ head.weight.detach().T + head.bias.detach()
    assert pooled.shape == (3, loaded.model.encoder.config.hidden_size)
    assert np.allclose(logits.numpy(), loaded.logits(texts), atol=1e-5)


def test_proxy_a_distance_tells_designed_cases_apart():
    rng = np.random.default_rng(0)
    cloud = rng.normal(size=(400, 32))
    shifted = rng.normal(size=(400, 32)) + 3.0
    same = rng.normal(size=(400, 32))
    apart = proxy_a_distance(cloud, shifted, seed=0)
    together = proxy_a_distance(cloud, same, seed=0)
    assert apart > 1.9
    assert abs(together) < 0.3
    assert proxy_a_distance(cloud, same, seed=0) == together  # repeatable
    partly = proxy_a_distance(cloud, rng.normal(size=(400, 32)) + 0.25, seed=0)
    assert together < partly < apart
    for value in (apart, together, partly):
        assert -2.0 <= value <= 2.0
    assert proxy_a_distance(cloud[:300], shifted, seed=3) > 1.9  # unequal sizes: balanced first
    with pytest.raises(XdtError, match="at least 10 points per domain"):
        proxy_a_distance(cloud[:5], shifted)


def test_several_runs_give_the_side_by_side_figure(run, dann_run, tmp_path):
    """run_dir=[a,b] on the command line (the list reaches the command as its text and is read back)."""
    result = run_xdt("features", f"run_dir=[{run},{dann_run}]", "method=pca", f"max_points={POINTS}",
                     "device=cpu", f"out={tmp_path / 'maps'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "maps" / "features.json").read_text())
    assert [r["strategy"] for r in summary["runs"]] == ["erm", "dann"]
    assert summary["side_by_side"] == "features_side_by_side.png"
    names = [r["figure"] for r in summary["runs"]] + [summary["side_by_side"]]
    assert len(set(names)) == 3
    for name in names:
        assert (tmp_path / "maps" / name).read_bytes()[:8] == PNG
    # the same texts in every panel: the sample depends on the seed and the domain, not on the run
    assert summary["runs"][0]["points"] == summary["runs"][1]["points"]


def test_runs_of_one_strategy_get_distinct_names_and_files(run, tmp_path):
    summary = feature_maps(features_config([run, run], "method=pca", f"out={tmp_path}"), None)
    names = [r["figure"] for r in summary["runs"]]
    assert len(set(names)) == 2 and all((tmp_path / n).is_file() for n in names)
    assert (tmp_path / summary["side_by_side"]).is_file()


def test_a_target_domain_given_on_the_command_line(run, tmp_path):
    summary = feature_maps(features_config(run, "method=pca", "target_domain=syn_electronics", f"out={tmp_path}"),
                           None)
    (entry,) = summary["runs"]
    assert entry["targets"] == ["syn_electronics"]
    assert entry["target_accuracy"] == {"syn_electronics": None}  # not scored by the run: not in metrics.json


# ---- bad input ---------------------------------------------------------------------------------------------

def copy_run(run: Path, folder: Path, *, checkpoints: bool = True, edit=None) -> Path:
    shutil.copytree(run, folder, ignore=None if checkpoints else shutil.ignore_patterns("checkpoints"))
    if edit is not None:
        config = yaml.safe_load((folder / "config.yaml").read_text())
        edit(config)
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


def _no_targets(config):
    config["target_domain"] = {}


def _token_task(config):
    config["task"] = {"_target_": "xdt.tasks.token_classification.TokenClassification"}


def _language_model(config):
    config["task"] = {"_target_": "xdt.tasks.language_modeling.LanguageModeling"}


@pytest.mark.parametrize("case", ["no checkpoints", "no targets", "token classification", "language model",
                                  "unknown method", "max_points=0", "max_points=-3", "no such folder",
                                  "out inside the run", "outputs exist"])
def test_bad_input_is_one_message(case, run, tmp_path):
    run_dir, overrides = run, []
    expected = {
        "no checkpoints": r"run_dir=.*: no checkpoints \(.*checkpoints does not exist\)",
        "no targets": r"run_dir=.*: the run has no target domains .*target_domain=<name>",
        "token classification": r"run_dir=.*: a token-classification run; xdt features maps sequence-classification",
        "language model": r"run_dir=.*: a LanguageModeling run; xdt features maps sequence-classification",
        "unknown method": r"method='umap' is not a projection xdt features draws: choose tsne .* or pca",
        "max_points=0": r"max_points=0 is not valid",
        "max_points=-3": r"max_points=-3 is not valid",
        "no such folder": r"run_dir=.*nowhere: no such folder",
        "out inside the run": r"out=.* is inside the run folder",
        "outputs exist": r"out=.* already holds features_erm\.png, features\.json; pass overwrite=true",
    }[case]
    if case == "no checkpoints":
        run_dir = copy_run(run, tmp_path / "run", checkpoints=False)
    elif case == "no targets":
        run_dir = copy_run(run, tmp_path / "run", edit=_no_targets)
    elif case == "token classification":
        run_dir = copy_run(run, tmp_path / "run", edit=_token_task)
    elif case == "language model":
        run_dir = copy_run(run, tmp_path / "run", edit=_language_model)
    elif case == "unknown method":
        overrides = ["method=umap"]
    elif case.startswith("max_points"):
        overrides = [case]
    elif case == "no such folder":
        run_dir = tmp_path / "nowhere"
    elif case == "out inside the run":
        overrides = [f"out={run / 'maps'}"]
    elif case == "outputs exist":
        (tmp_path / "features_erm.png").write_bytes(b"mine")
        (tmp_path / "features.json").write_text("{}")
        overrides = ["method=pca", f"out={tmp_path}"]
    before = snapshot(run)
    with pytest.raises(XdtError, match=expected):
        feature_maps(features_config(run_dir, *overrides), tmp_path / "cmd")
    assert snapshot(run) == before
    if case == "outputs exist":
        assert (tmp_path / "features_erm.png").read_bytes() == b"mine"
        feature_maps(features_config(run_dir, *overrides, "overwrite=true"), None)
        assert (tmp_path / "features_erm.png").read_bytes()[:8] == PNG


def test_a_run_without_targets_maps_against_a_target_given(run, tmp_path):
    run_dir = copy_run(run, tmp_path / "run", edit=_no_targets)
    summary = feature_maps(features_config(run_dir, "method=pca", "target_domain=syn_dvd", f"out={tmp_path / 'o'}"),
                           None)
    assert summary["runs"][0]["targets"] == ["syn_dvd"]


def test_tsne_without_scikit_learn_names_the_extra(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn now raises ImportError
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(XdtError, match=r'method=tsne needs scikit-learn.*pip install -e "\.\[features\]"'):
        feature_maps(features_config(run), tmp_path)
    feature_maps(features_config(run, "method=pca", f"out={tmp_path / 'pca'}"), None)  # PCA needs nothing more


def test_the_cli_prints_the_message_once_and_exits_1(run, tmp_path):
    run_dir = copy_run(run, tmp_path / "run", checkpoints=False)
    result = run_xdt("features", f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'cmd'}", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("no checkpoints") == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("xdt features: run_dir=")
    assert "no checkpoints" in (tmp_path / "cmd" / "failed").read_text()  # the command's folder says why


def test_a_sweep_folder_stands_for_its_jobs(run, tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    for name in ("10_strategy=erm,seed=1", "2_strategy=erm,seed=0"):  # job order, not text order
        shutil.copytree(run, sweep / name)
    (sweep / "multirun.yaml").write_text("{}\n")
    assert features.run_dirs(str(sweep)) == [sweep / "2_strategy=erm,seed=0", sweep / "10_strategy=erm,seed=1"]
    listed = f"['{sweep / '2_strategy=erm,seed=0'}','{sweep / '10_strategy=erm,seed=1'}']"  # as the cli hands it on
    assert features.run_dirs(listed) == features.run_dirs(str(sweep))
    summary = feature_maps(features_config(sweep, "method=pca", f"out={tmp_path / 'maps'}"), None)
    assert [r["name"] for r in summary["runs"]] == ["erm (2_strategy=erm,seed=0)", "erm (10_strategy=erm,seed=1)"]
    assert summary["side_by_side"] and len({r["figure"] for r in summary["runs"]}) == 2
