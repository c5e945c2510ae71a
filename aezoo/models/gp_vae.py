"""GP-VAE: a Gaussian-process prior over time per latent channel and a banded-precision guide.

Generative story, for each sequence b of the ``"data"`` plate (``T`` frames at unit spacing)::

    z_b[:, d] ~ N(0, K + jitter I)  for each latent channel d   K: (T, T) = k(t, t'); z: (B, T, D_z)
    x_bt | z_bt ~ p(x | decoder(z_bt)), masked                  x: (B, T, D_x); mask (B, T, D_x) bool

with ``k`` a kernel from :mod:`pyro.contrib.gp.kernels` (``cauchy`` by default, as in [1];
also ``rbf`` and Matern) whose lengthscale and variance are learned by default: positive
``PyroParam`` point estimates trained by the ELBO, fixed with ``learn_kernel=False`` (as in [1]),
or global latents with ``LogNormal`` priors (``kernel_prior > 0``) and a MAP (Delta) guide site
each (:func:`aezoo.sequence.set_hyper`, :class:`aezoo.sequence.HyperMAP`). The dense kernel
matrix makes the prior's cost cubic in ``T``; see :mod:`aezoo.models.markov_gp_vae` for the
linear-time Markovian version. Missing entries (``mask`` False) do not enter the likelihood; the
model imputes them by decoding ``z``.

Guide: q(z_b | x_b) = prod_d N(m_d(x_b), (B_d^T B_d)^-1), ``B_d`` upper bidiagonal from a per-frame
encoder (:class:`aezoo.guides.structured.BandedGuide`), as in [1].

References:
    1. GP-VAE: Deep Probabilistic Time Series Imputation, Fortuin, Baranchuk, Raetsch & Mandt,
       arXiv:1907.04155.
    2. Gaussian Process Prior Variational Autoencoders, Casale, Dalca, Saglietti, Listgarten &
       Fusi, arXiv:1810.11738.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from aezoo.checks import check_sizes
from aezoo.core import Autoencoder, Covariate
from aezoo.guides.structured import BandedGuide
from aezoo.nn import MLP
from aezoo.sequence import (
    KERNELS,
    SequenceModel,
    check_gp_settings,
    dense_gp_prior,
    draw_hypers,
    kernel,
    sequence_example_data,
    with_hyper_guide,
)

COVARIATES = (Covariate("mask", "mask", doc="True where x is observed; None: every entry observed"),)


@dataclass(frozen=True)
class Config:
    x_dim: int = 16
    z_dim: int = 2
    hidden_dims: tuple[int, ...] = (64,)
    activation: str = "tanh"
    likelihood: str = "gaussian"  # one of aezoo.likelihoods.LIKELIHOODS
    kernel: str = "cauchy"  # one of aezoo.sequence.KERNELS
    lengthscale: float = 2.0  # in frames
    variance: float = 1.0
    learn_kernel: bool = True  # lengthscale and variance trained (from the values above); False: fixed
    kernel_prior: float = 0.0  # > 0: LogNormal(log value, kernel_prior) priors, MAP guide sites; 0: PyroParams
    jitter: float = 1e-3  # added to the kernel matrix's diagonal
    seq_len: int = 20  # T of example_data only; the model takes any T

    def __post_init__(self) -> None:
        check_sizes(self)
        check_gp_settings(self.likelihood, self.lengthscale, self.variance, self.jitter, self.kernel_prior)
        if self.kernel not in KERNELS:
            raise ValueError(f"unknown kernel {self.kernel!r}; choose one of {KERNELS}")


class Model(SequenceModel):
    """Dense GP prior over ``z`` per channel and a per-frame MLP decoder; see the module docstring."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg.x_dim, cfg.z_dim, cfg.hidden_dims, cfg.activation, cfg.likelihood)
        self.cfg = cfg
        self.kernel = kernel(cfg.kernel, cfg.lengthscale, cfg.variance, cfg.learn_kernel, cfg.kernel_prior)

    def forward(self, x: Tensor, mask: Tensor | None = None, num_data: int | None = None) -> None:
        draw_hypers(self)  # hyper-parameter priors (if any) are global: drawn outside the data plate
        super().forward(x, mask, num_data)

    def z_prior(self, x: Tensor):
        """``N(0, K + jitter I)`` per channel, event shape ``(T, D_z)``."""
        return dense_gp_prior(x.shape[-2], self.cfg.z_dim, self.kernel, self.cfg.jitter, like=x)


def build(cfg: Config = Config()) -> Autoencoder:
    """The dense GP model with the banded-precision guide (per-frame encoder ``2 D_x -> 3 D_z``)."""
    encoder = MLP(2 * cfg.x_dim, cfg.hidden_dims, 3 * cfg.z_dim, cfg.activation)
    model = Model(cfg)
    return Autoencoder(model, with_hyper_guide(model, BandedGuide("z", encoder)), cfg,
                       name=__name__.rsplit(".", 1)[-1], covariates=COVARIATES)


def example_data(cfg: Config, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``(x, mask)``: ``n`` linear-dynamical-system videos ``(n, seq_len, D_x)`` (:func:`aezoo.data.lds_video`)."""
    return sequence_example_data(cfg.x_dim, cfg.likelihood, n, cfg.seq_len, seed)
