"""Sigma points of a diagonal Gaussian (the unscented transform) and a guide that proposes them.

For q = N(mu, diag sigma^2) in ``D`` dimensions the ``S = 2 D + 1`` sigma points and weights of
Julier & Uhlmann [1] with spread ``kappa >= 0`` are::

    z_0 = mu                                  w_0 = kappa / (D + kappa)
    z_j = mu + sqrt(D + kappa) sigma_j e_j    w_j = 1 / (2 (D + kappa))        j = 1..D
    z_{D+j} = mu - sqrt(D + kappa) sigma_j e_j    w_{D+j} = w_j

Their weighted mean and covariance are mu and diag sigma^2 exactly, so the weighted moments of
``f(z_i)`` are exact for an affine ``f`` (A mu + b and A Sigma A^T) and second-order accurate
otherwise (the Unscented Autoencoder [2] uses them in place of random reparameterised draws).

References:
    1. A New Extension of the Kalman Filter to Nonlinear Systems, Julier & Uhlmann, SPIE 1997.
    2. Unscented Autoencoder, Janjoš, Rosenbaum, Dolgov & Zöllner, arXiv:2306.05256.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.guides.normal import loc_scale


def sigma_points(loc: Tensor, scale: Tensor, kappa: float = 1.0) -> tuple[Tensor, Tensor]:
    """The ``S = 2 D + 1`` sigma points of N(loc, diag scale^2) and their weights.

    Args:
        loc, scale: ``(..., D)`` mean and standard deviation.
        kappa: the spread (>= 0); ``kappa = 0`` gives the centre point weight 0.

    Returns:
        ``points`` ``(S, ..., D)`` (centre, then the ``+`` points, then the ``-`` points) and ``weights`` ``(S,)``
        summing to 1.

    Raises:
        ValueError: negative ``kappa`` or ``loc`` and ``scale`` of different shapes.
    """
    if not kappa >= 0:
        raise ValueError(f"the unscented spread kappa must be non-negative (weights >= 0), got {kappa}")
    if loc.shape != scale.shape:
        raise ValueError(f"loc and scale need one shape, got {tuple(loc.shape)} and {tuple(scale.shape)}")
    d = loc.shape[-1]
    eye = torch.eye(d, dtype=loc.dtype, device=loc.device)
    offsets = math.sqrt(d + kappa) * scale.unsqueeze(-2) * eye  # (..., D, D): row j is sqrt(D + kappa) sigma_j e_j
    offsets = offsets.movedim(-2, 0)  # (D, ..., D)
    points = torch.cat([loc.unsqueeze(0), loc + offsets, loc - offsets])
    weights = loc.new_full((2 * d + 1,), 1 / (2 * (d + kappa)))
    weights[0] = kappa / (d + kappa)
    return points, weights


def unscented_moments(values: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Weighted mean ``(..., E)`` and covariance ``(..., E, E)`` of mapped sigma points ``values`` ``(S, ..., E)``."""
    w = weights.reshape(-1, *[1] * (values.dim() - 1))
    mean = (w * values).sum(0)
    centred = values - mean
    cov = (w.unsqueeze(-1) * centred.unsqueeze(-1) * centred.unsqueeze(-2)).sum(0)
    return mean, cov


class SigmaPointGuide(PyroModule):
    """Propose, for each datum, one sigma point of q(z_b | x_b) = N(mu(x_b), diag sigma(x_b)^2).

    The site is a point mass at sigma point ``i_b``, with ``i_b`` drawn with the unscented weights
    (torch's RNG), so ``E_i[log p(x | z_i)]`` is the sigma-point-weighted expected log-likelihood
    ``sum_i w_i log p(x | z_i)`` of [2]; :meth:`points` gives all of them for an exact evaluation.
    Being a point mass (``log q = 0``), it is no density over z: importance-weighted engines do not
    apply, and the Gaussian itself (:meth:`encode`) is what a Fréchet penalty regularises.

    Args:
        site: the latent site, e.g. ``"z"``.
        encoder: network ``(..., D_x) -> (..., 2 D_z)`` (mean, pre-softplus standard deviation).
        kappa: the sigma-point spread (>= 0).
    """

    def __init__(self, site: str, encoder: nn.Module, kappa: float = 1.0) -> None:
        super().__init__()
        if not kappa >= 0:
            raise ValueError(f"the unscented spread kappa must be non-negative (weights >= 0), got {kappa}")
        self.site = site
        self.encoder = encoder
        self.kappa = kappa

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of q(z | x), each ``(B, D_z)``."""
        return loc_scale(self.encoder(x))

    def points(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """All sigma points ``(S, B, D_z)`` of q(z | x) and their weights ``(S,)``."""
        return sigma_points(*self.encode(x), self.kappa)

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            points, weights = self.points(x)
            index = torch.multinomial(weights, len(x), replacement=True)  # (B,)
            z = points[index, torch.arange(len(x), device=x.device)]
            return pyro.sample(self.site, dist.Delta(z).to_event(1))
