"""Strategies: the math they rest on, and every shipped strategy config trained, saved and reloaded."""

from __future__ import annotations

import copy
import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from omegaconf import open_dict
from safetensors.torch import load_file
from transformers import BartConfig, BartForConditionalGeneration, BertConfig, BertModel

from conftest import CONFIG_DIR, compose_config, cut_off_copy
from xdt import checkpoint
from xdt.data.shots import domain_entries
from xdt.eval_run import evaluate_run
from xdt.data.batching import stack_batches
from xdt.models import SequenceClassifier, TokenClassifier, load_tokenizer, mask_tokens
from xdt.strategies.augment import BUILTIN_LEXICON, eda, load_lexicon
from xdt.strategies._common import confusion_loss, coral_loss, dann_lambda, mmd_loss, pairwise_mean, reverse_gradient
from xdt.strategies.base import Strategy, StrategyContext
from xdt.errors import XdtError
from xdt.strategies.self_train import class_imbalance
from xdt.engine import param_groups
from xdt.tasks.sequence_classification import build_strategy
from xdt.train import train

STRATEGIES = sorted(p.stem for p in (CONFIG_DIR / "strategy").glob("*.yaml"))


# ---- math ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_flips_and_scales_the_gradient(scale):
    x = torch.randn(4, 3, requires_grad=True)
    y = reverse_gradient(x, scale)
    assert torch.equal(y, x)
    weights = torch.randn(4, 3)
    (y * weights).sum().backward()
    assert torch.allclose(x.grad, -scale * weights)


def test_dann_schedule_endpoints():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1) and dann_lambda(1.0) > 0.9999
    assert 0 < dann_lambda(0.1) < dann_lambda(0.5) < dann_lambda(0.9) < 1


def test_confusion_is_zero_only_when_the_discriminator_is_undecided():
    assert confusion_loss(torch.full((4, 3), 2.5)).item() == pytest.approx(0.0, abs=1e-6)
    logits = torch.tensor([[2.0, 0.0], [0.0, -1.0]])
    uniform = torch.full((2,), 0.5)
    expected = F.kl_div(F.log_softmax(logits, -1), uniform.expand(2, 2), reduction="batchmean")  # KL(U || p)
    assert confusion_loss(logits).item() == pytest.approx(expected.item(), rel=1e-5)
    assert confusion_loss(logits * 3).item() > confusion_loss(logits).item() > 0


@pytest.mark.parametrize("distance", [coral_loss, mmd_loss], ids=["coral", "mmd"])
def test_alignment_is_zero_for_identical_batches_and_positive_for_shifted(distance):
    torch.manual_seed(0)
    batch = torch.randn(64, 16)
    assert distance(batch, batch.clone()).abs().item() < 1e-6
    assert distance(batch, batch * 3 + 1).item() > 1e-3
    same_distribution = distance(batch, torch.randn(64, 16)).item()
    assert distance(batch, torch.randn(64, 16) * 3 + 1).item() > 5 * same_distribution


def test_coral_matches_its_formula():
    source, target = torch.randn(10, 3), torch.randn(12, 3) * 2
    expected = (torch.cov(source.T) - torch.cov(target.T)).pow(2).sum() / (4 * 9)
    assert coral_loss(source, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_pairwise_mean_skips_groups_too_small_to_compare():
    groups = [torch.randn(5, 2), torch.randn(1, 2), torch.randn(6, 2)]
    assert pairwise_mean(coral_loss, groups).item() == pytest.approx(coral_loss(groups[0], groups[2]).item())
    assert pairwise_mean(coral_loss, groups[:2]).item() == 0.0


# ---- every strategy config, with and without a target stream --------------------------------------

def initial_weights(cfg, num_sources: int = 1) -> dict[str, torch.Tensor]:
    """The weights ``train`` starts from: same seed, same construction order."""
    set_seed(int(cfg.seed))
    tokenizer = load_tokenizer(cfg.model)
    targets = domain_entries(cfg.get("target_domain"))  # its domains, not the shots setting beside them
    context = StrategyContext.of(tokenizer, num_sources=num_sources, num_targets=len(targets))
    strategy = build_strategy(cfg, tokenizer, 2, context, int(cfg.max_steps))
    return {k: v.clone() for k, v in strategy.state_dict().items()}


@pytest.mark.parametrize("target", ["with_target", "without_target"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_trains_saves_and_reloads(strategy, target, smoke, tmp_path):
    targets = "target_domain=[syn_kitchen]" if target == "with_target" else "target_domain=[]"
    cfg = smoke(f"strategy={strategy}", targets, "max_steps=8", "eval_interval=4")
    result = train(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train"]["loss"] for r in records]
    assert all(math.isfinite(x) for x in losses)
    assert result["strategy"] == strategy

    before = initial_weights(cfg)
    strategy_module = build_and_load(cfg, tmp_path / "run")
    after = strategy_module.state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert any(k.startswith("model.encoder.") for k in changed), "the encoder did not train"
    assert any(k.startswith("model.head.") for k in changed), "the head did not train"
    extra = {k.split(".")[0] for k in before if not k.startswith("model.")}
    for head in extra:
        assert any(k.startswith(head + ".") for k in changed), f"{head} did not train"

    again = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", name="eval"), tmp_path / "eval")
    assert again["metrics"] == result["metrics"]


def build_and_load(cfg, run_dir: Path):
    set_seed(int(cfg.seed))
    tokenizer = load_tokenizer(cfg.model)
    context = StrategyContext.load(run_dir / "model" / "strategy_context.json", tokenizer)
    strategy = build_strategy(cfg, tokenizer, 2, context, int(cfg.max_steps))
    checkpoint.load_weights(strategy, run_dir / "checkpoints" / "last")
    return strategy


# ---- PEFT on every strategy --------------------------------------------------------------------------

@pytest.mark.parametrize("strategy", STRATEGIES)
def test_strategy_with_lora_trains_adapters_and_heads_only(strategy, smoke, tmp_path):
    cfg = smoke(f"strategy={strategy}", "model.peft=lora", "target_domain=[syn_kitchen]", "max_steps=8",
                "eval_interval=4", "source_domain=[syn_books,syn_dvd]")
    result = train(cfg, tmp_path / "run")
    assert 0 < result["parameters"]["trainable"] < result["parameters"]["total"] / 2
    before, after = initial_weights(cfg, num_sources=2), build_and_load(cfg, tmp_path / "run").state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert any("lora_" in k for k in changed), "the LoRA adapters did not train"
    assert not any(k.startswith("model.encoder.") and "lora_" not in k for k in changed), "frozen weights moved"
    assert any(k.startswith("model.head.") for k in changed)
    again = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", name="eval"), tmp_path / "eval")
    assert again["metrics"] == result["metrics"]


@pytest.mark.parametrize("method", ["adalora", "ia3"])
def test_other_peft_methods_train_and_reload(method, smoke, tmp_path):
    result = train(smoke(f"model.peft={method}", "max_steps=8", "eval_interval=4"), tmp_path / "run")
    assert result["parameters"]["trainable"] < result["parameters"]["total"]
    again = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", name="eval"), tmp_path / "eval")
    assert again["metrics"] == result["metrics"]


def test_lora_on_a_pretrained_model_checkpoints_only_what_trains(smoke, tmp_path):
    cfg = smoke("model=minilm", "model.peft=lora", "max_steps=4", "eval_interval=4", "max_examples=64",
                "max_length=32")
    result = train(cfg, tmp_path / "run")
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "last" / "model.safetensors"))
    assert all("lora_" in k or k.startswith("model.head.") for k in weights), sorted(weights)[:5]
    assert sum(v.numel() for v in weights.values()) == result["parameters"]["trainable"]
    again = evaluate_run(smoke(f"run_dir={tmp_path / 'run'}", name="eval"), tmp_path / "eval")
    assert again["metrics"] == result["metrics"]


# ---- what individual strategies promise ---------------------------------------------------------------

def tiny_strategy(smoke, *overrides: str, num_sources: int = 1, num_targets: int = 1):
    cfg = smoke(*overrides)
    tokenizer = load_tokenizer(cfg.model)
    return build_strategy(cfg, tokenizer, 2, StrategyContext.of(tokenizer, num_sources, num_targets), 100), tokenizer


def batch_of(tokenizer, texts: list[str], labels: list[int] | None = None, domains: list[int] | None = None):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
             "domain": torch.tensor(domains or [0] * len(texts))}
    if labels is not None:
        batch["labels"] = torch.tensor(labels)
    return batch


def test_eda_operations():
    rng = random.Random(0)
    words = "the pan is great and the lid is sturdy".split()
    lexicon = {"great": ["superb"], "sturdy": ["solid"]}
    assert sorted(eda(words, "swap", 0.2, lexicon, rng)) == sorted(words)
    assert len(eda(words, "delete", 0.5, lexicon, rng)) < len(words)
    replaced = eda(words, "synonym", 0.2, lexicon, rng)
    assert replaced != words and set(replaced) - set(words) <= {"superb", "solid"}
    inserted = eda(words, "insert", 0.2, lexicon, rng)
    assert len(inserted) == len(words) + 2 and set(inserted) - set(words) <= {"superb", "solid"}
    assert load_lexicon(BUILTIN_LEXICON)["great"][:2] == ["excellent", "wonderful"]


def test_augment_changes_text_but_not_labels(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=augment", "strategy.probability=1.0", "strategy.alpha=0.3")
    source = batch_of(tokenizer, ["this pan is great and really sturdy", "awful kettle , it broke fast"], [1, 0], [0, 1])
    random.seed(1)
    augmented = strategy.augmented(source)
    assert not torch.equal(augmented["input_ids"], source["input_ids"])
    assert augmented["labels"].tolist() == [1, 0] and augmented["domain"].tolist() == [0, 1]
    strategy.probability = 0.0
    unchanged = strategy.augmented(source)
    assert torch.equal(unchanged["input_ids"], source["input_ids"])


def test_back_translation_wiring_with_a_tiny_random_translation_model(smoke, tmp_path):
    tokenizer = load_tokenizer(smoke().model)
    config = BartConfig(vocab_size=len(tokenizer), d_model=16, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        decoder_start_token_id=tokenizer.cls_token_id)
    BartForConditionalGeneration(config).save_pretrained(tmp_path / "mt")
    tokenizer.save_pretrained(tmp_path / "mt")
    strategy, _ = tiny_strategy(smoke, "strategy=augment", "strategy.probability=1.0",
                                f"+strategy.back_translation={{forward: {tmp_path / 'mt'}, backward: {tmp_path / 'mt'},"
                                f" probability: 1.0, max_new_tokens: 6}}")
    source = batch_of(tokenizer, ["a great kettle", "the lid broke"], [1, 0])
    augmented = strategy.augmented(source)
    assert augmented["input_ids"].shape[0] == 2 and augmented["input_ids"].shape[1] <= source["input_ids"].shape[1]
    assert not torch.equal(augmented["input_ids"], source["input_ids"])
    assert not any("back" in k or "translat" in k for k in strategy.state_dict())  # frozen, never saved


def test_mtl_domain_heads_and_masked_lm(smoke, tmp_path):
    result = train(smoke("strategy=mtl", "source_domain=[syn_books,syn_dvd]", "target_domain=[syn_kitchen]",
                         "max_steps=8", "eval_interval=4"), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"classification", "domain_heads", "mlm"} <= set(record["train"])
    strategy = build_and_load(smoke("strategy=mtl", "source_domain=[syn_books,syn_dvd]", "target_domain=[syn_kitchen]",
                                    "max_steps=8"), tmp_path / "run")
    assert len(strategy.domain_heads) == 2
    assert strategy.mlm_head.head.predictions.decoder.weight is strategy.model.encoder.get_input_embeddings().weight
    assert set(result["metrics"]) >= {"source/syn_books/test", "source/syn_dvd/test", "target/syn_kitchen/test"}


def test_masked_lm_head_on_masked_positions_equals_the_full_model_loss(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=mtl")
    strategy.eval()
    batch = batch_of(tokenizer, ["the kettle leaks and the lid is flimsy", "a sturdy pan"])
    torch.manual_seed(0)
    inputs, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], 0.3, tokenizer.mask_token_id,
                                 tuple(tokenizer.all_special_ids), len(tokenizer))
    head = strategy.mlm_head
    full = head.head(head.encoder(input_ids=inputs, attention_mask=batch["attention_mask"]).last_hidden_state)
    expected = torch.nn.functional.cross_entropy(full.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert head(inputs, batch["attention_mask"], labels).item() == pytest.approx(expected.item(), rel=1e-5)


def test_masking_never_touches_special_or_padding_tokens():
    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (64, 40))
    ids[:, 0], ids[:, -1] = 101, 102
    mask = torch.ones_like(ids)
    mask[:, 30:] = 0
    inputs, labels = mask_tokens(ids, mask, 0.15, 103, (101, 102, 0), 30522)
    chosen = labels != -100
    assert not chosen[:, 0].any() and not chosen[:, 30:].any()
    assert 0.12 < chosen.float().sum() / mask[:, 1:30].sum() < 0.18
    assert (inputs[chosen] == 103).float().mean() > 0.7 and torch.equal(inputs[~chosen], ids[~chosen])


def test_fgm_on_top_of_dann(smoke, tmp_path):
    result = train(smoke("strategy=fgm", "strategy@strategy.base=dann", "target_domain=[syn_kitchen]",
                         "max_steps=8", "eval_interval=4", "lr_schedule=constant"), tmp_path / "run")
    record = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert result["strategy"] == "fgm+dann"
    state = checkpoint.load_state(checkpoint.step_dir(tmp_path / "run", 8) / "training_state.safetensors")
    assert len({group["lr"] for group in state["optimizer"]["param_groups"]}) == 2  # DANN's discriminator rate
    assert {"classification", "domain", "adversarial"} <= set(record["train"])


def test_dann_discriminator_trains_at_its_learning_rate_scale(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=dann", "strategy.discriminator_lr_scale=10")
    groups = param_groups(strategy, 0.0, 1e-3, strategy.lr_scales())
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in strategy.parameters())  # each parameter exactly once
    discriminator = {id(p) for p in strategy.discriminator.parameters()}
    assert {id(p) for g in groups if "lr" in g for p in g["params"]} == discriminator
    assert all(g["lr"] == pytest.approx(1e-2) for g in groups if "lr" in g)

    # Adam's first step moves every weight with a gradient by about its group's learning rate.
    strategy.train()
    before = {name: p.detach().clone() for name, p in strategy.named_parameters()}
    source = batch_of(tokenizer, ["great pan", "awful lid , broke"], [1, 0])
    target = batch_of(tokenizer, ["a clinical note", "another note"])
    loss, _ = strategy(source, target, progress=0.5)
    loss.backward()
    torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.0).step()
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in strategy.named_parameters()}
    assert max(m for n, m in moved.items() if n.startswith("discriminator.")) == pytest.approx(1e-2, rel=0.01)
    assert max(m for n, m in moved.items() if n.startswith("model.")) == pytest.approx(1e-3, rel=0.01)


def test_dann_confusion_trains_the_encoder_and_the_discriminator_on_separate_terms(smoke):
    """With ``adversary=confusion`` the discriminator learns only from its own loss (features detached)
    and the encoder only from the confusion term (discriminator weights held fixed)."""
    strategy, tokenizer = tiny_strategy(smoke, "strategy=dann", "strategy.adversary=confusion")
    source = batch_of(tokenizer, ["great pan", "awful lid , broke"], [1, 0])
    target = batch_of(tokenizer, ["a clinical note", "another note"])

    def gradients(term: str) -> tuple[bool, bool]:
        strategy.zero_grad(set_to_none=True)
        _, terms = strategy(source, target, progress=0.5)
        terms[term].backward()
        reached = lambda prefix: any(p.grad is not None and p.grad.abs().sum() > 0  # noqa: E731
                                     for n, p in strategy.named_parameters() if n.startswith(prefix))
        return reached("model.encoder."), reached("discriminator.")

    assert gradients("domain") == (False, True)
    assert gradients("confusion") == (True, False)
    loss, terms = strategy(source, target, progress=0.5)
    expected = terms["classification"] + terms["domain"] + terms["confusion_scale"] * terms["confusion"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_dann_in_the_loop_gives_its_discriminator_the_scaled_learning_rate(smoke, tmp_path):
    train(smoke("strategy=dann", "strategy.discriminator_lr_scale=4", "target_domain=[syn_kitchen]",
                "max_steps=4", "eval_interval=4", "lr_schedule=constant"), tmp_path / "run")
    state = checkpoint.load_state(checkpoint.step_dir(tmp_path / "run", 4) / "training_state.safetensors")
    rates = sorted({group["lr"] for group in state["optimizer"]["param_groups"]})
    assert rates == pytest.approx([rates[0], 4 * rates[0]]) and len(rates) == 2


def test_fgm_perturbation_has_the_requested_norm_and_raises_the_loss(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=fgm", "strategy.epsilon=0.5")
    strategy.eval()  # no dropout, so the two passes differ only by the perturbation
    source = batch_of(tokenizer, ["great pan", "awful lid , broke"], [1, 0])
    embeddings = strategy.model.encoder.get_input_embeddings()(source["input_ids"])
    gradient = torch.randn_like(embeddings)
    offset = strategy.perturbation(embeddings, gradient, source["attention_mask"])
    real = source["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(offset.flatten(1).norm(dim=1), 0.5 * (embeddings * real).flatten(1).norm(dim=1))
    assert (offset * (1 - real)).abs().max() == 0  # padding stays where it is
    loss, terms = strategy(source)
    assert terms["adversarial"].item() > terms["classification"].item()


def test_fgm_gradient_is_that_of_the_clean_plus_the_adversarial_loss(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=fgm", "strategy.epsilon=0.5", "strategy.weight=0.7")
    strategy.eval()
    source = batch_of(tokenizer, ["great pan", "awful lid , broke", "fine"], [1, 0, 1])
    model, ids, mask = strategy.model, source["input_ids"], source["attention_mask"]
    weights = [p for p in strategy.parameters() if p.requires_grad]
    # The obvious way: the embedding gradient through a zero offset, then both losses backpropagated.
    zero = torch.zeros(*ids.shape, model.encoder.config.hidden_size, requires_grad=True)
    clean = F.cross_entropy(model.classify(model.features(ids, mask, embedding_offset=zero)), source["labels"])
    (direction,) = torch.autograd.grad(clean, zero, retain_graph=True)
    offset = strategy.perturbation(model.encoder.get_input_embeddings()(ids).detach(), direction, mask)
    adversarial = F.cross_entropy(model.classify(model.features(ids, mask, embedding_offset=offset)), source["labels"])
    expected = torch.autograd.grad(clean + 0.7 * adversarial, weights)

    loss, terms = strategy(source)
    strategy.zero_grad()
    loss.backward()
    assert torch.isclose(loss, clean + 0.7 * adversarial, atol=1e-5)
    assert torch.isclose(terms["adversarial"], adversarial, atol=1e-5)
    for p, g in zip(weights, expected):
        assert torch.allclose(p.grad, g, atol=1e-5)


# ---- one encoder pass over the source and target batches stacked ----------------------------------------

def encoder_calls(strategy) -> list[int]:
    """A list that grows by one at each forward call of the strategy's encoder."""
    calls: list[int] = []
    strategy.model.encoder.register_forward_hook(lambda *args: calls.append(1))
    return calls


def use_one_pass(strategy, one_pass: bool) -> None:
    for module in strategy.modules():  # FGM wraps a base strategy: both decide alike
        if isinstance(module, Strategy):
            module.stack_streams = one_pass


TWO_STREAM = {"dann": ["strategy=dann"], "dann+confusion": ["strategy=dann", "strategy.adversary=confusion"],
              "coral": ["strategy=coral"], "mmd": ["strategy=mmd"],
              "self_train": ["strategy=self_train", "strategy.threshold=0.0", "strategy.diversity=1.0"],
              "fgm+dann": ["strategy=fgm", "strategy@strategy.base=dann"]}


@pytest.mark.parametrize("name", TWO_STREAM)
def test_one_pass_over_both_batches_gives_the_loss_and_gradient_of_two_passes(name, smoke):
    strategy, tokenizer = tiny_strategy(smoke, *TWO_STREAM[name])
    strategy.eval()  # no dropout: the two ways then compute the same numbers, not just the same distribution
    source = batch_of(tokenizer, ["great pan", "awful lid , broke", "fine"], [1, 0, 1])
    for target_texts in (["a sturdy kettle that never leaks , not once", "it leaks"], ["ok", "meh"]):
        target = batch_of(tokenizer, target_texts)  # longer, then shorter, than the source batch
        results, passes = {}, {}
        for one_pass in (True, False):
            use_one_pass(strategy, one_pass)
            calls = encoder_calls(strategy)
            strategy.zero_grad()
            loss, terms = strategy(source, target, progress=0.5)
            loss.backward()
            passes[one_pass] = len(calls)
            results[one_pass] = loss, terms, {n: p.grad.clone() for n, p in strategy.named_parameters()
                                               if p.grad is not None}
        (loss, terms, grads), (loss2, terms2, grads2) = results[True], results[False]
        assert passes[True] == passes[False] - 1  # the target batch costs no encoder pass of its own
        assert torch.isclose(loss, loss2, atol=1e-5)
        assert terms.keys() == terms2.keys() and all(torch.isclose(terms[k], terms2[k], atol=1e-5) for k in terms)
        assert grads.keys() == grads2.keys() and len(grads) > 0
        for key in grads:
            assert torch.allclose(grads[key], grads2[key], atol=1e-5), key


def test_steps_stack_the_batches_on_accelerators_and_not_on_cpu(smoke):
    strategy, _ = tiny_strategy(smoke, "strategy=dann")
    assert strategy.stack_streams is None  # decided by device
    assert strategy.stacks_on(torch.device("cuda")) and strategy.stacks_on(torch.device("mps"))
    assert not strategy.stacks_on(torch.device("cpu"))
    strategy.stack_streams = True
    assert strategy.stacks_on(torch.device("cpu"))


def test_a_model_with_batch_norm_encodes_each_domain_on_its_own(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=coral")
    assert not strategy.model_mixes_rows
    strategy.model.normalise = torch.nn.BatchNorm1d(4)  # any batch-statistics layer in the model
    rebuilt = type(strategy)(strategy.model, strategy.context)
    assert rebuilt.model_mixes_rows
    rebuilt.stack_streams = True  # even where asked to
    calls = encoder_calls(rebuilt)
    rebuilt(batch_of(tokenizer, ["great pan", "awful lid"], [1, 0]), batch_of(tokenizer, ["a kettle", "it leaks"]))
    assert len(calls) == 2


@pytest.mark.parametrize("model_class", [SequenceClassifier, TokenClassifier])
def test_stacked_features_and_loss_equal_those_of_each_batch_alone(model_class):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32)
    model = model_class(BertModel(config, add_pooling_layer=False), 3).eval()

    def batch(rows: int, length: int, labelled: bool) -> dict[str, torch.Tensor]:
        lengths = torch.randint(1, length + 1, (rows,))
        lengths[0] = length
        mask = (torch.arange(length) < lengths[:, None]).long()
        values = {"input_ids": torch.randint(1, 40, (rows, length)) * mask, "attention_mask": mask}
        if labelled and model_class is SequenceClassifier:
            values["labels"] = torch.randint(0, 3, (rows,))
        elif labelled:  # a tag per token, padding ignored
            values["labels"] = torch.randint(0, 3, (rows, length)).masked_fill(mask == 0, -100)
        return values

    for source_length, target_length in ((5, 9), (9, 5), (7, 7)):
        source, target = batch(4, source_length, True), batch(3, target_length, False)
        features, loss, target_features = model.joint_features_and_loss(source, target)
        alone, alone_loss = model.features_and_loss(source)
        assert torch.allclose(features, alone, atol=1e-5) and torch.isclose(loss, alone_loss, atol=1e-5)
        assert torch.allclose(target_features, model.alignment_features(target), atol=1e-5)


def test_stack_batches_pads_the_shorter_batch_with_masked_positions():
    first = {"input_ids": torch.tensor([[5, 6, 7]]), "attention_mask": torch.tensor([[1, 1, 1]])}
    second = {"input_ids": torch.tensor([[8], [9]]), "attention_mask": torch.tensor([[1], [1]])}
    input_ids, attention_mask = stack_batches(first, second)
    assert input_ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 0, 0]]
    assert attention_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0]]


def test_self_training_waits_for_its_warm_up(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=self_train", "strategy.threshold=0.0")
    source = batch_of(tokenizer, ["great pan", "awful lid"], [1, 0])
    target = batch_of(tokenizer, ["a sturdy kettle", "it leaks"])
    _, early = strategy(source, target, progress=0.1)
    _, late = strategy(source, target, progress=0.5)
    assert early["pseudo_fraction"].item() == 0.0 and late["pseudo_fraction"].item() == 1.0
    assert late["pseudo"].item() > 0


def test_self_training_with_eda_views_labels_the_text_as_it_is_and_trains_on_a_rewritten_copy(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=self_train", "strategy.threshold=0.0",
                                        "strategy.views=eda", "strategy.alpha=0.3")
    source = batch_of(tokenizer, ["great pan", "awful lid"], [1, 0])
    target = batch_of(tokenizer, ["a sturdy kettle that never leaks", "the lid broke after a week"])
    seen: list[tuple[torch.Tensor, bool]] = []
    strategy.model.encoder.register_forward_hook(
        lambda module, args, kwargs, output: seen.append((kwargs.get("input_ids", args[0] if args else None),
                                                          torch.is_grad_enabled())), with_kwargs=True)
    use_one_pass(strategy, False)
    random.seed(0)
    loss, terms = strategy(source, target, progress=0.5)
    (labelled,) = [ids for ids, grad in seen if not grad]  # one forward without gradients: the pseudo-labels'
    trained = [ids for ids, grad in seen if grad and len(ids) == 2 and not torch.equal(ids, source["input_ids"])]
    assert torch.equal(labelled, target["input_ids"])
    assert len(trained) == 1 and not torch.equal(trained[0], target["input_ids"])  # the loss's rows are rewritten
    assert terms["pseudo_fraction"].item() == 1.0 and loss.requires_grad
    with pytest.raises(XdtError, match=r"strategy\.views='both' is not valid: choose same or eda"):
        tiny_strategy(smoke, "strategy=self_train", "strategy.views=both")


def test_a_cut_off_self_training_run_with_eda_views_resumes_to_the_same_metrics(smoke, tmp_path):
    """The rewrites come from Python's random, which checkpoints save: a resumed run rewrites as the whole one did."""
    overrides = ("strategy=self_train", "strategy.views=eda", "strategy.warmup=0", "strategy.threshold=0.5",
                 "max_steps=6", "eval_interval=3")
    full = train(smoke(*overrides), tmp_path / "full")
    cut = cut_off_copy(tmp_path / "full", tmp_path / "cut", last_step=6, kept_step=3)
    assert train(smoke(f"resume={cut}"), tmp_path / "ignored")["metrics"] == full["metrics"]


def test_lp_ft_trains_only_the_head_during_the_probe_then_everything(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=lp_ft", "strategy.probe=0.4", "strategy.head_lr_scale=10")
    strategy.eval()  # no dropout, so both phases see the same features
    source = batch_of(tokenizer, ["great pan", "awful lid , broke"], [1, 0])

    def gradients(progress: float) -> tuple[float, float, torch.Tensor]:
        strategy.zero_grad(set_to_none=True)
        loss, _ = strategy(source, progress=progress)
        loss.backward()
        norm = lambda prefix: sum(p.grad.abs().sum().item() for n, p in strategy.named_parameters()  # noqa: E731
                                  if n.startswith(prefix) and p.grad is not None)
        return norm("model.encoder."), norm("model.head."), loss.detach()

    probe_encoder, probe_head, probe_loss = gradients(0.39)
    tune_encoder, tune_head, tune_loss = gradients(0.4)
    assert probe_encoder == 0.0 and probe_head > 0
    assert tune_encoder > 0 and tune_head == pytest.approx(probe_head)
    assert probe_loss == tune_loss  # the probe changes the gradient, not the value
    groups = param_groups(strategy, 0.0, 1e-3, strategy.lr_scales())
    assert {id(p) for g in groups if "lr" in g for p in g["params"]} == {id(p) for p in strategy.model.head.parameters()}
    assert all(g["lr"] == pytest.approx(1e-2) for g in groups if "lr" in g)


def test_class_imbalance_is_zero_when_balanced_and_log_k_when_collapsed():
    balanced = torch.tensor([[3.0, 0.0], [0.0, 3.0]])
    assert class_imbalance(balanced).item() == pytest.approx(0.0, abs=1e-6)
    assert class_imbalance(torch.tensor([[30.0, 0.0], [40.0, 0.0]])).item() == pytest.approx(math.log(2), rel=1e-4)
    assert 0 < class_imbalance(torch.tensor([[1.0, 0.0], [2.0, 0.0]])).item() < math.log(2)


def test_self_training_diversity_term_is_weighted_into_the_loss(smoke, monkeypatch):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=self_train", "strategy.diversity=0.5",
                                        "strategy.threshold=0.7")
    source = batch_of(tokenizer, ["great pan", "awful lid"], [1, 0])
    target = batch_of(tokenizer, ["a sturdy kettle", "it leaks", "fine"])
    skewed = torch.tensor([[2.0, 0.0], [1.5, 0.0], [0.0, 0.1]], requires_grad=True)  # two confident, one class
    classify = strategy.model.classify  # the target batch's logits are replaced (3 rows; the source has 2)
    monkeypatch.setattr(strategy.model, "classify",
                        lambda features: skewed if len(features) == 3 else classify(features))
    loss, terms = strategy(source, target, progress=0.5)
    assert terms["diversity"].item() == pytest.approx(class_imbalance(skewed).item()) and terms["diversity"] > 0.05
    assert terms["pseudo_fraction"].item() == pytest.approx(2 / 3)
    expected = terms["classification"] + terms["pseudo"] + 0.5 * terms["diversity"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_self_training_saved_before_the_diversity_term_keeps_its_objective(smoke):
    """A run's saved config from before ``diversity`` existed has no such key: it must rebuild without the term."""
    cfg = smoke("strategy=self_train")
    assert cfg.strategy.diversity == 1.0  # the shipped default
    with open_dict(cfg):
        del cfg.strategy["diversity"]
    tokenizer = load_tokenizer(cfg.model)
    assert build_strategy(cfg, tokenizer, 2, StrategyContext.of(tokenizer, 1, 1), 100).diversity == 0.0


def test_l2sp_pulls_weights_towards_their_start(smoke, tmp_path):
    free = train(smoke("max_steps=20", "optimizer.lr=3e-3"), tmp_path / "free")
    held = train(smoke("max_steps=20", "optimizer.lr=3e-3", "l2sp.alpha=50.0"), tmp_path / "held")
    cfg = smoke("max_steps=20")
    start = initial_weights(cfg)

    def drift(run):
        weights = build_and_load(cfg, tmp_path / run).state_dict()
        return sum((weights[k] - start[k]).pow(2).sum().item() for k in start if k.startswith("model.encoder."))
    assert drift("held") < 0.5 * drift("free")
    record = json.loads((tmp_path / "held" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["train"]["l2sp"] > 0 and free["metrics"] != held["metrics"]


def test_dropout_override_reaches_encoder_and_head(smoke):
    strategy, _ = tiny_strategy(smoke, "model.dropout=0.0")
    assert strategy.model.encoder.config.hidden_dropout_prob == 0.0
    assert strategy.model.encoder.config.attention_probs_dropout_prob == 0.0
    assert strategy.model.dropout.p == 0.0


# ---- meta-learning: the meta-gradient each strategy hands the loop ----------------------------------------

REVIEWS = (["great pan , works well", "broke in a week , awful", "lovely lid and sturdy", "cheap and flimsy junk"],
           [1, 0, 1, 0])


def sgd_copy(strategy, batch, steps: int, lr: float):
    """The classifier after ``steps`` plain SGD steps on ``batch``, computed the obvious way."""
    model = copy.deepcopy(strategy.model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]), batch["labels"]).backward()
        optimizer.step()
    return model


def meta_gradient(strategy, batch) -> dict[str, torch.Tensor]:
    strategy.zero_grad()
    loss, _ = strategy(batch)
    loss.backward()
    return {n: p.grad.clone() for n, p in strategy.model.named_parameters() if p.requires_grad}


def test_reptile_gradient_points_from_the_adapted_weights_back_to_the_start(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=reptile", "model.dropout=0", "strategy.inner_steps=3",
                                        "strategy.inner_lr=0.1", "strategy.meta_batch_size=1")
    batch = batch_of(tokenizer, *REVIEWS)  # one domain: one task, the whole batch
    adapted = dict(sgd_copy(strategy, batch, 3, 0.1).named_parameters())
    gradient = meta_gradient(strategy, batch)
    for name, p in strategy.model.named_parameters():
        expected = (p.detach() - adapted[name].detach()) / (0.1 * 3)
        assert torch.allclose(gradient[name], expected, atol=1e-5), name
    assert any(g.abs().sum() > 0 for g in gradient.values())


def test_fomaml_gradient_is_the_query_gradient_at_the_adapted_weights(smoke):
    strategy, tokenizer = tiny_strategy(smoke, "strategy=maml", "model.dropout=0", "strategy.inner_steps=2",
                                        "strategy.inner_lr=0.1", "strategy.meta_batch_size=1")
    batch = batch_of(tokenizer, *REVIEWS)
    support = {k: v[:2] for k, v in batch.items()}
    query = {k: v[2:] for k, v in batch.items()}
    adapted = sgd_copy(strategy, support, 2, 0.1)
    adapted.zero_grad()
    F.cross_entropy(adapted(query["input_ids"], query["attention_mask"]), query["labels"]).backward()
    gradient = meta_gradient(strategy, batch)
    for name, p in adapted.named_parameters():
        assert torch.allclose(gradient[name], p.grad, atol=1e-5), name


@pytest.mark.parametrize("meta", ["reptile", "maml"])
def test_a_meta_step_changes_the_weights_and_differs_from_an_erm_step(meta, smoke):
    texts, labels = REVIEWS
    batch = batch_of(tokenizer := load_tokenizer(smoke().model), texts * 2, labels * 2, [0, 0, 0, 0, 1, 1, 1, 1])

    def one_step(strategy_name: str) -> dict[str, torch.Tensor]:
        set_seed(0)
        strategy, _ = tiny_strategy(smoke, f"strategy={strategy_name}", "model.dropout=0", num_sources=2)
        start = {k: v.clone() for k, v in strategy.state_dict().items()}
        optimizer = torch.optim.SGD(strategy.parameters(), lr=0.5)
        loss, terms = strategy(batch)
        assert torch.isfinite(loss) and torch.isclose(loss, terms.get("query", terms["classification"]))
        loss.backward()
        optimizer.step()
        after = strategy.state_dict()
        assert any(not torch.equal(start[k], after[k]) for k in start), "the step changed nothing"
        return after

    meta_weights, erm_weights = one_step(meta), one_step("erm")
    assert any(not torch.allclose(meta_weights[k], erm_weights[k], atol=1e-6) for k in meta_weights)


@pytest.mark.parametrize("meta", ["reptile", "maml"])
def test_meta_test_adaptation_is_inner_sgd_on_the_shots_and_leaves_the_strategy_alone(meta, smoke):
    strategy, tokenizer = tiny_strategy(smoke, f"strategy={meta}", "strategy.inner_steps=2", "strategy.inner_lr=0.1")
    strategy.eval()  # evaluation adapts in eval mode: no dropout, so the adaptation repeats exactly
    shots = batch_of(tokenizer, *REVIEWS)
    before = {k: v.clone() for k, v in strategy.state_dict().items()}
    adapted = strategy.adapted(shots)
    expected = dict(sgd_copy(strategy, shots, 2, 0.1).named_parameters())
    for name, p in adapted.model.named_parameters():
        assert torch.allclose(p, expected[name], atol=1e-5), name
    assert all(torch.equal(before[k], v) for k, v in strategy.state_dict().items()), "adapted() changed the original"
    assert strategy.adapts_to_shots and not tiny_strategy(smoke, "strategy=erm")[0].adapts_to_shots


def test_evaluate_scores_targets_with_the_adapted_strategy_and_sources_with_the_original(smoke):
    from xdt.tasks.sequence_classification import evaluate

    class Constant(torch.nn.Module):
        """Predicts class ``label`` for every row; ``adapted`` returns one that predicts class 1."""
        adapts_to_shots = True

        def __init__(self, label: int):
            super().__init__()
            self.label, self.adaptations = label, 0

        def adapted(self, shots):
            self.adaptations += 1
            return Constant(1)

        def predict_with_features(self, batch):
            logits = F.one_hot(torch.full((len(batch["labels"]),), self.label), 2).float()
            return logits, torch.zeros(len(logits), 4)

    labels = torch.tensor([1, 1, 0, 1])
    loader = [{"labels": labels, "input_ids": torch.ones(4, 3, dtype=torch.long), "attention_mask": torch.ones(4, 3)}]
    loaders = {"source/a/test": loader, "target/b/validation": loader, "target/b/test": loader}
    accelerator = Accelerator(cpu=True)
    strategy = Constant(0)
    scores = evaluate(strategy, loaders, accelerator, shots={"b": {"labels": labels}})
    assert scores["source/a/test"]["accuracy"] == 0.25
    assert scores["target/b/validation"]["accuracy"] == scores["target/b/test"]["accuracy"] == 0.75
    assert strategy.adaptations == 1  # once per target, not per set
    assert evaluate(strategy, loaders, accelerator)["target/b/test"]["accuracy"] == 0.25  # no shots: no adaptation


def test_meta_tasks_are_the_domains_of_the_batch():
    from xdt.strategies._meta import domain_tasks, halves

    batch = {"labels": torch.arange(7), "domain": torch.tensor([0, 1, 0, 2, 1, 0, 1])}
    tasks = domain_tasks(batch, count=5)
    assert sorted(sorted(t["labels"].tolist()) for t in tasks) == [[0, 2, 5], [1, 4, 6]]  # domain 2 has one row
    assert len(domain_tasks(batch, count=1)) == 1
    support, query = halves(tasks[0])
    assert len(support["labels"]) + len(query["labels"]) == 3 and len(support["labels"]) == 1


# ---- the designed shift: feature alignment has something to fix ----------------------------------------

@pytest.mark.slow
def test_an_alignment_strategy_beats_erm_on_the_synthetic_benchmark(smoke, cache_dir, tmp_path):
    """Tiny model, synthetic books -> kitchen, 3 seeds: at least one of DANN, CORAL, MMD beats ERM's mean
    target accuracy. (Measured: ERM 0.601, DANN 0.661, CORAL 0.642, MMD 0.673, with MMD above ERM on every
    seed. Later, with the loop's current sampler, ``python scripts/synthetic_benchmark.py``: ERM 0.605, DANN
    0.685 with its defaults of weight 0.1 and the discriminator at 10x lr, 0.679 with the old weight 1.0 at
    1x. A likely reason, not isolated by an ablation: the alignment losses are the only training signal
    that reaches the embeddings of kitchen-only words, which never occur in labeled source text.)"""
    def mean_target_accuracy(strategy: str) -> float:
        accuracies = []
        for seed in (0, 1, 2):
            cfg = compose_config(["experiment=synthetic_shift", f"cache_dir={cache_dir}", f"strategy={strategy}",
                                  f"seed={seed}"])
            result = train(cfg, tmp_path / f"{strategy}-{seed}")
            accuracies.append(result["metrics"]["target/syn_kitchen/test"]["accuracy"])
        return sum(accuracies) / len(accuracies)

    erm = mean_target_accuracy("erm")
    aligned = {name: mean_target_accuracy(name) for name in ("dann", "coral", "mmd")}
    assert max(aligned.values()) > erm + 0.02, (erm, aligned)
