"""Training progress, published by the shared loop for the schedules on every floor.

:func:`at_epoch` sets the progress (epochs done, fractional within an epoch) around every step of
:mod:`aezoo.inference.loop`; :func:`current_epoch` reads it: objective terms (KL warm-up, capacity,
the Gumbel-softmax temperature, re-exported by :mod:`aezoo.inference.objectives`) and models whose
guide follows a schedule (``k_sparse_ae``'s k), which may not import ``inference``. Outside a fit the
progress is ``None`` and every schedule is finished.
"""

from __future__ import annotations

import contextlib
import contextvars
import typing

_EPOCH: contextvars.ContextVar[float | None] = contextvars.ContextVar("aezoo_epoch", default=None)


@contextlib.contextmanager
def at_epoch(epoch: float) -> typing.Iterator[None]:
    """Publish the training progress ``epoch`` (epochs done, e.g. ``2.5``) to schedules inside the block."""
    token = _EPOCH.set(float(epoch))
    try:
        yield
    finally:
        _EPOCH.reset(token)


def current_epoch() -> float | None:
    """The progress set by the innermost :func:`at_epoch`, or ``None`` outside a fit."""
    return _EPOCH.get()


def ramp(epochs: float) -> float:
    """``min(1, e / epochs)`` at the current progress ``e``; 1 for ``epochs = 0`` or outside a fit."""
    epoch = current_epoch()
    if epochs <= 0 or epoch is None:
        return 1.0
    return min(1.0, max(epoch, 0.0) / epochs)
