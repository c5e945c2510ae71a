"""Variational state space model: SSM encoder and decoder, so generation runs in parallel over time.

Generative story, for each sequence b of the ``"data"`` plate (``T`` time steps) [1]::

    z_bt ~ N(0, I), independently for every t            z: (B, T, D_z)
    y_b = SSM_dec(z_b)  (causal: y_bt depends on z_b,1:t)  y: (B, T, D_x); parallel scan over t
    x_bt | z_b,1:t ~ p(x | y_bt), masked                   x: (B, T, D_x); mask (B, T, D_x) bool

``SSM`` is a stack of ``num_layers`` residual blocks, each a diagonal linear recurrence
(:class:`aezoo.nn.LinearRecurrence`, an LRU-type layer [2]) of ``state_dim`` states with a
nonlinear readout ``u + GELU(C h_t + D v_t)`` (``v`` the layer-normed input). The recurrence is
linear, so the whole sequence is decoded in one parallel scan, or equally step by step
(``parallel=False``); no output is fed back, which is what lets generation run in parallel [1].

Guide: q(z_b | x_b) = prod_t N(z_bt; SSM_enc(x_b, mask_b)_t), the same kind of causal SSM over
``x`` (missing entries zeroed) and the mask, so ``q(z_1:t | x)`` depends on ``x_1:t`` only.

Masking: entries with ``mask`` False do not enter the likelihood; steps after a sequence's last
observed step (padding) are not scored by prior or guide (both decoders are causal, so nothing
observed depends on them: they are integrated out exactly).

Conditioned generation (:func:`generate`): given a prefix ``x_1:P``, its latents are drawn from
the guide (which, being causal, reads the prefix only) and the rest from the prior; all ``T``
steps are then decoded in one parallel pass. This is the posterior-then-prior variant of the
"autoregressive VSSM" of [1] (the paper can also learn a prefix-conditioned prior for ``t > P``).

References:
    1. Parallelizing Autoregressive Generation with Variational State Space Models, Lambrechts,
       Claes, Geurts & Ernst, arXiv:2407.08415 (ICML 2024 workshop).
    2. Resurrecting Recurrent Neural Networks for Long Sequences, Orvieto, Smith, Gu, Fernando,
       Gulcehre, Pascanu & De, arXiv:2303.06349.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.guides.structured import encoder_input
from aezoo.likelihoods import LIKELIHOODS
from aezoo.nn import LinearRecurrence
from aezoo.sequence import check_sequence, masked_x_dist, time_valid

COVARIATES = (Covariate("mask", "mask", doc="True where x is observed; None: every entry observed"),)


@dataclass(frozen=True)
class Config:
    x_dim: int = 28
    z_dim: int = 8
    hidden_dim: int = 64  # H: width of the residual stream of each SSM
    state_dim: int = 64  # S: states of each linear recurrence
    num_layers: int = 2
    likelihood: str = "bernoulli"  # one of aezoo.likelihoods.LIKELIHOODS
    seq_len: int = 12  # T of example_data only; the model takes any T

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")


class SSMBlock(nn.Module):
    """``u + GELU(C h + D v)`` with ``v = LayerNorm(u)`` and ``h = LinearRecurrence(v)``: ``(..., T, H) -> same``."""

    def __init__(self, hidden_dim: int, state_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_dim)
        self.recurrence = LinearRecurrence(hidden_dim, state_dim)
        self.C = nn.Linear(state_dim, hidden_dim)
        self.D = nn.Parameter(torch.ones(hidden_dim))

    def forward(self, u: Tensor, parallel: bool = True) -> Tensor:
        v = self.norm(u)
        return u + F.gelu(self.C(self.recurrence(v, parallel=parallel)) + self.D * v)


class SSM(nn.Module):
    """A causal sequence map ``(..., T, in_dim) -> (..., T, out_dim)``: linear in, :class:`SSMBlock` s, linear out."""

    def __init__(self, in_dim: int, hidden_dim: int, state_dim: int, num_layers: int, out_dim: int) -> None:
        super().__init__()
        self.inp = nn.Linear(in_dim, hidden_dim)
        self.blocks = nn.ModuleList(SSMBlock(hidden_dim, state_dim) for _ in range(num_layers))
        self.out = nn.Linear(hidden_dim, out_dim)

    def forward(self, u: Tensor, parallel: bool = True) -> Tensor:
        h = self.inp(u)
        for block in self.blocks:
            h = block(h, parallel)
        return self.out(h)


def _valid_normal(loc: Tensor, scale: Tensor, valid: Tensor) -> dist.Distribution:
    """Independent normals ``(B, T, D_z)`` scored on valid steps only: batch ``(B,)``, event ``(T, D_z)``."""
    return dist.Normal(loc, scale).mask(valid[..., None]).to_event(2)


class Model(PyroModule):
    """Standard-normal latents per step and a causal SSM decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg, self.likelihood = cfg, cfg.likelihood
        self.decoder = SSM(cfg.z_dim, cfg.hidden_dim, cfg.state_dim, cfg.num_layers, cfg.x_dim)
        if cfg.likelihood == "gaussian":
            self.scale_raw = nn.Parameter(torch.zeros(cfg.x_dim))

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            z = pyro.sample("z", self.z_prior(x, mask))
            pyro.sample("x", self.x_dist(z, mask), obs=x)

    def z_prior(self, x: Tensor, mask: Tensor | None = None) -> dist.Distribution:
        """N(0, I) per step: batch shape ``(B,)``, event shape ``(T, D_z)`` for ``x`` ``(B, T, D_x)``."""
        loc = x.new_zeros(*x.shape[:-1], self.cfg.z_dim)
        return _valid_normal(loc, torch.ones_like(loc), time_valid(x, mask))

    def x_dist(self, z: Tensor, mask: Tensor | None = None, parallel: bool = True) -> dist.Distribution:
        """p(x | z) for ``z`` ``(..., B, T, D_z)``: event shape ``(T, D_x)``, decoded by scan or loop."""
        scale = F.softplus(self.scale_raw) + 1e-3 if self.likelihood == "gaussian" else None
        return masked_x_dist(self.likelihood, self.decoder(z, parallel), scale, mask)

    def validate(self, x: Tensor, mask: Tensor | None = None) -> None:
        check_sequence(x, mask, self.cfg.x_dim, self.likelihood)


class Guide(PyroModule):
    """q(z | x): a causal SSM over ``x`` and the mask giving each step's Normal; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.encoder = SSM(2 * cfg.x_dim, cfg.hidden_dim, cfg.state_dim, cfg.num_layers, 2 * cfg.z_dim)

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> None:
        with pyro.plate("data", num_data or len(x), subsample=x):
            pyro.sample("z", self.posterior(x, mask))

    def posterior(self, x: Tensor, mask: Tensor | None = None, parallel: bool = True) -> dist.Distribution:
        """q(z | x): batch shape ``(B,)``, event shape ``(T, D_z)``; step ``t`` reads ``x_1:t`` only."""
        loc, raw = self.encoder(encoder_input(x, mask), parallel).chunk(2, -1)
        return _valid_normal(loc, F.softplus(raw) + 1e-4, time_valid(x, mask))


@torch.no_grad()
def generate(ae: Autoencoder, n: int, T: int, prefix: Tensor | None = None, parallel: bool = True,
             sample: bool = True) -> Tensor:
    """``n`` sequences of ``T`` steps, decoded in one pass (``parallel``) or step by step.

    Without a prefix every ``z_t`` comes from the prior. With ``prefix`` ``x_1:P``, ``z_1:P`` is
    drawn from the guide given the prefix (first, from torch's global RNG), then ``z_P+1:T`` from
    the prior, and all ``T`` steps are decoded together; the first ``P`` outputs are thus the
    prefix's reconstruction and the rest its continuation (no output is fed back).

    Args:
        ae: a ``vssm`` autoencoder.
        n: number of sequences ``B``; T: their length ``T``.
        prefix: ``(n, P, D_x)`` or ``(P, D_x)`` (the same prefix for all), ``1 <= P <= T``, fully observed.
        parallel: decode by the parallel scan (True) or the sequential loop (False); same result.
        sample: draw ``x`` from the likelihood (True) or return its mean (False).

    Returns:
        ``(n, T, D_x)``.

    Raises:
        ValueError: ``n`` or ``T`` below 1, or a prefix of the wrong shape or length.
    """
    if n < 1 or T < 1:
        raise ValueError(f"n and T must be >= 1, got n={n}, T={T}")
    cfg, param = ae.model.cfg, next(ae.parameters())
    z = []
    if prefix is not None:
        prefix = prefix.to(param).expand(n, *prefix.shape[-2:]) if prefix.dim() == 2 else prefix.to(param)
        if prefix.dim() != 3 or prefix.shape[0] != n or prefix.shape[-1] != cfg.x_dim or not 1 <= prefix.shape[1] <= T:
            raise ValueError(f"prefix must be (n={n}, P, {cfg.x_dim}) or (P, {cfg.x_dim}) with 1 <= P <= T={T}, "
                             f"got {tuple(prefix.shape)}")
        z.append(ae.guide.posterior(prefix, parallel=parallel).sample())
    done = z[0].shape[1] if z else 0
    z.append(torch.randn(n, T - done, cfg.z_dim, dtype=param.dtype, device=param.device))
    d = ae.model.x_dist(torch.cat(z, 1), parallel=parallel)
    return d.sample() if sample else d.mean


def build(cfg: Config = Config()) -> Autoencoder:
    """A VSSM [1]: N(0, I) latents per step, causal SSM decoder and encoder of the given sizes."""
    return Autoencoder(Model(cfg), Guide(cfg), cfg, name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, mask)``: ``n`` sequences ``(n, seq_len, D_x)`` from a seeded random VSSM (:func:`generate`).

    Lengths are uniform in ``[ceil(seq_len / 2), seq_len]``; steps past a sequence's length are
    padding (``x`` 0, ``mask`` False), as in a padded minibatch.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        ae, T = build(cfg), cfg.seq_len
        x = generate(ae, n, T)
        lengths = torch.randint((T + 1) // 2, T + 1, (n, 1))
        mask = (torch.arange(T) < lengths)[..., None].expand(x.shape).clone()
        return x.where(mask, 0.0), mask
