"""Dynamic int8 quantisation of a saved run for ``xdt eval quantize=dynamic_int8``.

PyTorch's dynamic quantisation (``torch.ao.quantization.quantize_dynamic``) stores the weights of every
``nn.Linear`` as int8 and quantises activations on the fly, batch by batch: no calibration data, CPU only.
:func:`compare` evaluates the fp32 strategy and a quantised deep copy on the same loaders and reports the
change in every metric, the evaluation speed-up and the serialised sizes; the fp32 strategy is never
modified, so its metrics are exactly those of a plain ``xdt eval``.
"""

from __future__ import annotations

import copy
import io
import statistics
import time
import warnings
from typing import Callable

import numpy as np
import torch
from omegaconf import DictConfig
from peft import PeftModel
from rich.table import Table
from torch import nn

from xdt.console import console
from xdt.errors import XdtError
from xdt.metrics import classification_metrics

#: Valid values of ``quantize`` besides null.
METHODS = ("dynamic_int8",)

Metrics = dict[str, dict[str, float | None]]  # role/domain/split -> metric -> value


def requested_method(cfg: DictConfig) -> str | None:
    """The quantisation an eval config asks for (None for none), after checking it can run as asked.

    Called before any model is loaded, so a bad value costs the user nothing.
    """
    method = cfg.get("quantize")
    if method is None:
        return None
    if method not in METHODS:
        raise XdtError(f"quantize={method!r} is not valid: choose null (no quantisation) or {', '.join(METHODS)}")
    if cfg.hardware.device != "cpu":
        raise XdtError(f"quantize={method}: dynamic int8 quantisation runs on CPU, but hardware.device="
                       f"{cfg.hardware.device}; pass hardware=cpu")
    if cfg.hardware.mixed_precision != "no":
        raise XdtError(f"quantize={method} compares int8 with fp32, but hardware.mixed_precision="
                       f"{cfg.hardware.mixed_precision}; pass hardware=cpu (fp32)")
    repeats = cfg.get("quantize_repeats", 1)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise XdtError(f"quantize_repeats={repeats!r} is not valid: it must be a positive integer")
    return method


def merge_adapters(module: nn.Module) -> None:
    """Fold PEFT adapters into their base weights, in place, wherever ``module`` holds a PEFT model.

    Needed before dynamic quantisation: it would swap a LoRA layer's inner ``nn.Linear`` modules
    (``base_layer``, ``lora_A``, ``lora_B``) for quantised ones, whose ``weight`` is a method, and
    peft's forward reads ``lora_A.weight.dtype`` and fails. Merged, each adapted layer is one plain
    ``nn.Linear`` (W + BA) and quantises like any other. Call it on a copy: merging rewrites the weights.
    """
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PeftModel):
                setattr(parent, name, child.merge_and_unload())


def quantized_copy(strategy: nn.Module) -> nn.Module:
    """A deep copy of ``strategy`` with PEFT adapters merged and every ``nn.Linear`` dynamically quantised
    to int8 (``torch.ao.nn.quantized.dynamic.Linear``); ``strategy`` itself is left as it was."""
    quantized = copy.deepcopy(strategy).cpu().eval()
    merge_adapters(quantized)
    with warnings.catch_warnings():
        # torch marks its eager-mode quantisation API deprecated (torchao is its successor) and warns on
        # every call; the message is for whoever maintains this module, not for the user of xdt eval.
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions .* are deprecated")
        return torch.ao.quantization.quantize_dynamic(quantized, {nn.Linear}, dtype=torch.qint8, inplace=True)


def serialized_size_mb(module: nn.Module) -> float:
    """Size of ``torch.save(module.state_dict())`` in megabytes (10^6 bytes): what storing the model costs."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    return buffer.getbuffer().nbytes / 1e6


def timed(evaluate: Callable[[nn.Module], Metrics], module: nn.Module, threads: int) -> tuple[Metrics, float]:
    """The metrics of one evaluation of ``module`` and its wall time in seconds, on ``threads`` threads."""
    torch.set_num_threads(threads)  # both models must run on the same number of threads to compare fairly
    start = time.perf_counter()
    metrics = evaluate(module)
    return metrics, time.perf_counter() - start


def metric_changes(fp32: Metrics, int8: Metrics) -> Metrics:
    """int8 minus fp32 for every metric of every set (None where a metric is None, like AUC of 3 classes)."""
    return {name: {metric: None if value is None or int8[name][metric] is None else int8[name][metric] - value
                   for metric, value in scores.items()}
            for name, scores in fp32.items()}


def compare(strategy: nn.Module, evaluate: Callable[[nn.Module], Metrics], method: str,
            repeats: int = 1) -> tuple[Metrics, dict]:
    """Evaluate ``strategy`` in fp32 and a dynamically quantised int8 copy of it with ``evaluate``.

    Returns the fp32 metrics (from the first fp32 pass, as a plain evaluation would give them) and the
    ``quantized`` entry of metrics.json. Each model is timed over ``repeats`` passes and the median kept;
    the passes alternate (fp32, int8, fp32, int8, ...) so that load from other processes on a shared
    machine drifts onto both models alike rather than onto whichever ran second.
    """
    threads = torch.get_num_threads()
    # The first scoring loads the evaluate modules (a slow import, about a second): pay it before any
    # timing, or fp32's first pass would carry it and flatter int8.
    classification_metrics(np.array([0, 1]), np.array([[0.8, 0.2], [0.3, 0.7]]))
    fp32_metrics, first = timed(evaluate, strategy, threads)
    fp32_times, int8_times = [first], []
    int8_model = quantized_copy(strategy)
    int8_metrics, seconds = timed(evaluate, int8_model, threads)
    int8_times.append(seconds)
    for _ in range(repeats - 1):
        fp32_times.append(timed(evaluate, strategy, threads)[1])
        int8_times.append(timed(evaluate, int8_model, threads)[1])
    fp32_s, int8_s = statistics.median(fp32_times), statistics.median(int8_times)
    return fp32_metrics, {
        "method": method, "metrics": int8_metrics, "change": metric_changes(fp32_metrics, int8_metrics),
        "fp32_eval_s": fp32_s, "int8_eval_s": int8_s, "speedup": fp32_s / int8_s,
        "repeats": repeats, "threads": threads,
        "fp32_size_mb": serialized_size_mb(strategy), "int8_size_mb": serialized_size_mb(int8_model),
    }


def print_comparison(fp32: Metrics, quantized: dict) -> None:
    """fp32 and int8 accuracy of every set side by side, then the evaluation speed-up and the sizes."""
    table = Table(title=f"quantize={quantized['method']}: fp32 vs int8 (nn.Linear weights, CPU)",
                  title_justify="left")
    table.add_column("set", no_wrap=True)
    for header in ("fp32 acc", "int8 acc", "change"):
        table.add_column(header, justify="right")
    for name, scores in fp32.items():
        table.add_row(name, f"{scores['accuracy']:.3f}", f"{quantized['metrics'][name]['accuracy']:.3f}",
                      f"{quantized['change'][name]['accuracy']:+.3f}")
    console.print(table)
    console.print(f"evaluation: fp32 {quantized['fp32_eval_s']:.2f} s, int8 {quantized['int8_eval_s']:.2f} s "
                  f"(median of {quantized['repeats']} pass(es), {quantized['threads']} threads): "
                  f"speed-up {quantized['speedup']:.2f}x; state_dict {quantized['fp32_size_mb']:.1f} MB -> "
                  f"{quantized['int8_size_mb']:.1f} MB.")
