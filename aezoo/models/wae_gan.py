"""WAE-GAN: the WAE's model and deterministic encoder, with an adversarial critic on the codes.

Generative story (that of :mod:`aezoo.models.vae`), for each datum b of the ``"data"`` plate::

    z_b ~ N(0, I_{D_z})                     z: (B, D_z)
    x_b | z_b ~ p(x | decoder(z_b))         x: (B, D_x); Bernoulli, continuous Bernoulli or Gaussian

Guide: q(z_b | x_b) = delta(z_b - encoder(x_b)), as in :mod:`aezoo.models.wae`. The autoencoder also
holds the critic ``ae.critic``, an MLP ``D_z -> critic_dims (ReLU) -> 1`` giving the logit of
``D(z)``, the probability that ``z`` is a prior draw; it is no part of the probability model.

Default objective (``DEFAULT_ENGINE``, the ``svi`` engine with ``beta = 0`` and the ``critic`` term,
[1] Algorithm 2): the encoder and decoder minimise ``-log p(x | encoder(x)) - lambda log D(z)`` per
datum, and before each of their steps the critic takes one Adam step (lr 5e-4, beta1 0.5) on the
cross-entropy of prior draws against the minibatch's codes (:mod:`aezoo.inference.terms.critic`).
``lambda = 1``, ``D_z = 8`` and the critic of four 512-unit ReLU layers are [1]'s MNIST settings
as far as recalled (not re-checked here); the cost ``c(x, x')`` of [1] is the negative
log-likelihood and the encoder and decoder are the VAE's MLP, not [1]'s convolutional nets. With a
point-mass guide the importance-sampled log p(x) does not exist; the IWAE engine does not apply.

References:
    1. Wasserstein Auto-Encoders, Tolstikhin, Bousquet, Gelly & Schoelkopf, arXiv:1711.01558.
    2. Adversarial Autoencoders, Makhzani, Shlens, Jaitly, Goodfellow & Frey, arXiv:1511.05644.
"""

from __future__ import annotations

from dataclasses import dataclass

from aezoo.core import Autoencoder
from aezoo.models import wae
from aezoo.models.vae import example_data
from aezoo.nn import MLP

DEFAULT_ENGINE = ("svi", {"beta": 0.0, "penalty": "critic", "penalty_weight": 1.0,
                          "penalty_options": ("lr=0.0005", "beta1=0.5")})


@dataclass(frozen=True)
class Config(wae.Config):
    """:class:`aezoo.models.wae.Config` (``D_z = 8``) with the critic's hidden sizes ``critic_dims``."""

    critic_dims: tuple[int, ...] = (512, 512, 512, 512)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.critic_dims, tuple) or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in self.critic_dims):
            raise ValueError(f"every entry of critic_dims must be an integer >= 1, got {self.critic_dims!r}")


def build(cfg: Config = Config()) -> Autoencoder:
    """The WAE's model and deterministic encoder, plus the critic ``ae.critic`` ``(..., D_z) -> (..., 1)``."""
    ae = wae.build(cfg, name=__name__.rsplit(".", 1)[-1])
    ae.critic = MLP(cfg.z_dim, cfg.critic_dims, 1, activation="relu")
    return ae


__all__ = ["Config", "DEFAULT_ENGINE", "build", "example_data"]
