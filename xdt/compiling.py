"""``hardware.compile``: the encoder through ``torch.compile`` (TorchInductor), and the time compiling costs.

The compiled module is the encoder's transformer (``encoder.base_model``: the module every task and strategy
calls, through PEFT's wrapper too), compiled in place (``nn.Module.compile``) so its weights keep their names
and checkpoints stay interchangeable with eager runs. Heads and strategy layers (a discriminator, a pooled
head) stay eager: they are a few small matrix multiplies per batch, not worth a graph.

Every new input shape compiles a graph, so batches are padded to length buckets
(:func:`xdt.data.batching.padding_multiple`): with ``max_length=128``, four lengths. Steps that compiled a graph
are timed apart (``compile_time_s`` in metrics.json) from the steps that only ran one (``train_time_s``), so
throughput and MFU describe the compiled model, and the price of compiling is reported beside them.
"""

from __future__ import annotations

import logging

from torch import nn

from xdt.errors import XdtError

log = logging.getLogger(__name__)

# Strategies that call the model through torch.func.functional_call with weights of their own: a compiled
# graph guards on the module's parameters and would recompile at every inner step.
EAGER_ONLY = ("maml",)


def check_compile(hardware, strategy_name: str) -> None:
    """Refuse a strategy that cannot run compiled, naming the setting."""
    if hardware.get("compile") and strategy_name in EAGER_ONLY:
        raise XdtError(f"hardware.compile=true does not serve strategy={strategy_name}: it calls the model with "
                       f"weights of its own (torch.func.functional_call), which a compiled graph recompiles for at "
                       f"every inner step; run it with hardware.compile=false")


def compile_encoder(strategy: nn.Module) -> str:
    """Compile the transformer of ``strategy``'s encoder in place; returns its class name (for the log)."""
    encoder = getattr(strategy.model, "encoder", None)
    if encoder is None or not hasattr(encoder, "base_model"):
        raise XdtError(f"hardware.compile=true: the model of strategy {type(strategy).__name__} has no Hugging Face "
                       f"encoder to compile")
    core = encoder.base_model
    core.compile()
    return type(core).__name__


def compiled_graphs() -> int:
    """How many graphs TorchDynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters  # imported late: torch._dynamo is slow to import

    return int(counters["stats"]["unique_graphs"])
