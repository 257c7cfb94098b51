"""Checks of single values that end in one message naming the key: shared by the config checks and the
strategies' constructors (which import nothing else from the training side)."""

from __future__ import annotations

from typing import Any

from xdt.errors import XdtError


def check_fraction(key: str, value: Any, meaning: str = "a fraction of training",
                   allow_none: bool = False) -> float | None:
    """``value`` as a fraction of training in [0, 1) (a warm-up, a probe, where averaging starts), or a message
    naming the key and the value. 1 or more would make the phase the whole run and silently turn off what
    follows it."""
    if value is None and allow_none:
        return None
    try:
        ok = 0 <= float(value) < 1 and not isinstance(value, bool)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise XdtError(f"{key}={value!r} is not valid: it is {meaning}, from 0 up to (not including) 1"
                       + (", or null for none" if allow_none else ""))
    return float(value)
