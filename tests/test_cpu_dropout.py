"""``hardware.fast_dropout`` (issue 23): dropout masks drawn 16 bits at a time on CPU, with nn.Dropout's rate,
scaling and train/eval behaviour, and attention that computes what SDPA computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers.integrations.sdpa_attention import sdpa_attention_forward

import xdt.cpu_dropout as cpu_dropout
from xdt.cpu_dropout import ATTENTION, FastDropout, attention_with_fast_dropout, dropout_mask, use_fast_dropout
from xdt.errors import XdtError
from xdt.models import SequenceClassifier, build_encoder, load_tokenizer
from xdt.train import train

COUNT = 400_000


@pytest.mark.parametrize("p", [0.1, 0.5, 0.03])
def test_masks_drop_at_the_rate_asked_and_keep_the_expectation(p):
    torch.manual_seed(0)
    mask = dropout_mask(torch.empty(COUNT), p)
    kept = mask > 0
    sigma = (p * (1 - p) / COUNT) ** 0.5
    assert abs((~kept).float().mean().item() - p) < 5 * sigma
    assert mask.unique().tolist() == [0.0, pytest.approx(1 / (1 - p), rel=1e-4)]
    assert abs(mask.mean().item() - 1.0) < 5 * sigma / (1 - p)  # unbiased: the layer's expectation is the identity


def test_neighbouring_elements_drop_independently():
    # Four neighbours share one 64-bit draw; each pair of them must still drop independently (p^2 together).
    torch.manual_seed(1)
    dropped = (dropout_mask(torch.empty(COUNT), 0.5) == 0).view(-1, 4)
    for a, b in [(0, 1), (1, 2), (2, 3), (0, 3)]:
        together = (dropped[:, a] & dropped[:, b]).float().mean().item()
        assert abs(together - 0.25) < 5 * (0.25 * 0.75 / (COUNT // 4)) ** 0.5


def test_the_extremes_and_odd_sizes():
    x = torch.randn(3, 5, 7)  # 105 elements: not a multiple of the four lanes of a draw
    assert torch.equal(dropout_mask(x, 1.0), torch.zeros_like(x))
    assert torch.equal(dropout_mask(x, 0.0), torch.ones_like(x))
    assert dropout_mask(x, 0.2).shape == x.shape


def test_masks_follow_torchs_seed():
    x = torch.empty(1000)
    torch.manual_seed(3)
    first, second = dropout_mask(x, 0.1), dropout_mask(x, 0.1)
    torch.manual_seed(3)
    assert torch.equal(dropout_mask(x, 0.1), first) and not torch.equal(first, second)


def test_the_module_behaves_as_nn_dropout_in_eval_and_passes_gradients_through_the_mask():
    layer = FastDropout(0.25)
    assert isinstance(layer, nn.Dropout) and layer.p == 0.25
    x = torch.randn(64, 32, requires_grad=True)
    assert torch.equal(layer.eval()(x), x)
    out = layer.train()(x)
    out.sum().backward()
    scale = 1 / 0.75
    assert torch.allclose(x.grad, (out != 0).float() * scale, atol=1e-6)  # the gradient is the mask
    assert torch.allclose(out[out != 0], x[out != 0] * scale)


class Attention(nn.Module):
    is_causal = False


@pytest.mark.parametrize("padded", [True, False])
def test_attention_computes_what_sdpa_computes_apart_from_the_mask(monkeypatch, padded):
    torch.manual_seed(0)
    query, key, value = (torch.randn(3, 4, 9, 8) for _ in range(3))
    mask = None
    if padded:  # sdpa's masks: boolean (batch, 1, query, key), False at padded keys
        mask = torch.ones(3, 1, 9, 9, dtype=torch.bool)
        mask[0, ..., 6:] = False
        mask[2, ..., 2:] = False
    module = Attention().train()
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, dropout=0.0, scaling=0.3)
    # A mask that keeps everything leaves only the attention arithmetic to compare.
    monkeypatch.setattr(cpu_dropout, "dropout_mask", lambda like, p: torch.ones_like(like))
    actual, _ = attention_with_fast_dropout(module, query, key, value, mask, dropout=0.1, scaling=0.3)
    assert actual.shape == expected.shape == (3, 9, 4, 8)
    assert torch.allclose(actual, expected, atol=1e-5)


def test_causal_attention_and_attention_without_dropout_stay_with_sdpa(monkeypatch):
    calls = []
    monkeypatch.setattr(cpu_dropout, "sdpa_attention_forward", lambda *a, **k: calls.append(k) or (None, None))
    query = torch.randn(1, 2, 4, 8)
    causal = Attention()
    causal.is_causal = True
    attention_with_fast_dropout(causal, query, query, query, None, dropout=0.1)
    attention_with_fast_dropout(Attention(), query, query, query, None, dropout=0.0)
    assert [call["dropout"] for call in calls] == [0.1, 0.0]


def test_a_model_keeps_its_eval_outputs_and_every_dropout_rate(smoke):
    cfg = smoke().model
    tokenizer = load_tokenizer(cfg)
    torch.manual_seed(0)
    model = SequenceClassifier(build_encoder(cfg, tokenizer), 2)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    ids = torch.randint(5, len(tokenizer), (4, 12))
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 7:] = 0
    model.eval()
    before = model.encoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    assert use_fast_dropout(model) == (len(rates), 1)
    after = model.encoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state
    assert torch.equal(before, after)
    assert model.encoder.config._attn_implementation == ATTENTION
    assert [m.p for m in model.modules() if isinstance(m, FastDropout)] == rates
    model.train()
    model.encoder(input_ids=ids, attention_mask=attention_mask).last_hidden_state.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.encoder.encoder.parameters())


def test_cpu_runs_use_it_unless_switched_off(tmp_path, smoke):
    for setting, expected in (("true", True), ("false", False)):
        run = tmp_path / setting
        train(smoke("max_steps=2", "eval_interval=2", f"hardware.fast_dropout={setting}"), run)
        assert ("hardware.fast_dropout" in (run / "train.log").read_text()) is expected
    with pytest.raises(XdtError, match=r"hardware\.fast_dropout='often' is not valid: true or false"):
        train(smoke("hardware.fast_dropout=often"), tmp_path / "bad")
