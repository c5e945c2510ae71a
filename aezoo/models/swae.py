"""Sliced-Wasserstein autoencoder (SWAE): the WAE's model and deterministic encoder, SW_2 penalty.

Generative story (that of :mod:`aezoo.models.vae`), for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide: q(z_b | x_b) = delta(z_b - encoder(x_b)), as in :mod:`aezoo.models.wae`.

Default objective (``DEFAULT_ENGINE``, the ``svi`` engine): ``E[log p(x | encoder(x))] - lambda
SW_2^2(q(z), p(z))`` per datum, estimated with ``L = 50`` random directions and as many prior
draws as codes in the batch [1]; ``lambda = 10`` is this zoo's choice (the WAE's MNIST weight),
not a value taken from [1].

References:
    1. Sliced-Wasserstein Autoencoder: An Embarrassingly Simple Generative Model, Kolouri, Pope,
       Martin & Rohde, arXiv:1804.01947.
"""

from __future__ import annotations

from dataclasses import dataclass

from aezoo.core import Autoencoder
from aezoo.models import wae
from aezoo.models.vae import example_data

DEFAULT_ENGINE = ("svi", {"beta": 0.0, "penalty": "swd", "penalty_weight": 10.0,
                          "penalty_options": ("projections=50",)})


@dataclass(frozen=True)
class Config(wae.Config):
    """:class:`aezoo.models.wae.Config` (the VAE's fields, ``D_z = 8``)."""


def build(cfg: Config = Config()) -> Autoencoder:
    """The WAE's model and deterministic encoder under this entry's name."""
    return wae.build(cfg, name=__name__.rsplit(".", 1)[-1])


__all__ = ["Config", "DEFAULT_ENGINE", "build", "example_data"]
