"""xdt: cross-domain transfer experiments for language models, driven by Hydra configs."""

__version__ = "0.1.0"

__all__ = ["load_run"]


def __getattr__(name: str):
    # ``xdt.load_run`` imports torch and transformers on first use only: ``import xdt`` stays cheap.
    if name == "load_run":
        from xdt.inference import load_run

        return load_run
    raise AttributeError(f"module 'xdt' has no attribute {name!r}")
