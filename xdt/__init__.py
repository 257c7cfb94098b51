"""xdt: cross-domain transfer experiments for language models, driven by Hydra configs."""

__version__ = "0.1.0"
