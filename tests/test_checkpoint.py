"""Checkpoint files: exact round trips of nested state, atomic writes, links and pruning."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from xdt import checkpoint
from xdt.atomic import atomic_write_text
from xdt.errors import XdtError


def test_nested_state_round_trips_through_safetensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    state = {"optimizer": optimizer.state_dict(), "rng": checkpoint.rng_state(), "loop": {"step": 7, "best": -1.5}}
    checkpoint.save_state(tmp_path / "s.safetensors", state)
    loaded = checkpoint.load_state(tmp_path / "s.safetensors")
    assert loaded["loop"] == {"step": 7, "best": -1.5}
    restored = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.5)
    restored.load_state_dict(loaded["optimizer"])
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(restored.state_dict()["state"][0][key], optimizer.state_dict()["state"][0][key])
    assert restored.param_groups[0]["lr"] == 0.1 and restored.param_groups[0]["betas"] == (0.9, 0.999)


def test_rng_state_restores_every_generator(tmp_path):
    checkpoint.save_state(tmp_path / "r.safetensors", checkpoint.rng_state())
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    checkpoint.set_rng_state(checkpoint.load_state(tmp_path / "r.safetensors"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old")

    def broken_replace(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(path, "new")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["metrics.json"]


class OneProcess:
    """The parts of an Accelerator that save_checkpoint uses, for a single process."""
    is_main_process = True
    process_index = 0

    def wait_for_everyone(self):
        pass


def test_links_move_atomically_and_prune_keeps_best_and_last(tmp_path):
    model = torch.nn.Linear(2, 2)
    for step in (10, 20, 30):
        checkpoint.save_checkpoint(tmp_path, step, model, {"loop": {"step": step}}, OneProcess())
        checkpoint.link(tmp_path, "last", step)
        if step == 20:
            checkpoint.link(tmp_path, "best", step)
        checkpoint.prune(tmp_path)
    assert checkpoint.checkpoint_steps(tmp_path) == [20, 30]
    assert checkpoint.linked_step(tmp_path, "best") == 20 and checkpoint.linked_step(tmp_path, "last") == 30
    (tmp_path / "checkpoints" / ".tmp-step-0000040").mkdir()  # what a kill mid-save leaves
    assert checkpoint.checkpoint_steps(tmp_path) == [20, 30]
    checkpoint.prune(tmp_path)
    assert not (tmp_path / "checkpoints" / ".tmp-step-0000040").exists()
    fresh = torch.nn.Linear(2, 2)
    checkpoint.load_weights(fresh, tmp_path / "checkpoints" / "best")
    assert torch.equal(fresh.weight, model.weight)


def test_a_checkpoints_step_comes_from_its_name_or_else_its_saved_state(tmp_path):
    named = tmp_path / "step-0000042"
    named.mkdir()
    assert checkpoint.saved_step(named) == 42
    copied = tmp_path / "best"  # a best link that a copy turned into a folder
    copied.mkdir()
    checkpoint.save_state(copied / checkpoint.STATE_FILE, {"optimizer": {}, "loop": {"step": 7, "samples": 3}})
    assert checkpoint.saved_step(copied) == 7
    empty = tmp_path / "last"
    empty.mkdir()
    with pytest.raises(XdtError, match=r"last: not named step-NNNNNNN, and training_state.safetensors does not say"):
        checkpoint.saved_step(empty)
