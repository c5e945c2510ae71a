"""Unscented Autoencoder (UAE): the VAE's model, sigma points of q(z | x) for the reconstruction, W2 penalty.

Generative story (that of :mod:`aezoo.models.vae`), for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide: a point mass at one of the ``2 D_z + 1`` sigma points of N(mu(x_b), diag sigma(x_b)^2), drawn with the
unscented weights (:class:`aezoo.guides.unscented.SigmaPointGuide`, spread ``kappa``).

Default objective (``DEFAULT_ENGINE``, the ``svi`` engine with ``beta = 0``): ``sum_i w_i log p(x | z_i) -
lambda W_2^2(q(z | x), N(0, I))`` per datum [1]: the sigma-point-weighted expected log-likelihood (estimated
by the drawn sigma point, unbiased; :func:`unscented_log_likelihood` computes it exactly) and the closed-form
Fréchet distance of each datum's posterior to the prior (the ``frechet`` term) in place of the KL;
``lambda = 1`` and ``kappa = 1`` are this zoo's choices. Why a point mass: every engine and diagnostic
reads one ``z`` ``(B, D_z)`` per datum, so the sigma points cannot sit on a dim of their own without
breaking the site shapes; and the UAE's objective is no ELBO (no log q), so a Delta (``log q = 0``, masked
by ``beta = 0``) says so, and ``iwae``/``rws`` refuse it, as for ``wae``/``swae``. The MLP is the VAE's.

References:
    1. Unscented Autoencoder, Janjoš, Rosenbaum, Dolgov & Zöllner, arXiv:2306.05256.
    2. A New Extension of the Kalman Filter to Nonlinear Systems, Julier & Uhlmann, SPIE 1997.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from aezoo.core import Autoencoder
from aezoo.guides.unscented import SigmaPointGuide
from aezoo.models import vae
from aezoo.models.vae import example_data

DEFAULT_ENGINE = ("svi", {"beta": 0.0, "penalty": "frechet", "penalty_weight": 1.0})


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` and the sigma-point spread ``kappa``."""

    kappa: float = 1.0  # >= 0; centre weight kappa / (D_z + kappa)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.no_flow("unscented_ae")
        if not self.kappa >= 0:
            raise ValueError(f"kappa must be non-negative (the unscented weights stay >= 0), got {self.kappa}")


def build(cfg: Config = Config()) -> Autoencoder:
    """The VAE's model with the sigma-point guide on the VAE's encoder ``D_x -> 2 D_z``."""
    guide = SigmaPointGuide("z", cfg.encoder(2 * cfg.z_dim), cfg.kappa)
    return Autoencoder(vae.Model(cfg), guide, cfg, name=__name__.rsplit(".", 1)[-1])


def unscented_log_likelihood(ae: Autoencoder, x: Tensor) -> Tensor:
    """``sum_i w_i log p(x_b | z_i(x_b))`` ``(B,)`` over all sigma points of q(z | x) for ``x`` ``(B, D_x)``."""
    points, weights = ae.guide.points(x)
    return (weights[:, None] * ae.model.x_dist(points).log_prob(x)).sum(0)


__all__ = ["Config", "DEFAULT_ENGINE", "build", "example_data", "unscented_log_likelihood"]
