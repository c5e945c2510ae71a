"""GPPVAE: a sparse Gaussian-process prior over a covariate couples the latents of different data.

Generative story, with ``M`` inducing points ``c_1..c_M`` on a fixed grid over the covariate range
and a fixed kernel ``k`` from :mod:`pyro.contrib.gp.kernels` (``periodic`` on an angle, or ``rbf``), the
prior :class:`aezoo.priors.SparseGPPrior` shared with ``sgp_bae``::

    u[:, l] ~ N(0, K_uu + jitter I)  per latent channel l       u: (M, D_z), global; K_uu = k(c_m, c_m')
    z_b | u ~ N(K_bu K_uu^-1 u, (k_bb - q_bb + noise) I)         z: (B, D_z); c: (B,) or (B, D_c)
    x_b | z_b ~ p(x | decoder(z_b))                              x: (B, D_x); as in ``vae``

with ``q_bb = K_bu K_uu^-1 K_ub`` (the FITC-style conditional: the ``z_b`` are independent given
``u``, so the ``"data"`` plate minibatches with ``num_data``). Integrating ``u`` out gives
``z[:, l] ~ N(0, Q_nn + diag(K_nn - Q_nn) + noise I)``, which is ``N(0, K_nn + noise I)`` up to
the jitter when the inducing points are the data's covariates. ``noise`` is an independent
per-datum latent variance (a white-noise kernel term): with ``noise`` near 0, data with equal
covariates would share one code and ``z`` could not carry anything but the covariate. Without
``c`` every datum sits at covariate 0 (the contract tests call ``(x, num_data=...)``).

Guide: q(u) q(z | x) = N(m, diag s^2) (free parameters, ``(M, D_z)``) times the amortized
diagonal Normal :class:`aezoo.guides.AmortizedNormal`, as in SVGP-VAE [2] without its GP posterior
over ``z``.

References:
    1. Gaussian Process Prior Variational Autoencoders, Casale, Dalca, Saglietti, Listgarten &
       Fusi, arXiv:1810.11738.
    2. Scalable Gaussian Process Variational Autoencoders, Jazbec, Ashman, Fortuin, Pearce, Mandt &
       Raetsch, arXiv:2010.13472.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.guides import AmortizedNormal
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist
from aezoo.nn import MLP
from aezoo.priors import KERNELS as KERNELS  # re-exported: the kernels a Config may name
from aezoo.priors import SparseGPPrior, check_sparse_gp_config

COVARIATES = (Covariate("c", "continuous", required=True, doc="the GP input per datum, (B,), e.g. an angle"),)


@dataclass(frozen=True)
class Config:
    x_dim: int = 784
    z_dim: int = 8
    hidden_dims: tuple[int, ...] = (256,)
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS
    kernel: str = "periodic"  # one of KERNELS; periodic has period covariate_range[1] - covariate_range[0]
    lengthscale: float = 1.0
    variance: float = 1.0
    num_inducing: int = 16  # per covariate dimension: M = num_inducing ** covariate_dim
    covariate_dim: int = 1  # D_c
    covariate_range: tuple[float, float] = (0.0, 2 * math.pi)
    jitter: float = 1e-4  # added to K_uu's diagonal
    noise: float = 0.1  # per-datum latent variance added to z's conditional variance

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        check_sparse_gp_config(self)


class Model(PyroModule):
    """p(u) p(z | u, c) p(x | z) with a fixed kernel and an MLP decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.prior = SparseGPPrior.from_config(cfg)
        self.decoder = MLP(cfg.z_dim, cfg.hidden_dims[::-1], cfg.x_dim, cfg.activation)
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(cfg.x_dim))

    def forward(self, x: Tensor, c: Tensor | None = None, num_data: int | None = None) -> None:
        tril = self.prior.u_tril()
        u = pyro.sample("u", self.prior.u_dist(tril))
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.prior.z_dist(u, self.prior.covariates(x, c), tril))
            pyro.sample("x", self.x_dist(z), obs=x)

    def x_dist(self, z: Tensor) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., B, D_z)``; event shape ``(D_x,)``."""
        scale = F.softplus(self.scale_raw) + 1e-3 if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, self.decoder(z), scale)

    def validate(self, x: Tensor, c: Tensor | None = None) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)
        self.prior.check_covariates(x, c)


class Guide(PyroModule):
    """q(u) = N(m, diag s^2) (``(M, D_z)`` parameters) times the amortized q(z | x)."""

    def __init__(self, cfg: Config, num_inducing: int) -> None:
        super().__init__()
        self.u_loc = nn.Parameter(torch.zeros(num_inducing, cfg.z_dim))
        self.u_scale_raw = nn.Parameter(torch.full((num_inducing, cfg.z_dim), -3.0))  # softplus: s ~ 0.05
        self.local = AmortizedNormal("z", MLP(cfg.x_dim, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation))

    def forward(self, x: Tensor, c: Tensor | None = None, num_data: int | None = None) -> Tensor:
        pyro.sample("u", dist.Normal(self.u_loc, F.softplus(self.u_scale_raw) + 1e-5).to_event(2))
        return self.local(x, num_data=num_data)


def build(cfg: Config = Config()) -> Autoencoder:
    """GPPVAE with the encoder ``D_x -> hidden_dims -> 2 D_z``, the mirrored decoder and free q(u)."""
    model = Model(cfg)
    return Autoencoder(model, Guide(cfg, len(model.prior.inducing)), cfg, name=__name__.rsplit(".", 1)[-1],
                       covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, c)``: covariates uniform over the range ``(n,)`` (or ``(n, D_c)``), codes from the sparse-GP
    prior and ``x`` ``(n, D_x)`` from a randomly initialised decoder (seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        c, z = model.prior.example_codes(n)
        with torch.no_grad():
            return model.x_dist(z).sample(), c
