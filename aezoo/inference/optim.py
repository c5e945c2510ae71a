"""Optimisers and learning-rate schedules of the gradient engines, all from ``torch.optim``.

``OPTIMIZERS``: ``adam`` (Kingma & Ba, the papers' default), ``adamw`` (decoupled weight decay,
Loshchilov & Hutter, arXiv:1711.05101) and ``sgd`` (heavy-ball momentum 0.9). ``SCHEDULES`` give the
factor that multiplies ``lr`` in epoch ``e`` (0-based) of ``E``, applied through
``torch.optim.lr_scheduler.LambdaLR`` once per epoch, so a schedule's state is one integer and a
resumed fit continues it exactly:

- ``constant``: 1;
- ``exponential``: ``decay ** e``;
- ``cosine``: ``(1 + cos(pi e / E)) / 2`` (Loshchilov & Hutter, SGDR, arXiv:1608.03983, one cycle, to 0);
- ``burda``: ``10 ** (-i / 7)`` during the ``3 ** i`` epochs of stage ``i = 0, 1, ...`` (Burda, Grosse &
  Salakhutdinov, arXiv:1509.00519, Sec. 5: 3,280 epochs in 8 stages with lr 1e-3 10^(-i/7)).
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

OPTIMIZERS = ("adam", "adamw", "sgd")


def _burda(e: int) -> float:
    stage, start = 0, 0
    while e >= start + 3**stage:
        start, stage = start + 3**stage, stage + 1
    return 10 ** (-stage / 7)


SCHEDULES: dict[str, Callable[[int, int, float], float]] = {
    "constant": lambda e, epochs, decay: 1.0,
    "exponential": lambda e, epochs, decay: decay**e,
    "cosine": lambda e, epochs, decay: (1 + math.cos(math.pi * e / epochs)) / 2,
    "burda": lambda e, epochs, decay: _burda(e),
}


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimiser ``name`` (a key of :data:`OPTIMIZERS`)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)


def make_schedule(optim: torch.optim.Optimizer, name: str, epochs: int,
                  decay: float) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with the factor of :data:`SCHEDULES` ``[name]``, stepped once per epoch."""
    factor = SCHEDULES[name]
    return torch.optim.lr_scheduler.LambdaLR(optim, lambda e: factor(e, epochs, decay))
