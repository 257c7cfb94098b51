"""Dropout that costs less on CPU: masks drawn 16 bits at a time (``hardware.cpu_dropout=fast``).

Why: on CPU, PyTorch draws a dropout mask with one call of its random generator per element
(``bernoulli_``), about 5 ns each. MiniLM draws 20 masks per training step (the embeddings, each layer's
attention probabilities and its two hidden-state dropouts, the head), and at batch 32 that was 7-10% of a
training step measured with ``torch.profiler`` on this project's CPU, the largest cost after the matrix
multiplies.

How: one 64-bit draw of the same generator (``random_`` over the full int64 range) gives four independent
16-bit lanes, and an element is kept when its lane falls below ``round((1 - p) * 2**16)``. Kept elements are
scaled by ``1 / keep`` for that same rounded ``keep``, so the layer stays unbiased (its expectation is the
identity) exactly as ``nn.Dropout``; the drop probability moves by at most 2**-17 (0.1 becomes 0.1000061). The
draws come from torch's default generator, so seeding, checkpoints that save its state and resuming are
unchanged; the masks themselves differ from ``nn.Dropout``'s, so a run is another sample of the same seed.

Where: the model's ``nn.Dropout`` modules become :class:`FastDropout`, and attention of the ``sdpa`` kind
becomes ``xdt_cpu_sdpa``: in training, the attention probabilities are computed as PyTorch's own math path does
(the path its SDPA takes on CPU when attention dropout is on) with the fast mask; otherwise it is ``sdpa``
unchanged. Only on CPU: CUDA's fused dropout draws its masks in parallel already.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

try:  # transformers >= 4.53 registers attention and mask functions by name; before, only nn.Dropout is swapped
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
except ImportError:
    AttentionInterface = None

LANES = 2**16
ATTENTION = "xdt_cpu_sdpa"


def keep_scale(p: float) -> tuple[int, float]:
    """The 16-bit threshold below which a lane keeps its element, and the scale of a kept element."""
    kept_lanes = round((1.0 - p) * LANES)
    return kept_lanes - LANES // 2, (LANES / kept_lanes if kept_lanes else 0.0)  # int16 lanes start at -2**15


def dropout_mask(like: Tensor, p: float) -> Tensor:
    """A mask of ``like``'s shape: ``1 / keep`` where kept, 0 where dropped (``keep`` = ``1 - p`` to 1/65536)."""
    threshold, scale = keep_scale(p)
    if threshold >= LANES // 2 or scale == 0.0:  # keeps all, or none (a threshold past int16 would wrap around)
        return torch.full_like(like, scale)
    count = like.numel()
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=like.device).random_(-(2**63), None)
    lanes = words.view(torch.int16)[:count].view(like.shape)
    return (lanes < threshold).to(like.dtype).mul_(scale)


def fast_dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``nn.functional.dropout`` with :func:`dropout_mask`; the mask is what backward keeps (as PyTorch's)."""
    if not training or p == 0.0:
        return x
    return x * dropout_mask(x, p)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` whose masks come from :func:`dropout_mask` (same ``p``, same train/eval behaviour)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.inplace and self.training and self.p > 0.0:
            return x.mul_(dropout_mask(x, self.p))
        return fast_dropout(x, self.p, self.training)


def attention_with_fast_dropout(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                                attention_mask: Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                                is_causal: bool | None = None, **kwargs) -> tuple[Tensor, None]:
    """Bidirectional attention with dropout on its probabilities; anything else goes to transformers' ``sdpa``.

    The same arithmetic as ``scaled_dot_product_attention``'s math path: softmax of the scaled scores with masked
    keys at the dtype's lowest value (as transformers' eager attention), dropout, then the weighted sum of the
    values; returned as (batch, length, heads, head size).
    """
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    plain = (dropout == 0.0 or causal or kwargs.get("position_bias") is not None
             or getattr(module, "num_key_value_groups", 1) > 1 or kwargs.get("softcap") is not None)
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    # The scale goes on the queries (as SDPA's math path does): a smaller tensor than the scores, forward and backward.
    scores = torch.matmul(query * scale, key.transpose(-1, -2))
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # added in place: cheaper than a masked copy, forward and backward
            lowest = torch.finfo(scores.dtype).min
            attention_mask = torch.zeros_like(attention_mask, dtype=scores.dtype).masked_fill_(~attention_mask, lowest)
        scores = scores.add_(attention_mask)
    probabilities = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probabilities, value).transpose(1, 2).contiguous(), None


if AttentionInterface is not None:
    AttentionInterface.register(ATTENTION, attention_with_fast_dropout)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)  # sdpa's masks: boolean, or none without padding


def use_fast_dropout(model: nn.Module) -> tuple[int, int]:
    """Swap ``model``'s ``nn.Dropout`` modules and ``sdpa`` attention for the fast ones in place; returns how many
    dropout modules and how many models' attention were swapped."""
    dropouts = attentions = 0
    for name, module in list(model.named_modules()):
        if type(module) is nn.Dropout:
            model.set_submodule(name, FastDropout(module.p, module.inplace).train(module.training))
            dropouts += 1
        config = getattr(module, "config", None)
        if (AttentionInterface is not None and getattr(config, "_attn_implementation", None) == "sdpa"
                and hasattr(module, "set_attn_implementation")):
            module.set_attn_implementation(ATTENTION)
            attentions += 1
    return dropouts, attentions
