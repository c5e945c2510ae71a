"""InfoVAE / MMD-VAE: the VAE's model and Gaussian guide, trained with an MMD(q(z), p(z)) term.

Generative story (that of :mod:`aezoo.models.vae`), for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide: q(z_b | x_b) = N(mu(x_b), diag sigma(x_b)^2) from an MLP encoder, as in the VAE.

Default objective (``DEFAULT_ENGINE``, the ``svi`` engine), eq. 6 of [1] per datum::

    E_q[log p(x | z)] - (1 - alpha) KL(q(z | x) || p(z)) - (alpha + lambda - 1) MMD^2(q(z), p(z))

with ``alpha = 0`` and ``lambda = 1000`` (the MMD setting of [1]'s experiments): the engine's
``beta = 1 - alpha = 1`` and ``penalty_weight = alpha + lambda - 1 = 999``, IMQ kernel [2].

References:
    1. InfoVAE: Information Maximizing Variational Autoencoders, Zhao, Song & Ermon, arXiv:1706.02262.
    2. Wasserstein Auto-Encoders, Tolstikhin, Bousquet, Gelly & Schoelkopf, arXiv:1711.01558.
"""

from __future__ import annotations

from dataclasses import dataclass

from aezoo.core import Autoencoder
from aezoo.models import vae
from aezoo.models.vae import example_data

DEFAULT_ENGINE = ("svi", {"beta": 1.0, "penalty": "mmd", "penalty_weight": 999.0})


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` (the same fields and defaults)."""


def build(cfg: Config = Config()) -> Autoencoder:
    """The VAE (model and Gaussian guide) under this entry's name."""
    return vae.build(cfg, name=__name__.rsplit(".", 1)[-1])


__all__ = ["Config", "DEFAULT_ENGINE", "build", "example_data"]
