"""Sampling from a regularized autoencoder through the score its reconstruction estimates.

Alain & Bengio [1] show that the reconstruction ``r(x)`` of a denoising autoencoder trained with
Gaussian corruption of scale ``sigma`` and the squared error satisfies
``(r(x) - x) / sigma^2 -> grad log p(x)`` as ``sigma -> 0`` (for finite ``sigma``: the score of
the data density convolved with the noise). :func:`sample` runs ``C`` chains on that estimated
score, in parallel:

* ``method="langevin"``: unadjusted Langevin dynamics ``x <- x + eps s(x) + sqrt(2 eps) xi``;
* ``method="mh"``: [1]'s approximate Metropolis-Hastings: a Gaussian random-walk proposal
  ``x* = x + sqrt(2 eps) xi`` accepted with probability ``min(1, exp(-(E(x*) - E(x))))``, the energy
  difference estimated by the trapezoid rule on the line integral of the score,
  ``E(x) - E(x*) ~ (s(x) + s(x*)) . (x* - x) / 2`` (exact for a Gaussian, whose score is linear).

The draws ``(C, S, D_x)`` come back with ArviZ's convergence summary (split R-hat, bulk/tail ESS,
:func:`aezoo.diagnostics.az.mcmc_summary`). :func:`manifold_data` makes the 2-D experiment's
data (a noisy circle), :func:`manifold_distance` the distance of points to it, and
:func:`score_field` the quiver plot of the estimated score on a grid.

References:
    1. What Regularized Auto-Encoders Learn from the Data Generating Distribution, Alain & Bengio,
       arXiv:1211.4246.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from matplotlib.figure import Figure
from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.diagnostics.az import mcmc_summary

METHODS = ("langevin", "mh")


@torch.no_grad()
def reconstruction(ae: Autoencoder, x: Tensor) -> Tensor:
    """``r(x) = E[x | decoder(encoder(x))]`` ``(B, D_x)`` of the clean input (probabilities for Bernoulli)."""
    return ae.model.x_dist(ae.guide.encode(x)).mean


def estimated_score(ae: Autoencoder, sigma: float | None = None) -> Callable[[Tensor], Tensor]:
    """``x -> (r(x) - x) / sigma^2`` ``(B, D_x) -> (B, D_x)``; ``sigma`` defaults to the config's ``noise_scale``.

    Raises:
        ValueError: no ``sigma`` and no ``noise_scale`` in ``ae.config``, a non-positive ``sigma``, or a
            guide without ``encode(x) -> z``.
    """
    sigma = getattr(ae.config, "noise_scale", None) if sigma is None else sigma
    if sigma is None or not sigma > 0:
        raise ValueError(f"the score estimate needs a corruption scale sigma > 0; {ae.name} has no noise_scale, pass "
                         f"sigma (got {sigma!r})")
    if not hasattr(ae.guide, "encode"):
        raise ValueError(f"{ae.name} has no deterministic encoder (guide.encode); the score estimate needs r(x)")
    return lambda x: (reconstruction(ae, x) - x) / sigma ** 2


def sample(ae: Autoencoder | Callable[[Tensor], Tensor], x0: Tensor, num_steps: int, step_size: float,
           sigma: float | None = None, method: str = "langevin", warmup: int = 0, thin: int = 1,
           seed: int = 0) -> tuple[Tensor, dict]:
    """Run ``C`` chains on the estimated score of ``ae`` (or on ``ae`` itself when it is a score function).

    Args:
        ae: a trained autoencoder with a deterministic encoder, or a callable ``(C, D_x) -> (C, D_x)`` score.
        x0: ``(C, D_x)`` starting points, one per chain (C >= 2 for R-hat).
        num_steps: steps after ``warmup``; ``num_steps // thin`` draws are kept.
        step_size: ``eps`` (> 0).
        sigma: the corruption scale of the estimate (default: ``ae.config.noise_scale``).
        method: ``"langevin"`` or ``"mh"`` (module docstring).
        warmup: steps discarded first. thin: keep every ``thin``-th step.
        seed: the chains' noise comes from a ``torch.Generator`` seeded with it.

    Returns:
        ``draws`` ``(C, S, D_x)`` and a summary: :func:`mcmc_summary`'s fields (``r_hat_max``, ``ess_bulk_min``,
        ...) for the site ``"x"``, plus ``acceptance`` ``(C,)`` (MH; 1 for Langevin) as a list.

    Raises:
        ValueError: a bad ``x0`` shape, step size, step counts or method.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    if x0.dim() != 2:
        raise ValueError(f"x0 must be (C, D_x) starting points, got shape {tuple(x0.shape)}")
    if not (step_size > 0 and math.isfinite(step_size)):
        raise ValueError(f"step_size must be positive and finite, got {step_size}")
    if num_steps < thin or thin < 1 or warmup < 0:
        raise ValueError(f"need num_steps >= thin >= 1 and warmup >= 0, got {num_steps}, {thin}, {warmup}")
    score = estimated_score(ae, sigma) if isinstance(ae, Autoencoder) else ae
    gen = torch.Generator(device=x0.device).manual_seed(seed)
    x, s = x0.clone(), score(x0)
    accepted = torch.zeros(len(x0), device=x0.device)
    draws = []
    for step in range(warmup + num_steps):
        noise = math.sqrt(2 * step_size) * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        if method == "langevin":
            x = x + step_size * s + noise
            s = score(x)
            accepted += 1
        else:
            proposal = x + noise
            s_new = score(proposal)
            log_ratio = 0.5 * ((s + s_new) * (proposal - x)).sum(-1)
            u = torch.rand(len(x), generator=gen, device=x.device, dtype=x.dtype)
            take = u.log() < log_ratio
            x = torch.where(take[:, None], proposal, x)
            s = torch.where(take[:, None], s_new, s)
            accepted += take
        if step >= warmup and (step - warmup + 1) % thin == 0:
            draws.append(x)
    out = torch.stack(draws, 1)
    summary = mcmc_summary({"x": out.detach().cpu()}, per_coordinate=False)
    summary["acceptance"] = (accepted / (warmup + num_steps)).tolist()
    return out, summary


def manifold_data(n: int, radius: float = 1.0, noise: float = 0.05, seed: int = 0) -> Tensor:
    """``(n, 2)`` points on the circle of ``radius`` plus isotropic Gaussian noise of scale ``noise`` (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    angle = 2 * math.pi * torch.rand(n, generator=gen)
    circle = radius * torch.stack([angle.cos(), angle.sin()], -1)
    return circle + noise * torch.randn(n, 2, generator=gen)


def manifold_distance(x: Tensor, radius: float = 1.0) -> Tensor:
    """``(...,)`` distance of points ``x`` ``(..., 2)`` to the circle of ``radius`` centred at 0."""
    return (x.norm(dim=-1) - radius).abs()


def score_field(score: Callable[[Tensor], Tensor], path: str | Path, limits: tuple[float, float] = (-2.0, 2.0),
                points: int = 25, data: Tensor | None = None, samples: Tensor | None = None,
                title: str = "estimated score (r(x) - x) / sigma^2") -> Path:
    """Quiver plot of a 2-D ``score`` on a ``points x points`` grid over ``limits``^2, with optional
    ``data`` ``(N, 2)`` and chain ``samples`` ``(M, 2)`` scattered on top; saved as PNG to ``path``."""
    grid = torch.linspace(*limits, points)
    xy = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).reshape(-1, 2)
    v = score(xy).detach().cpu()
    fig = Figure(figsize=(5.5, 5.5))
    ax = fig.subplots()
    ax.quiver(xy[:, 0], xy[:, 1], v[:, 0], v[:, 1], v.norm(dim=-1), cmap="viridis", angles="xy")
    if data is not None:
        ax.scatter(*data.detach().cpu().T, s=3, c="grey", alpha=0.5, label="training data")
    if samples is not None:
        ax.scatter(*samples.detach().cpu().T, s=3, c="crimson", alpha=0.6, label="chain samples")
    if data is not None or samples is not None:
        ax.legend(loc="upper right")
    ax.set(xlim=limits, ylim=limits, aspect="equal", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


__all__ = ["estimated_score", "manifold_data", "manifold_distance", "reconstruction", "sample", "score_field"]
