"""A saved run, loaded to label new text: ``xdt.load_run(run_dir).predict(texts)`` in a notebook, and what
``xdt predict`` and ``xdt export`` build on.

The run folder is read as data, under the rules of :mod:`xdt.saved_run`: its ``config.yaml`` is checked (known
classes only, no interpolations), ``trust_remote_code`` comes from the caller, never from the folder, and every
file read must lie inside the folder. Only the task's model is rebuilt (encoder and head), never the strategy:
every strategy predicts with its model alone (:meth:`xdt.strategies.base.Strategy.predict`), so the weights under
``model.`` in the checkpoint are all a prediction needs. Nothing is written anywhere.

Texts are tokenised exactly as in training (the run's tokenizer, cut at the run's ``max_length``), sorted by
length and batched, so padding is small; results come back in the order of the texts.

* sequence classification: one row per text, ``{"prediction": <label name>, "prob_<label>": <probability>, ...}``;
* token classification (NER): the text's words (split at whitespace, or a list of words given as is), a BIO tag
  per word (the tag of its first sub-word, as in training), and the entity spans with their character offsets.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from xdt import checkpoint, saved_run
from xdt.checkpoint import saved_step  # load_run has an argument named checkpoint
from xdt.data.batching import Collator
from xdt.errors import XdtError

log = logging.getLogger(__name__)

SEQUENCE_CLASSIFICATION = "sequence_classification"
TOKEN_CLASSIFICATION = "token_classification"
TASKS = {"SequenceClassification": SEQUENCE_CLASSIFICATION, "TokenClassification": TOKEN_CLASSIFICATION}
PREDICTION = "prediction"  # the column of the predicted label name (not ``label``: inputs often hold the gold one)
PROBABILITY = "prob_"  # prob_<label name>: the probability of each class
NER_COLUMNS = ("words", "tags", "spans", "truncated")
WORD = re.compile(r"\S+")


def prediction_columns(task: str, labels: list[str]) -> list[str]:
    """The columns a prediction row has, in order."""
    if task == TOKEN_CLASSIFICATION:
        return list(NER_COLUMNS)
    return [PREDICTION, *(f"{PROBABILITY}{name}" for name in labels)]


def _task_of(run_cfg: DictConfig, run_dir: Path) -> str:
    target = str(OmegaConf.select(run_cfg, "task._target_", default=""))
    kind = TASKS.get(target.rsplit(".", 1)[-1])
    if kind is None:
        raise XdtError(f"run_dir={run_dir}: a {target.rsplit('.', 1)[-1] or 'other'} run; predict and export read "
                       f"classification runs (sequence or token classification). A language model is fine-tuned "
                       f"from with model.init_from={run_dir}")
    return kind


def checkpoint_folder(run_dir: Path, which: str) -> Path:
    """The checkpoint folder ``which`` names (best, last, step-N), resolved and checked to lie inside the run."""
    root = run_dir / checkpoint.CHECKPOINTS
    steps = checkpoint.checkpoint_steps(run_dir)
    if not steps:
        state = "is empty" if root.is_dir() else "does not exist"
        raise XdtError(f"run_dir={run_dir}: no checkpoints ({root} {state}); the run stopped before its first "
                       f"checkpoint, so there is no model to use: resume it with xdt train resume={run_dir}")
    folder = root / str(which)
    if not (folder / checkpoint.MODEL_FILE).is_file():
        available = ", ".join([*(n for n in ("best", "last") if (root / n).is_dir()),
                               *(f"step-{s:07d}" for s in steps)])
        raise XdtError(f"checkpoint={which}: no such checkpoint in {root} (available: {available})")
    return saved_run.check_tree(run_dir, folder)


def load_model_weights(model: nn.Module, folder: Path) -> None:
    """The task model's weights (``model.`` in the strategy's checkpoint) into ``model``; a strategy's other
    modules (a domain discriminator, extra heads) are not needed to predict. Names the file may leave out are
    frozen weights already loaded from the pretrained model (PEFT) or second names of a shared tensor."""
    path = Path(folder) / checkpoint.MODEL_FILE
    try:
        weights = load_file(str(path))
    except (OSError, SafetensorError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise XdtError(f"{path} is damaged or missing ({reason}); use another checkpoint (checkpoint=last, or a "
                       f"step-NNNNNNN folder)") from None
    own = {name[len("model."):]: tensor for name, tensor in weights.items() if name.startswith("model.")}
    try:
        missing, unexpected = model.load_state_dict(own, strict=False)
    except RuntimeError as error:
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
        raise XdtError(f"{path} does not fit the model built from the run's config.yaml ({first})") from None
    state = model.state_dict()
    stored = {(state[name].data_ptr(), tuple(state[name].shape)) for name in own if name in state}
    frozen = {name for name, p in model.named_parameters(remove_duplicate=False) if not p.requires_grad}
    unexplained = [name for name in missing
                   if name not in frozen and (state[name].data_ptr(), tuple(state[name].shape)) not in stored]
    if unexplained or unexpected or not own:
        raise XdtError(f"{path} does not fit the model built from the run's config.yaml: missing {unexplained[:5]}, "
                       f"unexpected {list(unexpected)[:5]}")


def _read_json(run_dir: Path, path: Path, what: str):
    saved_run.inside(run_dir, path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise XdtError(f"{path} is damaged ({error}); it holds {what}") from None


def _build(run_dir: Path, run_cfg: DictConfig, task: str):
    """(model without weights, tokenizer, label names) of a saved run."""
    from xdt import models

    total_steps = int(run_cfg.get("max_steps") or 1000)  # AdaLoRA needs a schedule length to be built
    if task == SEQUENCE_CLASSIFICATION:
        saved_run.check_tree(run_dir, run_dir / "model")
        problem = models.model_files_problem(run_dir / "model")
        if problem is not None:
            raise XdtError(f"{problem}: the run was cut off while writing it; xdt train resume={run_dir} writes it "
                           f"again")
        return models.rebuild_classifier(run_dir / "model", run_cfg.model, total_steps=total_steps)
    # Token-classification runs keep no model/ folder: the encoder is rebuilt from the run's model config, and the
    # tags are those metrics.json records when the run ends.
    result = _read_json(run_dir, run_dir / "metrics.json", "the run's final scores and its tags")
    tags = (result or {}).get("tags")
    if not tags:
        raise XdtError(f"run_dir={run_dir}: no metrics.json with the run's tags; a token-classification run records "
                       f"them when it finishes, so finish it first (xdt train resume={run_dir})")
    tokenizer = models.load_tokenizer(run_cfg.model)
    if not tokenizer.is_fast:
        raise XdtError(f"run_dir={run_dir}: its tokenizer ({type(tokenizer).__name__}) is not a fast one, which "
                       f"aligning words to sub-words needs")
    pretrained = models.frozen_weights_rebuildable(run_cfg.model)  # frozen PEFT weights are not in checkpoints
    encoder = models.apply_peft(models.build_encoder(run_cfg.model, tokenizer, pretrained), run_cfg.model, total_steps)
    return models.TokenClassifier(encoder, len(tags), dropout=run_cfg.model.get("dropout")), tokenizer, list(tags)


def _warn_about_adaptation(run_cfg: DictConfig) -> None:
    from xdt.config import target_class

    shots = OmegaConf.select(run_cfg, "target_domain.shots", default=0)
    if shots and getattr(target_class(run_cfg.strategy, "strategy"), "adapts_to_shots", False):
        log.warning("this run's strategy adapts to each target's %s labeled shots before scoring it; predictions use "
                    "the weights it learned, without that adaptation (new text has no shots to adapt to)", shots)


def _device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except (RuntimeError, TypeError):
        raise XdtError(f"device={device!r} is not a device: use auto, cpu, cuda or cuda:<n>") from None
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise XdtError(f"device={device}: no CUDA device here; use device=cpu (or auto)")
    if chosen.type == "cuda" and chosen.index is not None and chosen.index >= torch.cuda.device_count():
        raise XdtError(f"device={device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                       f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if chosen.type not in ("cpu", "cuda"):
        raise XdtError(f"device={device}: xdt predicts on cpu or cuda")
    return chosen


def bio_spans(text: str, words: list[str], starts: list[int], tags: list[str], scores: list[float]) -> list[dict]:
    """Entity spans of BIO ``tags`` with conlleval's semantics (an entity starts at B-X, or at an I-X that does not
    continue an entity of type X): type, text, character offsets in ``text`` (``starts``: each word's), word
    indices (end exclusive) and score (the mean probability of its words' tags)."""
    spans, first, kind = [], None, None
    for i, tag in enumerate([*tags, "O"]):
        this = None if tag == "O" else tag[2:]
        if kind is not None and (this != kind or tag.startswith("B-")):
            start, end = starts[first], starts[i - 1] + len(words[i - 1])
            spans.append({"type": kind, "text": text[start:end], "start": start, "end": end, "word_start": first,
                          "word_end": i, "score": round(float(np.mean(scores[first:i])), 6)})
            kind = None
        if this is not None and kind is None:
            first, kind = i, this
    return spans


@dataclass
class LoadedRun:
    """The model of a saved classification run's checkpoint, ready to label text (see the module docstring)."""

    run_dir: Path
    task: str  # sequence_classification | token_classification
    labels: list[str]  # class names, or the BIO tags of a token-classification run (index = output unit)
    checkpoint: str  # step-NNNNNNN: the folder best/last/... led to (best or last where a copy made links folders)
    step: int  # the training step of that checkpoint
    max_length: int
    model: nn.Module = field(repr=False)
    tokenizer: object = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 64

    @property
    def columns(self) -> list[str]:
        """The columns of the rows :meth:`predict` returns."""
        return prediction_columns(self.task, self.labels)

    # ---- the model's outputs ---------------------------------------------------------------------

    def _batches(self, encoded: list[list[int]], batch_size: int | None,
                 on_batch: Callable[[int], None] | None = None,
                 forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        """(indices, logits) per batch of ``encoded``, the longest first (padding is then small); ``forward(ids,
        mask)`` computes something else than the logits (:meth:`features`)."""
        size = int(batch_size or self.batch_size)
        if size < 1:
            raise XdtError(f"batch_size={size} is not valid: it must be a positive integer")
        order = np.argsort(-np.array([len(ids) for ids in encoded], dtype=np.int64), kind="stable")
        collate = Collator(self.tokenizer.pad_token_id)
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(order), size):
                indices = order[start:start + size].tolist()
                batch = collate([{"input_ids": encoded[i]} for i in indices])
                logits = (forward or self.model)(batch["input_ids"].to(self.device),
                                                 batch["attention_mask"].to(self.device))
                yield indices, logits.float().cpu()
                if on_batch is not None:
                    on_batch(len(indices))

    def logits(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray | list[np.ndarray]:
        """Class logits, shape (texts, classes); for a token-classification run, one array (words, tags) per
        text: the logits of each word's first sub-word (words past ``max_length`` are absent)."""
        if self.task == SEQUENCE_CLASSIFICATION:
            encoded = self._encode(texts)
            out = np.zeros((len(encoded), len(self.labels)), dtype=np.float32)
            for indices, logits in self._batches(encoded, batch_size):
                out[indices] = logits.numpy()
            return out
        words = [self._words(text)[0] for text in texts]
        encoded, firsts = self._encode_words(words)
        out: list[np.ndarray] = [np.zeros((0, len(self.labels)), np.float32)] * len(words)
        for indices, logits in self._batches(encoded, batch_size):
            for row, i in enumerate(indices):
                out[i] = logits[row, firsts[i]].numpy()
        return out

    def features(self, texts: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """The pooled features the alignment strategies compare across domains (the input of DANN's domain
        discriminator, the covariances CORAL matches): the model's ``alignment_features``, shape (texts, hidden),
        fp32. A token-classification run's are sentence features (the mean of the token states) of the texts'
        words (split at whitespace), as it aligns them."""
        if self.task == SEQUENCE_CLASSIFICATION:
            encoded = self._encode(texts)
        else:
            encoded = self._encode_words([self._words(text)[0] for text in texts])[0]

        def pooled(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model.alignment_features({"input_ids": input_ids, "attention_mask": attention_mask})

        out = np.zeros((len(encoded), self.model.encoder.config.hidden_size), dtype=np.float32)
        for indices, features in self._batches(encoded, batch_size, forward=pooled):
            out[indices] = features.numpy()
        return out

    def predict(self, texts: Sequence[str] | str, batch_size: int | None = None,
                on_batch: Callable[[int], None] | None = None) -> list[dict]:
        """One row per text (see the module docstring); ``on_batch(n)`` is called after each batch of n texts.

        >>> run = xdt.load_run("outputs/2026-11-23/10-42-07")      # doctest: +SKIP
        >>> run.predict(["a gripping story", "it broke in a week"])  # doctest: +SKIP
        [{'prediction': '1', 'prob_0': 0.08, 'prob_1': 0.92}, {'prediction': '0', ...}]
        """
        if isinstance(texts, str):
            texts = [texts]
        if self.task == SEQUENCE_CLASSIFICATION:
            return self._predict_classes(texts, batch_size, on_batch)
        return self._predict_tags(texts, batch_size, on_batch)

    # ---- sequence classification ---------------------------------------------------------------

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids as in training (xdt.data.tokenize): the run's tokenizer, cut at ``max_length``."""
        if not len(texts):
            return []
        texts = [" ".join(map(str, t)) if isinstance(t, (list, tuple)) else str(t) for t in texts]  # words: joined
        return self.tokenizer(texts, truncation=True, max_length=self.max_length,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _predict_classes(self, texts, batch_size, on_batch) -> list[dict]:
        rows: list[dict] = [{}] * len(texts)
        probability_columns = [f"{PROBABILITY}{name}" for name in self.labels]
        for indices, logits in self._batches(self._encode(texts), batch_size, on_batch):
            probabilities = logits.softmax(-1).numpy()
            for row, i in enumerate(indices):
                rows[i] = {PREDICTION: self.labels[int(probabilities[row].argmax())],
                           **{column: float(p) for column, p in zip(probability_columns, probabilities[row])}}
        return rows

    # ---- token classification ------------------------------------------------------------------

    @staticmethod
    def _words(text) -> tuple[list[str], list[int]]:
        """(words, their character offsets): a text split at whitespace, or a list of words as given (offsets then
        count in the words joined by single spaces)."""
        if isinstance(text, (list, tuple)):
            words = [str(w) for w in text]
            starts, position = [], 0
            for word in words:
                starts.append(position)
                position += len(word) + 1
            return words, starts
        matches = list(WORD.finditer(str(text)))
        return [m.group() for m in matches], [m.start() for m in matches]

    def _encode_words(self, words: list[list[str]]) -> tuple[list[list[int]], list[list[int]]]:
        """Sub-word ids of each text's words, and the position of each word's first sub-word (as in training:
        xdt.data.tokenize._encode_words); words cut off by ``max_length`` have none."""
        if not words:
            return [], []
        encoded = self.tokenizer(words, is_split_into_words=True, truncation=True, max_length=self.max_length,
                                 return_attention_mask=False, return_token_type_ids=False)
        firsts = []
        for i in range(len(words)):
            previous, positions = None, []
            for position, word in enumerate(encoded.word_ids(i)):
                if word is not None and word != previous:
                    positions.append(position)
                previous = word
            firsts.append(positions)
        return encoded["input_ids"], firsts

    def _predict_tags(self, texts, batch_size, on_batch) -> list[dict]:
        split = [self._words(text) for text in texts]
        encoded, firsts = self._encode_words([words for words, _ in split])
        rows: list[dict] = [{}] * len(texts)
        for indices, logits in self._batches(encoded, batch_size, on_batch):
            probabilities = logits.softmax(-1)
            for row, i in enumerate(indices):
                words, starts = split[i]
                best = probabilities[row, firsts[i]].max(-1)
                tags = [self.labels[j] for j in best.indices.tolist()]
                scores = best.values.tolist()
                cut = len(words) - len(tags)
                tags += ["O"] * cut  # words past max_length are not tagged
                scores += [1.0] * cut
                text = " ".join(words) if isinstance(texts[i], (list, tuple)) else str(texts[i])
                spans = bio_spans(text, words, starts, tags, scores)
                rows[i] = {"words": words, "tags": tags, "spans": spans, "truncated": cut > 0}
        return rows


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | None = "auto", batch_size: int = 64,
             trust_remote_code: bool = False, max_length: int | None = None) -> LoadedRun:
    """The model of ``run_dir``'s checkpoint (``best``: the one the run selected; ``last``; ``step-NNNNNNN``),
    on ``device`` (``auto``: CUDA if there is one), ready for :meth:`LoadedRun.predict`.

    ``trust_remote_code`` lets the encoder's own code run (a model that needs it); it is never read from the
    folder. ``max_length`` cuts texts at that many tokens instead of the run's ``max_length``.
    """
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise XdtError(f"run_dir={run_dir}: no such folder")
    run_cfg = saved_run.load_config(run_dir, "run_dir", trust_remote_code=bool(trust_remote_code))
    task = _task_of(run_cfg, run_dir)
    folder = checkpoint_folder(run_dir, checkpoint)
    model, tokenizer, labels = _build(run_dir, run_cfg, task)
    load_model_weights(model, folder)
    _warn_about_adaptation(run_cfg)
    length = int(max_length or run_cfg.max_length)
    if length <= tokenizer.num_special_tokens_to_add():
        raise XdtError(f"max_length={length} leaves no room for text after the tokenizer's special tokens")
    from xdt.models import max_input_length

    limit = max_input_length(model.encoder.config)
    if limit is not None and length > limit:
        raise XdtError(f"max_length={length} is longer than the run's encoder allows ({limit} tokens)")
    chosen = _device(device)
    return LoadedRun(run_dir=run_dir, task=task, labels=list(labels), checkpoint=folder.name,
                     step=saved_step(folder), max_length=length,
                     model=model.to(chosen).eval(), tokenizer=tokenizer, device=chosen, batch_size=int(batch_size))
