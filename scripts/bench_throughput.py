"""Training throughput of ``xdt train`` against a plain Hugging Face ``Trainer``, side by side.

Same process, same data (FDU-MTL apparel by default), same model (MiniLM under xdt's mean-pooling
head), batch size, max length, optimizer (AdamW, weight decay on matrices only), linear warm-up/decay
schedule, gradient clipping and precision (``-- hardware.mixed_precision=bf16`` gives Trainer ``bf16=True``: the
same autocast). Trainer runs three ways: as it comes (random batches, the per-tensor AdamW), with
``train_sampling_strategy="group_by_length"``, and with that plus the fused AdamW xdt's config uses. Rounds
alternate all four so machine noise hits them alike; the script prints the median samples/s of each and the
ratios.

What differs is the engine: xdt's own loop, and on CPU its dropout (``hardware.fast_dropout``, on by default:
masks drawn 16 bits at a time; ``-- hardware.fast_dropout=false`` gives xdt PyTorch's dropout, as Trainer has).

Both are timed the same way: from the start of the first training step to the end of the last one
(data loading inside the loop included; evaluation, checkpointing and start-up excluded).

    python scripts/bench_throughput.py                      # FDU-MTL apparel if XDT_DATA_DIR or ../shared/data
    python scripts/bench_throughput.py --steps 30 --rounds 3 --domain syn_books
    python scripts/bench_throughput.py --steps 30 --rounds 2 -- hardware.fast_dropout=false
    python scripts/bench_throughput.py --steps 30 --rounds 2 -- hardware.mixed_precision=bf16   # CPUs with bf16 units
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

import xdt.config  # noqa: F401  (resolvers)
from xdt.console import console
from xdt.data.run_data import load_run_data
from xdt.models import build_classifier, load_tokenizer
from xdt.train import train

ROOT = Path(__file__).resolve().parents[1]


class ForTrainer(torch.nn.Module):
    """xdt's classifier with the forward signature Trainer expects."""

    def __init__(self, classifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, input_ids, attention_mask, labels=None):
        logits = self.classifier(input_ids, attention_mask)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


class StepClock(TrainerCallback):
    """Times the loop from the first step's start to the last step's end (same span as xdt's train_seconds)."""

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.end = time.perf_counter()


def config(args, workdir: Path):
    data_dir = os.environ.get("XDT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    overrides = [f"model={args.model}", f"source_domain={args.domain}", "target_domain=[]",
                 f"max_steps={args.steps}", f"eval_interval={args.steps}", f"log_interval={args.steps}",
                 f"batch_size={args.batch_size}", f"max_length={args.max_length}", f"data_dir={data_dir}",
                 f"cache_dir={workdir / 'cache'}", *args.xdt_overrides]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return compose("train", overrides=overrides)


def run_xdt(cfg, run_dir: Path) -> float:
    return train(cfg, run_dir)["train_samples_per_s"]


def run_trainer(cfg, workdir: Path, group_by_length: bool, optim: str = "adamw_torch") -> float:
    torch.manual_seed(int(cfg.seed))
    tokenizer = load_tokenizer(cfg.model)
    data = load_run_data(cfg.source_domain, None, tokenizer, int(cfg.max_length), cfg.cache_dir)
    train_set = data.source_train().remove_columns(["domain"]).rename_column("label", "labels")
    model = ForTrainer(build_classifier(cfg.model, tokenizer, data.num_labels))
    arguments = TrainingArguments(
        output_dir=str(workdir / "trainer"), per_device_train_batch_size=int(cfg.batch_size),
        max_steps=int(cfg.max_steps), learning_rate=float(cfg.optimizer.lr),
        weight_decay=float(cfg.optimizer.weight_decay), warmup_steps=int(float(cfg.warmup_ratio) * cfg.max_steps),
        lr_scheduler_type="linear", max_grad_norm=float(cfg.max_grad_norm), optim=optim,
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], use_cpu=True,
        dataloader_num_workers=0, length_column_name="length",
        train_sampling_strategy="group_by_length" if group_by_length else "random",
        seed=int(cfg.seed), disable_tqdm=True, bf16=cfg.hardware.mixed_precision == "bf16",
        fp16=cfg.hardware.mixed_precision == "fp16")
    clock = StepClock()
    trainer = Trainer(model=model, args=arguments, train_dataset=train_set, callbacks=[clock],
                      data_collator=DataCollatorWithPadding(tokenizer))
    trainer.train()
    return cfg.max_steps * cfg.batch_size / (clock.end - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--domain", default="fdu_apparel", help="source domain config (fdu_apparel, syn_books, ...)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("xdt_overrides", nargs="*", metavar="OVERRIDE", help="for the xdt runs, after --")
    args = parser.parse_args()
    console.quiet = True  # xdt's summary table of every run would bury the figures this script prints
    results: dict[str, list[float]] = {"xdt train": [], "Trainer": [], "Trainer group_by_length": [],
                                       "Trainer group_by_length fused": []}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cfg = config(args, workdir)
        print(f"{args.model} on {args.domain}: {args.steps} steps, batch {args.batch_size}, max_length "
              f"{args.max_length}, torch threads {torch.get_num_threads()}")
        for round_ in range(args.rounds):
            results["xdt train"].append(run_xdt(cfg, workdir / f"xdt-{round_}"))
            results["Trainer"].append(run_trainer(cfg, workdir, group_by_length=False))
            results["Trainer group_by_length"].append(run_trainer(cfg, workdir, group_by_length=True))
            results["Trainer group_by_length fused"].append(
                run_trainer(cfg, workdir, group_by_length=True, optim="adamw_torch_fused"))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items()))
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, value in medians.items():
        print(f"{name:<25} median {value:7.1f} train samples/s over {args.rounds} rounds")
    for name in list(medians)[1:]:
        print(f"ratio xdt train / {name:<30} {medians['xdt train'] / medians[name]:.2f}")


if __name__ == "__main__":
    main()
