"""Structured VAE: linear-dynamical-system prior, guide by exact Kalman smoothing of recognition potentials.

Generative story, for each sequence b of the ``"data"`` plate (``T`` frames)::

    h_b0 ~ N(0, I_S)                                   h: (B, T, S); S = state_dim
    h_bt | h_b,t-1 ~ N(A h_b,t-1, diag q^2)            A: (S, S)
    z_bt | h_bt ~ N(C h_bt, diag r^2)                  z: (B, T, D_z); C: (D_z, S)
    x_bt | z_bt ~ p(x | decoder(z_bt)), masked         x: (B, T, D_x); mask (B, T, D_x) bool

The LDS over ``z`` (``h`` marginalised) is Pyro's ``GaussianHMM``; entries with ``mask`` False do
not enter the likelihood, and missing frames carry no evidence.

Guide: q(z_b | x_b) proportional to p(z_b) prod_t N(z_bt; r(x_bt), diag 1 / lambda(x_bt)), per-frame
recognition potentials combined with the LDS prior by exact Kalman smoothing [1, 2]
(:class:`aezoo.guides.structured.KalmanGuide`); trained with plain reparameterised gradients
through the smoother, as in [2], not with the natural gradients of [1].

References:
    1. Composing graphical models with neural networks for structured representations and fast
       inference, Johnson, Duvenaud, Wiltschko, Datta & Adams, arXiv:1603.06277.
    2. Revisiting Structured Variational Autoencoders, Zhao & Linderman, arXiv:2305.16543.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pyro.nn import PyroModule
from torch import Tensor, nn

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.guides import KalmanGuide
from aezoo.likelihoods import LIKELIHOODS
from aezoo.nn import MLP
from aezoo.sequence import SequenceModel, lds_prior, sequence_example_data

COVARIATES = (Covariate("mask", "mask", doc="True where x is observed; None: every entry observed"),)


@dataclass(frozen=True)
class Config:
    x_dim: int = 16
    z_dim: int = 2
    state_dim: int = 2
    hidden_dims: tuple[int, ...] = (64,)
    activation: str = "tanh"
    likelihood: str = "gaussian"  # one of aezoo.likelihoods.LIKELIHOODS
    seq_len: int = 20  # T of example_data only; the model takes any T

    def __post_init__(self) -> None:
        check_sizes(self)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {self.likelihood!r}; choose one of {LIKELIHOODS}")


class Model(SequenceModel):
    """LDS prior over ``z`` and a per-frame MLP decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.x_dim, cfg.z_dim, cfg.hidden_dims, cfg.activation, cfg.likelihood)
        self.cfg = cfg
        S = cfg.state_dim
        self.A = nn.Parameter(0.9 * torch.eye(S) + 0.01 * torch.randn(S, S))
        self.C = nn.Parameter(torch.eye(cfg.z_dim, S) + 0.01 * torch.randn(cfg.z_dim, S))
        self.q_raw = nn.Parameter(torch.full((S,), -1.0))
        self.r_raw = nn.Parameter(torch.full((cfg.z_dim,), -2.0))

    def z_prior(self, x: Tensor):
        """The LDS prior: GaussianHMM with event shape ``(T, D_z)``."""
        q2, r2 = (F.softplus(self.q_raw) + 1e-3) ** 2, (F.softplus(self.r_raw) + 1e-3) ** 2
        eye = torch.eye(self.cfg.state_dim, dtype=x.dtype, device=x.device)
        return lds_prior(x.shape[-2], self.A, torch.diag(q2), self.C, torch.diag(r2), eye)



def kalman_autoencoder(model: PyroModule, cfg, name: str) -> Autoencoder:
    """``model`` (with ``z_prior``) paired with a :class:`~aezoo.guides.KalmanGuide` on site ``z``.

    The per-frame encoder is ``2 D_x -> cfg.hidden_dims -> 2 D_z`` (input: ``x`` with missing
    entries zeroed, and the mask), as used by ``svae`` and ``markov_gp_vae``.
    """
    encoder = MLP(2 * cfg.x_dim, cfg.hidden_dims, 2 * cfg.z_dim, cfg.activation)
    return Autoencoder(model, KalmanGuide("z", encoder, model.z_prior), cfg, name=name, covariates=COVARIATES)


def build(cfg: Config = Config()) -> Autoencoder:
    """The LDS model with the Kalman-smoothing guide (:func:`kalman_autoencoder`)."""
    return kalman_autoencoder(Model(cfg), cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, mask)``: ``n`` linear-dynamical-system videos ``(n, seq_len, D_x)`` (:func:`aezoo.data.lds_video`)."""
    return sequence_example_data(cfg.x_dim, cfg.likelihood, n, cfg.seq_len, seed)
