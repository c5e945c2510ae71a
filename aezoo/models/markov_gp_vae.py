"""Markovian GP-VAE: Matern GP prior over time written as a linear state-space model (cost linear in T).

Generative story, for each sequence b of the ``"data"`` plate (``T`` frames at unit spacing)::

    f_bd ~ GP(0, k_nu)  for each latent channel d       k_nu: Matern-nu (nu = 1/2, 3/2, 5/2)
    z_btd = f_bd(t) + N(0, jitter)                      z: (B, T, D_z)
    x_bt | z_bt ~ p(x | decoder(z_bt)), masked          x: (B, T, D_x); mask (B, T, D_x) bool

The Matern GP is the first coordinate of an exact linear state-space model with ``nu + 1/2``
states per channel [2] (:func:`aezoo.sequence.matern_prior`), so the prior is Pyro's
``GaussianHMM`` and its log density costs ``O(T)`` instead of the dense GP's ``O(T^3)``
(:mod:`aezoo.models.gp_vae`). The kernel's lengthscale and variance are learned by default
(positive ``PyroParam`` point estimates; the state-space matrices are differentiable in them),
fixed with ``learn_kernel=False`` as in GP-VAE, or global latents with ``LogNormal`` priors
(``kernel_prior > 0``) and MAP guide sites (:class:`aezoo.sequence.HyperMAP`; the Kalman guide's
prior then uses the MAP values).

Guide: q(z_b | x_b) proportional to p(z_b) prod_t N(z_bt; r(x_bt), diag 1 / lambda(x_bt)), per-frame
potentials combined with the state-space prior by exact Kalman smoothing [1]
(:class:`aezoo.guides.structured.KalmanGuide`).

References:
    1. Markovian Gaussian Process Variational Autoencoders, Zhu, Tebbutt, Bronskill, Rowland &
       Turner (et al.), arXiv:2207.05543.
    2. Kalman filtering and smoothing solutions to temporal Gaussian process regression models,
       Hartikainen & Saerkkae, MLSP 2010.
    3. GP-VAE: Deep Probabilistic Time Series Imputation, Fortuin, Baranchuk, Raetsch & Mandt,
       arXiv:1907.04155.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder
from aezoo.models import svae
from aezoo.sequence import (
    MATERN_NUS,
    SequenceModel,
    check_gp_settings,
    draw_hypers,
    matern_prior,
    sequence_example_data,
    set_hyper,
    with_hyper_guide,
)

COVARIATES = svae.COVARIATES  # the mask, as for svae

@dataclass(frozen=True)
class Config:
    x_dim: int = 16
    z_dim: int = 2
    hidden_dims: tuple[int, ...] = (64,)
    activation: str = "tanh"
    likelihood: str = "gaussian"  # one of aezoo.likelihoods.LIKELIHOODS
    nu: float = 1.5  # Matern smoothness, one of aezoo.sequence.MATERN_NUS
    lengthscale: float = 2.0  # in frames
    variance: float = 1.0
    learn_kernel: bool = True  # lengthscale and variance trained (from the values above); False: fixed
    kernel_prior: float = 0.0  # > 0: LogNormal(log value, kernel_prior) priors, MAP guide sites; 0: PyroParams
    jitter: float = 1e-3  # white-noise variance added to z (keeps the emission of the state-space model proper)
    seq_len: int = 20  # T of example_data only; the model takes any T

    def __post_init__(self) -> None:
        check_sizes(self)
        check_gp_settings(self.likelihood, self.lengthscale, self.variance, self.jitter, self.kernel_prior)
        if self.nu not in MATERN_NUS:
            raise ValueError(f"nu must be one of {MATERN_NUS}, got {self.nu}")


class Model(SequenceModel):
    """Matern state-space prior over ``z`` and a per-frame MLP decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.x_dim, cfg.z_dim, cfg.hidden_dims, cfg.activation, cfg.likelihood)
        self.cfg = cfg
        for name in ("lengthscale", "variance"):
            self.register_buffer(name, torch.tensor(float(getattr(cfg, name))))
            set_hyper(self, name, cfg.learn_kernel, cfg.kernel_prior)

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> None:
        draw_hypers(self)  # hyper-parameter priors (if any) are global: drawn outside the data plate
        super().forward(x, mask, num_data)

    def z_prior(self, x: Tensor):
        """Independent Matern GPs per channel as a GaussianHMM with event shape ``(T, D_z)``."""
        c = self.cfg
        return matern_prior(x.shape[-2], c.z_dim, c.nu, self.lengthscale, self.variance, c.jitter, like=x)


def build(cfg: Config = Config()) -> Autoencoder:
    """The Matern state-space model with the Kalman-smoothing guide (see ``kalman_autoencoder``)."""
    ae = svae.kalman_autoencoder(Model(cfg), cfg, name=__name__.rsplit(".", 1)[-1])
    ae.guide = with_hyper_guide(ae.model, ae.guide)
    return ae


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, mask)``: ``n`` linear-dynamical-system videos ``(n, seq_len, D_x)`` (:func:`aezoo.data.lds_video`)."""
    return sequence_example_data(cfg.x_dim, cfg.likelihood, n, cfg.seq_len, seed)
