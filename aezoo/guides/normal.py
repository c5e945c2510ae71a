"""Amortized Gaussian guides q(z | x) for one local latent site inside the ``"data"`` plate."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn


def loc_scale(out: Tensor, min_scale: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Split a network output ``(..., 2 D)`` into the mean and a softplus standard deviation, each ``(..., D)``."""
    loc, raw = out.chunk(2, dim=-1)
    return loc, F.softplus(raw) + min_scale


def diagonal_normal(out: Tensor, min_scale: float = 1e-5) -> dist.Distribution:
    """The diagonal Normal with event shape ``(D,)`` whose parameters a network output ``(..., 2 D)`` holds."""
    return dist.Normal(*loc_scale(out, min_scale)).to_event(1)


class AmortizedNormal(PyroModule):
    """q(site_b | x_b) = N(mu(x_b), diag sigma(x_b)^2): a diagonal Normal from an encoder network.

    The encoder maps ``x`` ``(B, D_x)`` to ``(B, 2 * D_z)``: the mean and the pre-softplus
    standard deviation. The guide is fully reparameterised ("Auto-Encoding Variational Bayes",
    Kingma & Welling, arXiv:1312.6114).

    Args:
        site: the latent site it proposes, e.g. ``"z"``.
        encoder: network ``(..., D_x) -> (..., 2 * D_z)``.
        min_scale: floor added to the standard deviation for numerical stability.
    """

    def __init__(self, site: str, encoder: nn.Module, min_scale: float = 1e-5) -> None:
        super().__init__()
        self.site = site
        self.encoder = encoder
        self.min_scale = min_scale

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation, each ``(B, D_z)``."""
        return loc_scale(self.encoder(x), self.min_scale)

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            loc, scale = self.encode(x)
            return pyro.sample(self.site, dist.Normal(loc, scale).to_event(1))


class AmortizedLinearNormal(PyroModule):
    """q(site_b | x_b) = N(A x_b + b, L L^T): linear mean, one full covariance shared by all data.

    This family contains the exact posterior of a linear-Gaussian model (probabilistic PCA), so
    with the right parameters every importance weight equals p(x).

    Args:
        site: the latent site it proposes.
        x_dim: ``D_x``.
        z_dim: ``D_z``.
    """

    def __init__(self, site: str, x_dim: int, z_dim: int) -> None:
        super().__init__()
        self.site = site
        self.linear = nn.Linear(x_dim, z_dim)
        self.scale_tril_raw = nn.Parameter(torch.zeros(z_dim, z_dim))

    @property
    def scale_tril(self) -> Tensor:
        """``(D_z, D_z)`` lower-triangular Cholesky factor with a positive (softplus) diagonal."""
        raw = self.scale_tril_raw
        return raw.tril(-1) + torch.diag_embed(F.softplus(raw.diagonal()) + 1e-6)

    def forward(self, x: Tensor, *covariates: Tensor, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample(self.site, dist.MultivariateNormal(self.linear(x), scale_tril=self.scale_tril))

    @torch.no_grad()
    def set_(self, weight: Tensor, bias: Tensor, scale_tril: Tensor) -> None:
        """Set the guide to N(weight x + bias, scale_tril scale_tril^T) exactly.

        Args:
            weight: ``(D_z, D_x)``; bias: ``(D_z,)``; scale_tril: ``(D_z, D_z)`` lower triangular with
                a diagonal above 1e-6.
        """
        self.linear.weight.copy_(weight)
        self.linear.bias.copy_(bias)
        d = scale_tril.diagonal() - 1e-6
        raw = scale_tril.tril(-1) + torch.diag_embed(d + torch.log(-torch.expm1(-d)))  # softplus^-1
        self.scale_tril_raw.copy_(raw)
