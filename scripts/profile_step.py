"""Where a training step's time goes: ``xdt train``'s own steps under ``torch.profiler``, their operators' time
grouped by kind, and the MFU that the matrix multiplies alone would reach.

Every run prints its model FLOPs utilisation (MFU, ``xdt/efficiency.py``); this script says what keeps it below
1. The run is ``xdt train`` with the overrides given after ``--`` (so the engine, model, hardware settings and data
are a run's own, in a temporary folder). After ``--warmup`` steps, the next ``--steps`` calls of the engine's
training step (forward, backward, clipping, optimizer step; loading the batch and logging are outside it) run
under the profiler. Each operator's own time goes to one kind (matrix multiplies, copies, dropout masks, ...),
and the steps' wall time that no traced operator accounts for (Python, autograd's bookkeeping) is shown apart.

From the profiled steps' batches (counted as runs count them: real tokens of the source and, for strategies that
encode one, the target batch) come two figures against the device's peak (the one runs use, from the same cache):
the steps' MFU, their FLOPs over their wall time, and the matmul ceiling, the same FLOPs over the matrix
multiplies' time alone: the MFU if nothing else took any time. The ceiling's distance from 1 is how much slower
the matrix multiplies run at the model's shapes than the square multiply the peak was measured on; the distance
between the two figures is everything else. The profiler adds a few microseconds per operator, so the steps here
are a little slower than unprofiled ones.

    python scripts/profile_step.py                                   # the default run: MiniLM, synthetic reviews
    XDT_DATA_DIR=../shared/data python scripts/profile_step.py -- experiment=fdu_apparel_to_MR track_targets=false
    python scripts/profile_step.py --steps 5 -- strategy=dann hardware.mixed_precision=bf16
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from unittest import mock

import torch
from hydra import compose, initialize_config_dir
from torch.profiler import ProfilerActivity, profile

import xdt.config  # noqa: F401  (resolvers)
from xdt import efficiency, engine
from xdt.console import console
from xdt.train import train

ROOT = Path(__file__).resolve().parents[1]

# Operator kinds, by the name torch.profiler gives the operator (ATen's); first match wins, in this order.
KINDS: list[tuple[str, tuple[str, ...]]] = [
    ("matrix multiplies", ("mm", "addmm", "bmm", "baddbmm", "addbmm", "_addmm_activation", "mkldnn_linear",
                           "_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                           "_scaled_dot_product_efficient_attention", "_efficient_attention_backward",
                           "_flash_attention_forward", "_flash_attention_backward")),
    ("copies and casts", ("copy_", "_to_copy", "clone", "cat", "contiguous", "index_select", "index",
                          "embedding", "constant_pad_nd")),
    ("dropout masks", ("random_", "bernoulli_", "lt", "native_dropout", "native_dropout_backward")),
    ("softmax, layer norm, activations", ("_softmax", "_softmax_backward_data", "native_layer_norm",
                                          "native_layer_norm_backward", "gelu", "gelu_backward", "tanh",
                                          "tanh_backward", "silu", "silu_backward", "_log_softmax",
                                          "_log_softmax_backward_data", "nll_loss_forward", "nll_loss_backward")),
    ("gradient buffers (zero fills)", ("fill_", "zero_", "zeros", "zeros_like", "embedding_dense_backward")),
    ("optimizer and clipping", ("_fused_adamw_", "_fused_adam_", "_foreach_", "linalg_vector_norm", "norm")),
    ("elementwise and reductions", ("mul", "mul_", "add", "add_", "sub", "sub_", "div", "div_", "sum", "mean",
                                    "where", "masked_fill", "masked_fill_", "neg", "exp", "pow", "rsub", "sqrt",
                                    "clamp", "clamp_min", "max", "argmax", "eq", "ne")),
]
OTHER_OPERATORS = "other operators"
FRAMEWORK = "autograd and traced calls"  # self time of non-ATen events: autograd nodes, Optimizer.step, ...
UNTRACED = "outside any traced event"


def kind_of(name: str) -> str:
    """The kind of a profiler event named ``name`` (``aten::addmm`` -> matrix multiplies)."""
    if not name.startswith("aten::"):
        return FRAMEWORK
    op = name.removeprefix("aten::")
    for kind, ops in KINDS:
        if op in ops or (op.startswith("_foreach_") and "_foreach_" in ops):
            return kind
    return OTHER_OPERATORS


def seconds_by_kind(events, on_device: bool) -> dict[str, float]:
    """Seconds of operators' own time per kind, summed over ``events`` (``key_averages()``); on CUDA the kernels'
    time on the device, on CPU the host's."""
    seconds: dict[str, float] = defaultdict(float)
    for event in events:
        own = event.self_device_time_total if on_device else event.self_cpu_time_total
        seconds[kind_of(event.key)] += own / 1e6
    return dict(seconds)


class ProfiledSteps:
    """Wraps the engine's ``train_step``: the calls after the first ``warmup`` run under the profiler, timed,
    with their batches' real tokens and squared lengths counted."""

    def __init__(self, step, warmup: int, steps: int):
        self.step, self.warmup, self.steps = step, warmup, steps
        self.calls, self.wall, self.tokens, self.head_positions = 0, [], efficiency.TokenCount(), 0
        self.profiler: profile | None = None
        self.training = None

    def __call__(self, training, state, source, target):
        self.calls += 1
        if not self.warmup < self.calls <= self.warmup + self.steps:
            return self.step(training, state, source, target)
        device = training.accelerator.device
        if self.profiler is None:
            self.training = training
            cuda = [ProfilerActivity.CUDA] if device.type == "cuda" else []
            self.profiler = profile(activities=[ProfilerActivity.CPU, *cuda])
            self.profiler.start()
        heads = _head_positions(training.model)
        synchronize(device)
        started = time.perf_counter()
        result = self.step(training, state, source, target)
        synchronize(device)
        self.wall.append(time.perf_counter() - started)
        self.head_positions += _head_positions(training.model) - heads
        self.tokens.add(source, target)
        if self.calls == self.warmup + self.steps:
            self.profiler.stop()
        return result


def _head_positions(model: torch.nn.Module) -> int:
    """Positions the model's position heads have run on and the engine has not yet taken (see efficiency.py)."""
    return sum(m.__dict__.get("head_positions", 0) for m in model.modules())


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def report(profiled: ProfiledSteps, peak: efficiency.Peak) -> str:
    """The table of kinds and the MFU figures of the profiled steps."""
    device = profiled.training.accelerator.device
    by_kind = seconds_by_kind(profiled.profiler.key_averages(), on_device=device.type == "cuda")
    wall = sum(profiled.wall)
    if device.type != "cuda":  # on the host every traced second is part of the steps' wall time
        by_kind[UNTRACED] = max(0.0, wall - sum(by_kind.values()))
    steps = len(profiled.wall)
    real, total, squares = profiled.tokens.take()
    flops = efficiency.flop_model(profiled.training.model).flops(real, squares, profiled.head_positions)
    matmul = by_kind.get("matrix multiplies", 0.0)
    lines = [f"{steps} profiled steps: median {statistics.median(profiled.wall):.3f} s/step, "
             f"{real / steps:.0f} real tokens per step ({1 - real / total:.1%} padding), "
             f"{flops / steps / 1e9:.1f} GFLOP per step", "",
             f"{'kind':<34} {'s/step':>8} {'share':>7}"]
    basis = wall if device.type != "cuda" else sum(by_kind.values())
    for kind, seconds in sorted(by_kind.items(), key=lambda item: -item[1]):
        lines.append(f"{kind:<34} {seconds / steps:8.3f} {seconds / basis:7.1%}")
    lines += ["", f"peak: {peak.flops / 1e9:.0f} GFLOP/s ({peak.source})",
              f"MFU of these steps: {flops / wall / peak.flops:.2f}"]
    if matmul > 0:
        lines.append(f"matmul ceiling: {flops / matmul / peak.flops:.2f} (the matrix multiplies ran at "
                     f"{flops / matmul / 1e9:.0f} GFLOP/s: the MFU if nothing else took any time)")
    if device.type == "cuda":
        lines.append("on CUDA the shares are of the kernels' time on the GPU; the time the GPU waited for the host "
                     "is the wall time they leave out")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warmup", type=int, default=3, help="steps run before the profiled ones")
    parser.add_argument("--steps", type=int, default=10, help="steps profiled")
    parser.add_argument("overrides", nargs="*", help="xdt train overrides (after --)")
    args = parser.parse_args()
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be at least 1 and --warmup at least 0")
    logging.disable(logging.INFO)
    console.quiet = True
    budget = args.warmup + args.steps
    with tempfile.TemporaryDirectory() as tmp:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("train", overrides=[*args.overrides, f"max_steps={budget}", f"eval_interval={budget}",
                                              f"log_interval={budget}"])
        profiled = ProfiledSteps(engine.train_step, args.warmup, args.steps)
        with mock.patch.object(engine, "train_step", profiled):
            train(cfg, Path(tmp) / "run")
    device = profiled.training.accelerator.device
    peak = efficiency.device_peak(device, efficiency.precision_in_use(cfg.hardware), cfg.cache_dir)
    print(report(profiled, peak))


if __name__ == "__main__":
    main()
