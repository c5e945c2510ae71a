"""Structured guides over a sequence latent ``z`` ``(B, T, D_z)``: Kalman-smoothed and banded-precision.

Both read ``x`` ``(B, T, D_x)`` and the ``mask`` covariate (``(B, T, D_x)`` bool, True where
observed; ``None``: all observed) through a per-frame encoder that sees ``x`` with unobserved
entries zeroed and the mask itself, ``(B, T, 2 D_x)``, so unobserved values never reach the guide.

References:
    1. Composing graphical models with neural networks for structured representations and fast
       inference, Johnson, Duvenaud, Wiltschko, Datta & Adams, arXiv:1603.06277.
    2. Revisiting Structured Variational Autoencoders, Zhao & Linderman, arXiv:2305.16543.
    3. GP-VAE: Deep Probabilistic Time Series Imputation, Fortuin, Baranchuk, Raetsch & Mandt,
       arXiv:1907.04155.
"""

from __future__ import annotations

from typing import Callable

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.hmm import HiddenMarkovModel
from pyro.nn import PyroModule
from pyro.ops.gaussian import Gaussian, gaussian_tensordot, sequential_gaussian_tensordot
from torch import Tensor, nn

from aezoo.sequence import TimeMajorMVN


def encoder_input(x: Tensor, mask: Tensor | None) -> Tensor:
    """``(B, T, 2 D_x)``: ``x`` with unobserved entries set to 0, then the mask as 0/1."""
    if mask is None:
        return torch.cat([x, torch.ones_like(x)], -1)
    return torch.cat([x.where(mask, torch.zeros_like(x)), mask.to(x.dtype)], -1)


def fuse(prior: dist.GaussianHMM, loc: Tensor, precision: Tensor) -> dist.GaussianHMM:
    """The posterior of ``prior`` given independent Gaussian potentials on its observations.

    Returns the GaussianHMM proportional to ``prior(z) * prod_{t, d} exp(-precision_td (z_td -
    loc_td)^2 / 2)``: Pyro's ``GaussianHMM.conjugate_update`` with the potentials written as a
    :class:`pyro.ops.gaussian.Gaussian`, so a precision of exactly 0 (a missing frame: no
    information) is allowed. Sampling it (``rsample``) is forward filtering, backward sampling;
    its log density is exact (parallel-scan Kalman filtering, linear work in ``T``).

    Args:
        prior: event shape ``(T, D_z)``, batch shape broadcastable with ``(B,)``.
        loc, precision: ``(B, T, D_z)``; ``precision >= 0``.

    Returns:
        A GaussianHMM with batch shape ``(B,)`` and event shape ``(T, D_z)``.
    """
    potential = Gaussian(loc.new_zeros(loc.shape[:-1]), precision * loc, torch.diag_embed(precision))
    # as GaussianHMM.conjugate_update (Pyro 1.9), whose MultivariateNormal argument cannot carry zero precision
    new = prior._get_checked_instance(dist.GaussianHMM)
    new.hidden_dim, new.obs_dim = prior.hidden_dim, prior.obs_dim
    new._init, new._trans = prior._init, prior._trans
    new._obs = prior._obs + potential.event_pad(left=prior.hidden_dim)
    logp = new._trans + new._obs.marginalize(right=new.obs_dim).event_pad(left=new.hidden_dim)
    logp = sequential_gaussian_tensordot(logp.expand(logp.batch_shape))
    logp = gaussian_tensordot(new._init, logp, dims=new.hidden_dim)
    log_normalizer = logp.event_logsumexp()
    new._init = new._init - log_normalizer
    HiddenMarkovModel.__init__(new, loc.shape[-2], log_normalizer.shape, prior.event_shape, validate_args=False)
    return new


class KalmanGuide(PyroModule):
    """q(z_b | x_b) proportional to p(z_b) prod_t N(z_bt; r_bt, diag(1 / lambda_bt)): exact Kalman smoothing.

    The structured VAE guide [1, 2]: an encoder emits per-frame Gaussian recognition potentials
    (mean ``r`` and precision ``lambda`` per latent unit), which are combined with the model's own
    state-space prior by exact Gaussian message passing (:func:`fuse`). A frame with no observed
    entry carries no information (precision 0). The guide shares the prior's parameters, so the
    ELBO's gradient reaches them through the guide as well.

    Args:
        site: the latent site, e.g. ``"z"``.
        encoder: per-frame network ``(..., 2 D_x) -> (..., 2 D_z)`` (potential mean, pre-softplus precision).
        prior: the model's ``z_prior`` (``x -> GaussianHMM`` with event shape ``(T, D_z)``); held as a
            plain callable, not a sub-module, so its parameters keep their names in the model.
    """

    def __init__(self, site: str, encoder: nn.Module, prior: Callable[[Tensor], dist.GaussianHMM]) -> None:
        super().__init__()
        self.site = site
        self.encoder = encoder
        self.prior = prior

    def potentials(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Potential means and precisions, each ``(B, T, D_z)``; precision 0 on fully missing frames."""
        loc, raw = self.encoder(encoder_input(x, mask)).chunk(2, dim=-1)
        precision = F.softplus(raw)
        if mask is not None:
            precision = precision * mask.any(-1, keepdim=True).to(precision.dtype)
        return loc, precision

    def posterior(self, x: Tensor, mask: Tensor | None = None) -> dist.GaussianHMM:
        """q(z | x): batch shape ``(B,)``, event shape ``(T, D_z)``."""
        return fuse(self.prior(x), *self.potentials(x, mask))

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample(self.site, self.posterior(x, mask))


class BandedGuide(PyroModule):
    """q(z_b | x_b) = prod_d N(m_bd, (B_bd^T B_bd)^-1), ``B_bd`` upper bidiagonal: GP-VAE's guide [3].

    Per latent channel ``d`` the precision over time is ``B^T B`` with ``B`` ``(T, T)`` upper
    bidiagonal (positive diagonal), so q has Markov (banded) structure across neighbouring frames.
    Density and draws use the dense ``(T, T)`` matrices (cubic in ``T``, as the dense GP prior).

    Args:
        site: the latent site.
        encoder: per-frame network ``(..., 2 D_x) -> (..., 3 D_z)``: mean, pre-softplus diagonal
            of ``B`` and its superdiagonal (the last frame's is unused).
    """

    def __init__(self, site: str, encoder: nn.Module) -> None:
        super().__init__()
        self.site = site
        self.encoder = encoder

    def posterior(self, x: Tensor, mask: Tensor | None = None) -> TimeMajorMVN:
        """q(z | x): batch shape ``(B,)``, event shape ``(T, D_z)``."""
        loc, diag, off = self.encoder(encoder_input(x, mask)).transpose(-1, -2).chunk(3, dim=-2)  # (B, D_z, T)
        band = torch.diag_embed(F.softplus(diag) + 1e-3) + torch.diag_embed(off[..., :-1], offset=1)
        return TimeMajorMVN(dist.MultivariateNormal(loc, precision_matrix=band.transpose(-1, -2) @ band))

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> Tensor:
        with pyro.plate("data", num_data or len(x), subsample=x):
            return pyro.sample(self.site, self.posterior(x, mask))
