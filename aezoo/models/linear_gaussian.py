"""Linear-Gaussian model (probabilistic PCA) with an amortized linear guide: exactly solvable.

Generative story, for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                          z: (B, D_z)
    x_b | z_b ~ N(W z_b + mu, sigma^2 I_{D_x})   x: (B, D_x); W: (D_x, D_z)

Guide: q(z_b | x_b) = N(A x_b + c, L L^T), which contains the exact posterior.

Closed forms [1]: ``log p(x) = log N(x; mu, W W^T + sigma^2 I)`` and
``p(z | x) = N(M^-1 W^T (x - mu), sigma^2 M^-1)`` with ``M = W^T W + sigma^2 I``. A linear VAE
trained to convergence reaches the PPCA maximum likelihood [2]. With ``sigma`` fixed
(``Config.sigma``), latent units beyond the covariance eigenvalues above ``sigma^2`` collapse.

References:
    1. Probabilistic Principal Component Analysis, Tipping & Bishop, JRSS-B 1999.
    2. Don't Blame the ELBO! A Linear VAE Perspective on Posterior Collapse, Lucas, Tucker,
       Grosse & Norouzi, arXiv:1911.02469.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.checks import check_sizes, positive
from aezoo.core import Autoencoder
from aezoo.guides import AmortizedLinearNormal
from aezoo.likelihoods import check_x


@dataclass(frozen=True)
class Config:
    x_dim: int = 10
    z_dim: int = 2
    sigma: float | None = None  # fixed noise scale; None learns it

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.sigma is not None:
            positive("sigma", self.sigma)


class Model(PyroModule):
    """p(z) p(x | z) = N(0, I) N(W z + mu, sigma^2 I); see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.W = nn.Parameter(0.1 * torch.randn(cfg.x_dim, cfg.z_dim))
        self.mu = nn.Parameter(torch.zeros(cfg.x_dim))
        self.sigma_raw = nn.Parameter(torch.zeros(()), requires_grad=cfg.sigma is None)

    @property
    def sigma(self) -> Tensor:
        """Noise standard deviation, a scalar tensor."""
        if self.cfg.sigma is not None:
            return self.sigma_raw.new_tensor(self.cfg.sigma)
        return F.softplus(self.sigma_raw) + 1e-4

    def forward(self, x: Tensor, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", dist.Normal(x.new_zeros(self.cfg.z_dim), 1.0).to_event(1))
            pyro.sample("x", self.x_dist(z), obs=x)

    def x_dist(self, z: Tensor) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., B, D_z)``; event shape ``(D_x,)``."""
        return dist.Normal(z @ self.W.T + self.mu, self.sigma).to_event(1)

    def marginal_covariance(self) -> Tensor:
        """``C = W W^T + sigma^2 I``, ``(D_x, D_x)``."""
        eye = torch.eye(self.cfg.x_dim, dtype=self.W.dtype, device=self.W.device)
        return self.W @ self.W.T + self.sigma**2 * eye

    def exact_log_marginal(self, x: Tensor) -> Tensor:
        """Exact ``log p(x_b)`` per datum, ``(B,)`` nats, for ``x`` ``(B, D_x)``."""
        return dist.MultivariateNormal(self.mu, self.marginal_covariance()).log_prob(x)

    def posterior_map(self) -> tuple[Tensor, Tensor]:
        """``(M^-1 W^T, sigma^2 M^-1)``: the posterior mean is the first times ``x - mu``."""
        W, s2 = self.W, self.sigma**2
        M = W.T @ W + s2 * torch.eye(self.cfg.z_dim, dtype=W.dtype, device=W.device)
        return torch.linalg.solve(M, W.T), s2 * torch.linalg.inv(M)

    def exact_posterior(self, x: Tensor) -> dist.MultivariateNormal:
        """Exact p(z_b | x_b) for ``x`` ``(B, D_x)``: batch shape ``(B,)``, event shape ``(D_z,)``."""
        weight, cov = self.posterior_map()
        return dist.MultivariateNormal((x - self.mu) @ weight.T, covariance_matrix=cov)

    def validate(self, x: Tensor) -> None:
        check_x(x, self.cfg.x_dim, "gaussian")


def build(cfg: Config = Config()) -> Autoencoder:
    """A PPCA model with the linear full-covariance guide."""
    guide = AmortizedLinearNormal("z", cfg.x_dim, cfg.z_dim)
    return Autoencoder(Model(cfg), guide, cfg, name=__name__.rsplit(".", 1)[-1])


@torch.no_grad()
def set_exact_guide(ae: Autoencoder) -> None:
    """Set the guide of a ``linear_gaussian`` autoencoder to its model's exact posterior."""
    weight, cov = ae.model.posterior_map()
    ae.guide.set_(weight, -weight @ ae.model.mu, torch.linalg.cholesky(cov))


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor]:
    """``n`` draws ``(n, D_x)`` from a seeded ground-truth PPCA with noise scale ``cfg.sigma or 0.5``."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(cfg.x_dim, cfg.z_dim, generator=g)
    mu = torch.randn(cfg.x_dim, generator=g)
    z = torch.randn(n, cfg.z_dim, generator=g)
    return (z @ W.T + mu + (cfg.sigma or 0.5) * torch.randn(n, cfg.x_dim, generator=g),)
