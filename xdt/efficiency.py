"""How well a run uses its device: useful tokens per second, padding, and model FLOPs utilisation (MFU).

MFU is the model's FLOPs per second over the device's peak (PaLM, Chowdhery et al. 2022, appendix B; nanoGPT's
``estimate_mfu``). The FLOPs of a training step are counted from the tokens the encoder reads in it, padding
left out: per sequence of ``T`` real tokens, ``6 N T + 12 L d T^2``.

- ``6 N T``: every weight of a matrix multiply (``N``: the weights of the model's ``Linear`` layers, so input
  embeddings, which are looked up, do not count, and a language model's output projection does) costs 2 FLOPs
  per token forward and 4 backward.
- ``12 L d T^2``: attention scores and their weighted sum, forward and backward, in ``L`` layers of width ``d``.
- ``6 H P``: an output layer that runs only on the ``P`` positions that carry a loss (a masked-LM head on the
  masked tokens, in ``xdt pretrain`` and in ``mtl``: ``H`` its matmul weights) counts for those positions only;
  the modules that run one name it ``position_head`` and count the positions with :func:`count_head_positions`.

Conventions, so figures are compared honestly: weights that PEFT freezes are counted as if they trained (their
weight gradients are skipped, so ``6N`` over-counts those by a third); the batches counted are the source batch
and, for strategies that encode one, the target batch; passes a strategy adds (FGM's adversarial pass, MAML's
inner steps) are not counted, so such strategies read lower: MFU here is useful work per second by plain
fine-tuning's measure. Small heads on pooled features are counted per token (they are well under 1% of N).

The peak: on CUDA the published dense peak of the GPU for the precision in use (``CUDA_PEAKS``), measured when
the GPU is not in the table; on CPU a matrix multiply measured at the start and at the end of every run (about a
tenth of a second each), keeping in ``<cache_dir>/device_peak.json`` the best figure seen per CPU model, thread
count and torch version: a shared machine's load lowers one measurement, never the peak a run is compared with.
The log's lines compare with the peak known at the start; ``metrics.json`` with the one known at the end, so the
first run on a machine whose start was measured under load does not keep an MFU that the load inflated.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from xdt.atomic import atomic_write_json
from xdt.provenance import cpu_name

log = logging.getLogger(__name__)

TERA = 1e12
# Published dense (no sparsity) peaks in FLOP/s, by a part of the name torch gives the GPU, most specific first.
# From NVIDIA's data sheets: H100/H200 SXM, H100 PCIe, A100 (SXM and PCIe alike), L4, V100 (SXM2), T4.
CUDA_PEAKS: dict[str, dict[str, float]] = {
    "H100 PCIe": {"fp32": 51 * TERA, "tf32": 378 * TERA, "bf16": 756 * TERA, "fp16": 756 * TERA},
    "H200": {"fp32": 67 * TERA, "tf32": 494.7 * TERA, "bf16": 989.4 * TERA, "fp16": 989.4 * TERA},
    "H100": {"fp32": 67 * TERA, "tf32": 494.7 * TERA, "bf16": 989.4 * TERA, "fp16": 989.4 * TERA},
    "A100": {"fp32": 19.5 * TERA, "tf32": 156 * TERA, "bf16": 312 * TERA, "fp16": 312 * TERA},
    "L4": {"fp32": 30.3 * TERA, "tf32": 60 * TERA, "bf16": 121 * TERA, "fp16": 121 * TERA},
    "V100": {"fp32": 15.7 * TERA, "fp16": 125 * TERA},
    "T4": {"fp32": 8.1 * TERA, "fp16": 65 * TERA},
}
MATMUL_SIZE = 1024  # the measured multiply: (n x n) @ (n x n), 2 n^3 FLOPs
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class FlopModel:
    """What a step's FLOPs are computed from: ``N`` matmul weights run on every real token, ``L`` layers of
    width ``d``, and ``H`` weights of output layers that run only on the positions that carry a loss."""

    matmul_weights: int
    layers: int
    width: int
    head_weights: int = 0

    def flops(self, tokens: float, squared_lengths: float, head_positions: float = 0.0) -> float:
        """Training FLOPs for ``tokens`` real tokens whose sequences' squared lengths sum to ``squared_lengths``,
        ``head_positions`` of which went through the position heads."""
        return (6 * self.matmul_weights * tokens + 6 * self.head_weights * head_positions
                + 12 * self.layers * self.width * squared_lengths)


def flop_model(model: nn.Module) -> FlopModel:
    """The FLOP model of ``model`` (a strategy, or anything holding a Hugging Face model)."""
    heads = [m.position_head for m in model.modules() if getattr(m, "position_head", None) is not None]
    head_weights = sum(_matmul_weights(head) for head in heads)
    config = next((m.config for m in model.modules() if hasattr(m, "config") and hasattr(m.config, "to_dict")), None)
    layers = _first(config, "num_hidden_layers", "n_layer", "num_layers")
    width = _first(config, "hidden_size", "n_embd", "d_model", "dim")
    return FlopModel(_matmul_weights(model) - head_weights, layers, width, head_weights)


def _matmul_weights(model: nn.Module) -> int:
    return sum(module.weight.numel() for module in model.modules()
               if isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D")  # GPT-2's Linear


def count_head_positions(module: nn.Module, positions: int) -> None:
    """Called by a module after its ``position_head`` ran on ``positions`` positions; counted in training only
    (evaluation is not part of a step's FLOPs)."""
    if module.training:
        module.head_positions = getattr(module, "head_positions", 0) + positions


def take_head_positions(model: nn.Module) -> int:
    """The positions ``model``'s position heads ran on since the last take."""
    return sum(m.__dict__.pop("head_positions", 0) for m in model.modules())


def _first(config, *names: str) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return 0


class TokenCount:
    """Real and padded tokens of the batches a run trains on, and the sum of their sequences' squared lengths,
    kept on the batches' device between reads so counting never waits for the GPU."""

    def __init__(self) -> None:
        self._pending: torch.Tensor | None = None

    def add(self, *batches: dict | None) -> None:
        for batch in batches:
            if batch is None or "attention_mask" not in batch:
                continue
            mask = batch["attention_mask"]
            lengths = mask.sum(dim=1, dtype=torch.float64)
            counts = torch.stack([lengths.sum(), torch.tensor(float(mask.numel()), dtype=torch.float64,
                                                               device=mask.device), (lengths * lengths).sum()])
            self._pending = counts if self._pending is None else self._pending + counts

    def take(self) -> tuple[float, float, float]:
        """(real tokens, all tokens, sum of squared lengths) since the last take."""
        if self._pending is None:
            return 0.0, 0.0, 0.0
        real, total, squares = (float(x) for x in self._pending.tolist())
        self._pending = None
        return real, total, squares


def precision_in_use(hardware) -> str:
    """fp32, tf32, bf16 or fp16: what the step's matrix multiplies run in."""
    if hardware.mixed_precision in ("bf16", "fp16"):
        return str(hardware.mixed_precision)
    return "tf32" if hardware.device == "cuda" and hardware.get("tf32") else "fp32"


class Peak(NamedTuple):
    """The FLOP/s a run's work is compared with."""

    flops: float  # the best figure known for this device and precision
    source: str  # where it comes from
    measured: float = 0.0  # what this call measured (0 for a published peak)


def device_peak(device: torch.device, precision: str, cache_dir: str | Path, repeats: int = 10) -> Peak:
    """The peak FLOP/s of ``device`` in ``precision``, where the figure comes from, and this measurement."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for part, peaks in CUDA_PEAKS.items():
            if part in name and precision in peaks:
                return Peak(peaks[precision], f"published dense {precision} peak of {name}")
        where = f"{name}, torch {torch.__version__}"
    else:
        where = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    key = f"{precision} on {where}"
    cache = Path(cache_dir).expanduser() / "device_peak.json"
    known = _read_cache(cache)
    measured = measure_matmul(device, DTYPES[precision], repeats=repeats)
    if measured > known.get(key, 0.0):
        known[key] = measured
        try:
            atomic_write_json(cache, known)
        except OSError as error:  # a read-only cache only loses the best figure of earlier runs
            log.debug("could not keep the measured peak in %s: %s", cache, error)
    return Peak(known[key], f"best {precision} {MATMUL_SIZE}x{MATMUL_SIZE} matrix multiply measured on {where}",
                measured)


def run_peak(start: Peak, end: Peak) -> Peak:
    """The peak of a run measured at its start and at its end, its source naming both measurements."""
    if not end.measured:
        return end
    return end._replace(source=f"{end.source}; this run measured {start.measured / 1e9:.0f} GFLOP/s at its start "
                               f"and {end.measured / 1e9:.0f} at its end")


def _read_cache(path: Path) -> dict[str, float]:
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(known, dict):
        return {}
    return {k: float(v) for k, v in known.items() if isinstance(v, (int, float)) and v > 0}


def measure_matmul(device: torch.device, dtype: torch.dtype, size: int = MATMUL_SIZE, repeats: int = 10) -> float:
    """FLOP/s of the fastest of ``repeats`` square multiplies (after a warm-up): the best the device showed.
    The operands come from a generator of their own: drawing from torch's global one would change the run's
    dropout and data order depending on whether the peak was cached."""
    generator = torch.Generator().manual_seed(0)
    a = torch.rand(size, size, generator=generator).to(device=device, dtype=dtype)
    b = torch.rand(size, size, generator=generator).to(device=device, dtype=dtype)
    best = float("inf")
    for i in range(repeats + 2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= 2:
            best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def efficiency(flops: FlopModel, real: float, total: float, squares: float, seconds: float, peak: float,
               peak_source: str, precision: str, head_positions: float = 0.0) -> dict:
    """The efficiency record of metrics.json for ``seconds`` of training over these token counts."""
    model_flops = flops.flops(real, squares, head_positions)
    per_second = model_flops / seconds if seconds > 0 else 0.0
    return {"useful_tokens": int(real), "useful_tokens_per_s": round(real / seconds, 1) if seconds > 0 else 0.0,
            "padding_fraction": round(1 - real / total, 4) if total else 0.0,
            "model_flops": model_flops, "model_flops_per_s": per_second, "peak_flops_per_s": peak,
            "peak": peak_source, "precision": precision, "mfu": round(per_second / peak, 4) if peak else None,
            "flop_model": {"matmul_weights": flops.matmul_weights, "layers": flops.layers, "width": flops.width,
                           "head_weights": flops.head_weights, "head_positions": int(head_positions)}}


def describe(record: dict) -> str:
    """One line for the log and the summary."""
    return (f"{record['useful_tokens_per_s']:.0f} useful tokens/s, padding {record['padding_fraction']:.1%}, "
            f"{record['model_flops_per_s'] / 1e9:.1f} GFLOP/s = MFU {record['mfu']:.2f} of "
            f"{record['peak_flops_per_s'] / 1e9:.0f} GFLOP/s ({record['peak']})")
