"""GPPVAE: a sparse Gaussian-process prior over a covariate couples the latents of different data.

Generative story, with ``M`` inducing points ``c_1..c_M`` (initialised on a grid over the covariate
range) and a kernel ``k`` from :mod:`pyro.contrib.gp.kernels` (``periodic`` on an angle, or ``rbf``), the
prior :class:`aezoo.priors.SparseGPPrior` shared with ``sgp_bae``. Lengthscale, variance and the
inducing inputs are learned by default (positive ``PyroParam`` point estimates and free inputs),
fixed with ``learn_kernel=False``; with ``kernel_prior > 0`` lengthscale and variance are global
latents with LogNormal priors and MAP (Delta) guide sites (:class:`aezoo.sequence.HyperMAP`)::

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

Guide (``guide="svgp"``, the SVGP-VAE guide of [2]): an encoder maps each ``x_b`` to pseudo-observations
``y_b`` ``(B, D_z)`` with variances ``s_b^2``; q(u, z) is the exact posterior of the prior given them,
``p(u, z | y) = p(u | y) prod_b p(z_b | u, y_b)`` with ``y_b | z_b ~ N(z_b, s_b^2)``: Titsias' closed
form [2, 3] for q(u) (:func:`svgp_posterior`) and, per datum, the conditional times its pseudo-likelihood,
so that marginally q(z_b) is the sparse-GP posterior at ``c_b`` given the batch's pseudo-observations.
Against [2]: the model's per-datum ``noise`` adds ``d_b`` to each pseudo-observation's variance in q(u)
and lets q(z_b) keep a datum-specific part; the objective is the plain ELBO of this model. The batch's
pseudo-observations count once (``svgp_batch_scale=False``, so the per-datum bound does not move with
``num_data``) or ``N / B`` times as in [2]. Option ``guide="mean_field"``:
q(u) = N(m, diag s^2) (free parameters) times the amortized diagonal Normal
:class:`aezoo.guides.AmortizedNormal`.

References:
    1. Gaussian Process Prior Variational Autoencoders, Casale, Dalca, Saglietti, Listgarten &
       Fusi, arXiv:1810.11738.
    2. Scalable Gaussian Process Variational Autoencoders, Jazbec, Ashman, Fortuin, Pearce, Mandt &
       Raetsch, arXiv:2010.13472.
    3. Variational Learning of Inducing Variables in Sparse Gaussian Processes, Titsias, AISTATS 2009.
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
from aezoo.guides.normal import loc_scale
from aezoo.likelihoods import LIKELIHOODS, check_x, x_dist
from aezoo.nn import MLP
from aezoo.priors import KERNELS as KERNELS  # re-exported: the kernels a Config may name
from aezoo.priors import SparseGPPrior, check_sparse_gp_config
from aezoo.sequence import TimeMajorMVN, with_hyper_guide

GUIDES = ("svgp", "mean_field")

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
    learn_kernel: bool = True  # lengthscale, variance and inducing inputs trained (from the values above)
    kernel_prior: float = 0.0  # > 0: LogNormal(log value, kernel_prior) priors on lengthscale and variance (MAP)
    guide: str = "svgp"  # one of GUIDES
    svgp_batch_scale: bool = False  # True: q(u) from the batch's pseudo-observations weighted N / B, as [2]

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.guide not in GUIDES:
            raise ValueError(f"unknown guide {self.guide!r}; choose one of {GUIDES}")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")
        check_sparse_gp_config(self)


class Model(PyroModule):
    """p(u) p(z | u, c) p(x | z) with a sparse-GP prior and an MLP decoder; see the module docstring."""

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


class MeanFieldGuide(PyroModule):
    """q(u) = N(m, diag s^2) (``(M, D_z)`` parameters) times the amortized q(z | x)."""

    def __init__(self, cfg: Config, num_inducing: int) -> None:
        super().__init__()
        self.u_loc = nn.Parameter(torch.zeros(num_inducing, cfg.z_dim))
        self.u_scale_raw = nn.Parameter(torch.full((num_inducing, cfg.z_dim), -3.0))  # softplus: s ~ 0.05
        self.local = AmortizedNormal("z", MLP(cfg.x_dim, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation))

    def forward(self, x: Tensor, c: Tensor | None = None, num_data: int | None = None) -> Tensor:
        pyro.sample("u", dist.Normal(self.u_loc, F.softplus(self.u_scale_raw) + 1e-5).to_event(2))
        return self.local(x, num_data=num_data)


def svgp_posterior(prior: SparseGPPrior, c: Tensor, y: Tensor, s2: Tensor, weight: float = 1.0):
    """Titsias' q(u) given pseudo-observations, and the per-datum q(z_b | u) [2, 3].

    With ``A = K_uu^-1 K_ub`` and ``d_b`` the prior's conditional variance (:meth:`SparseGPPrior.projection`),
    ``y_bl | u ~ N(A_b^T u_l, r_bl)``, ``r = d + s2``, so per channel ``l``::

        Sigma_l = K_uu + w K_ub diag(1 / r_l) K_bu
        q(u_l) = N(w K_uu Sigma_l^-1 K_ub (y_l / r_l), K_uu Sigma_l^-1 K_uu)

    (computed whitened by ``L = chol(K_uu + jitter I)``), the exact posterior; ``w`` repeats every
    pseudo-observation (``N / B`` in [2]). Given ``u``, ``z_bl`` is ``N(A_b^T u_l, d_b)`` times
    ``N(y_bl; z_bl, s2_bl)``.

    Args:
        prior: the model's sparse-GP prior.
        c: ``(B, D_c)`` covariates; y, s2: ``(B, D_z)`` pseudo-observations and their variances (> 0).
        weight: ``w > 0``.

    Returns:
        ``(q_u, q_z)``: q(u) with event shape ``(M, D_z)``, and ``q_z(u)`` mapping ``u`` ``(..., M, D_z)``
        (or ``(..., 1, M, D_z)`` under particle plates) to q(z | u) with batch ``(..., B)``, event ``(D_z,)``.
    """
    tril = prior.u_tril()
    A, d = prior.projection(c, tril)  # (M, B), (B,)
    r = s2 + d.unsqueeze(-1)  # (B, D)
    V = tril.mT @ A  # L^-1 K_ub = L^T A: (M, B)
    eye = torch.eye(len(tril), dtype=tril.dtype, device=tril.device)
    prec = eye + weight * (V.unsqueeze(0) / r.T.unsqueeze(1)) @ V.T  # L^-1 Sigma_l L^-T: (D, M, M)
    L_prec = torch.linalg.cholesky(prec)
    b = weight * (V @ (y / r)).T.unsqueeze(-1)  # (D, M, 1)
    loc = tril @ torch.cholesky_solve(b, L_prec).squeeze(-1).T  # (M, D)
    W = tril @ torch.cholesky_inverse(L_prec) @ tril.T  # K_uu Sigma^-1 K_uu: (D, M, M)
    q_u = TimeMajorMVN(dist.MultivariateNormal(loc.T, scale_tril=torch.linalg.cholesky((W + W.mT) / 2)))

    def q_z(u: Tensor) -> dist.Distribution:
        if u.dim() > 2:  # under particle plates u is (..., 1, M, D_z)
            u = u.squeeze(-3)
        mean = A.T @ u  # (..., B, D)
        dd = d.unsqueeze(-1)
        return dist.Normal((s2 * mean + dd * y) / r, (dd * s2 / r).sqrt()).to_event(1)

    return q_u, q_z


class SVGPGuide(PyroModule):
    """The SVGP-VAE guide [2]: pseudo-observations ``(y, s^2)`` from an encoder, q(u, z) in closed form.

    Args:
        prior: the model's :class:`~aezoo.priors.SparseGPPrior` (held outside the module tree, so its
            parameters keep their names in the model).
        encoder: ``(B, D_x) -> (B, 2 D_z)``: pseudo-observation means and pre-softplus standard deviations.
        batch_scale: weight the batch's pseudo-observations by ``N / B`` (as [2]); the guide then depends
            on ``num_data``.
    """

    def __init__(self, prior: SparseGPPrior, encoder: nn.Module, batch_scale: bool = False) -> None:
        super().__init__()
        self.encoder, self.batch_scale, self._prior = encoder, batch_scale, (prior,)

    def posterior(self, x: Tensor, c: Tensor | None, num_data: int | None = None):
        """``(q_u, q_z)`` of :func:`svgp_posterior` for the batch ``x`` ``(B, D_x)``, ``c`` ``(B,)``."""
        prior = self._prior[0]
        y, sd = loc_scale(self.encoder(x))
        weight = (num_data or len(x)) / len(x) if self.batch_scale else 1.0
        return svgp_posterior(prior, prior.covariates(x, c), y, sd**2, weight)

    def forward(self, x: Tensor, c: Tensor | None = None, num_data: int | None = None) -> Tensor:
        q_u, q_z = self.posterior(x, c, num_data)
        u = pyro.sample("u", q_u)
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample("z", q_z(u))


def build(cfg: Config = Config()) -> Autoencoder:
    """GPPVAE with the encoder ``D_x -> hidden_dims -> 2 D_z``, the mirrored decoder and the ``cfg.guide``."""
    model = Model(cfg)
    if cfg.guide == "svgp":
        encoder = MLP(cfg.x_dim, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation)
        guide = SVGPGuide(model.prior, encoder, cfg.svgp_batch_scale)
    else:
        guide = MeanFieldGuide(cfg, len(model.prior.inducing))
    return Autoencoder(model, with_hyper_guide(model, guide), cfg, name=__name__.rsplit(".", 1)[-1],
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
