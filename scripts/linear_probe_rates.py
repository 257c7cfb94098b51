"""How far a linear probe on frozen encoder features gets within a short budget, by head learning rate.

The check behind ``lp_ft``'s ``head_lr_scale``: LP-FT's probe only helps if the head it hands to
fine-tuning already fits the source. This encodes the run's source training and validation rows once with
the frozen pretrained encoder (mean pooling, the run's ``max_length``), then trains a fresh linear head on
them with AdamW at ``scale`` x ``optimizer.lr`` on the run's schedule (warm-up, linear decay over
``max_steps``) for the probe's steps, and prints source validation accuracy. Source labels only.

    XDT_DATA_DIR=../shared/data python scripts/linear_probe_rates.py                  # apparel, 50 steps
    XDT_DATA_DIR=../shared/data python scripts/linear_probe_rates.py --steps 50 150 experiment=fdu_imdb_to_baby
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

import xdt.config  # noqa: F401  (resolvers)
from xdt.data.domains import label_space, load_group
from xdt.models import build_classifier, load_tokenizer
from xdt.engine import lr_schedule

ROOT = Path(__file__).resolve().parents[1]


@torch.no_grad()
def encode(model, tokenizer, texts: list[str], max_length: int) -> torch.Tensor:
    chunks = []
    for i in range(0, len(texts), 64):
        batch = tokenizer(texts[i:i + 64], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        chunks.append(model.features(batch["input_ids"], batch["attention_mask"]))
    return torch.cat(chunks)


def probe_accuracy(cfg, train: tuple[torch.Tensor, torch.Tensor], validation: tuple[torch.Tensor, torch.Tensor],
                   num_labels: int, scale: float, steps: int) -> float:
    torch.manual_seed(int(cfg.seed))
    head = torch.nn.Linear(train[0].shape[1], num_labels)
    optimizer = torch.optim.AdamW(head.parameters(), lr=scale * float(cfg.optimizer.lr),
                                  weight_decay=float(cfg.optimizer.weight_decay))
    schedule = lr_schedule(optimizer, cfg, int(cfg.max_steps))
    rows = torch.Generator().manual_seed(int(cfg.seed))
    for _ in range(steps):
        batch = torch.randint(0, len(train[1]), (int(cfg.batch_size),), generator=rows)
        loss = F.cross_entropy(head(train[0][batch]), train[1][batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return (head(validation[0]).argmax(-1) == validation[1]).float().mean().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="key=value overrides (default: experiment=fdu_apparel_to_MR)")
    parser.add_argument("--steps", type=int, nargs="+", default=[50], help="probe lengths to try")
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 10, 100, 1000], help="head lr multiples")
    args = parser.parse_args()
    data_dir = os.environ.get("XDT_DATA_DIR", str(ROOT.parent / "shared" / "data"))
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=[f"data_dir={data_dir}", *(args.overrides or ["experiment=fdu_apparel_to_MR"])])
    tokenizer = load_tokenizer(cfg.model)
    sources = load_group(cfg.source_domain, "source_domain")
    labels = label_space(sources, [])  # the class ids a run would use
    model = build_classifier(cfg.model, tokenizer, len(labels)).eval()

    def split(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        texts = [t for domain in sources for t in getattr(domain, name)["text"]]
        ys = [labels.index(y) for domain in sources for y in getattr(domain, name)["label"]]
        return encode(model, tokenizer, texts, int(cfg.max_length)), torch.tensor(ys)

    train, validation = split("train"), split("validation")
    print(f"{len(train[1])} train, {len(validation[1])} validation rows; optimizer.lr {cfg.optimizer.lr}, "
          f"schedule over {cfg.max_steps} steps")
    for steps in args.steps:
        for scale in args.scales:
            accuracy = probe_accuracy(cfg, train, validation, len(labels), scale, steps)
            print(f"probe {steps} steps, head lr {scale:g}x: source validation accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
