"""Time per training step of token classification against sequence classification, on the same inputs.

Both tasks' models (MiniLM by default) train with ERM on identical batches (``--batch`` rows of ``--length``
tokens of random ids, every position real), in one process, alternating step by step so machine noise hits both
alike: forward, loss, backward and an AdamW step. What differs is only the task: one pooled vector and a
2-class head, against a 9-tag head over every token and its loss. Prints each task's median seconds per step and
the median per-round ratio.

    python scripts/bench_tasks.py                       # MiniLM, batch 32 x 128 tokens, 10 rounds
    python scripts/bench_tasks.py --model tiny --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import xdt.config  # noqa: F401  (resolvers)
from xdt.models import SequenceClassifier, TokenClassifier, build_encoder, load_tokenizer
from xdt.strategies.erm import ERM

ROOT = Path(__file__).resolve().parents[1]


def step_seconds(strategy: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> float:
    started = time.perf_counter()
    loss, _ = strategy(batch)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={args.model}"]).model
    tokenizer = load_tokenizer(cfg)
    torch.manual_seed(0)
    ids = torch.randint(1000, len(tokenizer), (args.batch, args.length))
    mask = torch.ones_like(ids)
    batches = {"sequence classification": {"input_ids": ids, "attention_mask": mask,
                                           "labels": torch.randint(2, (args.batch,))},
               "token classification": {"input_ids": ids, "attention_mask": mask,
                                        "labels": torch.randint(9, (args.batch, args.length))}}
    models = {"sequence classification": SequenceClassifier(build_encoder(cfg, tokenizer), 2),
              "token classification": TokenClassifier(build_encoder(cfg, tokenizer), 9)}
    runs = {}
    for name, model in models.items():
        strategy = ERM(model).train()
        runs[name] = (strategy, torch.optim.AdamW(strategy.parameters(), lr=1e-5))
        step_seconds(*runs[name], batches[name])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (strategy, optimizer) in runs.items():
            times[name].append(step_seconds(strategy, optimizer, batches[name]))
    ratios = [t / s for t, s in zip(times["token classification"], times["sequence classification"])]
    for name, values in times.items():
        print(f"{name}: {statistics.median(values):.3f} s/step (median of {args.rounds})")
    print(f"token / sequence classification: {statistics.median(ratios):.3f} (median of per-round ratios; "
          f"{args.model}, batch {args.batch} x {args.length} tokens)")


if __name__ == "__main__":
    main()
