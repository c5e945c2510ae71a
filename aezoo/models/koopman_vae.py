"""Koopman VAE: a GRU prior whose transition is pulled onto a linear (Koopman) map, for regular and irregular times.

Generative story, for each sequence b of the ``"data"`` plate (``T`` steps at times ``t_b``)::

    z_b0 = 0, g_b0 = 0                                                  z: (B, T, D_z); g: (B, T, H)
    g_bt = GRU([z_b,t-1, dt_bt], g_b,t-1)                               dt_bt = t_bt - t_b,t-1 (dt_b1 = 1)
    z_bt | z_b,<t ~ N(A(dt_bt) z_b,t-1 + m(g_bt), diag softplus(s(g_bt))^2)
    x_bt | z_bt ~ p(x | decoder(z_bt)), masked                          x: (B, T, D_x); mask (B, T, D_x) bool

``A(dt) = expm(G dt)`` with a learned continuous-time generator ``G`` ``(D_z, D_z)``: the Koopman
operator of one unit step is ``A = expm(G)`` and a gap ``dt`` uses ``A^dt = expm(G dt)`` (the
matrix exponential, :func:`torch.linalg.matrix_exp`; no eigen-decomposition, so defective or
complex spectra need no care). Its eigenvalues are ``exp(mu_i dt)`` for ``mu_i`` those of ``G``:
``|lambda_i| <= 1`` for one step holds for every ``dt > 0``. ``m`` and ``s`` are linear read-outs
of the GRU state (``m`` starts at 0); the decoder is the per-frame MLP of
:class:`aezoo.sequence.SequenceModel`.

As in [1], the prior is a GRU and its linearity is an objective, not a hard constraint: the
``koopman`` term (:mod:`aezoo.inference.terms.koopman`) adds [1]'s prediction loss
``|| z_t - A(dt_t) z_t-1 ||^2`` (here on the guide's draw, which is ``|| m(g_t) ||^2`` plus noise) and
[1]'s spectral loss on ``A``'s eigenvalues. [1] fits ``A`` by least squares to each batch of prior
draws; here ``A`` is a parameter (the same minimiser, learned by gradient), which gives ``A^dt``
for irregular gaps. Without the term the model is a plain GRU-prior sequence VAE with a linear skip.

Guide: q(z_b | x_b) = prod_t N(z_bt; mu_t, diag sigma_t^2) from a bidirectional GRU over
``[x_bt (0 where missing), mask_bt, dt_bt]``, mean-field over time, as [1]'s encoder. [1] handles
irregular data by a neural-CDE interpolation before the encoder; here the encoder reads the gaps
``dt`` directly and the prior steps over them.

Covariates: ``mask`` (None: all observed) and ``t`` ``(B, T)`` increasing times (None: ``0..T-1``).

References:
    1. Generative Modeling of Regular and Irregular Time Series Data via Koopman VAEs, Naiman,
       Erichson, Ren, Mahoney & Azencot, arXiv:2310.02619 (ICLR 2024).
    2. Time-series Generative Adversarial Networks, Yoon, Jarrett & van der Schaar, NeurIPS 2019
       (the sines data and the scores of :mod:`aezoo.diagnostics.temporal`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions import constraints

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.guides.structured import encoder_input
from aezoo.likelihoods import LIKELIHOODS
from aezoo.sequence import SequenceModel, check_sequence

COVARIATES = (Covariate("mask", "mask", doc="True where x is observed; None: every entry observed"),
              Covariate("t", "time", doc="(B, T) increasing observation times; None: regular times 0..T-1"))
DEFAULT_ENGINE = ("svi", {"penalty": "koopman", "penalty_weight": 1.0})


@dataclass(frozen=True)
class Config:
    x_dim: int = 5
    z_dim: int = 16
    hidden_dim: int = 32  # H: GRU state of the prior and of each direction of the encoder
    hidden_dims: tuple[int, ...] = (32,)  # the decoder MLP
    activation: str = "tanh"
    likelihood: str = "gaussian"  # one of aezoo.likelihoods.LIKELIHOODS
    seq_len: int = 24  # T of example_data only; the model takes any T

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")


def gaps(x: Tensor, t: Tensor | None) -> Tensor:
    """``(B, T)`` time steps ``dt_t = t_t - t_{t-1}`` with ``dt_1 = 1``; all 1 when ``t`` is None."""
    if t is None:
        return x.new_ones(x.shape[:2])
    return torch.cat([t.new_ones(t.shape[0], 1), t.diff(dim=-1)], -1).to(x.dtype)


def check_times(t: Tensor | None, x: Tensor) -> None:
    """``ValueError`` unless ``t`` is None or finite, strictly increasing float ``(B, T)`` for ``x`` ``(B, T, D_x)``."""
    if t is None:
        return
    if t.shape != x.shape[:2] or not t.is_floating_point():
        raise ValueError(f"the times 't' must be float of shape (B, T) = {tuple(x.shape[:2])}, got {t.dtype} "
                         f"{tuple(t.shape)}")
    if not torch.isfinite(t).all() or (t.diff(dim=-1) <= 0).any():
        raise ValueError("the times 't' must be finite and strictly increasing along each sequence")


class KoopmanPrior(TorchDistribution):
    """p(z_{1:T}) of the module docstring for given gaps ``dt`` ``(B, T)``: batch ``(B,)``, event ``(T, D_z)``.

    ``log_prob`` runs the GRU over the shifted path (vectorised over time); ``rsample`` steps through time.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, model: Model, dt: Tensor, validate_args=None) -> None:
        self.model, self.dt = model, dt
        super().__init__(dt.shape[:-1], (dt.shape[-1], model.z_dim), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        return KoopmanPrior(self.model, self.dt.expand(torch.Size(batch_shape) + self.dt.shape[-1:]))

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        dt = self.dt.expand(shape + self.dt.shape[-1:]).reshape(-1, self.dt.shape[-1])
        z, g, out = dt.new_zeros(len(dt), self.model.z_dim), None, []
        for i in range(dt.shape[-1]):
            loc, scale, g = self.model.step(z[:, None], dt[:, i:i + 1], g)
            z = (loc + scale * torch.randn_like(loc))[:, 0]
            out.append(z)
        return torch.stack(out, -2).reshape(shape + self.event_shape)

    def log_prob(self, value: Tensor) -> Tensor:
        """``(*sample, *batch)``: ``sum_t log N(z_t; A(dt_t) z_{t-1} + m(g_t), s(g_t)^2)``."""
        lead = torch.broadcast_shapes(value.shape[:-2], self.batch_shape)
        z = value.expand(lead + self.event_shape).reshape(-1, *self.event_shape)
        dt = self.dt.expand(lead + self.dt.shape[-1:]).reshape(-1, self.dt.shape[-1])
        prev = torch.cat([z.new_zeros(len(z), 1, z.shape[-1]), z[:, :-1]], 1)
        loc, scale, _ = self.model.step(prev, dt)
        return dist.Normal(loc, scale).log_prob(z).sum((-1, -2)).reshape(lead)


class Model(SequenceModel):
    """GRU prior with a Koopman (linear) skip ``A(dt) z_{t-1}`` and an MLP decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.x_dim, cfg.z_dim, cfg.hidden_dims, cfg.activation, cfg.likelihood)
        self.cfg = cfg
        self.generator = nn.Parameter(-0.05 * torch.eye(cfg.z_dim) + 0.05 * torch.randn(cfg.z_dim, cfg.z_dim))
        self.gru = nn.GRU(cfg.z_dim + 1, cfg.hidden_dim, batch_first=True)
        self.to_loc = nn.Linear(cfg.hidden_dim, cfg.z_dim)
        self.to_scale = nn.Linear(cfg.hidden_dim, cfg.z_dim)
        with torch.no_grad():
            self.to_loc.weight.mul_(0.1)
            self.to_loc.bias.zero_()

    def forward(self, x: Tensor, mask: Tensor | None = None, t: Tensor | None = None,
                num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_prior(x, t))
            pyro.sample("x", self.x_dist(z, mask), obs=x)

    def z_prior(self, x: Tensor, t: Tensor | None = None) -> KoopmanPrior:
        """The prior over ``z`` for ``x`` ``(B, T, D_x)``: batch ``(B,)``, event ``(T, D_z)``."""
        return KoopmanPrior(self, gaps(x, t))

    def koopman(self) -> Tensor:
        """``(D_z, D_z)`` the one-step Koopman operator ``A = expm(G)``."""
        return torch.linalg.matrix_exp(self.generator)

    def transition(self, z_prev: Tensor, dt: Tensor | None = None) -> Tensor:
        """``A(dt) z_prev`` for ``z_prev`` ``(..., D_z)``; ``dt`` ``(...)`` gaps (None: one unit step, ``A``)."""
        if dt is None:
            return z_prev @ self.koopman().T
        A = torch.linalg.matrix_exp(self.generator * dt[..., None, None])
        return (A @ z_prev[..., None])[..., 0]

    def step(self, z_prev: Tensor, dt: Tensor, g0: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Prior ``(loc, scale)``, each ``(N, T', D_z)``, and the last GRU state.

        Args:
            z_prev: ``(N, T', D_z)`` the previous latents; dt: ``(N, T')`` the gaps to them.
            g0: the GRU state before the first step (None: zeros).
        """
        g, last = self.gru(torch.cat([z_prev, dt[..., None]], -1), g0)
        regular = bool((dt == 1).all())  # one matrix for the whole batch, the common case
        loc = self.transition(z_prev, None if regular else dt) + self.to_loc(g)
        return loc, F.softplus(self.to_scale(g)) + 1e-3, last

    def residual(self, z: Tensor, t: Tensor | None = None) -> Tensor:
        """[1]'s prediction error ``z_t - A(dt_t) z_{t-1}`` ``(..., B, T - 1, D_z)`` of a path ``(..., B, T, D_z)``."""
        if t is None or bool((t.diff(dim=-1) == 1).all()):
            return z[..., 1:, :] - self.transition(z[..., :-1, :])
        dt = t.diff(dim=-1).to(z.dtype).expand(z.shape[:-2] + (z.shape[-2] - 1,))
        return z[..., 1:, :] - self.transition(z[..., :-1, :], dt)

    def validate(self, x: Tensor, mask: Tensor | None = None, t: Tensor | None = None) -> None:
        check_sequence(x, mask, self.x_dim, self.likelihood)
        check_times(t, x)


class Guide(PyroModule):
    """q(z | x): a bidirectional GRU over ``[x, mask, dt]``, per-step Gaussian; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.rnn = nn.GRU(2 * cfg.x_dim + 1, cfg.hidden_dim, batch_first=True, bidirectional=True)
        self.to_loc = nn.Linear(2 * cfg.hidden_dim, cfg.z_dim)
        self.to_scale = nn.Linear(2 * cfg.hidden_dim, cfg.z_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, t: Tensor | None = None,
                num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.sample("z", self.posterior(x, mask, t))

    def posterior(self, x: Tensor, mask: Tensor | None = None, t: Tensor | None = None) -> dist.Distribution:
        """q(z | x): batch ``(B,)``, event ``(T, D_z)``."""
        h, _ = self.rnn(torch.cat([encoder_input(x, mask), gaps(x, t)[..., None]], -1))
        return dist.Normal(self.to_loc(h), F.softplus(self.to_scale(h)) + 1e-3).to_event(2)


def build(cfg: Config = Config()) -> Autoencoder:
    """A Koopman VAE [1]: the GRU/Koopman prior, the MLP decoder and the bidirectional-GRU guide."""
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``(x, mask, t)``: ``n`` TimeGAN sines ``(n, seq_len, D_x)`` [2] at irregular times (30% of steps dropped).

    ``x`` is scaled to the likelihood (binarised for ``bernoulli``); ``t`` ``(n, seq_len)`` are the
    kept steps' times on a grid of ``ceil(seq_len / 0.7)`` steps; ``mask`` is all True.
    """
    from aezoo.data.series import drop_steps, sines

    grid = -(-cfg.seq_len * 10 // 7)
    x, t = drop_steps(sines(n, grid, cfg.x_dim, seed=seed), 1 - cfg.seq_len / grid, seed=seed)
    if cfg.likelihood == "gaussian":
        x = 2 * x - 1
    elif cfg.likelihood == "bernoulli":
        x = torch.bernoulli(x, generator=torch.Generator().manual_seed(seed))
    return x, torch.ones_like(x, dtype=torch.bool), t
