"""Markovian GP-VAE: Matern GP prior over time written as a linear state-space model (cost linear in T).

Generative story, for each sequence b of the ``"data"`` plate (``T`` frames at unit spacing)::

    f_bd ~ GP(0, k_nu)  for each latent channel d       k_nu: Matern-nu (nu = 1/2, 3/2, 5/2)
    z_btd = f_bd(t) + N(0, jitter)                      z: (B, T, D_z)
    x_bt | z_bt ~ p(x | decoder(z_bt)), masked          x: (B, T, D_x); mask (B, T, D_x) bool

The Matern GP is the first coordinate of an exact linear state-space model with ``nu + 1/2``
states per channel [2] (:func:`aezoo.sequence.matern_prior`), so the prior is Pyro's
``GaussianHMM`` and its log density costs ``O(T)`` instead of the dense GP's ``O(T^3)``
(:mod:`aezoo.models.gp_vae`). The kernel's lengthscale and variance are fixed, as in GP-VAE.

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

from torch import Tensor

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder
from aezoo.models import svae
from aezoo.sequence import MATERN_NUS, SequenceModel, check_gp_settings, matern_prior, sequence_example_data

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
    jitter: float = 1e-3  # white-noise variance added to z (keeps the emission of the state-space model proper)
    seq_len: int = 20  # T of example_data only; the model takes any T

    def __post_init__(self) -> None:
        check_sizes(self)
        check_gp_settings(self.likelihood, self.lengthscale, self.variance, self.jitter)
        if self.nu not in MATERN_NUS:
            raise ValueError(f"nu must be one of {MATERN_NUS}, got {self.nu}")


class Model(SequenceModel):
    """Matern state-space prior over ``z`` and a per-frame MLP decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.x_dim, cfg.z_dim, cfg.hidden_dims, cfg.activation, cfg.likelihood)
        self.cfg = cfg

    def z_prior(self, x: Tensor):
        """Independent Matern GPs per channel as a GaussianHMM with event shape ``(T, D_z)``."""
        c = self.cfg
        return matern_prior(x.shape[-2], c.z_dim, c.nu, c.lengthscale, c.variance, c.jitter, like=x)


def build(cfg: Config = Config()) -> Autoencoder:
    """The Matern state-space model with the Kalman-smoothing guide (see ``kalman_autoencoder``)."""
    return svae.kalman_autoencoder(Model(cfg), cfg, name=__name__.rsplit(".", 1)[-1])


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, mask)``: ``n`` linear-dynamical-system videos ``(n, seq_len, D_x)`` (:func:`aezoo.data.lds_video`)."""
    return sequence_example_data(cfg.x_dim, cfg.likelihood, n, cfg.seq_len, seed)
