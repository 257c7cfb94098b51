"""``xdt export``: a saved run's selected checkpoint as a folder that plain ``transformers`` loads.

What the folder holds depends on whether a standard ``transformers`` class computes what xdt's model computes:

* **token classification (NER)**: yes. xdt's head is a linear layer on every token's last hidden state, which
  is exactly ``AutoModelForTokenClassification`` (BERT, RoBERTa, DistilBERT, DeBERTa, ... all put a ``classifier``
  Linear after dropout). The export is a standard token-classification model with the run's tags as
  ``id2label``: ``AutoModelForTokenClassification.from_pretrained(out)`` or
  ``pipeline("token-classification", model=out)`` use it with no xdt code.
* **sequence classification**: no. xdt pools by the *mean* of the token states (or the first token's state,
  ``model.pooling=cls``) and applies one linear layer, while ``BertForSequenceClassification`` and its kin put a
  trained dense+tanh pooler (RoBERTa: a dense+tanh head) before theirs; no setting turns that into a mean. So the
  export is the encoder (``AutoModel``, with its tokenizer) and the head as ``head.safetensors`` (``weight``,
  ``bias``), with ``xdt_export.json`` naming the pooling and the labels, and a README.md holding the fifteen lines
  (:data:`SNIPPET`) that apply it. No custom code is written or needed.

PEFT adapters are merged into the encoder's weights (``merge_adapters=true``, the default: plain transformers
loads the folder) or saved beside it as ``adapter/`` (``peft``'s ``PeftModel.from_pretrained`` loads them onto
the exported encoder). Every export is checked before it is renamed into place: the folder is loaded back the
way its README says, and its logits must equal the run's on a few sentences.
"""

from __future__ import annotations

import inspect
import json
import logging
from contextlib import contextmanager
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import logging as hf_logging

from xdt.atomic import atomic_folder, atomic_write_text
import xdt.console  # noqa: F401  (log lines 120 columns wide off a terminal, as elsewhere)
from xdt.errors import XdtError
from xdt.inference import SEQUENCE_CLASSIFICATION, LoadedRun, load_run
from xdt.run_files import FAILED

log = logging.getLogger(__name__)

MARKER = "xdt_export.json"  # what the export holds and how to load it; also how overwrite=true knows an export
HEAD = "head.safetensors"
ADAPTER = "adapter"
TOLERANCE = 1e-4  # max |logit difference| between the run and its export (merging adapters reorders sums)
PROBES = ["The plot was gripping and the acting superb .", "It stopped working after two days , avoid it .",
          "Angela Merkel met Emmanuel Macron in Paris on Monday .", "ok"]

SNIPPET = '''import json, torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

folder = "{folder}"
info = json.load(open(f"{{folder}}/xdt_export.json"))
tokenizer = AutoTokenizer.from_pretrained(folder)
encoder = AutoModel.from_pretrained(folder{pooler}).eval()
head = load_file(f"{{folder}}/head.safetensors")

def classify(texts):
    batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
    pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1) if info["pooling"] == "mean" else states[:, 0]
    logits = pooled @ head["weight"].T + head["bias"]
    return [info["labels"][i] for i in logits.argmax(-1)], logits.softmax(-1)

print(classify(["a gripping story", "it broke after a week"]))
'''

ADAPTER_LINES = '''from peft import PeftModel
encoder = PeftModel.from_pretrained(encoder, f"{folder}/adapter").eval()  # this export keeps its adapters apart
'''

TOKEN_SNIPPET = '''from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline

folder = "{folder}"
tokenizer = AutoTokenizer.from_pretrained(folder)
model = AutoModelForTokenClassification.from_pretrained(folder).eval()
{adapter}ner = pipeline("token-classification", model=model, tokenizer=tokenizer, aggregation_strategy="first")
print(ner("Angela Merkel met Emmanuel Macron in Paris ."))
'''

TOKEN_ADAPTER_LINES = '''from peft import PeftModel
PeftModel.from_pretrained(model.base_model, f"{folder}/adapter")  # adds the adapters to model's encoder, in place
'''


def _unwrap(encoder: nn.Module, merge: bool, adapter_dir: Path) -> nn.Module:
    """The plain ``transformers`` encoder: adapters merged into it, or saved to ``adapter_dir`` and removed."""
    if not hasattr(encoder, "merge_and_unload"):
        return encoder
    if merge:
        return encoder.merge_and_unload()
    encoder.save_pretrained(adapter_dir)
    return encoder.unload()


@contextmanager
def _quiet_transformers():
    """The check loads the export quietly: a mismatch shows in the logits it compares, and a warning about a
    pooler xdt never uses (an encoder that cannot be loaded without one) would only alarm."""
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _token_model(encoder: nn.Module, run: LoadedRun) -> nn.Module:
    """A standard ``AutoModelForTokenClassification`` holding the run's encoder and head."""
    from transformers import AutoModelForTokenClassification

    config = encoder.config.__class__.from_dict(encoder.config.to_dict())
    config.num_labels = len(run.labels)
    config.id2label = dict(enumerate(run.labels))
    config.label2id = {tag: i for i, tag in enumerate(run.labels)}
    try:
        model = AutoModelForTokenClassification.from_config(config)
    except ValueError as error:
        raise XdtError(f"run_dir={run.run_dir}: transformers has no token-classification model for "
                       f"{config.model_type} ({str(error).splitlines()[0]}), so the export cannot be one") from None
    missing, unexpected = model.base_model.load_state_dict(encoder.state_dict(), strict=False)
    classifier = getattr(model, "classifier", None)
    if missing or unexpected or not isinstance(classifier, nn.Linear) \
            or classifier.weight.shape != run.model.head.weight.shape:
        raise XdtError(f"run_dir={run.run_dir}: {type(model).__name__} is not an encoder with one linear "
                       f"classifier like xdt's (missing {missing[:3]}, unexpected {unexpected[:3]}), so it cannot "
                       f"hold this run's model")
    with torch.no_grad():
        classifier.weight.copy_(run.model.head.weight)
        classifier.bias.copy_(run.model.head.bias)
    return model.eval()


def _without_pooler(encoder_class: type) -> dict:
    """``add_pooling_layer=False`` for encoders that take it (BERT, RoBERTa, ...): xdt never uses the pooler, so
    the export has none, and loading without one spares the warning that it is newly initialised."""
    return {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(encoder_class).parameters else {}


def _readme(run: LoadedRun, info: dict, folder: str, encoder_class: type) -> str:
    adapters = info["adapters"] == ADAPTER
    if run.task == SEQUENCE_CLASSIFICATION:
        pooler = ", add_pooling_layer=False" if _without_pooler(encoder_class) else ""
        code = SNIPPET.format(folder=folder, pooler=pooler)
        if adapters:
            code = code.replace("head = load_file", ADAPTER_LINES.format(folder=folder) + "head = load_file", 1)
        how = ("xdt pools the encoder's token states (by their mean, or the first token's: `pooling` in "
               "xdt_export.json) and applies one linear layer, which no `AutoModelForSequenceClassification` "
               "computes, so the head is `head.safetensors` (`weight`, `bias`) and these lines apply it. The "
               "encoder has no pooler (xdt never uses one).")
    else:
        adapter = TOKEN_ADAPTER_LINES.format(folder=folder) if adapters else ""
        code = TOKEN_SNIPPET.format(folder=folder, adapter=adapter)
        how = ("A standard token-classification model: xdt's head is the linear classifier on every token that "
               "`AutoModelForTokenClassification` has. xdt tags a word by its first sub-word, as "
               "`aggregation_strategy=\"first\"` does; xdt splits words at whitespace, the pipeline also at "
               "punctuation.")
    return (f"# {info['task']} model exported by xdt\n\n"
            f"From `{info['run_dir']}`, checkpoint `{info['checkpoint']}`; labels: {', '.join(info['labels'])}. "
            f"Texts were cut at {info['max_length']} tokens in training (the tokenizer's `model_max_length`).\n\n"
            f"{how}\n\n```python\n{code}```\n")


def _check(folder: Path, run: LoadedRun, reference: list, encoder_class: type) -> float:
    """Load the export back as its README says and return the largest logit difference from the run's."""
    from transformers import AutoModel, AutoModelForTokenClassification, AutoTokenizer

    adapter = folder / ADAPTER
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with _quiet_transformers():
        if run.task == SEQUENCE_CLASSIFICATION:
            encoder = AutoModel.from_pretrained(folder, **_without_pooler(encoder_class))
            if adapter.is_dir():
                from peft import PeftModel

                encoder = PeftModel.from_pretrained(encoder, adapter)
            encoder.eval()
            info = json.loads((folder / MARKER).read_text())
            head = load_file(str(folder / HEAD))
            batch = tokenizer(PROBES, padding=True, truncation=True, return_tensors="pt")
            with torch.no_grad():
                states = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1) if info["pooling"] == "mean" else states[:, 0]
            logits = pooled @ head["weight"].T + head["bias"]
            return float((logits - torch.as_tensor(reference)).abs().max())
        model = AutoModelForTokenClassification.from_pretrained(folder)
        if adapter.is_dir():
            from peft import PeftModel

            PeftModel.from_pretrained(model.base_model, adapter)
        model.eval()
    worst = 0.0
    for text, expected in zip(PROBES, reference):
        encoded = tokenizer(text.split(), is_split_into_words=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**{k: encoded[k] for k in ("input_ids", "attention_mask")}).logits[0]
        firsts, previous = [], None
        for position, word in enumerate(encoded.word_ids(0)):
            if word is not None and word != previous:
                firsts.append(position)
            previous = word
        worst = max(worst, float((logits[firsts] - torch.as_tensor(expected)).abs().max()))
    return worst


def _check_out(out: Path, run_dir: Path, overwrite: bool) -> None:
    resolved, run = out.resolve(), run_dir.resolve()
    if resolved == run or run in resolved.parents:
        raise XdtError(f"out={out} is inside the run folder {run_dir}; a run folder is data that xdt never writes "
                       f"into: choose another folder")
    if resolved in run.parents:
        raise XdtError(f"out={out} holds the run folder {run_dir}; choose another folder")
    if not out.exists() and not out.is_symlink():
        return
    if not overwrite:
        raise XdtError(f"out={out} exists; pass overwrite=true to replace it, or choose another folder")
    if not out.is_dir() or out.is_symlink():
        raise XdtError(f"out={out} exists and is not a folder; overwrite=true replaces only a folder xdt exported")
    if not (out / MARKER).is_file() and any(out.iterdir()):
        raise XdtError(f"out={out} exists and is not an xdt export (no {MARKER} in it); overwrite=true replaces "
                       f"only a folder xdt exported, or an empty one: choose another folder")


def export_run(cfg: DictConfig) -> dict:
    """``xdt export`` (see the module docstring); returns what ``xdt_export.json`` records."""
    for key in ("run_dir", "out"):
        if not cfg.get(key):
            what = "folder of a training run" if key == "run_dir" else "folder to write"
            raise XdtError(f"xdt export needs {key}=<{what}>")
    run_dir, out = Path(str(cfg.run_dir)).expanduser(), Path(str(cfg.out)).expanduser()
    if not run_dir.is_dir():
        raise XdtError(f"run_dir={run_dir}: no such folder")
    _check_out(out, run_dir, bool(cfg.overwrite))
    hf_logging.disable_progress_bar()  # xdt logs what it writes; per-file bars would only clutter the output
    run = load_run(run_dir, checkpoint=str(cfg.checkpoint), device="cpu", trust_remote_code=bool(cfg.trust_remote_code))
    texts = PROBES if run.task == SEQUENCE_CLASSIFICATION else [text.split() for text in PROBES]
    reference = run.logits(texts)
    peft = getattr(run.model.encoder, "peft_config", None)
    merge = bool(cfg.merge_adapters)
    info = {"task": run.task, "labels": run.labels, "max_length": run.max_length, "run_dir": str(run_dir.resolve()),
            "checkpoint": run.checkpoint, "step": run.step,
            "peft": next(iter(peft.values())).peft_type.value.lower() if peft else None,
            "adapters": None if not peft else ("merged" if merge else ADAPTER)}
    if run.task == SEQUENCE_CLASSIFICATION:
        info["pooling"] = run.model.pooling
        info["loader"] = f"AutoModel + {HEAD} (README.md)"
    else:
        info["loader"] = "AutoModelForTokenClassification"

    def fill(tmp: Path) -> None:
        encoder = _unwrap(run.model.encoder, merge, tmp / ADAPTER)
        if run.task == SEQUENCE_CLASSIFICATION:
            encoder.config.id2label = dict(enumerate(run.labels))
            encoder.config.label2id = {name: i for i, name in enumerate(run.labels)}
            encoder.save_pretrained(tmp)
            save_file({"weight": run.model.head.weight.detach().contiguous(),
                       "bias": run.model.head.bias.detach().contiguous()}, str(tmp / HEAD))
        else:
            _token_model(encoder, run).save_pretrained(tmp)
        tokenizer = run.tokenizer
        tokenizer.model_max_length = run.max_length  # truncation=True then cuts where training did
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(_readme(run, info, str(out), type(encoder)), encoding="utf-8")
        difference = _check(tmp, run, reference, type(encoder))
        if difference > TOLERANCE:
            raise XdtError(f"the exported model's logits differ from the run's by {difference:.2e} (more than "
                           f"{TOLERANCE}); nothing was written to {out}")
        info["max_logit_difference"] = difference
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_folder(out, fill)
    log.info("exported %s (%s) to %s: %s; logits within %.1e of the run's", run_dir, run.checkpoint, out,
             info["loader"], info["max_logit_difference"])
    return info


def export_command(cfg: DictConfig, out_dir: Path) -> dict:
    """``xdt export``; an error is recorded as ``failed`` in the command's own folder when it exists."""
    try:
        return export_run(cfg)
    except Exception as error:
        if Path(out_dir).is_dir():
            message = str(error) if isinstance(error, XdtError) else f"{type(error).__name__}: {error}"
            atomic_write_text(Path(out_dir) / FAILED, message + "\n")
        raise
