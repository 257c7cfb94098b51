"""Checkpoints: saved, linked, loaded and pruned.

A checkpoint is a folder ``checkpoints/step-NNNNNNN/`` holding, all in safetensors:

* ``model.safetensors``: the strategy's weights (the classifier under ``model.``, extra heads beside it);
* ``training_state.safetensors``: optimizer, scheduler and loop state, to resume exactly;
* ``rng-rank<R>.safetensors``: the random generators of each process.

Non-tensor values ride along as JSON in the safetensors metadata. A checkpoint is written into a
hidden temporary folder, flushed to the disk and renamed into place, and ``best``/``last`` are symlinks swapped with
``os.replace``: both are atomic, so a kill at any moment leaves either the old or the new checkpoint,
never half of one. Folders no link points to are deleted after the links move.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from xdt.atomic import flush_tree, fsync_path
from xdt.errors import XdtError

CHECKPOINTS = "checkpoints"

MODEL_FILE = "model.safetensors"
STATE_FILE = "training_state.safetensors"


# ---- nested state <-> (tensors, JSON) -------------------------------------------------------------

def _split(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    """``value`` with every tensor/array moved into ``tensors`` and replaced by a reference."""
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(value, np.ndarray):
        tensors[path] = torch.from_numpy(value.copy())
        return {"__ndarray__": path}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _split(v, tensors, f"{path}.{k}") for k, v in value.items()}}
        return {"__items__": [[k, _split(v, tensors, f"{path}.{k}")] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_split(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    return value


def _join(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`_split`."""
    if isinstance(value, list):
        return [_join(v, tensors) for v in value]
    if not isinstance(value, dict):
        return value
    if "__tensor__" in value:
        return tensors[value["__tensor__"]]
    if "__ndarray__" in value:
        return tensors[value["__ndarray__"]].numpy()
    if "__tuple__" in value:
        return tuple(_join(v, tensors) for v in value["__tuple__"])
    if "__items__" in value:
        return {k: _join(v, tensors) for k, v in value["__items__"]}
    return {k: _join(v, tensors) for k, v in value["__dict__"].items()}


def save_state(path: Path, state: dict) -> None:
    """Save a nested state (optimizer state dicts, RNG states, counters) as one safetensors file."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _split(state, tensors, "s")
    save_file(tensors, str(path), metadata={"xdt_state": json.dumps(skeleton)})


def load_state(path: Path) -> dict:
    with safe_open(str(path), framework="pt") as file:
        skeleton = json.loads(file.metadata()["xdt_state"])
    return _join(skeleton, load_file(str(path)))


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- checkpoint folders ---------------------------------------------------------------------------

def step_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step-{step:07d}"


def model_weights(module: nn.Module, include_frozen: bool = True) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint of ``module`` holds: every parameter that trains and every buffer, and
    the frozen parameters only if ``include_frozen`` (with PEFT on a pretrained encoder they are rebuilt
    from the pretrained weights instead). A tensor shared by several names (tied embeddings) is kept once."""
    frozen = {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    weights, seen = {}, set()
    for name, tensor in module.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        if (include_frozen or name not in frozen) and key not in seen:
            seen.add(key)
            weights[name] = tensor.detach().contiguous()
    return weights


def save_checkpoint(run_dir: Path, step: int, module: nn.Module, training_state: dict, accelerator,
                    include_frozen: bool = True) -> Path:
    """Write the checkpoint of ``step`` atomically (every process saves its RNG; the main one the rest).

    ``module`` is the unwrapped strategy; ``training_state`` holds the optimizer/scheduler state
    dicts and the loop's counters.
    """
    final = step_dir(run_dir, step)
    tmp = final.with_name(f".tmp-{final.name}")
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if not final.exists():
        save_state(tmp / f"rng-rank{accelerator.process_index}.safetensors", rng_state())
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():  # already saved at this step (a stop signal right after an evaluation)
            shutil.rmtree(tmp)
        else:
            save_file(model_weights(module, include_frozen), str(tmp / MODEL_FILE))
            save_state(tmp / STATE_FILE, training_state)
            flush_tree(tmp)  # on the disk, with the umask's permissions, before it gets its final name
            os.replace(tmp, final)
            fsync_path(final.parent)
    accelerator.wait_for_everyone()
    return final


def _read(path: Path, read: Callable[[str], Any]) -> Any:
    """``read(path)``, with a damaged or missing file (cut short, emptied, overwritten) as one message."""
    try:
        return read(str(path))
    except (OSError, ValueError, KeyError, RuntimeError, json.JSONDecodeError, SafetensorError) as error:
        raise XdtError(f"{path} is damaged or missing ({str(error).splitlines()[0] if str(error) else type(error).__name__}); "
                       f"use another checkpoint (checkpoint=last, or a step-NNNNNNN folder)") from None


def load_checkpoint(folder: Path, module: nn.Module, process_index: int = 0) -> dict:
    """Load weights into ``module`` and this process's RNG; return the training state to restore."""
    load_weights(module, folder)
    set_rng_state(_read(Path(folder) / f"rng-rank{process_index}.safetensors", load_state))
    return _read(Path(folder) / STATE_FILE, load_state)


def load_weights(module: nn.Module, folder: Path) -> None:
    """Load ``model.safetensors`` of a checkpoint into ``module``. Names it does not hold must be frozen
    parameters (already in place from the pretrained model) or second names of a stored shared tensor.
    A file that does not fit the model (another architecture or size) is one message naming it."""
    path = Path(folder) / MODEL_FILE
    weights = _read(path, load_file)
    try:
        missing, unexpected = module.load_state_dict(weights, strict=False)
    except RuntimeError as error:  # size mismatch: "... copying a param with shape ..."
        first = next((line.strip() for line in str(error).splitlines() if "size mismatch" in line), str(error))
        raise XdtError(f"{path} does not fit the model built from the run's config.yaml ({first}); the config "
                       f"was edited after the checkpoint was written (another model or size)") from None
    state = module.state_dict()
    stored = {(state[name].data_ptr(), tuple(state[name].shape)) for name in weights if name in state}
    frozen = {name for name, p in module.named_parameters(remove_duplicate=False) if not p.requires_grad}
    unexplained = [name for name in missing
                   if name not in frozen and (state[name].data_ptr(), tuple(state[name].shape)) not in stored]
    if unexplained or unexpected:
        raise XdtError(f"{path} does not fit the model built from the run's config.yaml: missing {unexplained[:5]}, "
                       f"unexpected {list(unexpected)[:5]} (the config was edited after the checkpoint was written?)")


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints in ``run_dir`` (temporary folders are never complete)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(int(p.name.split("-")[1]) for p in root.iterdir() if p.name.startswith("step-") and p.is_dir())


def saved_step(folder: Path) -> int:
    """The step a checkpoint folder was saved at: its name says it (``step-NNNNNNN``), or, for a ``best`` or
    ``last`` link that a copy turned into a folder, its training state's counters (read without its tensors)."""
    if folder.name.startswith("step-") and folder.name[5:].isdigit():
        return int(folder.name[5:])
    path = folder / STATE_FILE
    try:
        with safe_open(str(path), framework="pt") as file:
            return int(json.loads(file.metadata()["xdt_state"])["__dict__"]["loop"]["__dict__"]["step"])
    except (OSError, KeyError, TypeError, ValueError, SafetensorError) as error:
        raise XdtError(f"{folder}: not named step-NNNNNNN, and {path.name} does not say its step ({error!r:.80})") \
            from None


def link(run_dir: Path, name: str, step: int) -> None:
    """Point ``checkpoints/<name>`` (``best`` or ``last``) at the checkpoint of ``step``, atomically."""
    root = Path(run_dir) / CHECKPOINTS
    tmp = root / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(step_dir(run_dir, step).name)
    os.replace(tmp, root / name)


def linked_step(run_dir: Path, name: str) -> int | None:
    path = Path(run_dir) / CHECKPOINTS / name
    return int(os.readlink(path).split("-")[1]) if path.is_symlink() and path.exists() else None


def prune(run_dir: Path) -> None:
    """Delete checkpoints that neither ``best`` nor ``last`` points to, and leftover temporary folders."""
    keep = {linked_step(run_dir, "best"), linked_step(run_dir, "last")}
    root = Path(run_dir) / CHECKPOINTS
    for step in checkpoint_steps(run_dir):
        if step not in keep:
            shutil.rmtree(step_dir(run_dir, step))
    for leftover in root.glob(".tmp-step-*"):
        shutil.rmtree(leftover, ignore_errors=True)
