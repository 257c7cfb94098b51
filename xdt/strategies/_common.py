"""Math shared by the strategies, as plain functions and small modules."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return features.view_as(features)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def reverse_gradient(features: torch.Tensor, scale: float) -> torch.Tensor:
    """Identity forward; multiplies the gradient by ``-scale`` backward (Ganin and Lempitsky, ICML 2015)."""
    return _GradientReversal.apply(features, scale)


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Domain confusion (Tzeng et al., "Simultaneous Deep Transfer Across Domains and Tasks", ICCV 2015):
    the cross-entropy between the discriminator's prediction and the uniform distribution over domains,
    minus its minimum log K, i.e. KL(uniform || softmax(logits)), averaged over rows. Zero exactly when
    the discriminator cannot tell the domains apart; unlike a reversed cross-entropy it is bounded below,
    so an encoder minimising it stops at confusion instead of pushing on past the boundary."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return -log_probs.mean(-1).mean() - math.log(logits.shape[-1])


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """DANN's adaptation factor 2 / (1 + exp(-gamma p)) - 1: 0 at the start, approaching 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def mlp(in_features: int, hidden: int, out_features: int, layers: int = 2, dropout: float = 0.1) -> nn.Sequential:
    """``layers`` linear layers with ReLU and dropout between them (a domain discriminator)."""
    blocks: list[nn.Module] = []
    width = in_features
    for _ in range(layers - 1):
        blocks += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    blocks.append(nn.Linear(width, out_features))
    return nn.Sequential(*blocks)


def coral_loss(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Deep CORAL (Sun and Saenko, ECCV 2016 workshops): ||C_s - C_t||_F^2 / (4 d^2), C the feature covariances."""
    d = source.shape[1]

    def covariance(x: torch.Tensor) -> torch.Tensor:
        centred = x - x.mean(0, keepdim=True)
        return centred.T @ centred / max(x.shape[0] - 1, 1)

    return (covariance(source.float()) - covariance(target.float())).pow(2).sum() / (4 * d * d)


def mmd_loss(source: torch.Tensor, target: torch.Tensor, kernel_mul: float = 2.0, kernel_num: int = 5) -> torch.Tensor:
    """Multi-kernel MMD^2 with Gaussian kernels (Long et al., "Learning Transferable Features with Deep
    Adaptation Networks", ICML 2015): the biased estimate mean(K_ss) + mean(K_tt) - 2 mean(K_st), summed over
    ``kernel_num`` bandwidths spaced by factors of ``kernel_mul`` around the mean pairwise squared distance.
    Zero for identical batches; positive when the distributions differ."""
    x = torch.cat([source.float(), target.float()])
    # Direct differences, not the matmul shortcut: exact zeros for identical rows, cheap at batch sizes.
    distances = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    n = x.shape[0]
    base = distances.detach().sum() / max(n * n - n, 1)
    base = base.clamp(min=1e-12) / kernel_mul ** (kernel_num // 2)
    kernels = sum(torch.exp(-distances / (base * kernel_mul ** i)) for i in range(kernel_num))
    s = source.shape[0]
    return kernels[:s, :s].mean() + kernels[s:, s:].mean() - 2 * kernels[:s, s:].mean()


def domain_groups(source_features: torch.Tensor, source_domains: torch.Tensor,
                  target_features: torch.Tensor | None) -> list[torch.Tensor]:
    """The batch's features split by domain: one group per source domain present, then the target batch."""
    groups = [source_features[source_domains == d] for d in torch.unique(source_domains)]
    return groups + ([target_features] if target_features is not None else [])


def pairwise_mean(distance, groups: list[torch.Tensor]) -> torch.Tensor:
    """Mean of ``distance`` over every pair of groups with at least two rows (0 when there is no pair)."""
    usable = [g for g in groups if g.shape[0] >= 2]
    pairs = [distance(a, b) for i, a in enumerate(usable) for b in usable[i + 1:]]
    if not pairs:
        return groups[0].new_zeros(())
    return torch.stack(pairs).mean()
