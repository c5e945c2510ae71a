"""PV-RNN: a leaky (MTRNN) recurrent net driven by a latent z_t per step, non-amortized adaptive-vector guide.

Generative story, for each sequence b of the ``"data"`` plate (``T`` time steps, state ``h_b0 = 0``)::

    d_b,t-1 = tanh(h_b,t-1)                                                    d: (B, T, H)
    z_bt | d_b,t-1 ~ N(tanh(W_mu d_b,t-1 + b_mu), exp(W_sig d_b,t-1 + b_sig))   z: (B, T, D_z), the prior of [1]
    h_bt = (1 - 1/tau) h_b,t-1 + (W_d d_b,t-1 + W_z z_bt + b) / tau           the MTRNN leaky unit of [1, 2]
    x_bt | h_bt ~ N(W_x tanh(h_bt) + b_x, sigma_x^2 I), masked                 x: (B, T, D_x); mask (B, T, D_x)

Guide (non-amortized, [1]): adaptive vectors ``A^mu, A^sigma`` of shape ``(N, T, D_z)``, one pair per
training sequence, are parameters of the guide module (``guide.adaptive``, ``(N, T, 2 D_z)``, saved
with the run), and ``q(z_bt | d_b,t-1) = N(tanh(V_mu d_b,t-1 + A^mu_it), exp(V_sig d_b,t-1 + A^sig_it))``
with ``i = index_b``, the datum's position in the training set. No encoder reads ``x``: the data reach
the posterior only through the prediction error that backpropagation carries into the ``A`` of the data
in each minibatch (the predictive-coding reading of [1]). ``V`` starts at zero, so ``q`` starts as
``N(0, 1)`` exactly as the paper's ``A = 0`` initialisation.

Per-datum parameters inside the data plate (the zoo's pattern for semi-/non-amortized guides): the guide
takes the covariate ``index`` (kind ``"index"``, ``(B,)`` int64; :meth:`aezoo.data.Dataset.arrays`
supplies ``arange(N)`` for data that lack it, and the engines minibatch it with ``x``) and gathers
``A[index]`` inside ``pyro.plate("data", N, subsample=x)``. An optimiser step moves only the rows of the
minibatch (their gradient is zero elsewhere; Adam leaves zero-gradient rows untouched until they have
momentum). A fitted guide is a posterior for the training sequences only: held-out sequences need fresh
vectors, which :func:`error_regression` fits (test time, network weights frozen).
(The diagnostics' test-set bounds use the vectors the test data's ``index`` points at, untrained or another
sequence's: a valid but loose ELBO. The default ``num_data = 1200`` covers the synthetic data's 1,000 + 200.)

Meta-prior ``w`` (``Config.meta_prior``): the z site is scaled by ``w`` in model and guide
(``poutine.scale``), so every engine's ELBO becomes ``E_q[log p(x | z)] - w KL(q || p)`` (Pyro's site
scale multiplies both ``log p(z)`` and ``log q(z)``: the same handler as ``svi``'s ``beta``,
:func:`aezoo.inference.objectives.latent_weight`). It is in the model rather than in ``svi``'s ``beta``
because it defines PV-RNN under every engine (IWAE, RWS) and the test-time error regression optimises
the same weighted bound. ``w = 1`` (the default) is the plain ELBO, the bound the diagnostics expect.
The paper weighs dimension-averaged terms and a squared error; here ``w`` weighs the summed KL against
the Gaussian log-likelihood with noise ``sigma_x``, so its values differ from the paper's by a constant.

Masking: as :mod:`aezoo.models.dmm`: entries with ``mask`` False leave the likelihood, steps past the
last observed one are not scored (:func:`aezoo.sequence.time_valid`). The site ``z`` is one
vectorised site of event shape ``(T, D_z)``; :class:`RecurrentNormal` scores a path by running the
recurrence over it (not :class:`~aezoo.models.dmm.MarkovNormal`: here ``z_t`` depends on all of
``z_<t`` through ``d_t-1``).

References:
    1. A Novel Predictive-Coding-Inspired Variational RNN Model for Online Prediction and Recognition,
       Ahmadi & Tani, arXiv:1811.01339 (Neural Computation 31(11), 2019).
    2. Emergence of functional hierarchy in a multiple timescale neural network model: a humanoid robot
       experiment, Yamashita & Tani, PLoS Comput. Biol. 4(11), 2008.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule
from torch import Tensor, nn
from torch.distributions import constraints

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.guides.local_fit import fit_local
from aezoo.sequence import check_sequence, masked_x_dist, time_valid

Head = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
LOG_SCALE_RANGE = (-9.0, 5.0)  # exp() of the clamped pre-activation: sigma in [1.2e-4, 148]

COVARIATES = (
    Covariate("mask", "mask", doc="True where x is observed; None: every entry observed"),
    Covariate("index", "index", doc="(B,) int64 position of each sequence in the training set, which picks its "
                                    "adaptive vectors; None: 0..B-1 (the batch is the first B training sequences)"),
)


@dataclass(frozen=True)
class Config:
    x_dim: int = 2
    z_dim: int = 2
    hidden_dim: int = 16  # H, the deterministic units d
    tau: float = 2.0  # time constant of the leaky units (1: a plain tanh RNN)
    x_scale: float = 0.1  # sigma_x, the fixed output noise
    meta_prior: float = 1.0  # w, the weight of the KL term (module docstring)
    num_data: int = 1200  # N, the sequences that own adaptive vectors (synthetic: 1,000 train + 200 test)
    seq_len: int = 20  # T: the longest sequence the adaptive vectors cover, and example_data's T

    def __post_init__(self) -> None:
        check_sizes(self)
        if not self.tau >= 1:
            raise ValueError(f"tau must be >= 1 (the leaky unit keeps 1 - 1/tau of its state), got {self.tau}")
        if not (self.x_scale > 0 and self.meta_prior > 0):
            raise ValueError(f"x_scale and meta_prior must be positive, got {self.x_scale} and {self.meta_prior}")


def gaussian_head(raw: Tensor) -> tuple[Tensor, Tensor]:
    """``(loc, scale) = (tanh(mu), exp(sigma))`` of the pre-activations ``raw = [mu, sigma]`` ``(..., 2 D_z)`` [1]."""
    mu, log_sigma = raw.chunk(2, -1)
    return torch.tanh(mu), log_sigma.clamp(*LOG_SCALE_RANGE).exp()


class LeakyCell(nn.Module):
    """``h_t = (1 - 1/tau) h_t-1 + (W_d tanh(h_t-1) + W_z z_t + b) / tau`` for any leading batch dims [2]."""

    def __init__(self, z_dim: int, hidden_dim: int, tau: float) -> None:
        super().__init__()
        self.recurrent = nn.Linear(hidden_dim, hidden_dim)
        self.from_z = nn.Linear(z_dim, hidden_dim, bias=False)
        self.tau = tau

    def forward(self, h: Tensor, z: Tensor) -> Tensor:
        return (1 - 1 / self.tau) * h + (self.recurrent(torch.tanh(h)) + self.from_z(z)) / self.tau


def run_states(cell: LeakyCell, z: Tensor, hidden_dim: int) -> Tensor:
    """``(..., T + 1, H)`` states ``h_0 = 0, h_1, ..., h_T`` of ``cell`` driven by ``z`` ``(..., T, D_z)``."""
    h = [z.new_zeros(*z.shape[:-2], hidden_dim)]
    for t in range(z.shape[-2]):
        h.append(cell(h[-1], z[..., t, :]))
    return torch.stack(h, -2)


class RecurrentNormal(TorchDistribution):
    """``z_t ~ N(head(d_t-1, c_t))``, ``h_t = cell(h_t-1, z_t)``, ``d = tanh(h)``, from ``h_0 = 0``.

    Args:
        cell: the recurrence (:class:`LeakyCell`).
        head: ``(d (..., H), c (..., C)) -> (loc, scale)``, each ``(..., D_z)``.
        context: ``(*batch, T, C)`` per-step inputs (``C = 0`` for none; the guide's adaptive vectors).
        valid: ``(*batch, T)`` bool; False steps (after every valid one) are not scored.
        z_dim, hidden_dim: ``D_z`` and ``H``.

    Batch shape ``valid.shape[:-1]``, event shape ``(T, D_z)``. ``rsample`` and ``log_prob`` both run
    the recurrence step by step (``log_prob`` on the given path, then scores all steps at once).
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, cell: LeakyCell, head: Head, context: Tensor, valid: Tensor, z_dim: int, hidden_dim: int,
                 validate_args=None) -> None:
        self.cell, self.head, self.context, self.valid, self.hidden_dim = cell, head, context, valid, hidden_dim
        super().__init__(valid.shape[:-1], (valid.shape[-1], z_dim), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return RecurrentNormal(self.cell, self.head, self.context.expand(batch_shape + self.context.shape[-2:]),
                               self.valid.expand(batch_shape + self.valid.shape[-1:]), self.event_shape[-1],
                               self.hidden_dim)

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        h, out = self.context.new_zeros(shape + (self.hidden_dim,)), []
        for t in range(self.event_shape[0]):
            loc, scale = self.head(torch.tanh(h), self.context[..., t, :].expand(shape + self.context.shape[-1:]))
            out.append(loc + scale * torch.randn(loc.shape, dtype=loc.dtype, device=loc.device))
            h = self.cell(h, out[-1])
        return torch.stack(out, -2)

    def log_prob(self, value: Tensor) -> Tensor:
        """``(*sample, *batch)``: the sum over valid steps of ``log N(z_t; head(d_t-1, c_t))``."""
        d_prev = torch.tanh(run_states(self.cell, value, self.hidden_dim)[..., :-1, :])
        lead = torch.broadcast_shapes(d_prev.shape[:-1], self.context.shape[:-1])
        context = self.context.expand(lead + self.context.shape[-1:])
        loc, scale = self.head(d_prev.expand(lead + d_prev.shape[-1:]), context)
        lp = dist.Normal(loc, scale).log_prob(value).sum(-1)
        return lp.where(self.valid, lp.new_zeros(())).sum(-1)


def check_index(index: Tensor | None, batch: int, num_data: int) -> Tensor | None:
    """``ValueError`` unless ``index`` is ``(B,)`` integers in ``[0, num_data)`` (None: needs ``B <= num_data``)."""
    if index is None:
        if batch > num_data:
            raise ValueError(f"pv_rnn without an 'index' takes the batch as training sequences 0..{batch - 1}, but the "
                             f"guide holds adaptive vectors for num_data={num_data}: pass 'index' or raise num_data")
        return None
    if index.shape != (batch,) or index.is_floating_point() or index.dtype == torch.bool:
        raise ValueError(f"'index' must be (B,) = ({batch},) integer positions in the training set, got "
                         f"{tuple(index.shape)} {index.dtype}")
    if len(index) and (index.min() < 0 or index.max() >= num_data):
        raise ValueError(f"'index' out of range: got values in [{index.min().item()}, {index.max().item()}] but the "
                         f"guide holds adaptive vectors for num_data={num_data} sequences (0..{num_data - 1}); build "
                         "the model with num_data >= the training set, and use error_regression for held-out data")
    return index


class Model(PyroModule):
    """The PV-RNN generative model; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.cell = LeakyCell(cfg.z_dim, cfg.hidden_dim, cfg.tau)
        self.to_prior = nn.Linear(cfg.hidden_dim, 2 * cfg.z_dim)
        self.to_x = nn.Linear(cfg.hidden_dim, cfg.x_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, index: Tensor | None = None,
                num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            with poutine.scale(scale=self.cfg.meta_prior):
                z = pyro.sample("z", self.z_prior(x, mask))
            pyro.sample("x", self.x_dist(z, mask), obs=x)

    def z_prior(self, x: Tensor, mask: Tensor | None = None) -> RecurrentNormal:
        """p(z) with batch shape ``(B,)``, event shape ``(T, D_z)`` for ``x`` ``(B, T, D_x)``."""
        return RecurrentNormal(self.cell, lambda d, c: gaussian_head(self.to_prior(d)), x.new_zeros(*x.shape[:-1], 0),
                               time_valid(x, mask), self.cfg.z_dim, self.cfg.hidden_dim)

    def x_mean(self, z: Tensor) -> Tensor:
        """``(..., T, D_x)``: ``W_x d_t + b_x`` along the path ``z`` ``(..., T, D_z)``."""
        return self.to_x(torch.tanh(run_states(self.cell, z, self.cfg.hidden_dim)[..., 1:, :]))

    def x_dist(self, z: Tensor, mask: Tensor | None = None) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., B, T, D_z)``: event shape ``(T, D_x)``, masked entries left out."""
        mean = self.x_mean(z)
        return masked_x_dist("gaussian", mean, mean.new_full((self.cfg.x_dim,), self.cfg.x_scale), mask)

    def validate(self, x: Tensor, mask: Tensor | None = None, index: Tensor | None = None) -> None:
        check_sequence(x, mask, self.cfg.x_dim, "gaussian")
        if x.shape[1] > self.cfg.seq_len:
            raise ValueError(f"pv_rnn's adaptive vectors cover seq_len={self.cfg.seq_len} steps but x has T="
                             f"{x.shape[1]}: build the model with seq_len >= T")
        check_index(index, len(x), self.cfg.num_data)


class Guide(PyroModule):
    """q(z | index): the adaptive vectors of the indexed sequences, mixed with ``d_t-1`` [1]."""

    def __init__(self, cfg: Config, cell: LeakyCell) -> None:
        super().__init__()
        self.cfg = cfg
        self._cell = (cell,)  # the model's recurrence, shared and not registered twice (a tuple is no submodule)
        self.adaptive = nn.Parameter(torch.zeros(cfg.num_data, cfg.seq_len, 2 * cfg.z_dim))  # [A^mu, A^sigma]
        self.from_d = nn.Linear(cfg.hidden_dim, 2 * cfg.z_dim, bias=False)
        nn.init.zeros_(self.from_d.weight)

    def forward(self, x: Tensor, mask: Tensor | None = None, index: Tensor | None = None,
                num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x), poutine.scale(scale=self.cfg.meta_prior):
            pyro.sample("z", self.posterior(x, mask, index))

    def posterior(self, x: Tensor, mask: Tensor | None = None, index: Tensor | None = None,
                  adaptive: Tensor | None = None) -> RecurrentNormal:
        """q(z) with batch shape ``(B,)``, event shape ``(T, D_z)``; ``adaptive`` ``(B, T, 2 D_z)`` replaces
        the stored vectors (error regression's fresh ones)."""
        B, T = x.shape[:2]
        if adaptive is None:
            if T > self.cfg.seq_len:
                raise ValueError(f"x has T={T} steps but the adaptive vectors cover seq_len={self.cfg.seq_len}")
            index = check_index(index, B, self.cfg.num_data)
            adaptive = self.adaptive[:B, :T] if index is None else self.adaptive[index, :T]
        return RecurrentNormal(self._cell[0], lambda d, a: gaussian_head(self.from_d(d) + a), adaptive,
                               time_valid(x, mask), self.cfg.z_dim, self.cfg.hidden_dim)


def build(cfg: Config = Config()) -> Autoencoder:
    """A one-layer PV-RNN [1] with ``N = cfg.num_data`` adaptive-vector pairs in its guide."""
    model = Model(cfg)
    return Autoencoder(model, Guide(cfg, model.cell), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def switching_lissajous(n: int, T: int, seed: int = 0, period: int = 10, noise: float = 0.05,
                        amplitude: float = 0.8) -> Tensor:
    """``(n, T, 2)``: figure-eight cycles whose orientation is redrawn at random at every cycle.

    Each cycle of ``period`` steps is ``(a sin(2 pi s), +-a sin(4 pi s))`` for ``s = k / period``, with
    the sign a fair coin per cycle (a two-state probabilistic automaton, as the stochastic patterns of
    [1]), plus N(0, ``noise``^2) per entry. The first steps of a cycle reveal its sign; the next cycle
    is unpredictable.
    """
    if not (n >= 1 and T >= 1 and period >= 2 and noise >= 0):
        raise ValueError(f"need n, T >= 1, period >= 2 and noise >= 0; got {n}, {T}, {period}, {noise}")
    gen = torch.Generator().manual_seed(seed)
    s = 2 * math.pi * (torch.arange(T) % period) / period
    sign = torch.randint(0, 2, (n, T // period + 1), generator=gen) * 2.0 - 1
    sign = sign.repeat_interleave(period, 1)[:, :T]
    x = amplitude * torch.stack([s.sin().expand(n, T), sign * (2 * s).sin()], -1)
    return x + noise * torch.randn(x.shape, generator=gen)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``(x, mask, index)``: ``n`` switching-Lissajous sequences ``(n, seq_len, 2)`` (:func:`switching_lissajous`,
    ``D_x = 2`` needed), all entries observed, and their positions ``arange(n)``.

    Raises:
        ValueError: ``x_dim != 2`` or ``n > num_data``.
    """
    if cfg.x_dim != 2:
        raise ValueError(f"pv_rnn's example data are 2-d curves: set x_dim=2, got {cfg.x_dim}")
    if n > cfg.num_data:
        raise ValueError(f"n={n} sequences need num_data >= {n} adaptive vectors, got num_data={cfg.num_data}")
    x = switching_lissajous(n, cfg.seq_len, seed)
    return x, torch.ones(x.shape, dtype=torch.bool), torch.arange(n)


# -- test time: error regression [1] -----------------------------------------------------------------------


@torch.no_grad()
def run_ahead(ae: Autoencoder, h: Tensor, horizon: int) -> Tensor:
    """``(..., horizon, D_x)`` output means while the prior drives the net from states ``h`` ``(..., H)``."""
    model, out = ae.model, []
    for _ in range(horizon):
        loc, scale = gaussian_head(model.to_prior(torch.tanh(h)))
        h = model.cell(h, loc + scale * torch.randn_like(loc))
        out.append(model.to_x(torch.tanh(h)))
    return torch.stack(out, -2)


def prior_prediction(ae: Autoencoder, x_window: Tensor, horizon: int, num_samples: int = 16, seed: int = 0) -> Tensor:
    """``(B, horizon, D_x)``: the prior's forecast of the steps after ``x_window`` ``(B, W, D_x)``, blind to its values.

    The net runs from ``h_0 = 0`` on prior draws for ``W + horizon`` steps; the output means of the last
    ``horizon`` steps are averaged over ``num_samples`` runs. The baseline of :func:`error_regression`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        h0 = x_window.new_zeros(num_samples, len(x_window), ae.config.hidden_dim)
        return run_ahead(ae, h0, x_window.shape[1] + horizon)[..., -horizon:, :].mean(0)


def error_regression(ae: Autoencoder, x_window: Tensor, mask: Tensor | None = None, steps: int = 100, lr: float = 0.1,
                     horizon: int = 10, num_particles: int = 4, num_samples: int = 16,
                     seed: int = 0) -> tuple[Tensor, Tensor]:
    """Infer fresh adaptive vectors for a window of the past, then forecast from their posterior [1].

    Fresh vectors ``A`` ``(B, W, 2 D_z)`` (zeros, as in training) are fitted by Adam for ``steps`` steps
    on the negative ``meta_prior``-weighted ELBO of the window alone (``num_particles`` draws per step;
    :func:`aezoo.guides.local_fit.fit_local`); the network weights are frozen (gradients go to ``A``
    only). Then ``num_samples`` paths are drawn from the fitted posterior over the window and the prior
    runs the net ``horizon`` steps ahead of each; the forecast is the mean output. The window starts at the
    sequence's start (``h_0 = 0``).

    Args:
        ae: a fitted ``pv_rnn``.
        x_window: ``(B, W, D_x)`` the observed past; ``mask``: ``(B, W, D_x)`` bool or None (all observed).
        steps, lr: the regression's Adam steps and learning rate.
        horizon: ``H``, the steps to forecast.

    Returns:
        ``(prediction (B, H, D_x), losses (steps,))``; losses are the weighted negative ELBO in nats per window.

    Raises:
        ValueError: data that do not fit the model, or non-positive ``steps``, ``lr``, ``horizon``.
    """
    check_sequence(x_window, mask, ae.config.x_dim, "gaussian")
    if not (steps >= 1 and lr > 0 and horizon >= 1 and num_particles >= 1 and num_samples >= 1):
        raise ValueError(f"steps, horizon, num_particles, num_samples must be >= 1 and lr > 0; got {steps}, "
                         f"{horizon}, {num_particles}, {num_samples}, {lr}")
    B, W = x_window.shape[:2]
    adaptive = x_window.new_zeros(B, W, 2 * ae.config.z_dim, requires_grad=True)

    def guide(x, mask=None, index=None, num_data=None):
        with pyro.plate("data", len(x), subsample=x), poutine.scale(scale=ae.config.meta_prior):
            pyro.sample("z", ae.guide.posterior(x, mask, adaptive=adaptive))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        losses = fit_local(ae.model, guide, [adaptive], (x_window, mask, None), steps, lr, num_particles, scale=B)
        with torch.no_grad():
            z = ae.guide.posterior(x_window, mask, adaptive=adaptive).rsample((num_samples,))  # (S, B, W, D_z)
            h = run_states(ae.model.cell, z, ae.config.hidden_dim)[..., -1, :]
            prediction = run_ahead(ae, h, horizon).mean(0)
    return prediction, losses
