"""Fit per-datum guide parameters with the networks frozen: test-time inference for non-amortized guides.

A non-amortized guide (PV-RNN's adaptive vectors, ARCHITECTURE "Guides that are not amortized") has no
posterior for data it was not trained on. :func:`fit_local` optimises fresh per-datum tensors of such a
guide on new data by Adam on Pyro's ``Trace_ELBO``, gradients taken with respect to those tensors only,
so the model's and the guide's networks stay as trained (the "error regression" of Ahmadi & Tani,
arXiv:1811.01339, section 2.4).
"""

from __future__ import annotations

from typing import Callable

import pyro
import torch
from torch import Tensor


def fit_local(model: Callable, guide: Callable, params: list[Tensor], data: tuple, steps: int, lr: float,
              num_particles: int = 1, scale: float = 1.0) -> Tensor:
    """Adam on ``params`` for ``steps`` steps of the negative ELBO of ``model`` / ``guide`` on ``data``.

    Args:
        model, guide: called as ``(*data)``; ``guide`` reads ``params`` (leaf tensors with ``requires_grad``).
        params: the per-datum tensors to fit, changed in place; nothing else receives a gradient.
        data: the model's arguments, ``(x, *covariates)``; ``x`` ``(B, ...)``.
        steps, lr: Adam's steps and learning rate; num_particles: vectorised draws per step.
        scale: the losses are divided by it (e.g. ``B``: nats per datum).

    Returns:
        ``(steps,)`` the negative ELBO of each step, divided by ``scale``.

    Raises:
        ValueError: non-positive ``steps``, ``lr`` or ``num_particles``, or no ``params``.
    """
    if not (steps >= 1 and lr > 0 and num_particles >= 1 and params):
        raise ValueError(f"fit_local needs steps >= 1, lr > 0, num_particles >= 1 and some params; got {steps}, "
                         f"{lr}, {num_particles}, {len(params)} params")
    elbo = pyro.infer.Trace_ELBO(num_particles=num_particles, vectorize_particles=True, max_plate_nesting=1)
    optimizer = torch.optim.Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss = elbo.differentiable_loss(model, guide, *data) / scale
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads):
            p.grad = g
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses)
