"""``xdt predict``, ``xdt export`` and ``xdt.load_run`` on smoke runs (issue 22): predictions on a run's own
source test split reproduce the accuracy in its metrics.json; a token-classification run gives entity spans; an
exported folder loaded with plain transformers (and the snippet its README holds) gives the run's logits, with
PEFT adapters merged or apart; a large input streams chunk by chunk; bad input is one message; the run folder is
never written into."""

from __future__ import annotations

import csv
import json
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import DATA_DIR, ROOT, compose_config, run_xdt
from test_ner import NEWS, POLITICS, domain_files
from xdt import inference
from xdt.data.domains import load_group
from xdt.errors import XdtError
from xdt.export import MARKER, PROBES, SNIPPET, export_run
from xdt.inference import load_run
from xdt.predict import predict_file, read_chunks
from xdt.train import train


def smoke_run(folder: Path, cache_dir: Path, *overrides: str, data_dir: Path = DATA_DIR) -> Path:
    train(compose_config(["debug=smoke", "max_steps=4", "eval_interval=2", "max_examples=128",
                          f"cache_dir={cache_dir}", f"data_dir={data_dir}", *overrides]), folder)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir) -> Path:
    """A finished sequence-classification smoke run (books -> dvd, kitchen); tests only read it."""
    return smoke_run(tmp_path_factory.mktemp("predict") / "run", cache_dir)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, cache_dir) -> Path:
    return smoke_run(tmp_path_factory.mktemp("lora") / "run", cache_dir, "model.peft=lora")


@pytest.fixture(scope="module")
def ner_run(tmp_path_factory, cache_dir) -> Path:
    """A token-classification smoke run on tiny CoNLL files (news -> politics), trained until it tags them."""
    root = tmp_path_factory.mktemp("ner")
    domain_files(root / "data" / "crossner" / "conll2003", NEWS)
    domain_files(root / "data" / "crossner" / "politics", POLITICS)
    return smoke_run(root / "run", cache_dir, "task=token_classification", "source_domain=crossner_conll2003",
                     "target_domain=crossner_politics", "max_steps=6", "eval_interval=3", "batch_size=4",
                     "optimizer.lr=1e-2", data_dir=root / "data")


def predict_config(run_dir: Path, input_path: Path, *overrides: str):
    # on the CPU the runs were trained on: the same arithmetic as their scores, wherever the tests run
    return compose_config([f"run_dir={run_dir}", f"input={input_path}", "device=cpu", *overrides], name="predict")


def export_config(run_dir: Path, out: Path, *overrides: str):
    return compose_config([f"run_dir={run_dir}", f"out={out}", *overrides], name="export")


def snapshot(folder: Path) -> dict:
    """Every entry of a run folder with its size and modification time: commands here only read it."""
    return {p: (p.lstat().st_size, p.lstat().st_mtime_ns) for p in folder.rglob("*") if p.name != ".lock"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def source_test_split(run_dir: Path, path: Path) -> Path:
    """The run's own source test split (as the run read it: max_examples applied) as a jsonl file."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    from omegaconf import OmegaConf

    domain, = load_group(OmegaConf.create(config["source_domain"]), "source_domain", config["max_examples"])
    path.write_text("".join(json.dumps({"id": i, "text": row["text"], "label": row["label"]}) + "\n"
                            for i, row in enumerate(domain.test)))
    return path


# ---- predict -----------------------------------------------------------------------------------------

def test_predict_on_the_source_test_split_reproduces_the_runs_accuracy(run, tmp_path):
    before = snapshot(run)
    data = source_test_split(run, tmp_path / "test.jsonl")
    result = run_xdt("predict", f"run_dir={run}", f"input={data}", "label_field=label", "device=cpu",
                     f"hydra.run.dir={tmp_path / 'cmd'}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = json.loads((run / "metrics.json").read_text())
    summary = json.loads((tmp_path / "cmd" / "predict.json").read_text())
    expected = metrics["metrics"]["source/syn_books/test"]["accuracy"]
    assert summary["accuracy"] == pytest.approx(expected, abs=1e-12)
    assert summary["checkpoint"] == f"step-{metrics['selected_step']:07d}"
    rows = read_jsonl(tmp_path / "cmd" / "predictions.jsonl")  # the default output: this command's folder
    inputs = read_jsonl(data)
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]  # input order, input columns kept
    assert np.mean([str(r["label"]) == r["prediction"] for r in rows]) == pytest.approx(expected, abs=1e-12)
    labels = metrics["label_names"]
    for row in rows:
        probabilities = [row[f"prob_{name}"] for name in labels]
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)
        assert row["prediction"] == labels[int(np.argmax(probabilities))]
    assert snapshot(run) == before


def test_load_run_predicts_what_the_command_writes(run, tmp_path):
    data = source_test_split(run, tmp_path / "test.jsonl")
    predict_file(predict_config(run, data, f"output={tmp_path / 'out.csv'}"), tmp_path)
    with open(tmp_path / "out.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == ["id", "text", "label", "prediction", "prob_0", "prob_1"]
    import xdt

    loaded = xdt.load_run(run, device="cpu")  # exported lazily by the package
    assert loaded.task == "sequence_classification" and loaded.labels == ["0", "1"]
    texts = [r["text"] for r in read_jsonl(data)]
    predicted = loaded.predict(texts, batch_size=7)  # batch size changes nothing
    assert [p["prediction"] for p in predicted] == [r["prediction"] for r in written]
    assert np.allclose([p["prob_1"] for p in predicted], [float(r["prob_1"]) for r in written], atol=1e-6)
    logits = loaded.logits(texts[:5])
    assert logits.shape == (5, 2)
    assert np.allclose(torch.tensor(logits).softmax(-1)[:, 1].numpy(), [p["prob_1"] for p in predicted[:5]], atol=1e-6)
    assert loaded.predict("one text")[0]["prediction"] in ("0", "1")


def test_importing_xdt_stays_cheap():
    code = "import sys, xdt; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_token_classification_run_gives_words_tags_and_spans(ner_run, tmp_path):
    before = snapshot(ner_run)
    data = tmp_path / "news.txt"
    sentences = [words for words, _ in NEWS]
    data.write_text("\n".join([*sentences, "", "Obama  spoke in   Chicago ."]) + "\n")
    predict_file(predict_config(ner_run, data), tmp_path)
    rows = read_jsonl(tmp_path / "predictions.jsonl")  # a txt input's default output is jsonl
    assert len(rows) == 5 and rows[3] == {"text": "", "words": [], "tags": [], "spans": [], "truncated": False}
    tags = json.loads((ner_run / "metrics.json").read_text())["tags"]
    for row, (words, gold) in zip(rows, NEWS):  # the run was trained until it tags these sentences
        assert row["words"] == words.split() and row["tags"] == gold.split()
        assert set(row["tags"]) <= set(tags)
    assert [(s["type"], s["text"]) for s in rows[0]["spans"]] == [("person", "Angela Merkel"), ("location", "Paris")]
    assert [(s["type"], s["text"]) for s in rows[2]["spans"]] == [("misc", "World Cup"), ("location", "Berlin")]
    for row in rows:  # spans are the tags' BIO entities, with character offsets into the text
        for span in row["spans"]:
            assert row["text"][span["start"]:span["end"]] == span["text"]
            assert " ".join(row["words"][span["word_start"]:span["word_end"]]) == " ".join(span["text"].split())
            assert 0 < span["score"] <= 1
    loaded = load_run(ner_run, device="cpu")
    assert loaded.predict([sentences[0]])[0]["spans"] == rows[0]["spans"]
    assert loaded.predict([sentences[0].split()])[0]["tags"] == rows[0]["tags"]  # a list of words as is
    assert snapshot(ner_run) == before


def test_bio_spans_follow_conlleval():
    words = "a b c d e f".split()
    starts = [0, 2, 4, 6, 8, 10]
    tags = ["I-x", "I-x", "B-x", "I-y", "O", "B-z"]  # I- opens an entity; a new type or B- closes one
    spans = inference.bio_spans("a b c d e f", words, starts, tags, [1.0] * 6)
    assert [(s["type"], s["text"], s["word_start"], s["word_end"]) for s in spans] == \
        [("x", "a b", 0, 2), ("x", "c", 2, 3), ("y", "d", 3, 4), ("z", "f", 5, 6)]


# ---- streaming ---------------------------------------------------------------------------------------

def test_a_large_input_streams_in_chunks_and_comes_back_in_order(run, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    lines = [f"{i} " + " ".join(["great"] * int(rng.integers(0, 12))) + " book" for i in range(20_000)]
    data = tmp_path / "big.txt"
    data.write_text("\n".join(lines) + "\n")
    chunks = read_chunks(data, "txt", "text", 3000)
    assert isinstance(chunks, types.GeneratorType)  # nothing is read until asked for
    first = next(chunks)
    assert len(first.rows) == 3000 and first.bytes_read < data.stat().st_size
    assert [len(c.rows) for c in chunks] == [3000] * 5 + [2000]

    seen = []
    original = inference.LoadedRun.predict

    def spy(self, texts, *args, **kwargs):
        seen.append(len(texts))
        return original(self, texts, *args, **kwargs)

    monkeypatch.setattr(inference.LoadedRun, "predict", spy)
    summary = predict_file(predict_config(run, data, "chunk_size=4096", "batch_size=256"), tmp_path)
    assert seen == [4096] * 4 + [20_000 - 4 * 4096]  # the model never saw more than a chunk
    assert summary["rows"] == 20_000
    rows = read_jsonl(tmp_path / "predictions.jsonl")
    assert [r["text"] for r in rows] == lines  # sorted by length to predict, written in input order
    sample = [0, 4095, 4096, 19_999]
    assert [rows[i]["prediction"] for i in sample] == \
        [p["prediction"] for p in original(load_run(run, device="cpu"), [lines[i] for i in sample])]


def test_csv_with_quoted_newlines_and_tsv_inputs(run, tmp_path):
    data = tmp_path / "in.csv"
    data.write_text('id,body\n1,"two\nlines, one text"\n2,short\n')
    predict_file(predict_config(run, data, "text_field=body", f"output={tmp_path / 'out.tsv'}"), tmp_path)
    with open(tmp_path / "out.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["body"] for r in rows] == ["two\nlines, one text", "short"] and rows[0]["prediction"] in ("0", "1")


# ---- export ------------------------------------------------------------------------------------------

def snippet_logits(folder: Path, texts: list[str]) -> torch.Tensor:
    """Run the code block of the export's README.md, as a user would paste it, and return its logits."""
    readme = (folder / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    code = code.replace("print(", "_ = (")  # keep the test's output quiet
    namespace: dict = {}
    exec(compile(code, str(folder / "README.md"), "exec"), namespace)
    _, probabilities = namespace["classify"](texts)
    assert namespace["info"]["labels"] == json.loads((folder / MARKER).read_text())["labels"]
    encoder, head, tokenizer = namespace["encoder"], namespace["head"], namespace["tokenizer"]
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    logits = (states * mask).sum(1) / mask.sum(1) @ head["weight"].T + head["bias"]
    assert torch.allclose(logits.softmax(-1), probabilities, atol=1e-6)
    return logits


TEXTS = ["a gripping story with great characters", "it broke after a week, awful", "ok", PROBES[0] * 40]


def test_export_loads_in_plain_transformers_with_the_runs_logits(run, tmp_path):
    before = snapshot(run)
    out = tmp_path / "exported"
    info = export_run(export_config(run, out))
    assert info["task"] == "sequence_classification" and info["pooling"] == "mean" and info["adapters"] is None
    assert {"config.json", "model.safetensors", "head.safetensors", "tokenizer.json", "README.md", MARKER} <= \
        {p.name for p in out.iterdir()}
    assert "peft" not in (out / "README.md").read_text()
    expected = load_run(run, device="cpu").logits(TEXTS)  # the last text is longer than max_length: cut the same way
    assert np.allclose(snippet_logits(out, TEXTS).numpy(), expected, atol=1e-5)
    assert snapshot(run) == before


def test_docs_page_shows_the_snippet_the_export_writes():
    page = (ROOT / "docs" / "predict-and-export.md").read_text()
    assert SNIPPET.format(folder="exported/books-erm", pooler=", add_pooling_layer=False") in page


@pytest.mark.parametrize("merge", [True, False], ids=["merged", "adapters apart"])
def test_lora_adapters_merged_or_saved_apart(lora_run, tmp_path, merge):
    out = tmp_path / "exported"
    info = export_run(export_config(lora_run, out, f"merge_adapters={str(merge).lower()}"))
    assert info["peft"] == "lora" and info["adapters"] == ("merged" if merge else "adapter")
    assert (out / "adapter" / "adapter_config.json").is_file() != merge
    weights = (out / "model.safetensors").read_bytes()
    assert (b"lora_" in weights) is False  # the encoder file is a plain encoder either way
    assert ("PeftModel" in (out / "README.md").read_text()) != merge
    expected = load_run(lora_run, device="cpu").logits(TEXTS)
    assert np.allclose(snippet_logits(out, TEXTS).numpy(), expected, atol=1e-5)


def test_token_classification_export_is_a_standard_transformers_model(ner_run, tmp_path):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

    out = tmp_path / "exported"
    info = export_run(export_config(ner_run, out))
    assert info["loader"] == "AutoModelForTokenClassification"
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForTokenClassification.from_pretrained(out).eval()
    tags = json.loads((ner_run / "metrics.json").read_text())["tags"]
    assert [model.config.id2label[i] for i in range(len(tags))] == tags
    loaded = load_run(ner_run, device="cpu")
    for words, _ in NEWS:
        encoded = tokenizer(words.split(), is_split_into_words=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits[0]
        ids = encoded.word_ids(0)
        firsts = [i for i, w in enumerate(ids) if w is not None and (i == 0 or ids[i - 1] != w)]
        assert np.allclose(logits[firsts].numpy(), loaded.logits([words.split()])[0], atol=1e-5)
    found = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="first")(
        NEWS[0][0])
    assert [(e["entity_group"], e["word"]) for e in found] == [("person", "angela merkel"), ("location", "paris")]


def test_overwrite_replaces_only_an_earlier_export(run, tmp_path):
    out = tmp_path / "exported"
    export_run(export_config(run, out))
    with pytest.raises(XdtError, match=rf"out={re.escape(str(out))} exists; pass overwrite=true"):
        export_run(export_config(run, out))
    (out / "stale.txt").write_text("x")
    export_run(export_config(run, out, "overwrite=true"))
    assert not (out / "stale.txt").exists() and (out / MARKER).is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    with pytest.raises(XdtError, match=r"is not an xdt export \(no xdt_export\.json in it\)"):
        export_run(export_config(run, mine, "overwrite=true"))
    assert (mine / "thesis.tex").read_text() == "years of work"


# ---- bad input ---------------------------------------------------------------------------------------

def no_checkpoints(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "stopped"
    shutil.copytree(run, copy, symlinks=True, ignore=shutil.ignore_patterns("checkpoints"))
    return copy


def language_model(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "lm"
    shutil.copytree(run, copy, symlinks=True)
    config = yaml.safe_load((copy / "config.yaml").read_text())
    config["task"] = {"_target_": "xdt.tasks.language_modeling.LanguageModeling"}
    (copy / "config.yaml").write_text(yaml.safe_dump(config))
    return copy


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


PREDICT_CASES = {
    "csv without the text column": (
        lambda run, t: (run, write(t / "r.csv", "id,body\n1,great\n"), []),
        r"input=.*r\.csv: no text column 'text' \(columns: id, body\); set text_field"),
    "jsonl without the text column": (
        lambda run, t: (run, write(t / "r.jsonl", '{"id": 1, "review": "great"}\n'), []),
        r"r\.jsonl: no text column 'text' \(columns: id, review\)"),
    "empty input": (lambda run, t: (run, write(t / "e.txt", ""), []),
                    r"input=.*e\.txt: the file holds no rows \(it is empty\); there is nothing to predict"),
    "csv with a header only": (lambda run, t: (run, write(t / "h.csv", "text,label\n"), []),
                               r"h\.csv: the file holds a header but no rows"),
    "missing input": (lambda run, t: (run, t / "nope.csv", []), r"input=.*nope\.csv: no such file"),
    "unknown format": (lambda run, t: (run, write(t / "r.xlsx", "x"), []),
                       r"cannot tell the format from the suffix '\.xlsx'; set format to one of csv, tsv, jsonl, txt"),
    "bad json line": (lambda run, t: (run, write(t / "r.jsonl", '{"text": "a"}\n{"text": \n'), []),
                      r"r\.jsonl: line 2 is not valid JSON"),
    "run without checkpoints": (lambda run, t: (no_checkpoints(run, t), write(t / "r.txt", "a\n"), []),
                                r"run_dir=.*stopped: no checkpoints \(.*checkpoints does not exist\)"),
    "unknown checkpoint": (lambda run, t: (run, write(t / "r.txt", "a\n"), ["checkpoint=step-9"]),
                           r"checkpoint=step-9: no such checkpoint in .* "
                           r"\(available: best, last, step-0000002, step-0000004\)"),
    "not a run folder": (lambda run, t: (t, write(t / "r.txt", "a\n"), []), r"run_dir=.*: no config\.yaml there"),
    "language-model run": (lambda run, t: (language_model(run, t), write(t / "r.txt", "a\n"), []),
                           r"a LanguageModeling run; predict and export read classification runs"),
    "output in the run folder": (lambda run, t: (run, write(t / "r.txt", "a\n"), [f"output={run}/p.jsonl"]),
                                 r"output=.*p\.jsonl is inside the run folder"),
    "output exists": (lambda run, t: (run, write(t / "r.txt", "a\n"), [f"output={write(t / 'o.csv', '')}"]),
                      r"output=.*o\.csv exists; pass overwrite=true"),
    "label column missing": (lambda run, t: (run, write(t / "r.txt", "a\n"), ["label_field=label"]),
                             r"label_field=label: input=.*r\.txt has no such column \(columns: text\)"),
    "max_length too long": (lambda run, t: (run, write(t / "r.txt", "a\n"), ["max_length=4096"]),
                            r"max_length=4096 is longer than the run's encoder allows \(512 tokens\)"),
    "unknown device": (lambda run, t: (run, write(t / "r.txt", "a\n"), ["device=gpu"]),
                       r"device='gpu' is not a device: use auto, cpu, cuda or cuda:<n>"),
    "bad output suffix": (lambda run, t: (run, write(t / "r.txt", "a\n"), [f"output={t}/o.parquet"]),
                          r"output=.*o\.parquet: write \.jsonl, \.csv or \.tsv"),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_bad_predict_input_is_one_message(case, run, tmp_path):
    before = snapshot(run)
    make, message = PREDICT_CASES[case]
    run_dir, data, overrides = make(run, tmp_path)
    with pytest.raises(XdtError, match=message):
        predict_file(predict_config(run_dir, data, *overrides), tmp_path / "cmd")
    assert not (tmp_path / "cmd").exists() and snapshot(run) == before


EXPORT_CASES = {
    "out inside the run": (lambda run, t: (run, run / "exported"), r"out=.*exported is inside the run folder"),
    "out holds the run": (lambda run, t: (run, run.parent), r"out=.* holds the run folder"),
    "run without checkpoints": (lambda run, t: (no_checkpoints(run, t), t / "x"), r"no checkpoints"),
    "out is a file": (lambda run, t: (run, write(t / "f", "x")), r"out=.*f exists; pass overwrite=true"),
}


@pytest.mark.parametrize("case", list(EXPORT_CASES))
def test_bad_export_input_is_one_message(case, run, tmp_path):
    before = snapshot(run)
    make, message = EXPORT_CASES[case]
    run_dir, out = make(run, tmp_path)
    with pytest.raises(XdtError, match=message):
        export_run(export_config(run_dir, out))
    assert snapshot(run) == before and not (tmp_path / "x").exists()


def test_cli_prints_one_message_and_exits_1(run, tmp_path):
    data = write(tmp_path / "r.csv", "id,body\n1,great\n")
    result = run_xdt("predict", f"run_dir={run}", f"input={data}", f"hydra.run.dir={tmp_path / 'cmd'}", cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.count("no text column 'text' (columns: id, body)") == 1, result.stderr
    assert "failed" in {p.name for p in (tmp_path / "cmd").iterdir()}  # the command's folder says why
    first = export_config(run, tmp_path / "e")  # an export folder that exists, through the CLI
    (tmp_path / "e").mkdir()
    result = run_xdt("export", f"run_dir={first.run_dir}", f"out={first.out}", f"hydra.run.dir={tmp_path / 'c2'}",
                     cwd=tmp_path)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1].startswith("xdt export: out=")
    assert "Traceback" not in result.stderr
