"""The ``hardware`` config group turned into an Accelerate ``Accelerator``."""

from __future__ import annotations

import logging
import os

import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import GradientAccumulationPlugin
from omegaconf import DictConfig, OmegaConf

from xdt.errors import XdtError

log = logging.getLogger(__name__)

PRECISIONS = ("no", "bf16", "fp16")


def check_hardware(hw: DictConfig) -> None:
    """Refuse a device or precision this process cannot give, naming the setting."""
    if hw.device not in ("cpu", "cuda"):
        raise XdtError(f"hardware.device={hw.device!r} is not valid: choose cpu or cuda")
    if hw.mixed_precision not in PRECISIONS:
        raise XdtError(f"hardware.mixed_precision={hw.mixed_precision!r} is not valid: choose {', '.join(PRECISIONS)}")
    for key in ("compile", "fast_dropout"):
        if not isinstance(hw.get(key, False), bool):
            raise XdtError(f"hardware.{key}={hw.get(key)!r} is not valid: true or false")
    if hw.device == "cuda" and not torch.cuda.is_available():
        raise XdtError("hardware.device=cuda but torch sees no CUDA GPU; use hardware=cpu")


def process_state(hw: DictConfig) -> PartialState:
    """Accelerate's per-process state for ``hw``: the device and, under a launcher, the process group.

    Accelerate keeps one state per process, made by the first Accelerator, and afterwards keeps its device
    (a later CUDA request stays on the CPU) or refuses another precision. One process can hold several runs
    with other settings (a multirun's jobs, evaluation on the CPU after training on a GPU, tests), so a state
    made for other settings is forgotten first. Under a launcher the process group is kept.

    Accelerate has no public way to forget its state outside its tests, so this function reads its private
    ``_shared_state`` and calls ``_reset_state``, here and nowhere else;
    ``tests/test_train.py::test_one_process_can_hold_runs_of_other_precisions`` fails if a release changes them.
    """
    check_hardware(hw)  # before touching any state: a refused setting leaves the process as it was
    partial, accelerator = PartialState._shared_state, AcceleratorState._shared_state
    if partial:
        other_device = (partial["device"].type == "cpu") != (hw.device == "cpu")
        other_precision = bool(accelerator) and accelerator.get("_mixed_precision") != hw.mixed_precision
        if other_device or other_precision:
            AcceleratorState._reset_state(reset_partial_state=partial.get("num_processes", 1) == 1)
    return PartialState(cpu=hw.device == "cpu")


def threads_per_job(n_jobs: int, cores: int) -> int:
    """Threads for each of a sweep's jobs running at once (joblib's n_jobs: -1 = one per core, -2 = one fewer)."""
    at_once = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    return max(1, cores // at_once)


def shared_threads() -> int | None:
    """With ``hardware.num_threads=null`` in a sweep whose launcher runs several jobs at once on this machine
    (``hydra/launcher=local_parallel``, joblib's ``n_jobs``): the cores split between them, so jobs do not
    oversubscribe the CPU (each would take every core, and all would run several times slower). None otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    n_jobs = OmegaConf.select(HydraConfig.get(), "launcher.n_jobs")
    if not isinstance(n_jobs, int) or n_jobs == 1:
        return None
    cores = os.cpu_count() or 1
    threads = threads_per_job(n_jobs, cores)
    log.info("%s sweep jobs at once share %d cores: %d threads each (hardware.num_threads=null; set it to choose)",
             n_jobs if n_jobs > 0 else f"n_jobs={n_jobs}", cores, threads)
    return threads


def cpu_has_matrix_units(precision: str) -> bool:
    """Whether this CPU multiplies ``precision`` (bf16 or fp16) matrices in hardware (Intel AMX tiles; AMX-FP16 for
    fp16), where autocast can be faster than fp32; without them it is far slower. torch's own (private) checks."""
    check = {"bf16": "_is_amx_tile_supported", "fp16": "_is_amx_fp16_supported"}.get(precision)
    return bool(check and getattr(torch.cpu, check, lambda: False)())


def make_accelerator(hw: DictConfig, gradient_accumulation_steps: int = 1, log_with: list | None = None) -> Accelerator:
    """An Accelerator for ``hardware.device`` (cpu or cuda) and ``hardware.mixed_precision``, accumulating
    gradients over ``gradient_accumulation_steps`` micro-batches per optimizer step, holding the trackers
    ``log_with`` (:mod:`xdt.tracking`; None: none).

    Multi-process data parallelism needs no setting here: ``accelerate launch`` or ``torchrun`` set
    the environment the Accelerator reads.
    """
    process_state(hw)  # checks the settings first
    if hw.device == "cpu" and hw.mixed_precision != "no" and not cpu_has_matrix_units(hw.mixed_precision):
        log.warning("hardware.mixed_precision=%s on a CPU without %s matrix units (Intel AMX): its matmuls are far "
                    "slower than fp32 here", hw.mixed_precision, hw.mixed_precision)
    threads = int(hw.num_threads) if hw.get("num_threads") else shared_threads()
    if threads:
        torch.set_num_threads(threads)
    if hw.device == "cuda":
        # Set both ways: the flags are process-wide, and a multirun's earlier job may have turned them on.
        torch.backends.cuda.matmul.allow_tf32 = bool(hw.get("tf32"))
        torch.backends.cudnn.allow_tf32 = bool(hw.get("tf32"))
    # split_batches: every batch of batch_size examples is split across the processes, so batch_size means
    # the same global batch (and the same optimisation) with 1 process or N.
    # The engine splits each batch into its micro-batches itself and never ends an epoch mid-step, so the
    # accumulation is not tied to the data loader's end.
    accumulation = GradientAccumulationPlugin(num_steps=gradient_accumulation_steps, sync_with_dataloader=False)
    accelerator = Accelerator(cpu=hw.device == "cpu", mixed_precision=hw.mixed_precision,
                              dataloader_config=DataLoaderConfiguration(split_batches=True),
                              gradient_accumulation_plugin=accumulation, log_with=log_with)
    if hw.get("distributed") and accelerator.num_processes == 1:
        log.warning("hardware expects several processes but this is a single process: start it with "
                    "`accelerate launch --multi_gpu -m xdt.cli train ...` or `torchrun --nproc-per-node N -m xdt.cli train ...`")
    return accelerator
