"""SGP-BAE: a Bayesian autoencoder whose latent codes get a sparse Gaussian-process prior over a covariate.

Generative story (after [1]; weights and inducing values are global latents, the code is amortized)::

    theta_enc, theta_dec ~ N(0, s^2 / fan_in) per weight, N(0, s^2) per bias     (PyroSample, ``bayesian_mlp``)
    u[:, l] ~ N(0, K_uu + jitter I)  per latent channel l                          u: (M, D_z), global
    z_n = encoder(x_n; theta_enc)                                                  z: (B, D_z), deterministic
    factor "z_prior": log N(z_n | K_nu K_uu^-1 u, (k_nn - q_nn + noise) I)         per datum, in the "data" plate
    x_n | z_n, theta_dec ~ p(x | decoder(z_n; theta_dec))                          x: (B, D_x); c: (B,) or (B, D_c)

The code's prior is :class:`aezoo.priors.SparseGPPrior` (fixed kernel and inducing grid; the FITC
conditional, as in ``gppvae``): codes of data with close covariates are pulled towards the same
GP function of the covariate. As in the Bayesian AE [2], the code is the encoder's output, so its
prior enters as a factor on the encoder weights (scaled by ``N / B`` under minibatches) and the
likelihood is a reconstruction likelihood. Every latent is global, so ``sghmc`` samples the
posterior over ``(theta, u)`` with minibatches, as in [1]; ``svi`` fits ``AutoNormal``. Without
``c`` every datum sits at covariate 0.

Simplifications against [1]: the kernel hyper-parameters and inducing inputs are fixed (not
sampled), and the code is a deterministic encoder output, not a local latent sampled by [1]'s
stochastic (implicit) encoder. :func:`aezoo.models.bayesian_ae.predict`, ``anomaly_score``,
``latent_codes`` and ``generate`` work unchanged on this model (``x`` does not depend on ``c``).

Guide: ``AutoNormal`` over every weight site and ``u`` (used by ``svi``; MCMC engines ignore it).

References:
    1. Fully Bayesian Autoencoders with Latent Sparse Gaussian Processes, Tran, Shahbaba, Mandt &
       Filippone, ICML 2023, arXiv:2302.04534.
    2. Model Selection for Bayesian Autoencoders, Tran, Rossi, Milios, Michiardi, Bonilla &
       Filippone, arXiv:2106.06245.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import Tensor

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist
from aezoo.models.bayesian_ae import bayesian_mlp, with_weight_guide
from aezoo.nn import MLP
from aezoo.priors import SparseGPPrior, check_sparse_gp_config

DEFAULT_ENGINE = ("sghmc", {})


COVARIATES = (Covariate("c", "continuous", required=True, doc="the GP input per datum, (B,), e.g. an angle"),)


@dataclass(frozen=True)
class Config:
    x_dim: int = 784
    z_dim: int = 4
    hidden_dims: tuple[int, ...] = (64,)
    activation: str = "tanh"
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS
    prior_scale: float = 1.0  # s: weight sd s / sqrt(fan_in), bias sd s
    gaussian_scale: float = 0.1  # observation sd under the Gaussian likelihood
    kernel: str = "periodic"  # one of aezoo.priors.KERNELS; periodic has period covariate_range[1] - [0]
    lengthscale: float = 1.0
    variance: float = 1.0
    num_inducing: int = 16  # per covariate dimension: M = num_inducing ** covariate_dim
    covariate_dim: int = 1  # D_c
    covariate_range: tuple[float, float] = (0.0, 2 * math.pi)
    jitter: float = 1e-4  # added to K_uu's diagonal
    noise: float = 0.1  # per-datum code variance added to the conditional variance

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        if self.prior_scale <= 0:
            raise ValueError(f"prior_scale must be positive, got {self.prior_scale}")
        check_sparse_gp_config(self)


class Model(PyroModule):
    """p(theta) p(u) exp(log p(z(x) | u, c)) p(x | z(x), theta); see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.prior = SparseGPPrior.from_config(cfg)
        self.encoder = bayesian_mlp(MLP(cfg.x_dim, cfg.hidden_dims, cfg.z_dim, cfg.activation), cfg.prior_scale)
        self.decoder = bayesian_mlp(MLP(cfg.z_dim, cfg.hidden_dims[::-1], cfg.x_dim, cfg.activation), cfg.prior_scale)

    def forward(self, x: Tensor, c: Tensor | None = None, num_data: int | None = None) -> None:
        tril = self.prior.u_tril()
        u = pyro.sample("u", self.prior.u_dist(tril))
        z = self.encoder(x)  # the weights are drawn here, outside the data plate
        out = self.decoder(z)
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.factor("z_prior", self.z_log_prior(z, u, c, tril))
            pyro.sample("x", self.x_dist(out), obs=x)

    def z_log_prior(self, z: Tensor, u: Tensor, c: Tensor | None, tril: Tensor | None = None) -> Tensor:
        """log p(z_n | u, c_n) ``(B,)`` of codes ``z`` ``(B, D_z)`` under the sparse-GP conditional."""
        tril = self.prior.u_tril() if tril is None else tril
        return self.prior.z_dist(u, self.prior.covariates(z, c), tril).log_prob(z)

    def x_dist(self, out: Tensor) -> dist.Distribution:
        """p(x | decoder output ``out`` ``(..., B, D_x)``); event shape ``(D_x,)``."""
        scale = out.new_tensor(self.cfg.gaussian_scale) if self.cfg.likelihood == "gaussian" else None
        return x_dist(self.cfg.likelihood, out, scale)

    def validate(self, x: Tensor, c: Tensor | None = None) -> None:
        check_x(x, self.cfg.x_dim, self.cfg.likelihood)
        self.prior.check_covariates(x, c)


def build(cfg: Config = Config()) -> Autoencoder:
    """SGP-BAE ``D_x -> hidden_dims -> D_z -> mirrored -> D_x`` with an ``AutoNormal`` guide (params made here)."""
    return with_weight_guide(Model(cfg), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, c)``: covariates uniform over the range ``(n,)`` (or ``(n, D_c)``), codes from the sparse-GP
    prior and ``x`` ``(n, D_x)`` from the likelihood under prior decoder weights (seeded)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        c, z = model.prior.example_codes(n)
        with torch.no_grad():
            return model.x_dist(model.decoder(z)).sample(), c
