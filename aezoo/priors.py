"""Latent priors shared by several models: the sparse-GP prior over a covariate.

:class:`SparseGPPrior` puts ``M`` inducing points ``c_1..c_M`` on a grid over the covariate range
and uses a kernel ``k`` from :mod:`pyro.contrib.gp.kernels` (``periodic`` on an angle, or ``rbf``);
kernel lengthscale, variance and the inducing inputs are fixed unless ``learn`` (then positive
``PyroParam`` hyper-parameters and free inducing inputs; with ``prior_scale > 0`` LogNormal
``PyroSample`` hyper-parameters, see :func:`aezoo.sequence.set_hyper`)::

    u[:, l] ~ N(0, K_uu + jitter I)  per latent channel l       u: (M, D_z); K_uu = k(c_m, c_m')
    z_b | u ~ N(K_bu K_uu^-1 u, (k_bb - q_bb + noise) I)         z: (B, D_z); c: (B, D_c)

with ``q_bb = K_bu K_uu^-1 K_ub``: the FITC-style conditional, under which the ``z_b`` are
independent given ``u`` (so a ``"data"`` plate over them minibatches). ``noise`` is a per-datum
latent variance (a white-noise kernel term). Used by ``gppvae`` (``z`` a latent sample site) and
``sgp_bae`` (``z`` an encoder output whose conditional log-density enters as a factor).

References:
    1. A Unifying View of Sparse Approximate Gaussian Process Regression, Quinonero-Candela &
       Rasmussen, JMLR 2005 (FITC).
    2. Gaussian Process Prior Variational Autoencoders, Casale et al., arXiv:1810.11738.
"""

from __future__ import annotations

import math

import pyro.distributions as dist
import torch
from pyro.contrib.gp import kernels
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.sequence import HYPERS, TimeMajorMVN, set_hyper

KERNELS = ("periodic", "rbf")


def check_sparse_gp_config(cfg) -> None:
    """Validate the sparse-GP fields of a model ``Config`` (``kernel``, ``lengthscale``, ... ``noise``)."""
    if cfg.kernel not in KERNELS:
        raise ValueError(f"unknown kernel {cfg.kernel!r}; choose one of {KERNELS}")
    if min(cfg.lengthscale, cfg.variance, cfg.jitter, cfg.noise, cfg.num_inducing) <= 0:
        raise ValueError("lengthscale, variance, jitter, noise and num_inducing must be positive")
    if not getattr(cfg, "kernel_prior", 0.0) >= 0:
        raise ValueError(f"kernel_prior (the hyper-parameters' LogNormal scale) must be >= 0, got {cfg.kernel_prior}")
    if not cfg.covariate_range[1] > cfg.covariate_range[0]:
        raise ValueError(f"covariate_range must be increasing, got {cfg.covariate_range}")


class SparseGPPrior(PyroModule):
    """p(u) and the FITC conditional p(z | u, c); kernel and inducing grid fixed unless ``learn``."""

    def __init__(self, z_dim: int, kernel: str = "periodic", lengthscale: float = 1.0, variance: float = 1.0,
                 num_inducing: int = 16, covariate_dim: int = 1,
                 covariate_range: tuple[float, float] = (0.0, 2 * math.pi), jitter: float = 1e-4,
                 noise: float = 0.1, learn: bool = False, prior_scale: float = 0.0) -> None:
        super().__init__()
        self.z_dim, self.covariate_dim, self.jitter, self.noise = z_dim, covariate_dim, jitter, noise
        self.covariate_range = tuple(covariate_range)
        lo, hi = covariate_range
        var, ls = torch.tensor(variance), torch.tensor(lengthscale)
        if kernel == "periodic":  # period hi - lo; the grid leaves out hi, which is lo again
            self.kernel = kernels.Periodic(covariate_dim, var, ls, period=torch.tensor(hi - lo))
            grid = torch.linspace(lo, hi, num_inducing + 1)[:-1]
        else:
            self.kernel = kernels.RBF(covariate_dim, var, ls)
            grid = torch.linspace(lo, hi, num_inducing)
        if kernel == "periodic":
            set_hyper(self.kernel, "period", learn=False)  # the covariate's period is known
        for name in HYPERS:
            set_hyper(self.kernel, name, learn, prior_scale)
        axes = [grid] * covariate_dim  # M = num_inducing ** covariate_dim
        inducing = torch.cartesian_prod(*axes).reshape(-1, covariate_dim)  # (M, D_c)
        if learn:
            self.inducing = nn.Parameter(inducing)
        else:
            self.register_buffer("inducing", inducing)

    @classmethod
    def from_config(cls, cfg) -> SparseGPPrior:
        """From a model ``Config`` with ``z_dim`` and the fields checked by :func:`check_sparse_gp_config`."""
        return cls(cfg.z_dim, cfg.kernel, cfg.lengthscale, cfg.variance, cfg.num_inducing, cfg.covariate_dim,
                   cfg.covariate_range, cfg.jitter, cfg.noise, getattr(cfg, "learn_kernel", False),
                   getattr(cfg, "kernel_prior", 0.0))

    def covariates(self, x: Tensor, c: Tensor | None) -> Tensor:
        """``c`` as ``(B, D_c)``; ``ValueError`` naming the covariate when it is None."""
        if c is None:
            raise ValueError("the sparse-GP prior needs the covariate 'c' (its GP input, (B,) or (B, D_c), e.g. the "
                             "rotation angle); use a data set that provides c (rotated_mnist) or pass it")
        return c.reshape(len(c), -1).to(x.dtype)

    @torch.no_grad()
    def example_codes(self, n: int) -> tuple[Tensor, Tensor]:
        """``(c, z)``: ``n`` covariates uniform over the range (``(n,)``, or ``(n, D_c)`` when ``D_c > 1``)
        and codes ``(n, D_z)`` drawn from the prior (u, then the conditional), with torch's RNG."""
        lo, hi = self.covariate_range
        c = lo + (hi - lo) * torch.rand(n, self.covariate_dim, dtype=self.inducing.dtype)
        tril = self.u_tril()
        z = self.z_dist(self.u_dist(tril).sample(), c, tril).sample()
        return (c.squeeze(-1) if self.covariate_dim == 1 else c), z

    def check_covariates(self, x: Tensor, c: Tensor | None) -> None:
        """``ValueError`` unless ``c`` is ``(B,)`` or ``(B, D_c)`` for ``x`` ``(B, ...)``; None is refused."""
        self.covariates(x, c)
        if len(c) != len(x) or c.reshape(len(c), -1).shape[-1] != self.covariate_dim:
            raise ValueError(f"expected covariates of shape (B,) or (B, {self.covariate_dim}) with B = {len(x)}, "
                             f"got {tuple(c.shape)}")

    def u_tril(self) -> Tensor:
        """Cholesky factor ``(M, M)`` of ``K_uu + jitter I``."""
        Z = self.inducing
        eye = torch.eye(len(Z), dtype=Z.dtype, device=Z.device)
        return torch.linalg.cholesky(self.kernel(Z) + self.jitter * eye)

    def u_dist(self, tril: Tensor) -> dist.Distribution:
        """``N(0, K_uu + jitter I)`` per channel; event shape ``(M, D_z)``."""
        M, D = len(tril), self.z_dim
        return TimeMajorMVN(dist.MultivariateNormal(tril.new_zeros(D, M), scale_tril=tril.expand(D, M, M)))

    def z_dist(self, u: Tensor, c: Tensor, tril: Tensor) -> dist.Distribution:
        """p(z | u) for ``u`` ``(..., M, D_z)`` and ``c`` ``(B, D_c)``: batch shape ``(..., B)``, event ``(D_z,)``."""
        if u.dim() > 2:  # under outer plates (particles) u is (..., 1, M, D_z): 1 is the data plate's slot
            u = u.squeeze(-3)
        A, var = self.projection(c, tril)
        loc = A.transpose(-1, -2) @ u  # (..., B, D_z)
        return dist.Normal(loc, var.sqrt().unsqueeze(-1)).to_event(1)

    def projection(self, c: Tensor, tril: Tensor) -> tuple[Tensor, Tensor]:
        """``(A, var)``: ``A = K_uu^-1 K_ub`` ``(M, B)`` and the conditional variance ``k_bb - q_bb + noise``
        ``(B,)`` at covariates ``c`` ``(B, D_c)``, with ``tril`` from :meth:`u_tril`."""
        K_ub = self.kernel(self.inducing, c)  # (M, B)
        A = torch.cholesky_solve(K_ub, tril)  # K_uu^-1 K_ub: (M, B)
        return A, (self.kernel(c, diag=True) - (K_ub * A).sum(0)).clamp_min(0) + self.noise
