"""Argument checks shared by every config and engine.

Configs and engines call these in ``__post_init__`` so that a bad value is refused where it is
set, with a message that says what to do, before anything trains or is written.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

SIZE_SUFFIXES = ("_dim", "_len", "_size")
SIZE_TUPLES = ("hidden", "channels", "image_shape")  # tuple fields whose entries are sizes (prefixes)


def integer(name: str, value: Any, minimum: int = 1) -> None:
    """``ValueError`` unless ``value`` is an int (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def positive(name: str, value: Any, allow_zero: bool = False) -> None:
    """``ValueError`` unless ``value`` is a finite real number ``> 0`` (``>= 0`` with ``allow_zero``)."""
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool) and math.isfinite(
        value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"{name} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")


def check_sizes(cfg: Any) -> None:
    """``ValueError`` for a size field of the config dataclass ``cfg`` below 1.

    Sizes are the int fields named ``*_dim``, ``*_len``, ``*_size`` or ``num_*`` and every entry of the
    tuple fields named ``hidden*``, ``channels`` or ``image_shape`` (an empty ``hidden_dims`` is a linear map).
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name.endswith(SIZE_SUFFIXES) or f.name.startswith("num_"):
            if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
                integer(f.name, value)
        elif f.name.startswith(SIZE_TUPLES) and isinstance(value, tuple):
            if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in value):
                raise ValueError(f"every entry of {f.name} must be an integer >= 1, got {value!r}")
