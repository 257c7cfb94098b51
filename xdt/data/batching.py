"""Batches for training and evaluation: length-grouped batch order, dynamic padding, data loaders."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from xdt.runtime import ignore_stop_signals

IGNORED = -100  # the label of positions no loss or score reads (PyTorch's cross-entropy ignore_index)


class LengthGroupedBatches:
    """Batch sampler: shuffled batches whose examples have similar lengths, so padding is small.

    Each epoch shuffles all indices, cuts them into groups of ``group_batches`` batches, sorts each
    group by length and cuts it into batches, then shuffles the order of the full batches, keeping a short
    final batch last (the idea of Hugging Face's LengthGroupedSampler). The order depends only on (seed, epoch), so a resumed run can rebuild the
    exact batches of any epoch. With ``shuffle=False`` batches are simply sorted by length (evaluation).

    It deliberately has no ``sampler`` attribute and no ``set_epoch`` method: Accelerate then shards
    these batches across processes as they are, and only the training loop chooses the epoch.
    """

    drop_last = False

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int = 0, shuffle: bool = True,
                 group_batches: int = 50):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.group_batches = group_batches
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def batches(self) -> list[list[int]]:
        if not self.shuffle:
            order = np.argsort(-self.lengths, kind="stable")
            return [order[i:i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        group = self.batch_size * self.group_batches
        batches = []
        for start in range(0, len(order), group):
            chunk = order[start:start + group]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i:i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        # Only the last chunk can end in a short batch. It stays last: split across several processes,
        # Accelerate yields the full batches and then the final one, and would drop a short one in between.
        full = [b for b in batches if len(b) == self.batch_size]
        return [full[i] for i in rng.permutation(len(full))] + [b for b in batches if len(b) < self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())


@dataclass
class Collator:
    """Pads a list of tokenised rows to the longest row of the batch (dynamic padding)."""

    pad_id: int
    pad_to_multiple_of: int | None = None
    # Rounding up never pads past this (rows are cut at max_length already): a model's position embeddings may
    # end there, and columns beyond it would only be padding. It is one more length bucket at most.
    max_length: int | None = None

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        longest = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            rounded = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
            longest = max(longest, min(rounded, self.max_length or rounded))
        input_ids = torch.full((len(rows), longest), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.as_tensor(row["input_ids"])
            attention_mask[i, :n] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask}
        for column, name in (("label", "labels"), ("domain", "domain")):
            if column in rows[0]:
                batch[name] = torch.tensor([row[column] for row in rows], dtype=torch.long)
        if "labels" in rows[0]:  # one label per token (token classification): padding is ignored (-100)
            labels = torch.full((len(rows), longest), IGNORED, dtype=torch.long)
            for i, row in enumerate(rows):
                labels[i, :len(row["labels"])] = torch.as_tensor(row["labels"])
            batch["labels"] = labels
        return batch


def stack_batches(first: dict[str, torch.Tensor],
                  second: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of two collated batches as one, ``first``'s rows on top: (input_ids, attention_mask), the
    shorter batch padded on the right to the longer one's length. The added positions are masked, so every
    row's states are those it gets alone (up to float rounding): the encoder's attention skips masked keys
    and pooling reads only real tokens."""
    length = max(first["input_ids"].shape[1], second["input_ids"].shape[1])

    def padded(tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, length - tensor.shape[1]))  # zeros: masked positions
    return (torch.cat([padded(first["input_ids"]), padded(second["input_ids"])]),
            torch.cat([padded(first["attention_mask"]), padded(second["attention_mask"])]))


COMPILE_BUCKET = 32  # with hardware.compile: pad to a multiple of this, so max_length=128 gives 4 lengths


def padding_multiple(hardware, device: torch.device) -> int | None:
    """What batches are padded to a multiple of: length buckets when the model is compiled (each new shape
    compiles a graph, so shapes must be few), 8 on CUDA (tensor-core tiles), else none (dynamic padding)."""
    if hardware.get("compile"):
        return COMPILE_BUCKET
    return 8 if device.type == "cuda" else None


def make_loader(data: Dataset, batch_size: int, collator: Collator, shuffle: bool, seed: int = 0,
                num_workers: int = 0) -> DataLoader:
    """A DataLoader over ``data`` with length-grouped batches.

    The loader gets its own generator: otherwise every new iterator draws its base seed from torch's
    global RNG, and a resumed run (which creates iterators at other moments) would see different
    dropout masks than an uninterrupted one.
    """
    columns = [c for c in ("input_ids", "label", "labels", "domain") if c in data.column_names]
    sampler = LengthGroupedBatches(data["length"], batch_size, seed=seed, shuffle=shuffle)
    return DataLoader(data.select_columns(columns), batch_sampler=sampler, collate_fn=collator,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed),
                      worker_init_fn=ignore_stop_signals if num_workers else None)


def eval_loaders(sets: dict[str, Dataset], batch_size: int, collator: Collator, accelerator) -> dict[str, DataLoader]:
    """One prepared loader per evaluation set; build them once and reuse them at every evaluation."""
    return {name: accelerator.prepare(make_loader(data, batch_size, collator, shuffle=False))
            for name, data in sets.items()}
