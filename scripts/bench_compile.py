"""Time per training step of the encoder compiled with ``torch.compile`` (what ``hardware.compile=true`` does)
against the same model eager, side by side in one process.

Two copies of the model (MiniLM by default, sequence classification, ERM) train on identical batches of
``--batch`` rows of ``--length`` tokens (random ids, every position real, the length a multiple of the 32-token
bucket), alternating step by step so machine noise hits both alike: forward, loss, backward and an AdamW step.
The compiled copy's first step compiles its graphs; that time is printed apart. Prints each copy's median
seconds per step and the median per-round ratio (compiled / eager); run it on a GPU with ``--device cuda``
(and ``--precision bf16`` for autocast).

    python scripts/bench_compile.py                          # MiniLM, batch 32 x 128 tokens, 10 rounds, CPU
    python scripts/bench_compile.py --batch 128 --rounds 5
    python scripts/bench_compile.py --device cuda --precision bf16 --rounds 50
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import xdt.config  # noqa: F401  (resolvers)
from xdt.compiling import compile_encoder
from xdt.models import SequenceClassifier, build_encoder, load_tokenizer
from xdt.strategies.erm import ERM

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(strategy: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, device: torch.device,
                 precision: str) -> float:
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    with autocast:
        loss, _ = strategy(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args()
    device = torch.device(args.device)
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={args.model}"]).model
    tokenizer = load_tokenizer(cfg)
    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(1000, len(tokenizer), (args.batch, args.length), device=device),
             "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long, device=device),
             "labels": torch.randint(2, (args.batch,), device=device)}
    runs = {}
    for name in ("eager", "compiled"):
        torch.manual_seed(0)
        strategy = ERM(SequenceClassifier(build_encoder(cfg, tokenizer), 2)).to(device).train()
        if name == "compiled":
            compile_encoder(strategy)
        runs[name] = (strategy, torch.optim.AdamW(strategy.parameters(), lr=1e-5))
    warm_up = {name: step_seconds(*run, batch, device, args.precision) for name, run in runs.items()}
    print(f"first step: eager {warm_up['eager']:.2f} s, compiled {warm_up['compiled']:.2f} s (compiling the "
          f"forward and backward graphs)")
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(step_seconds(*run, batch, device, args.precision))
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.4f} s/step (median of {args.rounds})")
    ratios = [c / e for c, e in zip(times["compiled"], times["eager"])]
    print(f"compiled / eager: {statistics.median(ratios):.3f} (median of per-round ratios; {args.model}, "
          f"batch {args.batch} x {args.length} tokens, {args.device}, {args.precision}, "
          f"{torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
