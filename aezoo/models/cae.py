"""Contractive autoencoder: a deterministic sigmoid encoder penalised by its Jacobian's Frobenius norm.

Generative story (that of :mod:`aezoo.models.vae`), for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z); unused by the default objective (beta = 0)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Bernoulli (MNIST) or Gaussian (continuous data)

Guide: q(z_b | x_b) = delta(z_b - sigmoid(encoder(x_b))), a point mass at the sigmoid code.

Default objective (``DEFAULT_ENGINE``, ``svi`` with ``beta = 0`` and the ``contractive`` penalty,
:mod:`aezoo.inference.terms.contractive`): ``-log p(x | z = h(x)) + lambda ||d h / d x||_F^2`` per
datum, [1]'s eq. 3 with the negative log-likelihood as the reconstruction error and ``lambda = 0.1``.
The default encoder is [1]'s one sigmoid layer ``h = sigmoid(W x + b)`` (``hidden_dims = ()``,
whose penalty has a closed form) with ``D_z = 1000`` units; the decoder ``W' h + c`` is untied
(logits for Bernoulli data), where [1] ties ``W' = W^T``. ``hidden_dims`` adds layers to both
(the penalty is then computed by automatic differentiation). Alain & Bengio [2] show that the
reconstruction ``r(x)`` of a contractive (in ``r``) autoencoder also estimates the score, with
``lambda`` in the role of ``sigma^2``: :mod:`aezoo.diagnostics.score_sampler` takes ``sigma``
explicitly for this entry. ``hmc``/``nuts``/``sghmc`` sample the N(0, I)-prior model's p(z | x);
``iwae``/``rws`` do not apply (point mass).

References:
    1. Contractive Auto-Encoders: Explicit Invariance During Feature Extraction, Rifai, Vincent,
       Muller, Glorot & Bengio, ICML 2011.
    2. What Regularized Auto-Encoders Learn from the Data Generating Distribution, Alain & Bengio,
       arXiv:1211.4246.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from aezoo.core import Autoencoder
from aezoo.guides import AmortizedDelta
from aezoo.models import vae
from aezoo.models.vae import example_data

DEFAULT_ENGINE = ("svi", {"beta": 0.0, "penalty": "contractive", "penalty_weight": 0.1})


@dataclass(frozen=True)
class Config(vae.Config):
    """:class:`aezoo.models.vae.Config` with [1]'s one sigmoid layer of 1000 units as the default encoder."""

    z_dim: int = 1000
    hidden_dims: tuple[int, ...] = ()


def build(cfg: Config = Config()) -> Autoencoder:
    """The VAE's model with the deterministic encoder ``sigmoid(D_x -> hidden_dims -> D_z)``."""
    cfg.no_flow("cae")
    encoder = nn.Sequential(cfg.encoder(cfg.z_dim), nn.Sigmoid())
    return Autoencoder(vae.Model(cfg), AmortizedDelta("z", encoder), cfg, name="cae")


__all__ = ["Config", "DEFAULT_ENGINE", "build", "example_data"]
