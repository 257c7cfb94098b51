"""Evaluation samples/s against training samples/s, side by side in one process (issue 23, item 3).

The default run's model and data (MiniLM; synthetic books -> dvd, kitchen; Hydra overrides after ``--``):
training samples/s over optimizer steps at ``batch_size`` (forward, backward, clipping, AdamW step), and
evaluation samples/s over one pass of every evaluation set (2100 examples by default), evaluated two ways:
as xdt did before (``torch.no_grad``, 128 examples a batch) and as it does now (xdt's ``evaluate``: inference
mode, ``eval_batch_size`` from the config). Every round runs all three, in alternating order, so machine noise
hits them alike; the script prints the medians, the per-round ratios, and checks that both evaluations give
the same accuracies.

    python scripts/bench_eval.py
    python scripts/bench_eval.py --rounds 5 --steps 10 --old-batch 128 -- eval_batch_size=256
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import xdt.config  # noqa: F401  (resolvers)
from xdt.data.batching import eval_loaders
from xdt.engine import prepare
from xdt.tasks.sequence_classification import evaluate

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def evaluate_before(strategy, loaders, accelerator) -> dict[str, float]:
    """Accuracy per set the way evaluate() scored before: under no_grad (same predict, same gathering)."""
    strategy.eval()
    accuracies = {}
    for name, loader in loaders.items():
        correct = total = 0
        for batch in loader:
            with accelerator.autocast():
                logits = strategy.predict(batch)
            probs, labels = accelerator.gather_for_metrics((logits.float().softmax(-1), batch["labels"]))
            correct += int((probs.argmax(-1) == labels).sum())
            total += len(labels)
        accuracies[name] = correct / total
    strategy.train()
    return accuracies


def train_rate(training, source, steps: int) -> float:
    """Samples/s of ``steps`` optimizer steps (what the engine's step does for ERM without accumulation)."""
    model, optimizer = training.model, training.optimizer
    model.train()
    samples, started = 0, time.perf_counter()
    for _ in range(steps):
        batch = next(source)
        loss, _ = model(batch, None, progress=0.0)
        training.accelerator.backward(loss)
        training.accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        samples += len(batch["input_ids"])
    return samples / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="training steps timed per round")
    parser.add_argument("--old-batch", type=int, default=128, help="eval batch size of the 'before' evaluation")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run (after --)")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=args.overrides)
    with tempfile.TemporaryDirectory(prefix="xdt-bench-eval-") as scratch:
        training, setup = prepare(cfg, Path(scratch))
        accelerator = training.accelerator
        new = eval_loaders(setup.evaluation, int(cfg.eval_batch_size), setup.collator, accelerator)
        old = eval_loaders(setup.evaluation, args.old_batch, setup.collator, accelerator)
        examples = sum(len(d) for d in setup.evaluation.values())
        source = iter(setup.source)

        def sources():
            nonlocal source
            while True:
                try:
                    yield next(source)
                except StopIteration:
                    source = iter(setup.source)

        batches = sources()
        print(f"{cfg.model.name}: train batch {cfg.batch_size}; evaluation {len(new)} sets, {examples} examples, "
              f"before: no_grad batch {args.old_batch}, now: evaluate() batch {cfg.eval_batch_size}; torch threads "
              f"{torch.get_num_threads()}", flush=True)
        train_rate(training, batches, 1)  # warm-up: first-call allocations
        rates: dict[str, list[float]] = {"train": [], "eval before": [], "eval now": []}
        same = True
        for round_ in range(args.rounds):
            order = list(rates) if round_ % 2 == 0 else list(reversed(rates))
            for name in order:
                if name == "train":
                    rates[name].append(train_rate(training, batches, args.steps))
                    continue
                started = time.perf_counter()
                if name == "eval before":
                    before = evaluate_before(training.strategy, old, accelerator)
                else:
                    now = {k: v["accuracy"] for k, v in evaluate(training.strategy, new, accelerator).items()}
                rates[name].append(examples / (time.perf_counter() - started))
            same = same and all(abs(before[k] - now[k]) < 1e-12 for k in now)
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()) +
                  f" samples/s; same accuracies: {all(abs(before[k] - now[k]) < 1e-12 for k in now)}", flush=True)
    for name, values in rates.items():
        print(f"{name:<12} median {statistics.median(values):7.1f} samples/s over {args.rounds} rounds")
    for a, b in (("eval now", "eval before"), ("eval now", "train"), ("eval before", "train")):
        ratios = [x / y for x, y in zip(rates[a], rates[b])]
        print(f"{a} / {b}: median {statistics.median(ratios):.2f} (per round {', '.join(f'{r:.2f}' for r in ratios)})")
    print(f"accuracies identical in every round: {same}")


if __name__ == "__main__":
    main()
