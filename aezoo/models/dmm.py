"""Deep Markov Model: gated nonlinear transitions, MLP emitter, RNN + combiner guide.

Generative story, for each sequence b of the ``"data"`` plate (``T`` time steps)::

    z_b0 = z_0 (a learned vector)                                    z_0: (D_z,)
    z_bt | z_b,t-1 ~ N(mu(z_b,t-1), diag sigma(z_b,t-1)^2)          z: (B, T, D_z); gated transition [1]
    x_bt | z_bt ~ Bernoulli(sigmoid(emitter(z_bt))), masked          x: (B, T, D_x); mask (B, T, D_x) bool

The gated transition mixes a linear map and a nonlinear proposal,
``mu = (1 - g) * W z + g * m(z)``, ``g = sigmoid(MLP(z))``, ``sigma = softplus(V relu(m(z)))``,
and the emitter is ``D_z -> E -> E -> D_x`` with ReLU, as in [1] and Pyro's DMM example.

Guide: q(z_b | x_b) = prod_t N(z_bt; combiner(z_b,t-1, h_bt)) with ``h_bt`` the state of an RNN
run backwards over ``x_b`` (each sequence reversed within its own length, so padding is never
seen before data), ``z_b0 = z_q0``: the structured "ST-R" guide of [1].

Masking: entries with ``mask`` False do not enter the likelihood. The length ``L_b`` of a sequence
is one past its last time step with an observed entry; ``z_bt`` for ``t >= L_b`` is integrated
out exactly (nothing observed depends on it), so neither the prior nor the guide scores it and
padding a batch to a common ``T`` leaves every bound unchanged. Time steps before ``L_b`` with no
observed entry (missing frames) stay in the chain.

One latent site: ``z`` is a single vectorised site with event shape ``(T, D_z)``, not ``T`` sites
``z_t``. Its prior and guide are :class:`MarkovNormal` chains whose ``log_prob`` sums the
per-step Normal log-densities (vectorised over time, given the whole path) and whose
``rsample`` draws step by step (reparameterised). So the zoo's engines and importance-sampling
diagnostics, which read per-datum log-weights from one site, apply unchanged. Pyro's
``TraceMeanField_ELBO`` finds no closed-form KL for this pair and uses the Monte Carlo term.

References:
    1. Structured Inference Networks for Nonlinear State Space Models, Krishnan, Shalit & Sontag,
       arXiv:1609.09869 (AAAI 2017).
    2. Pyro's example ``examples/dmm.py`` (Deep Markov Model tutorial), pyro.ai/examples/dmm.html.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

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
from aezoo.sequence import SequenceModel, time_valid

Step = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


COVARIATES = (Covariate("mask", "mask", doc="True where x is observed; None: every entry observed"),)


@dataclass(frozen=True)
class Config:
    x_dim: int = 88
    z_dim: int = 100
    emission_dim: int = 100
    transition_dim: int = 200
    rnn_dim: int = 600
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS
    seq_len: int = 20  # T of example_data only; the model takes any T

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")


class MarkovNormal(TorchDistribution):
    """A Gaussian Markov chain ``z_t | z_{t-1} ~ N(step(z_{t-1}, c_t))`` from a fixed ``z_0``.

    Args:
        step: ``(z_prev (..., D_z), c (..., C)) -> (loc, scale)``, each ``(..., D_z)``.
        z0: ``(D_z,)`` the state before the first step.
        context: ``(*batch, T, C)`` per-step inputs (``C = 0`` for none), e.g. RNN states.
        valid: ``(*batch, T)`` bool; steps where it is False are not scored (they must come after
            every valid step of their sequence, so they are exactly marginalised).

    Batch shape ``valid.shape[:-1]``, event shape ``(T, D_z)``. ``log_prob`` is vectorised over
    time; ``rsample`` is sequential and draws one ``(..., D_z)`` noise per step in time order.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, step: Step, z0: Tensor, context: Tensor, valid: Tensor, validate_args=None) -> None:
        self.step, self.z0, self.context, self.valid = step, z0, context, valid
        super().__init__(valid.shape[:-1], (valid.shape[-1], z0.shape[-1]), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return MarkovNormal(self.step, self.z0, self.context.expand(batch_shape + self.context.shape[-2:]),
                            self.valid.expand(batch_shape + self.valid.shape[-1:]))

    def rsample(self, sample_shape=torch.Size()) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        z_prev, out = self.z0.expand(shape + self.z0.shape), []
        for t in range(self.event_shape[0]):
            c = self.context[..., t, :].expand(shape + self.context.shape[-1:])
            loc, scale = self.step(z_prev, c)
            z_prev = loc + scale * torch.randn(loc.shape, dtype=loc.dtype, device=loc.device)
            out.append(z_prev)
        return torch.stack(out, -2)

    def log_prob(self, value: Tensor) -> Tensor:
        """``(*sample, *batch)``: sum over valid steps of ``log N(z_t; step(z_{t-1}, c_t))``."""
        prev = torch.cat([self.z0.expand(value.shape[:-2] + (1, value.shape[-1])), value[..., :-1, :]], -2)
        lead = torch.broadcast_shapes(value.shape[:-1], self.context.shape[:-1])
        loc, scale = self.step(prev, self.context.expand(lead + self.context.shape[-1:]))
        lp = dist.Normal(loc, scale).log_prob(value).sum(-1)
        return lp.where(self.valid, lp.new_zeros(())).sum(-1)


class GatedTransition(nn.Module):
    """p(z_t | z_{t-1}): ``loc = (1 - g) W z + g m(z)``, ``scale = softplus(V relu(m(z)))`` [1]."""

    def __init__(self, z_dim: int, transition_dim: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(z_dim, transition_dim), nn.ReLU(), nn.Linear(transition_dim, z_dim))
        self.proposal = nn.Sequential(nn.Linear(z_dim, transition_dim), nn.ReLU(),
                                      nn.Linear(transition_dim, z_dim))
        self.linear = nn.Linear(z_dim, z_dim)
        self.to_scale = nn.Linear(z_dim, z_dim)
        with torch.no_grad():  # start as the identity map, as Pyro's example
            self.linear.weight.copy_(torch.eye(z_dim))
            self.linear.bias.zero_()

    def forward(self, z_prev: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        g = torch.sigmoid(self.gate(z_prev))
        proposed = self.proposal(z_prev)
        loc = (1 - g) * self.linear(z_prev) + g * proposed
        return loc, F.softplus(self.to_scale(F.relu(proposed))) + 1e-4


class Combiner(nn.Module):
    """q(z_t | z_{t-1}, h_t): ``h = (tanh(W z_{t-1}) + h_t) / 2``, ``loc = A h``, ``scale = softplus(S h)`` [1]."""

    def __init__(self, z_dim: int, rnn_dim: int) -> None:
        super().__init__()
        self.z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.to_loc = nn.Linear(rnn_dim, z_dim)
        self.to_scale = nn.Linear(rnn_dim, z_dim)

    def forward(self, z_prev: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        hidden = 0.5 * (torch.tanh(self.z_to_hidden(z_prev)) + h)
        return self.to_loc(hidden), F.softplus(self.to_scale(hidden)) + 1e-4


class Model(SequenceModel):
    """Gated-transition Markov prior and an MLP emitter; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.x_dim, cfg.z_dim, (cfg.emission_dim, cfg.emission_dim), "relu", cfg.likelihood)
        self.cfg = cfg
        self.transition = GatedTransition(cfg.z_dim, cfg.transition_dim)
        self.z0 = nn.Parameter(torch.zeros(cfg.z_dim))

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_prior(x, mask))
            pyro.sample("x", self.x_dist(z, mask), obs=x)

    def z_prior(self, x: Tensor, mask: Tensor | None = None) -> MarkovNormal:
        """The Markov prior: batch shape ``(B,)``, event shape ``(T, D_z)`` for ``x`` ``(B, T, D_x)``."""
        return MarkovNormal(self.transition, self.z0, x.new_zeros(*x.shape[:-1], 0), time_valid(x, mask))


class Guide(PyroModule):
    """q(z | x): backward RNN over each sequence, then the combiner chain; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.rnn = nn.RNN(2 * cfg.x_dim, cfg.rnn_dim, nonlinearity="relu", batch_first=True)
        self.h0 = nn.Parameter(torch.zeros(cfg.rnn_dim))
        self.combiner = Combiner(cfg.z_dim, cfg.rnn_dim)
        self.z0 = nn.Parameter(torch.zeros(cfg.z_dim))

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.sample("z", self.posterior(x, mask))

    def posterior(self, x: Tensor, mask: Tensor | None = None) -> MarkovNormal:
        """q(z | x) with batch shape ``(B,)`` and event shape ``(T, D_z)``."""
        valid = time_valid(x, mask)
        B, T = valid.shape
        lengths = valid.sum(-1, keepdim=True)  # (B, 1)
        t = torch.arange(T, device=x.device)
        rev = torch.where(t < lengths, lengths - 1 - t, t)  # reverse each sequence within its length
        inputs = encoder_input(x, mask)
        inputs = inputs.gather(1, rev[..., None].expand(inputs.shape))
        h, _ = self.rnn(inputs, self.h0.expand(1, B, -1).contiguous())
        h = h.gather(1, rev[..., None].expand(h.shape))  # the same permutation undoes itself
        return MarkovNormal(self.combiner, self.z0, h, valid)


def build(cfg: Config = Config()) -> Autoencoder:
    """A DMM with the gated transition, ``D_z -> E -> E -> D_x`` emitter and the ST-R guide of [1]."""
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1],
                       covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, mask)``: ``n`` sequences ``(n, seq_len, D_x)`` drawn from a seeded random DMM.

    Lengths are uniform in ``[ceil(seq_len / 2), seq_len]``; steps past a sequence's length are
    padding (``x`` 0, ``mask`` False), as in a padded minibatch of real sequences.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Model(cfg)
        T = cfg.seq_len
        with torch.no_grad():
            x = torch.zeros(n, T, cfg.x_dim)
            z = model.z_prior(x).rsample()
            x = model.x_dist(z).sample()
        lengths = torch.randint((T + 1) // 2, T + 1, (n, 1))
        mask = (torch.arange(T) < lengths)[..., None].expand(x.shape).clone()
        return x.where(mask, 0.0), mask
