"""Wasserstein autoencoder (WAE-MMD): the VAE's generative model with a deterministic encoder.

Generative story (that of :mod:`aezoo.models.vae`), for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide: q(z_b | x_b) = delta(z_b - encoder(x_b)), a deterministic MLP encoder (``AmortizedDelta``).

Default objective (``DEFAULT_ENGINE``, the ``svi`` engine): ``E[log p(x | encoder(x))] - lambda
MMD^2(q(z), p(z))`` per datum with the IMQ kernel and ``lambda = 10`` as in [1] for MNIST; the
cost ``c(x, x')`` of [1] is here the negative log-likelihood. ``D_z = 8`` as in [1] for MNIST.
The MLP (784-200-200 tanh) is the VAE's, not the convolutional nets of [1]. With a point-mass
guide the importance-sampled log p(x) does not exist; the IWAE engine does not apply.

References:
    1. Wasserstein Auto-Encoders, Tolstikhin, Bousquet, Gelly & Schoelkopf, arXiv:1711.01558.
    2. A Kernel Two-Sample Test, Gretton, Borgwardt, Rasch, Schoelkopf & Smola, JMLR 2012.
"""

from __future__ import annotations

from dataclasses import dataclass

from aezoo.core import Autoencoder
from aezoo.guides import AmortizedDelta
from aezoo.models import vae
from aezoo.models.vae import example_data

DEFAULT_ENGINE = ("svi", {"beta": 0.0, "penalty": "mmd", "penalty_weight": 10.0})


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` with the WAE paper's MNIST latent size."""

    z_dim: int = 8


def build(cfg: Config = Config(), name: str = __name__.rsplit(".", 1)[-1]) -> Autoencoder:
    """The VAE's model with the deterministic encoder ``D_x -> hidden_dims -> D_z``.

    ``name`` is the registry key; zoo entries built on this pair (``swae``) pass their own.
    """
    cfg.no_flow(name)
    return Autoencoder(vae.Model(cfg), AmortizedDelta("z", cfg.encoder(cfg.z_dim)), cfg, name=name)


__all__ = ["Config", "DEFAULT_ENGINE", "build", "example_data"]
