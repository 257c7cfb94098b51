"""Tasks: what one kind of model learns and how it is scored (the contract: xdt/tasks/base.py)."""
